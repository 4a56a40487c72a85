/* image_png.c — PNG decoding (PNG specification, 2nd edition, W3C/ISO 15948) and the zlib/inflate
 * decompressor it needs (RFC 1950, RFC 1951), written from scratch.
 *
 * Strict where the spec is: every chunk's CRC is checked, unknown critical chunks are rejected, the
 * zlib stream must inflate to exactly the size the header implies, its Adler-32 must match and
 * nothing may follow it. Huffman codes are validated as zlib does (no over-subscribed codes; an
 * incomplete code only as a single one-bit code). Policies (alpha dropped, 16-bit high byte, EXIF)
 * are described in image.h. */
#include "image.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checksums ------------------------------------------------------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* The CRC of PNG spec Annex D / ISO 3309: polynomial 0xEDB88320 (reflected), init and final xor ~0. */
static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n) {
    pthread_once(&crc_once, crc_init);
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc;
}

uint32_t image_crc32(const uint8_t *data, size_t n) { return crc_update(0xFFFFFFFFu, data, n) ^ 0xFFFFFFFFu; }

uint32_t image_adler32(const uint8_t *data, size_t n) {
    /* RFC 1950 §8.2; sums reduced every 5552 bytes, the most that cannot overflow 32 bits */
    uint32_t a = 1, b = 0;
    while (n > 0) {
        size_t k = n < 5552 ? n : 5552;
        n -= k;
        while (k--) {
            a += *data++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return b << 16 | a;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* ---- inflate (RFC 1951) ------------------------------------------------------------------------- */

/* A canonical Huffman code (RFC 1951 §3.2.2). Codes of up to FAST_BITS bits are found with one
 * table lookup on the next FAST_BITS input bits; longer ones by walking the code lengths. */
#define FAST_BITS 9
#define MAX_CODE_BITS 15

typedef struct {
    uint16_t fast[1 << FAST_BITS];   /* length << 9 | symbol, or 0 if the code is longer */
    uint16_t count[MAX_CODE_BITS + 1]; /* number of codes of each length */
    uint16_t symbol[288];            /* symbols in canonical code order */
    int n_codes;
} Huffman;

typedef enum { CODE_LENGTHS, LITLEN, DISTANCE } HuffKind;

typedef struct {
    const uint8_t *src;
    size_t n, pos;        /* next byte to load into bitbuf */
    Huffman *fixed_lit, *fixed_dist; /* the fixed codes, built at the first fixed block */
    uint64_t bitbuf;      /* bits not yet consumed, LSB first (RFC 1951 §3.1.1) */
    int bitcount;
    uint8_t *out;
    size_t out_size, out_pos;
    const char *what;
    BlvError *err;
} Inflate;

static void refill(Inflate *z) {
    while (z->bitcount <= 56 && z->pos < z->n) {
        z->bitbuf |= (uint64_t)z->src[z->pos++] << z->bitcount;
        z->bitcount += 8;
    }
}

static int truncated(Inflate *z) {
    return blv_fail(z->err, "%s: truncated compressed data (zlib stream ends early)", z->what);
}

/* Takes k (<= 32) bits, first bit in the lowest position. */
static int get_bits(Inflate *z, int k, uint32_t *v) {
    *v = 0;
    if (z->bitcount < k) refill(z);
    if (z->bitcount < k) return truncated(z);
    *v = (uint32_t)(z->bitbuf & ((1ull << k) - 1));
    z->bitbuf >>= k;
    z->bitcount -= k;
    return 0;
}

static unsigned reverse_bits(unsigned code, int len) {
    unsigned r = 0;
    for (int i = 0; i < len; i++, code >>= 1) r = r << 1 | (code & 1);
    return r;
}

/* Builds the code from code lengths and validates it the way zlib does: over-subscribed codes are
 * always an error; an incomplete code is accepted only when it is a single code of length 1 (which
 * RFC 1951 §3.2.7 allows for distances, and zlib for literals too), never for the code-length code. */
static int huff_build(Huffman *h, const uint8_t *lengths, int n, HuffKind kind, Inflate *z) {
    static const char *names[] = {"code-length", "literal/length", "distance"};
    memset(h, 0, sizeof *h);
    for (int i = 0; i < n; i++) h->count[lengths[i]]++;
    h->count[0] = 0;
    int max_len = 0, left = 1;
    for (int len = 1; len <= MAX_CODE_BITS; len++) {
        left <<= 1;
        left -= h->count[len];
        if (left < 0) return blv_fail(z->err, "%s: over-subscribed %s Huffman code", z->what, names[kind]);
        if (h->count[len]) max_len = len;
        h->n_codes += h->count[len];
    }
    if (h->n_codes == 0 && kind == CODE_LENGTHS)
        return blv_fail(z->err, "%s: empty code-length Huffman code", z->what);
    if (left > 0 && h->n_codes > 0 && (kind == CODE_LENGTHS || max_len != 1))
        return blv_fail(z->err, "%s: incomplete %s Huffman code", z->what, names[kind]);

    /* symbols sorted by (length, value): the canonical order of §3.2.2 */
    uint16_t offset[MAX_CODE_BITS + 2];
    offset[1] = 0;
    for (int len = 1; len <= MAX_CODE_BITS; len++) offset[len + 1] = (uint16_t)(offset[len] + h->count[len]);
    for (int i = 0; i < n; i++)
        if (lengths[i]) h->symbol[offset[lengths[i]]++] = (uint16_t)i;

    /* fast table: the code bits arrive first-bit-first, i.e. reversed in the bit buffer */
    unsigned code = 0;
    int index = 0;
    for (int len = 1; len <= FAST_BITS; len++) {
        for (int k = 0; k < h->count[len]; k++, index++, code++) {
            uint16_t entry = (uint16_t)(len << 9 | h->symbol[index]);
            for (unsigned r = reverse_bits(code, len); r < (1u << FAST_BITS); r += 1u << len) h->fast[r] = entry;
        }
        code <<= 1;
    }
    return 0;
}

/* Decodes one symbol. */
static int huff_decode(Inflate *z, const Huffman *h, int *symbol) {
    *symbol = 0;
    if (z->bitcount < MAX_CODE_BITS) refill(z);
    uint16_t e = h->fast[z->bitbuf & ((1u << FAST_BITS) - 1)];
    int len = e >> 9;
    if (e && len <= z->bitcount) {
        z->bitbuf >>= len;
        z->bitcount -= len;
        *symbol = e & 0x1FF;
        return 0;
    }
    /* walk the lengths: codes of length `len` are first..first+count-1 (§3.2.2) */
    int code = 0, first = 0, index = 0;
    for (len = 1; len <= MAX_CODE_BITS && len <= z->bitcount; len++) {
        code |= (int)((z->bitbuf >> (len - 1)) & 1);
        int count = h->count[len];
        if (code - first < count) {
            z->bitbuf >>= len;
            z->bitcount -= len;
            *symbol = h->symbol[index + code - first];
            return 0;
        }
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    if (len <= MAX_CODE_BITS) return truncated(z);
    return blv_fail(z->err, "%s: invalid Huffman code in compressed data", z->what);
}

/* §3.2.5: base lengths and extra bits for length codes 257..285, distances for codes 0..29. */
static const uint16_t length_base[29] = {3,  4,  5,  6,  7,  8,  9,  10,  11,  13,  15,  17,  19,  23, 27,
                                         31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t length_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                         2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* The body of a compressed block (§3.2.5): literals and <length, distance> pairs up to code 256. */
static int inflate_codes(Inflate *z, const Huffman *lit, const Huffman *dist) {
    for (;;) {
        int sym;
        if (huff_decode(z, lit, &sym) != 0) return -1;
        if (sym < 256) {
            if (z->out_pos >= z->out_size)
                return blv_fail(z->err, "%s: more compressed data than the image needs", z->what);
            z->out[z->out_pos++] = (uint8_t)sym;
            continue;
        }
        if (sym == 256) return 0;
        sym -= 257;
        if (sym >= 29) return blv_fail(z->err, "%s: invalid length code %d", z->what, sym + 257);
        uint32_t extra = 0, dextra = 0;
        if (get_bits(z, length_extra[sym], &extra) != 0) return -1;
        size_t len = length_base[sym] + extra;
        int dsym;
        if (huff_decode(z, dist, &dsym) != 0) return -1;
        if (dsym >= 30) return blv_fail(z->err, "%s: invalid distance code %d", z->what, dsym);
        if (get_bits(z, dist_extra[dsym], &dextra) != 0) return -1;
        size_t d = dist_base[dsym] + dextra;
        if (d > z->out_pos)
            return blv_fail(z->err, "%s: distance %zu reaches before the start of the data (at %zu)",
                            z->what, d, z->out_pos);
        if (len > z->out_size - z->out_pos)
            return blv_fail(z->err, "%s: more compressed data than the image needs", z->what);
        /* byte by byte: the source may overlap what is being written (a run) */
        uint8_t *o = z->out + z->out_pos;
        for (size_t i = 0; i < len; i++) o[i] = o[(ptrdiff_t)i - (ptrdiff_t)d];
        z->out_pos += len;
    }
}

/* Drops the bits up to the next byte boundary and gives unconsumed whole bytes back to the source,
 * so stored blocks and the Adler-32 trailer can be read directly. */
static void align_to_byte(Inflate *z) {
    int drop = z->bitcount & 7;
    z->bitbuf >>= drop;
    z->bitcount -= drop;
    z->pos -= (size_t)(z->bitcount / 8);
    z->bitbuf = 0;
    z->bitcount = 0;
}

static int inflate_stored(Inflate *z) {
    align_to_byte(z);
    if (z->n - z->pos < 4) return truncated(z);
    const uint8_t *p = z->src + z->pos;
    unsigned len = p[0] | p[1] << 8, nlen = p[2] | p[3] << 8;
    if (len != (~nlen & 0xFFFF))
        return blv_fail(z->err, "%s: stored block length %u does not match its complement", z->what, len);
    z->pos += 4;
    if (z->n - z->pos < len) return truncated(z);
    if (len > z->out_size - z->out_pos)
        return blv_fail(z->err, "%s: more compressed data than the image needs", z->what);
    memcpy(z->out + z->out_pos, z->src + z->pos, len);
    z->pos += len;
    z->out_pos += len;
    return 0;
}

static int inflate_fixed(Inflate *z, Huffman *lit, Huffman *dist) {
    /* §3.2.6; all 288 literal/length and 32 distance symbols so the codes are complete — the
     * invalid symbols 286, 287, 30 and 31 are rejected when decoded. Built once per stream: a
     * stream of many tiny fixed blocks must not cost a table build each. */
    if (!z->fixed_lit) {
        uint8_t lengths[288 + 32];
        for (int i = 0; i < 144; i++) lengths[i] = 8;
        for (int i = 144; i < 256; i++) lengths[i] = 9;
        for (int i = 256; i < 280; i++) lengths[i] = 7;
        for (int i = 280; i < 288; i++) lengths[i] = 8;
        for (int i = 288; i < 320; i++) lengths[i] = 5;
        if (huff_build(lit, lengths, 288, LITLEN, z) != 0) return -1;
        if (huff_build(dist, lengths + 288, 32, DISTANCE, z) != 0) return -1;
        z->fixed_lit = lit;
        z->fixed_dist = dist;
    }
    return inflate_codes(z, z->fixed_lit, z->fixed_dist);
}

static int inflate_dynamic(Inflate *z) {
    /* §3.2.7: HLIT, HDIST, HCLEN, the code-length code, then run-length coded code lengths */
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint32_t hlit, hdist, hclen;
    if (get_bits(z, 5, &hlit) || get_bits(z, 5, &hdist) || get_bits(z, 4, &hclen)) return -1;
    hlit += 257;
    hdist += 1;
    hclen += 4;
    if (hlit > 286 || hdist > 30)
        return blv_fail(z->err, "%s: too many length or distance codes (%u, %u)", z->what, hlit, hdist);
    uint8_t cl_lengths[19] = {0};
    for (uint32_t i = 0; i < hclen; i++) {
        uint32_t v;
        if (get_bits(z, 3, &v) != 0) return -1;
        cl_lengths[order[i]] = (uint8_t)v;
    }
    Huffman cl;
    if (huff_build(&cl, cl_lengths, 19, CODE_LENGTHS, z) != 0) return -1;

    uint8_t lengths[286 + 30];
    uint32_t total = hlit + hdist, i = 0;
    while (i < total) {
        int sym;
        if (huff_decode(z, &cl, &sym) != 0) return -1;
        if (sym < 16) {
            lengths[i++] = (uint8_t)sym;
            continue;
        }
        uint32_t repeat, value = 0;
        if (sym == 16) {
            if (i == 0) return blv_fail(z->err, "%s: code length repeat with no previous length", z->what);
            value = lengths[i - 1];
            if (get_bits(z, 2, &repeat) != 0) return -1;
            repeat += 3;
        } else if (sym == 17) {
            if (get_bits(z, 3, &repeat) != 0) return -1;
            repeat += 3;
        } else {
            if (get_bits(z, 7, &repeat) != 0) return -1;
            repeat += 11;
        }
        if (repeat > total - i) return blv_fail(z->err, "%s: code lengths overrun the code count", z->what);
        memset(lengths + i, (int)value, repeat);
        i += repeat;
    }
    if (lengths[256] == 0) return blv_fail(z->err, "%s: no end-of-block code", z->what);
    Huffman lit, dist;
    if (huff_build(&lit, lengths, (int)hlit, LITLEN, z) != 0) return -1;
    if (huff_build(&dist, lengths + hlit, (int)hdist, DISTANCE, z) != 0) return -1;
    return inflate_codes(z, &lit, &dist);
}

int image_zlib_decompress(const uint8_t *src, size_t src_size, uint8_t *out, size_t out_size,
                          const char *what, BlvError *err) {
    Inflate z = {src, src_size, 0, NULL, NULL, 0, 0, out, out_size, 0, what, err};
    Huffman fixed_lit, fixed_dist;
    /* RFC 1950 §2.2: CMF (method 8 = deflate, window <= 32K) and FLG (check bits, no dictionary) */
    if (src_size < 2) return truncated(&z);
    unsigned cmf = src[0], flg = src[1];
    if ((cmf & 15) != 8 || (cmf >> 4) > 7)
        return blv_fail(err, "%s: not a deflate zlib stream (CMF 0x%02x)", what, cmf);
    if ((cmf * 256 + flg) % 31 != 0) return blv_fail(err, "%s: bad zlib header check bits", what);
    if (flg & 0x20) return blv_fail(err, "%s: zlib preset dictionary is not allowed", what);
    z.pos = 2;
    /* §3.2.3: blocks until one has BFINAL set. Every block either makes output or consumes input,
     * and output is bounded, so this ends. */
    for (uint32_t final = 0; !final;) {
        uint32_t type;
        if (get_bits(&z, 1, &final) != 0 || get_bits(&z, 2, &type) != 0) return -1;
        int rc;
        if (type == 0) rc = inflate_stored(&z);
        else if (type == 1) rc = inflate_fixed(&z, &fixed_lit, &fixed_dist);
        else if (type == 2) rc = inflate_dynamic(&z);
        else return blv_fail(err, "%s: invalid deflate block type 3", what);
        if (rc != 0) return -1;
    }
    align_to_byte(&z);
    if (z.out_pos != out_size)
        return blv_fail(err, "%s: compressed data holds %zu bytes, the image needs %zu", what, z.out_pos,
                        out_size);
    if (z.n - z.pos < 4) return blv_fail(err, "%s: truncated zlib stream (no Adler-32)", what);
    uint32_t want = be32(src + z.pos), got = image_adler32(out, out_size);
    if (want != got)
        return blv_fail(err, "%s: Adler-32 mismatch (stored 0x%08x, computed 0x%08x)", what, want, got);
    z.pos += 4;
    if (z.pos != z.n) return blv_fail(err, "%s: %zu bytes after the end of the zlib stream", what, z.n - z.pos);
    return 0;
}

/* ---- PNG ------------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    uint32_t width, height;
    int depth, color_type, interlace;
    int channels;       /* samples per pixel */
    int pixel_bits;     /* bits per pixel */
    uint8_t palette[256 * 3];
    int palette_n;
    int orientation;
} Png;

/* Adam7 (§8.2): pass origins and steps. */
static const int adam7[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};

static void pass_size(const Png *p, int pass, uint64_t *pw, uint64_t *ph) {
    if (!p->interlace) {
        *pw = p->width;
        *ph = p->height;
        return;
    }
    const int *a = adam7[pass];
    *pw = p->width > (uint32_t)a[0] ? (p->width - (uint32_t)a[0] + (uint32_t)a[2] - 1) / (uint32_t)a[2] : 0;
    *ph = p->height > (uint32_t)a[1] ? (p->height - (uint32_t)a[1] + (uint32_t)a[3] - 1) / (uint32_t)a[3] : 0;
}

static uint64_t row_bytes(const Png *p, uint64_t pw) { return (pw * (uint64_t)p->pixel_bits + 7) / 8; }

static int parse_ihdr(Png *p, const uint8_t *d, uint32_t len, const ImageLimits *limits, BlvError *err) {
    if (len != 13) return blv_fail(err, "%s: IHDR has length %u, not 13", p->name, len);
    p->width = be32(d);
    p->height = be32(d + 4);
    p->depth = d[8];
    p->color_type = d[9];
    p->interlace = d[12];
    if (p->width == 0 || p->height == 0 || p->width > 0x7FFFFFFFu || p->height > 0x7FFFFFFFu)
        return blv_fail(err, "%s: invalid image size %ux%u", p->name, p->width, p->height);
    if (image_check_size(p->width, p->height, p->name, limits, err) != 0) return -1;
    /* §11.2.2 Table 11.1: allowed bit depths per colour type */
    int ok = 0, d8 = p->depth == 8 || p->depth == 16;
    switch (p->color_type) {
    case 0: ok = p->depth == 1 || p->depth == 2 || p->depth == 4 || d8; p->channels = 1; break;
    case 2: ok = d8; p->channels = 3; break;
    case 3: ok = p->depth == 1 || p->depth == 2 || p->depth == 4 || p->depth == 8; p->channels = 1; break;
    case 4: ok = d8; p->channels = 2; break;
    case 6: ok = d8; p->channels = 4; break;
    default: return blv_fail(err, "%s: invalid PNG colour type %d", p->name, p->color_type);
    }
    if (!ok) return blv_fail(err, "%s: invalid bit depth %d for colour type %d", p->name, p->depth, p->color_type);
    if (d[10] != 0) return blv_fail(err, "%s: unknown compression method %d", p->name, d[10]);
    if (d[11] != 0) return blv_fail(err, "%s: unknown filter method %d", p->name, d[11]);
    if (p->interlace > 1) return blv_fail(err, "%s: unknown interlace method %d", p->name, p->interlace);
    p->pixel_bits = p->depth * p->channels;
    return 0;
}

/* §9.2: the five filter types, undone in place. `prev` is the previous unfiltered row of the same
 * pass, or NULL for its first row (treated as zeros). */
static int unfilter_row(uint8_t *row, const uint8_t *prev, size_t n, size_t bpp, int type) {
    switch (type) {
    case 0: break;
    case 1:
        for (size_t i = bpp; i < n; i++) row[i] = (uint8_t)(row[i] + row[i - bpp]);
        break;
    case 2:
        if (prev)
            for (size_t i = 0; i < n; i++) row[i] = (uint8_t)(row[i] + prev[i]);
        break;
    case 3:
        for (size_t i = 0; i < n; i++) {
            unsigned a = i >= bpp ? row[i - bpp] : 0, b = prev ? prev[i] : 0;
            row[i] = (uint8_t)(row[i] + ((a + b) >> 1));
        }
        break;
    case 4:
        for (size_t i = 0; i < n; i++) {
            int a = i >= bpp ? row[i - bpp] : 0, b = prev ? prev[i] : 0;
            int c = i >= bpp && prev ? prev[i - bpp] : 0;
            int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c); /* §9.4 Paeth */
            int pred = (pa <= pb && pa <= pc) ? a : pb <= pc ? b : c;
            row[i] = (uint8_t)(row[i] + pred);
        }
        break;
    default: return -1;
    }
    return 0;
}

/* Sample x of a row packed at `depth` < 8 bits, leftmost pixel in the high bits (§7.2). */
static unsigned packed_sample(const uint8_t *row, uint64_t x, int depth) {
    uint64_t bit = x * (uint64_t)depth;
    return (row[bit >> 3] >> (8 - depth - (int)(bit & 7))) & ((1u << depth) - 1);
}

/* Converts pw pixels of an unfiltered row to RGB, writing them `step` bytes apart. */
static void emit_row(const Png *p, const uint8_t *row, uint64_t pw, uint8_t *out, size_t step) {
    int d = p->depth;
    int hi = d == 16 ? 2 : 1; /* bytes per sample; of 16-bit samples only the high (first) byte */
    for (uint64_t x = 0; x < pw; x++, out += step) {
        switch (p->color_type) {
        case 0:
        case 4: {
            unsigned g;
            if (d < 8) g = packed_sample(row, x, d) * (255u / ((1u << d) - 1)); /* 1→255, 2→85, 4→17 */
            else g = row[x * (uint64_t)p->channels * (uint64_t)hi];
            out[0] = out[1] = out[2] = (uint8_t)g;
            break;
        }
        case 3: {
            unsigned i = d < 8 ? packed_sample(row, x, d) : row[x];
            if ((int)i < p->palette_n) memcpy(out, p->palette + 3 * i, 3);
            else out[0] = out[1] = out[2] = 0; /* beyond PLTE: black, as Pillow */
            break;
        }
        default: { /* 2, 6: R,G,B(,A) */
            const uint8_t *s = row + x * (uint64_t)p->channels * (uint64_t)hi;
            out[0] = s[0];
            out[1] = s[hi];
            out[2] = s[2 * hi];
            break;
        }
        }
    }
}

/* Unfilters every pass of the inflated data and scatters its pixels into the image. */
static int png_reconstruct(const Png *p, uint8_t *raw, Image *img, BlvError *err) {
    size_t bpp = (size_t)(p->pixel_bits >= 8 ? p->pixel_bits / 8 : 1);
    int n_passes = p->interlace ? 7 : 1;
    size_t at = 0;
    for (int pass = 0; pass < n_passes; pass++) {
        uint64_t pw, ph;
        pass_size(p, pass, &pw, &ph);
        if (pw == 0 || ph == 0) continue; /* §8.2: empty passes have no rows, not even filter bytes */
        size_t rb = (size_t)row_bytes(p, pw);
        int x0 = p->interlace ? adam7[pass][0] : 0, y0 = p->interlace ? adam7[pass][1] : 0;
        int xs = p->interlace ? adam7[pass][2] : 1, ys = p->interlace ? adam7[pass][3] : 1;
        const uint8_t *prev = NULL;
        for (uint64_t y = 0; y < ph; y++) {
            uint8_t *row = raw + at + 1;
            int type = raw[at];
            if (unfilter_row(row, prev, rb, bpp, type) != 0)
                return blv_fail(err, "%s: invalid filter type %d in row %llu%s", p->name, type,
                                (unsigned long long)y, p->interlace ? " of an interlace pass" : "");
            uint64_t oy = (uint64_t)y0 + y * (uint64_t)ys;
            uint8_t *out = img->rgb + ((size_t)oy * p->width + (size_t)x0) * 3;
            emit_row(p, row, pw, out, (size_t)xs * 3);
            prev = row;
            at += rb + 1;
        }
    }
    return 0;
}

static int chunk_is(const uint8_t *type, const char *name) { return memcmp(type, name, 4) == 0; }

/* One chunk (§5.3): length, type, data, and a CRC over type and data. */
typedef struct {
    uint32_t len;
    const uint8_t *type, *body;
    char tname[5]; /* the type, printable, for messages */
} Chunk;

/* Reads and validates the chunk at pos: type letters, length within the file, CRC. */
static int read_chunk(const Png *p, const uint8_t *data, size_t size, size_t pos, int after_idat, Chunk *c,
                      BlvError *err) {
    if (size - pos < 12)
        return blv_fail(err, "%s: truncated PNG (chunk header at offset %zu%s)", p->name, pos,
                        after_idat ? ", no IEND" : "");
    c->len = be32(data + pos);
    c->type = data + pos + 4;
    c->body = data + pos + 8;
    for (int i = 0; i < 4; i++) c->tname[i] = (c->type[i] >= 32 && c->type[i] < 127) ? (char)c->type[i] : '?';
    c->tname[4] = 0;
    for (int i = 0; i < 4; i++) /* §5.4: ISO 646 letters only */
        if (!((c->type[i] >= 'A' && c->type[i] <= 'Z') || (c->type[i] >= 'a' && c->type[i] <= 'z')))
            return blv_fail(err, "%s: invalid chunk type '%s' at offset %zu", p->name, c->tname, pos);
    if (c->len > 0x7FFFFFFFu) return blv_fail(err, "%s: chunk '%s' has invalid length %u", p->name, c->tname, c->len);
    if (size - pos - 12 < c->len)
        return blv_fail(err, "%s: truncated PNG (chunk '%s' at offset %zu needs %u bytes)", p->name, c->tname, pos,
                        c->len);
    uint32_t crc = be32(c->body + c->len), want = image_crc32(c->type, (size_t)c->len + 4);
    if (crc != want)
        return blv_fail(err, "%s: CRC mismatch in chunk '%s' at offset %zu (stored 0x%08x, computed 0x%08x)", p->name,
                        c->tname, pos, crc, want);
    return 0;
}

/* Walks every chunk up to IEND (§5.6 ordering), validating each, reading IHDR, PLTE and eXIf,
 * and locating the run of consecutive IDAT chunks. */
static int png_read_chunks(Png *p, const uint8_t *data, size_t size, const ImageLimits *limits,
                           size_t *idat_first, size_t *idat_total, BlvError *err) {
    const char *name = p->name;
    int seen_ihdr = 0, seen_plte = 0, idat_state = 0; /* 0 none yet, 1 in the IDAT run, 2 after it */
    *idat_first = *idat_total = 0;
    for (size_t pos = 8;;) {
        Chunk c;
        if (read_chunk(p, data, size, pos, idat_state, &c, err) != 0) return -1;
        if (!seen_ihdr && chunk_is(c.type, "CgBI"))
            return blv_fail(err, "%s: Apple CgBI PNG (the iPhone-optimized variant, not standard PNG) is not supported", name);
        if (!seen_ihdr && !chunk_is(c.type, "IHDR"))
            return blv_fail(err, "%s: first chunk is '%s', not IHDR", name, c.tname);
        if (idat_state == 1 && !chunk_is(c.type, "IDAT")) idat_state = 2;

        if (chunk_is(c.type, "IHDR")) {
            if (seen_ihdr) return blv_fail(err, "%s: more than one IHDR", name);
            seen_ihdr = 1;
            if (parse_ihdr(p, c.body, c.len, limits, err) != 0) return -1;
        } else if (chunk_is(c.type, "PLTE")) {
            if (seen_plte) return blv_fail(err, "%s: more than one PLTE", name);
            if (idat_state) return blv_fail(err, "%s: PLTE after IDAT", name);
            if (p->color_type == 0 || p->color_type == 4) return blv_fail(err, "%s: PLTE in a grayscale image", name);
            if (c.len == 0 || c.len % 3 != 0 || c.len > 256 * 3)
                return blv_fail(err, "%s: PLTE has invalid length %u", name, c.len);
            seen_plte = 1;
            memcpy(p->palette, c.body, c.len);
            p->palette_n = (int)(c.len / 3);
        } else if (chunk_is(c.type, "IDAT")) {
            if (idat_state == 2) return blv_fail(err, "%s: IDAT chunks are not consecutive", name);
            if (p->color_type == 3 && !seen_plte) return blv_fail(err, "%s: palette image without PLTE", name);
            if (idat_state == 0) *idat_first = pos;
            idat_state = 1;
            *idat_total += c.len;
        } else if (chunk_is(c.type, "IEND")) {
            break;
        } else if (chunk_is(c.type, "eXIf")) {
            /* PNG 3rd edition §11.3.6.3 (Extensions 1.5): EXIF without the JPEG "Exif\0\0" prefix,
             * which some writers leave in anyway */
            size_t skip = c.len >= 6 && memcmp(c.body, "Exif\0\0", 6) == 0 ? 6 : 0;
            if (!p->orientation) p->orientation = image_exif_orientation(c.body + skip, c.len - skip);
        } else if (!(c.type[0] & 0x20)) { /* §5.4: bit 5 of the first byte clear = critical */
            return blv_fail(err, "%s: unknown critical chunk '%s'", name, c.tname);
        }
        /* other ancillary chunks (tRNS, gAMA, text, ...) are not needed: see image.h */
        pos += 12 + (size_t)c.len;
    }
    if (!idat_state) return blv_fail(err, "%s: no IDAT chunk", name);
    return 0;
}

/* The inflated size the header implies: one filter byte per row of every non-empty pass. */
static int png_raw_size(const Png *p, size_t *size, BlvError *err) {
    uint64_t total = 0;
    for (int pass = 0; pass < (p->interlace ? 7 : 1); pass++) {
        uint64_t pw, ph;
        pass_size(p, pass, &pw, &ph);
        if (pw == 0 || ph == 0) continue;
        uint64_t rb = row_bytes(p, pw) + 1;
        if (ph > (UINT64_MAX - total) / rb) return blv_fail(err, "%s: image data size overflows", p->name);
        total += ph * rb;
    }
    if (total > SIZE_MAX) return blv_fail(err, "%s: image data too large for this machine", p->name);
    *size = (size_t)total;
    return 0;
}

/* The zlib stream is split across the IDAT chunks: joins their data (§10.1). */
static uint8_t *png_gather_idat(const Png *p, const uint8_t *data, size_t first, size_t total, BlvError *err) {
    uint8_t *z = blv_malloc(total, "the PNG compressed data", err);
    if (!z) {
        blv_fail_prefix(err, "%s", p->name);
        return NULL;
    }
    for (size_t pos = first, n = 0; n < total;) {
        uint32_t len = be32(data + pos);
        memcpy(z + n, data + pos + 8, len);
        n += len;
        pos += 12 + (size_t)len;
    }
    return z;
}

int image_decode_png(Image *img, const uint8_t *data, size_t size, const char *name,
                     const ImageLimits *limits, BlvError *err) {
    memset(img, 0, sizeof *img);
    Png p;
    memset(&p, 0, sizeof p);
    p.name = name;
    if (size < 8 || memcmp(data, "\x89PNG\r\n\x1a\n", 8) != 0) return blv_fail(err, "%s: not a PNG file", name);
    size_t idat_first = 0, idat_total = 0, raw_size = 0;
    if (png_read_chunks(&p, data, size, limits, &idat_first, &idat_total, err) != 0) return -1;
    if (png_raw_size(&p, &raw_size, err) != 0) return -1;
    uint8_t *zdata = png_gather_idat(&p, data, idat_first, idat_total, err);
    if (!zdata) return -1;
    uint8_t *raw = blv_malloc(raw_size, "the PNG image data", err);
    int rc = raw ? 0 : blv_fail_prefix(err, "%s", name);
    if (rc == 0) {
        char what[600];
        snprintf(what, sizeof what, "%.500s: IDAT", name);
        rc = image_zlib_decompress(zdata, idat_total, raw, raw_size, what, err);
    }
    free(zdata);
    if (rc == 0) rc = image_alloc(img, p.width, p.height, name, limits, err);
    if (rc == 0) rc = png_reconstruct(&p, raw, img, err);
    free(raw);
    if (rc == 0) rc = image_apply_orientation(img, p.orientation, err);
    if (rc != 0) image_free(img);
    return rc;
}
