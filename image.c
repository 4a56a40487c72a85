/* image.c — format detection, limits, the PPM writer, EXIF orientation, and the netpbm decoder.
 * PNG and inflate live in image_png.c, JPEG in image_jpeg.c. See image.h for the policies. */
#include "image.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- limits and allocation ------------------------------------------------------------------- */

static void effective_limits(const ImageLimits *limits, int64_t *max_pixels, int64_t *max_side) {
    *max_pixels = IMAGE_DEFAULT_MAX_PIXELS;
    *max_side = IMAGE_DEFAULT_MAX_SIDE;
    if (limits && limits->max_pixels > 0) *max_pixels = limits->max_pixels;
    if (limits && limits->max_side > 0) *max_side = limits->max_side;
}

int image_check_size(int64_t width, int64_t height, const char *name, const ImageLimits *limits,
                     BlvError *err) {
    int64_t max_pixels, max_side;
    effective_limits(limits, &max_pixels, &max_side);
    if (width <= 0 || height <= 0)
        return blv_fail(err, "%s: invalid image size %lldx%lld", name, (long long)width,
                        (long long)height);
    if (width > max_side || height > max_side)
        return blv_fail(err, "%s: image size %lldx%lld exceeds the limit of %lld pixels per side",
                        name, (long long)width, (long long)height, (long long)max_side);
    /* both sides are <= max_side <= INT32_MAX here, so the product fits in int64 */
    if (width * height > max_pixels)
        return blv_fail(err, "%s: image size %lldx%lld (%lld pixels) exceeds the limit of %lld pixels",
                        name, (long long)width, (long long)height, (long long)(width * height),
                        (long long)max_pixels);
    return 0;
}

int image_alloc(Image *img, int64_t width, int64_t height, const char *name,
                const ImageLimits *limits, BlvError *err) {
    memset(img, 0, sizeof *img);
    if (image_check_size(width, height, name, limits, err) != 0) return -1;
    if ((uint64_t)width * (uint64_t)height > SIZE_MAX / 3)
        return blv_fail(err, "%s: image size %lldx%lld is too large for this machine", name,
                        (long long)width, (long long)height);
    size_t n = (size_t)width * (size_t)height * 3;
    img->rgb = malloc(n);
    if (!img->rgb)
        return blv_fail(err, "%s: out of memory allocating %zu bytes for a %lldx%lld image", name, n,
                        (long long)width, (long long)height);
    img->width = (int32_t)width;
    img->height = (int32_t)height;
    return 0;
}

void image_free(Image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* ---- entry points ------------------------------------------------------------------------------ */

/* Formats we can name but do not decode, so that the message says what the file is. */
static const char *unsupported_format(const uint8_t *d, size_t n) {
    if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) return "GIF";
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) return "WebP";
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "BMP";
    if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0)) return "TIFF";
    if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0) return "HEIF/AVIF (ISO media)";
    if (n >= 4 && d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] == 0x0C) return "JPEG 2000";
    if (n >= 2 && d[0] == 'P' && (d[1] == '7' || d[1] == 'F' || d[1] == 'f')) return "PAM/PFM";
    return NULL;
}

int image_decode_memory(Image *img, const uint8_t *data, size_t size, const char *name,
                        const ImageLimits *limits, BlvError *err) {
    memset(img, 0, sizeof *img);
    if (!name) name = "<memory>";
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (size >= 8 && memcmp(data, png_sig, 8) == 0)
        return image_decode_png(img, data, size, name, limits, err);
    if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8)
        return image_decode_jpeg(img, data, size, name, limits, err);
    if (size >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '6')
        return image_decode_netpbm(img, data, size, name, limits, err);
    if (size >= 4 && ((data[1] == 'P' && data[2] == 'N') || (data[0] == 0x89 && data[2] == 'N' && data[3] == 'G') ||
                      (data[0] == 0x89 && data[1] == 'P')))
        return blv_fail(err, "%s: damaged PNG signature (was the file transferred as text?)", name);
    const char *other = unsupported_format(data, size);
    if (other) return blv_fail(err, "%s: %s images are not supported (only PNG, JPEG and PPM/PGM/PBM)",
                               name, other);
    if (size == 0) return blv_fail(err, "%s: empty file", name);
    char hex[3 * 8 + 1] = "";
    for (size_t i = 0; i < size && i < 8; i++) snprintf(hex + 3 * i, 4, " %02x", data[i]);
    return blv_fail(err, "%s: unrecognized image format (first bytes:%s)", name, hex);
}

int image_load(Image *img, const char *path, const ImageLimits *limits, BlvError *err) {
    memset(img, 0, sizeof *img);
    char *data = NULL;
    size_t len = 0;
    if (blv_read_file(path, &data, &len, err) != 0) return -1;
    int rc = image_decode_memory(img, (const uint8_t *)data, len, path, limits, err);
    free(data);
    return rc;
}

int image_write_ppm(const Image *img, const char *path, BlvError *err) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return blv_fail(err, "%s: cannot write an empty image", path);
    FILE *f = fopen(path, "wb");
    if (!f) return blv_fail(err, "%s: cannot open for writing", path);
    size_t n = (size_t)img->width * (size_t)img->height * 3;
    int ok = fprintf(f, "P6\n%d %d\n255\n", (int)img->width, (int)img->height) > 0 &&
             fwrite(img->rgb, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : blv_fail(err, "%s: write failed", path);
}

/* ---- EXIF orientation ------------------------------------------------------------------------ */

/* TIFF 6.0 §2: an 8-byte header ("II" little-endian or "MM" big-endian, 42, offset of IFD0), then
 * IFDs of 12-byte entries (tag, type, count, value-or-offset). Orientation is tag 0x0112, a SHORT. */
static unsigned tiff_u16(const uint8_t *p, int le) { return le ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }
static uint32_t tiff_u32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int image_exif_orientation(const uint8_t *tiff, size_t size) {
    if (size < 8) return 0;
    int le;
    if (tiff[0] == 'I' && tiff[1] == 'I') le = 1;
    else if (tiff[0] == 'M' && tiff[1] == 'M') le = 0;
    else return 0;
    if (tiff_u16(tiff + 2, le) != 42) return 0;
    uint32_t ifd = tiff_u32(tiff + 4, le);
    if (ifd > size || size - ifd < 2) return 0;
    unsigned count = tiff_u16(tiff + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t at = (size_t)ifd + 2 + (size_t)i * 12;
        if (at > size || size - at < 12) return 0;
        if (tiff_u16(tiff + at, le) != 0x0112) continue;
        unsigned type = tiff_u16(tiff + at + 2, le);
        uint32_t n = tiff_u32(tiff + at + 4, le);
        if (type != 3 || n < 1) return 0; /* SHORT, stored in the first two value bytes */
        unsigned v = tiff_u16(tiff + at + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 0;
    }
    return 0;
}

/* For each destination pixel, where it comes from. Orientation names the transform that displays
 * the stored image upright (EXIF 2.3 §4.6.4 tag 274): 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
 * 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise. */
static void orientation_source(int o, int64_t w, int64_t h, int64_t dx, int64_t dy, int64_t *sx,
                               int64_t *sy) {
    switch (o) {
    case 2: *sx = w - 1 - dx; *sy = dy; break;
    case 3: *sx = w - 1 - dx; *sy = h - 1 - dy; break;
    case 4: *sx = dx; *sy = h - 1 - dy; break;
    case 5: *sx = dy; *sy = dx; break;
    case 6: *sx = dy; *sy = h - 1 - dx; break;
    case 7: *sx = w - 1 - dy; *sy = h - 1 - dx; break;
    case 8: *sx = w - 1 - dy; *sy = dx; break;
    default: *sx = dx; *sy = dy; break;
    }
}

int image_apply_orientation(Image *img, int orientation, BlvError *err) {
    if (orientation < 2 || orientation > 8 || !img->rgb) return 0;
    int64_t w = img->width, h = img->height;
    int swap = orientation >= 5;
    int64_t dw = swap ? h : w, dh = swap ? w : h;
    uint8_t *out = blv_malloc((size_t)w * (size_t)h * 3, "the rotated image", err);
    if (!out) return -1;
    for (int64_t dy = 0; dy < dh; dy++) {
        uint8_t *drow = out + (size_t)(dy * dw) * 3;
        for (int64_t dx = 0; dx < dw; dx++) {
            int64_t sx, sy;
            orientation_source(orientation, w, h, dx, dy, &sx, &sy);
            memcpy(drow + dx * 3, img->rgb + (size_t)(sy * w + sx) * 3, 3);
        }
    }
    free(img->rgb);
    img->rgb = out;
    img->width = (int32_t)dw;
    img->height = (int32_t)dh;
    return 0;
}

/* ---- netpbm (PBM/PGM/PPM: P1..P6) ----------------------------------------------------------------
 * Netpbm's pbm(5)/pgm(5)/ppm(5): magic, then width, height and (except for PBM) maxval as ASCII
 * decimals separated by whitespace, with '#' comments to the end of a line. Binary formats have
 * exactly one whitespace byte after the last header field, then the samples (PBM: 1 bit per pixel,
 * rows padded to a byte, 1 = black; PGM/PPM: 1 byte per sample, or 2 big-endian bytes when
 * maxval > 255). The ASCII formats hold the samples as decimal tokens (PBM: the characters 0/1, which
 * need no separator). */

typedef struct {
    const uint8_t *p;
    size_t n, pos;
    const char *name;
} PnmReader;

static int pnm_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Skips whitespace and comments. */
static void pnm_skip(PnmReader *r) {
    while (r->pos < r->n) {
        uint8_t c = r->p[r->pos];
        if (pnm_space(c)) r->pos++;
        else if (c == '#') {
            while (r->pos < r->n && r->p[r->pos] != '\n' && r->p[r->pos] != '\r') r->pos++;
        } else break;
    }
}

/* Reads an unsigned decimal, at most `max`. */
static int pnm_number(PnmReader *r, const char *what, uint32_t max, uint32_t *v, BlvError *err) {
    pnm_skip(r);
    if (r->pos >= r->n) return blv_fail(err, "%s: truncated netpbm file (expected %s)", r->name, what);
    if (r->p[r->pos] < '0' || r->p[r->pos] > '9')
        return blv_fail(err, "%s: bad netpbm %s (unexpected byte 0x%02x at offset %zu)", r->name, what,
                        r->p[r->pos], r->pos);
    uint64_t x = 0;
    while (r->pos < r->n && r->p[r->pos] >= '0' && r->p[r->pos] <= '9') {
        x = x * 10 + (uint64_t)(r->p[r->pos++] - '0');
        if (x > max) return blv_fail(err, "%s: netpbm %s is too large (more than %u)", r->name, what, max);
    }
    *v = (uint32_t)x;
    return 0;
}

/* Samples of every maxval become round(v / maxval * 255), rounded half to even in double: the same
 * expression, evaluated the same way, as Pillow's PpmDecoder/PpmPlainDecoder. */
static void pnm_scale_table(uint8_t *table, uint32_t maxval) {
    for (uint32_t v = 0; v <= maxval; v++) table[v] = (uint8_t)rint((double)v / (double)maxval * 255.0);
}

static int pnm_decode_pbm(Image *img, PnmReader *r, int ascii, BlvError *err) {
    size_t w = (size_t)img->width, h = (size_t)img->height;
    if (!ascii) {
        size_t row_bytes = (w + 7) / 8;
        if (r->n - r->pos < row_bytes * h)
            return blv_fail(err, "%s: truncated PBM data (need %zu bytes, have %zu)", r->name,
                            row_bytes * h, r->n - r->pos);
        for (size_t y = 0; y < h; y++) {
            const uint8_t *row = r->p + r->pos + y * row_bytes;
            for (size_t x = 0; x < w; x++) {
                uint8_t v = (row[x >> 3] >> (7 - (x & 7))) & 1 ? 0 : 255;
                memset(img->rgb + (y * w + x) * 3, v, 3);
            }
        }
        return 0;
    }
    for (size_t i = 0; i < w * h; i++) {
        pnm_skip(r);
        if (r->pos >= r->n) return blv_fail(err, "%s: truncated PBM data (%zu of %zu pixels)", r->name, i, w * h);
        uint8_t c = r->p[r->pos++];
        if (c != '0' && c != '1')
            return blv_fail(err, "%s: bad PBM pixel 0x%02x at offset %zu", r->name, c, r->pos - 1);
        memset(img->rgb + i * 3, c == '1' ? 0 : 255, 3);
    }
    return 0;
}

static int pnm_decode_samples(Image *img, PnmReader *r, int ascii, int channels, uint32_t maxval,
                              BlvError *err) {
    uint8_t *table = blv_malloc((size_t)maxval + 1, "the netpbm sample table", err);
    if (!table) return -1;
    pnm_scale_table(table, maxval);
    size_t n_pixels = (size_t)img->width * (size_t)img->height;
    size_t n_samples = n_pixels * (size_t)channels;
    int bytes = maxval > 255 ? 2 : 1;
    if (!ascii && (r->n - r->pos) / (size_t)bytes < n_samples) {
        free(table);
        return blv_fail(err, "%s: truncated netpbm data (need %zu bytes, have %zu)", r->name,
                        n_samples * (size_t)bytes, r->n - r->pos);
    }
    for (size_t i = 0; i < n_samples; i++) {
        uint32_t v;
        if (ascii) {
            if (pnm_number(r, "sample", 65535, &v, err) != 0) {
                free(table);
                return -1;
            }
            if (v > maxval) {
                free(table);
                return blv_fail(err, "%s: netpbm sample %u exceeds maxval %u", r->name, v, maxval);
            }
        } else {
            const uint8_t *s = r->p + r->pos + i * (size_t)bytes;
            v = bytes == 2 ? (uint32_t)s[0] << 8 | s[1] : s[0];
        }
        uint8_t out = v > maxval ? 255 : table[v];
        if (channels == 3) img->rgb[i] = out;
        else memset(img->rgb + i * 3, out, 3);
    }
    free(table);
    return 0;
}

int image_decode_netpbm(Image *img, const uint8_t *data, size_t size, const char *name,
                        const ImageLimits *limits, BlvError *err) {
    memset(img, 0, sizeof *img);
    PnmReader r = {data, size, 2, name};
    if (size < 2 || data[0] != 'P' || data[1] < '1' || data[1] > '6')
        return blv_fail(err, "%s: not a netpbm file", name);
    int kind = data[1] - '0';                /* 1/4 PBM, 2/5 PGM, 3/6 PPM */
    int ascii = kind <= 3;
    int type = ascii ? kind : kind - 3;      /* 1 PBM, 2 PGM, 3 PPM */
    if (size > 2 && !pnm_space(data[2]) && data[2] != '#')
        return blv_fail(err, "%s: bad netpbm magic", name);
    uint32_t w, h, maxval = 1;
    if (pnm_number(&r, "width", 0x7FFFFFFF, &w, err) != 0) return -1;
    if (pnm_number(&r, "height", 0x7FFFFFFF, &h, err) != 0) return -1;
    if (type != 1) {
        if (pnm_number(&r, "maxval", 65535, &maxval, err) != 0) return -1;
        if (maxval == 0) return blv_fail(err, "%s: netpbm maxval is 0", name);
    }
    /* Binary data starts after exactly one whitespace byte. */
    if (!ascii) {
        if (r.pos >= r.n || !pnm_space(r.p[r.pos]))
            return blv_fail(err, "%s: truncated netpbm header (no whitespace before the data)", name);
        r.pos++;
    }
    if (image_alloc(img, w, h, name, limits, err) != 0) return -1;
    int rc = type == 1 ? pnm_decode_pbm(img, &r, ascii, err)
                       : pnm_decode_samples(img, &r, ascii, type == 3 ? 3 : 1, maxval, err);
    if (rc != 0) image_free(img);
    return rc;
}
