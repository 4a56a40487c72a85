/* dump.c — .npy writing and reading, the stage-dump directory, and the comparison behind
 * `bluelmv compare` (format and definitions in dump.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "dump.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64                   /* numpy's ARRAY_ALIGN */
#define NPY_GROWTH_DIGITS 21           /* numpy's GROWTH_AXIS_MAX_DIGITS: spare room after the dict */
#define NPY_MAX_HEADER (1u << 20)      /* a longer header is malformed (numpy itself refuses > 10000) */
#define CHUNK_ELEMS ((int64_t)1 << 16) /* elements converted per block when streaming */

/* ---- dtypes and byte order ---------------------------------------------------------------------- */

static const char *const dtype_descr[] = {"<f2", "<f4", "<f8", "<i4", "<i8"};
static const int dtype_size[] = {2, 4, 8, 4, 8};

const char *npy_dtype_descr(NpyDtype t) { return (unsigned)t < 5 ? dtype_descr[t] : "?"; }
int npy_dtype_size(NpyDtype t) { return (unsigned)t < 5 ? dtype_size[t] : 0; }
int npy_dtype_is_int(NpyDtype t) { return t == NPY_I32 || t == NPY_I64; }

static uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t load_u64(const uint8_t *p) { return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32; }

static void store_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* IEEE half → float, all cases (subnormals, Inf, NaN). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023;
    uint32_t bits;
    if (exp == 31) {
        bits = sign | 0x7F800000u | man << 13;
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  /* subnormal: value man · 2^-24, exact in float */
            float v = (float)man * 0x1p-24f;
            return sign ? -v : v;
        }
    } else {
        bits = sign | (exp + 112) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* One element of type t at p (little-endian) as double. */
static double load_elem(NpyDtype t, const uint8_t *p) {
    switch (t) {
    case NPY_F16: return half_to_float(load_u16(p));
    case NPY_F32: {
        uint32_t u = load_u32(p);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case NPY_F64: {
        uint64_t u = load_u64(p);
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    case NPY_I32: return (double)(int32_t)load_u32(p);
    case NPY_I64: return (double)(int64_t)load_u64(p);
    }
    return 0;
}

static int64_t load_int(NpyDtype t, const uint8_t *p) {
    return t == NPY_I32 ? (int64_t)(int32_t)load_u32(p) : (int64_t)load_u64(p);
}

char *npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
    if (cap == 0) return buf;
    buf[0] = 0;
    if (ndim == 0) {
        snprintf(buf, cap, "scalar");
        return buf;
    }
    size_t n = 0;
    for (int i = 0; i < ndim && n < cap; i++) {
        int k = snprintf(buf + n, cap - n, "%s%lld", i ? "x" : "", (long long)shape[i]);
        if (k < 0) break;
        n += (size_t)k;
    }
    return buf;
}

/* Element count of a shape, or -1 on a negative dimension or overflow of int64 (or of size_t bytes). */
static int64_t shape_count(int ndim, const int64_t *shape, int elem_size) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    if (n > INT64_MAX / 8 / elem_size) return -1;
    return n;
}

/* ---- writing ---------------------------------------------------------------------------------------- */

/* The header numpy.save writes (format 1.0): magic, version, u16 length, the dict with keys in
 * sorted order and repr() values, spare spaces for growing the first axis, spaces and '\n' up to a
 * multiple of 64 bytes. Returns the total length, or -1 if it does not fit in cap. */
static int build_header(NpyDtype t, int ndim, const int64_t *shape, uint8_t *out, size_t cap) {
    char dict[NPY_MAX_DIMS * 24 + 128];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", dtype_descr[t]);
    for (int i = 0; i < ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    if (ndim > 0) {
        char first[24];
        int digits = snprintf(first, sizeof first, "%lld", (long long)shape[0]);
        for (int i = digits; i < NPY_GROWTH_DIGITS; i++) dict[n++] = ' ';
    }
    size_t hlen = (size_t)n + 1;  /* + '\n' */
    size_t padlen = NPY_ALIGN - (NPY_MAGIC_LEN + 4 + hlen) % NPY_ALIGN;
    size_t total = NPY_MAGIC_LEN + 4 + hlen + padlen;
    if (total > cap || hlen + padlen > 65535) return -1;
    memcpy(out, NPY_MAGIC, NPY_MAGIC_LEN);
    out[6] = 1;
    out[7] = 0;
    out[8] = (uint8_t)((hlen + padlen) & 255);
    out[9] = (uint8_t)((hlen + padlen) >> 8);
    memcpy(out + 10, dict, (size_t)n);
    memset(out + 10 + n, ' ', padlen);
    out[total - 1] = '\n';
    return (int)total;
}

int npy_writer_open(NpyWriter *w, const char *path, NpyDtype dtype, int ndim, const int64_t *shape, BlvError *err) {
    memset(w, 0, sizeof *w);
    if (dtype != NPY_F32 && dtype != NPY_I32)
        return blv_fail(err, "%s: can only write float32 or int32 .npy files", path);
    if (ndim < 0 || ndim > NPY_MAX_DIMS)
        return blv_fail(err, "%s: %d dimensions (at most %d)", path, ndim, NPY_MAX_DIMS);
    if (ndim > 0 && !shape) return blv_fail(err, "%s: no shape given", path);
    int64_t n = shape_count(ndim, shape, 4);
    if (n < 0) return blv_fail(err, "%s: invalid shape (a negative dimension or too many elements)", path);
    uint8_t header[NPY_MAX_DIMS * 24 + 256];
    int hlen = build_header(dtype, ndim, shape, header, sizeof header);
    if (hlen < 0) return blv_fail(err, "%s: header too long", path);
    w->path = strdup(path);
    if (!w->path) return blv_fail(err, "%s: out of memory", path);
    w->f = fopen(path, "wb");
    if (!w->f) {
        blv_fail(err, "%s: cannot create: %s", path, strerror(errno));
        free(w->path);
        w->path = NULL;
        return -1;
    }
    w->dtype = dtype;
    w->n_total = n;
    if (fwrite(header, 1, (size_t)hlen, w->f) != (size_t)hlen) {
        blv_fail(err, "%s: write failed: %s", path, strerror(errno));
        npy_writer_abort(w);
        return -1;
    }
    return 0;
}

static int writer_append(NpyWriter *w, const void *data, int64_t n, NpyDtype t, BlvError *err) {
    if (!w->f) return blv_fail(err, "%s: writer is not open", w->path ? w->path : "npy");
    if (t != w->dtype) {
        blv_fail(err, "%s: appending %s data to a %s file", w->path, dtype_descr[t], dtype_descr[w->dtype]);
        npy_writer_abort(w);
        return -1;
    }
    if (n < 0 || n > w->n_total - w->n_written) {
        blv_fail(err, "%s: %lld more elements than the shape holds (%lld)", w->path,
                 (long long)(n < 0 ? n : w->n_written + n - w->n_total), (long long)w->n_total);
        npy_writer_abort(w);
        return -1;
    }
    /* 4-byte elements (f32 and i32 alike), converted to little-endian block by block */
    const uint32_t *src = data;
    uint8_t buf[4096 * 4];
    for (int64_t done = 0; done < n;) {
        int64_t k = n - done < 4096 ? n - done : 4096;
        for (int64_t i = 0; i < k; i++) {
            uint32_t u;
            memcpy(&u, src + done + i, 4);
            store_u32(buf + 4 * i, u);
        }
        if (fwrite(buf, 4, (size_t)k, w->f) != (size_t)k) {
            blv_fail(err, "%s: write failed: %s", w->path, strerror(errno));
            npy_writer_abort(w);
            return -1;
        }
        done += k;
    }
    w->n_written += n;
    return 0;
}

int npy_writer_append_f32(NpyWriter *w, const float *data, int64_t n, BlvError *err) {
    return writer_append(w, data, n, NPY_F32, err);
}

int npy_writer_append_i32(NpyWriter *w, const int32_t *data, int64_t n, BlvError *err) {
    return writer_append(w, data, n, NPY_I32, err);
}

void npy_writer_abort(NpyWriter *w) {
    if (w->f) {
        fclose(w->f);
        if (w->path) unlink(w->path);
    }
    w->f = NULL;
    free(w->path);
    w->path = NULL;
}

int npy_writer_close(NpyWriter *w, BlvError *err) {
    if (!w->f) return blv_fail(err, "%s: writer is not open", w->path ? w->path : "npy");
    if (w->n_written != w->n_total) {
        blv_fail(err, "%s: %lld of %lld elements written", w->path, (long long)w->n_written, (long long)w->n_total);
        npy_writer_abort(w);
        return -1;
    }
    int bad = ferror(w->f);
    if (fclose(w->f) != 0 || bad) {
        w->f = NULL;
        blv_fail(err, "%s: write failed: %s", w->path, strerror(errno));
        unlink(w->path);
        free(w->path);
        w->path = NULL;
        return -1;
    }
    w->f = NULL;
    free(w->path);
    w->path = NULL;
    return 0;
}

static int write_whole(const char *path, const void *data, NpyDtype t, int ndim, const int64_t *shape,
                       BlvError *err) {
    NpyWriter w;
    if (npy_writer_open(&w, path, t, ndim, shape, err) != 0) return -1;
    if (w.n_total > 0 && !data) {
        npy_writer_abort(&w);
        return blv_fail(err, "%s: no data given", path);
    }
    if (writer_append(&w, data, w.n_total, t, err) != 0) return -1;
    return npy_writer_close(&w, err);
}

int npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape, BlvError *err) {
    return write_whole(path, data, NPY_F32, ndim, shape, err);
}

int npy_write_i32(const char *path, const int32_t *data, int ndim, const int64_t *shape, BlvError *err) {
    return write_whole(path, data, NPY_I32, ndim, shape, err);
}

/* ---- reading: the header ------------------------------------------------------------------------- */

/* An open .npy file positioned at its data. */
typedef struct {
    FILE *f;
    const char *path;
    NpyDtype dtype;
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    int64_t n;
    int64_t read;          /* elements consumed */
} NpyIn;

typedef struct {
    const char *s, *end, *start;
    const char *path;
    BlvError *err;
} Parser;

static void skip_ws(Parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int expect(Parser *p, char c) {
    skip_ws(p);
    if (p->s >= p->end || *p->s != c)
        return blv_fail(p->err, "%s: malformed .npy header: expected '%c' at header byte %ld", p->path, c,
                        (long)(p->s - p->start));
    p->s++;
    return 0;
}

/* A Python string literal '...' or "..." without escapes, into buf. */
static int parse_string(Parser *p, char *buf, size_t cap) {
    skip_ws(p);
    if (p->s >= p->end || (*p->s != '\'' && *p->s != '"'))
        return blv_fail(p->err, "%s: malformed .npy header: expected a quoted string", p->path);
    char q = *p->s++;
    size_t n = 0;
    while (p->s < p->end && *p->s != q) {
        if (*p->s == '\\' || n + 1 >= cap)
            return blv_fail(p->err, "%s: malformed .npy header: unexpected string", p->path);
        buf[n++] = *p->s++;
    }
    if (p->s >= p->end) return blv_fail(p->err, "%s: malformed .npy header: unterminated string", p->path);
    p->s++;
    buf[n] = 0;
    return 0;
}

static int parse_shape(Parser *p, NpyIn *in) {
    if (expect(p, '(') != 0) return -1;
    in->ndim = 0;
    for (;;) {
        skip_ws(p);
        if (p->s < p->end && *p->s == ')') {
            p->s++;
            return 0;
        }
        if (p->s >= p->end || !isdigit((unsigned char)*p->s))
            return blv_fail(p->err, "%s: malformed .npy header: shape must be a tuple of non-negative integers",
                            p->path);
        int64_t v = 0;
        while (p->s < p->end && isdigit((unsigned char)*p->s)) {
            int d = *p->s++ - '0';
            if (v > (INT64_MAX - d) / 10)
                return blv_fail(p->err, "%s: malformed .npy header: shape dimension too large", p->path);
            v = v * 10 + d;
        }
        if (p->s < p->end && (*p->s == 'L' || *p->s == 'l')) p->s++;  /* Python 2 longs */
        if (in->ndim >= NPY_MAX_DIMS)
            return blv_fail(p->err, "%s: more than %d dimensions", p->path, NPY_MAX_DIMS);
        in->shape[in->ndim++] = v;
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') {
            p->s++;
            continue;
        }
        if (p->s < p->end && *p->s == ')') {
            if (in->ndim == 1) /* "(5)" is an int in Python, not a tuple */
                return blv_fail(p->err, "%s: malformed .npy header: shape is not a tuple", p->path);
            p->s++;
            return 0;
        }
        return blv_fail(p->err, "%s: malformed .npy header: bad shape tuple", p->path);
    }
}

static int parse_header(const char *h, size_t len, NpyIn *in, BlvError *err) {
    Parser p = {h, h + len, h, in->path, err};
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
    char descr[32] = {0};
    if (expect(&p, '{') != 0) return -1;
    for (;;) {
        skip_ws(&p);
        if (p.s < p.end && *p.s == '}') {
            p.s++;
            break;
        }
        char key[32];
        if (parse_string(&p, key, sizeof key) != 0 || expect(&p, ':') != 0) return -1;
        skip_ws(&p);
        if (strcmp(key, "descr") == 0) {
            if (have_descr++) return blv_fail(err, "%s: malformed .npy header: 'descr' twice", in->path);
            if (p.s < p.end && (*p.s == '[' || *p.s == '{'))
                return blv_fail(err, "%s: structured dtypes are not supported", in->path);
            if (parse_string(&p, descr, sizeof descr) != 0) return -1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (have_fortran++) return blv_fail(err, "%s: malformed .npy header: 'fortran_order' twice", in->path);
            if (p.end - p.s >= 4 && memcmp(p.s, "True", 4) == 0) {
                fortran = 1;
                p.s += 4;
            } else if (p.end - p.s >= 5 && memcmp(p.s, "False", 5) == 0) {
                p.s += 5;
            } else {
                return blv_fail(err, "%s: malformed .npy header: fortran_order must be True or False", in->path);
            }
        } else if (strcmp(key, "shape") == 0) {
            if (have_shape++) return blv_fail(err, "%s: malformed .npy header: 'shape' twice", in->path);
            if (parse_shape(&p, in) != 0) return -1;
        } else {
            return blv_fail(err, "%s: malformed .npy header: unexpected key '%s'", in->path, key);
        }
        skip_ws(&p);
        if (p.s < p.end && *p.s == ',') {
            p.s++;
            continue;
        }
        if (p.s < p.end && *p.s == '}') {
            p.s++;
            break;
        }
        return blv_fail(err, "%s: malformed .npy header: expected ',' or '}'", in->path);
    }
    skip_ws(&p);
    for (; p.s < p.end; p.s++)
        if (*p.s != 0) return blv_fail(err, "%s: malformed .npy header: text after the dictionary", in->path);
    if (!have_descr || !have_fortran || !have_shape)
        return blv_fail(err, "%s: malformed .npy header: missing '%s'", in->path,
                        !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    int found = -1;
    for (int t = 0; t < 5; t++)
        if (strcmp(descr, dtype_descr[t]) == 0) found = t;
    if (found < 0) {
        if (descr[0] == '>' && descr[1])
            return blv_fail(err, "%s: big-endian dtype '%s' is not supported (save it little-endian)", in->path, descr);
        return blv_fail(err, "%s: dtype '%s' is not supported (float16/32/64, int32/64 only)", in->path, descr);
    }
    in->dtype = (NpyDtype)found;
    if (fortran && in->ndim > 1)
        return blv_fail(err, "%s: Fortran-order (column-major) arrays are not supported: save it with "
                        "numpy.ascontiguousarray", in->path);
    return 0;
}

static int npy_in_open(NpyIn *in, const char *path, BlvError *err) {
    memset(in, 0, sizeof *in);
    in->path = path;
    FILE *f = fopen(path, "rb");
    if (!f) return blv_fail(err, "%s: cannot open: %s", path, strerror(errno));
    in->f = f;
    uint8_t pre[12];
    size_t got = fread(pre, 1, 10, f);
    if (got < NPY_MAGIC_LEN || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        fclose(f);
        in->f = NULL;
        return blv_fail(err, "%s: not a .npy file (bad magic)", path);
    }
    if (got < 8) {
        fclose(f);
        in->f = NULL;
        return blv_fail(err, "%s: truncated .npy header", path);
    }
    int major = pre[6], minor = pre[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0) {
        fclose(f);
        in->f = NULL;
        return blv_fail(err, "%s: unsupported .npy format version %d.%d (1.0, 2.0 and 3.0 are)", path, major, minor);
    }
    size_t prefix = major == 1 ? 10 : 12;
    if (major > 1 && got == 10) got += fread(pre + 10, 1, 2, f);
    if (got < prefix) {
        fclose(f);
        in->f = NULL;
        return blv_fail(err, "%s: truncated .npy header", path);
    }
    uint32_t hlen = major == 1 ? load_u16(pre + 8) : load_u32(pre + 8);
    if (hlen > NPY_MAX_HEADER) {
        fclose(f);
        in->f = NULL;
        return blv_fail(err, "%s: .npy header length %u is implausible (malformed file)", path, hlen);
    }
    char *h = malloc(hlen + 1u);
    if (!h) {
        fclose(f);
        in->f = NULL;
        return blv_fail(err, "%s: out of memory reading the header", path);
    }
    if (fread(h, 1, hlen, f) != hlen) {
        free(h);
        fclose(f);
        in->f = NULL;
        return blv_fail(err, "%s: truncated .npy header (%u bytes announced)", path, hlen);
    }
    h[hlen] = 0;
    int rc = parse_header(h, hlen, in, err);
    free(h);
    if (rc == 0) {
        int64_t n = shape_count(in->ndim, in->shape, dtype_size[in->dtype]);
        char s[NPY_MAX_DIMS * 24];
        if (n < 0) {
            rc = blv_fail(err, "%s: shape %s is too large", path, npy_shape_str(in->ndim, in->shape, s, sizeof s));
        } else {
            in->n = n;
            int64_t data_off = (int64_t)prefix + hlen, need = n * dtype_size[in->dtype];
            if (fseeko(f, 0, SEEK_END) != 0) {
                rc = blv_fail(err, "%s: cannot seek: %s", path, strerror(errno));
            } else {
                int64_t size = (int64_t)ftello(f);
                int64_t have = size - data_off;
                if (size < 0)
                    rc = blv_fail(err, "%s: cannot tell the file size: %s", path, strerror(errno));
                else if (have < need)
                    rc = blv_fail(err, "%s: truncated data: shape %s of %s needs %lld bytes, the file has %lld", path,
                                  npy_shape_str(in->ndim, in->shape, s, sizeof s), dtype_descr[in->dtype],
                                  (long long)need, (long long)have);
                else if (have > need)
                    rc = blv_fail(err, "%s: %lld bytes after the data (shape %s of %s needs %lld)", path,
                                  (long long)(have - need), npy_shape_str(in->ndim, in->shape, s, sizeof s),
                                  dtype_descr[in->dtype], (long long)need);
                else if (fseeko(f, (off_t)data_off, SEEK_SET) != 0)
                    rc = blv_fail(err, "%s: cannot seek: %s", path, strerror(errno));
            }
        }
    }
    if (rc != 0) {
        fclose(f);
        in->f = NULL;
    }
    return rc;
}

static void npy_in_close(NpyIn *in) {
    if (in->f) fclose(in->f);
    in->f = NULL;
}

/* Reads the next `count` elements as raw bytes into raw (count · elem size bytes). */
static int npy_in_raw(NpyIn *in, uint8_t *raw, int64_t count, BlvError *err) {
    size_t bytes = (size_t)count * (size_t)dtype_size[in->dtype];
    if (count > in->n - in->read) return blv_fail(err, "%s: read past the data", in->path);
    if (fread(raw, 1, bytes, in->f) != bytes)
        return blv_fail(err, "%s: read failed (file changed or I/O error)", in->path);
    in->read += count;
    return 0;
}

/* Reads the next `count` elements as double. raw: scratch of count · 8 bytes. */
static int npy_in_f64(NpyIn *in, double *out, uint8_t *raw, int64_t count, BlvError *err) {
    if (npy_in_raw(in, raw, count, err) != 0) return -1;
    int sz = dtype_size[in->dtype];
    for (int64_t i = 0; i < count; i++) out[i] = load_elem(in->dtype, raw + i * sz);
    return 0;
}

/* ---- reading: whole arrays ------------------------------------------------------------------------ */

int npy_read_as(const char *path, NpyDtype as, NpyArray *out, BlvError *err) {
    memset(out, 0, sizeof *out);
    if (as != NPY_F64 && as != NPY_F32 && as != NPY_I32)
        return blv_fail(err, "%s: can only read as float64, float32 or int32", path);
    NpyIn in;
    if (npy_in_open(&in, path, err) != 0) return -1;
    if (as == NPY_I32 && !npy_dtype_is_int(in.dtype)) {
        npy_in_close(&in);
        return blv_fail(err, "%s: expected an integer array, the file holds %s", path, dtype_descr[in.dtype]);
    }
    int osz = as == NPY_F64 ? 8 : 4, isz = dtype_size[in.dtype];
    void *data = malloc(in.n ? (size_t)in.n * (size_t)osz : 1);
    uint8_t *raw = malloc((size_t)CHUNK_ELEMS * 8);
    if (!data || !raw) {
        free(data);
        free(raw);
        npy_in_close(&in);
        return blv_fail(err, "%s: out of memory for %lld elements", path, (long long)in.n);
    }
    int rc = 0;
    for (int64_t done = 0; done < in.n && rc == 0;) {
        int64_t k = in.n - done < CHUNK_ELEMS ? in.n - done : CHUNK_ELEMS;
        rc = npy_in_raw(&in, raw, k, err);
        for (int64_t i = 0; i < k && rc == 0; i++) {
            const uint8_t *p = raw + i * isz;
            if (as == NPY_F64) {
                ((double *)data)[done + i] = load_elem(in.dtype, p);
            } else if (as == NPY_F32) {
                ((float *)data)[done + i] = (float)load_elem(in.dtype, p);
            } else {
                int64_t v = load_int(in.dtype, p);
                if (v < INT32_MIN || v > INT32_MAX)
                    rc = blv_fail(err, "%s: element %lld = %lld does not fit in int32", path, (long long)(done + i),
                                  (long long)v);
                else
                    ((int32_t *)data)[done + i] = (int32_t)v;
            }
        }
        done += k;
    }
    free(raw);
    npy_in_close(&in);
    if (rc != 0) {
        free(data);
        return -1;
    }
    out->file_dtype = in.dtype;
    out->dtype = as;
    out->ndim = in.ndim;
    memcpy(out->shape, in.shape, sizeof out->shape);
    out->n = in.n;
    out->data = data;
    return 0;
}

int npy_read(const char *path, NpyArray *out, BlvError *err) { return npy_read_as(path, NPY_F64, out, err); }

void npy_free(NpyArray *a) {
    if (!a) return;
    free(a->data);
    a->data = NULL;
}

/* ---- the dump directory ----------------------------------------------------------------------------- */

int dump_open(DumpDir *d, const char *dir, BlvError *err) {
    memset(d, 0, sizeof *d);
    if (!dir || !*dir) return blv_fail(err, "dump: no directory given");
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return blv_fail(err, "%s: exists and is not a directory", dir);
    } else if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        return blv_fail(err, "%s: cannot create the dump directory: %s", dir, strerror(errno));
    }
    d->dir = strdup(dir);
    if (!d->dir) return blv_fail(err, "%s: out of memory", dir);
    return 0;
}

void dump_close(DumpDir *d) {
    if (!d) return;
    free(d->dir);
    d->dir = NULL;
}

static int dump_path(const DumpDir *d, const char *name, char *path, size_t cap, BlvError *err) {
    if (!d->dir) return blv_fail(err, "dump: directory not open");
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 200 || name[0] == '.')
        return blv_fail(err, "%s: invalid dump name '%s'", d->dir, name ? name : "");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.')
            return blv_fail(err, "%s: invalid dump name '%s' (letters, digits, '_', '-', '.' only)", d->dir, name);
    }
    if ((size_t)snprintf(path, cap, "%s/%s.npy", d->dir, name) >= cap)
        return blv_fail(err, "%s: path too long for '%s'", d->dir, name);
    return 0;
}

int dump_begin(DumpDir *d, const char *name, NpyDtype dtype, int ndim, const int64_t *shape, NpyWriter *w,
               BlvError *err) {
    char path[4608];
    memset(w, 0, sizeof *w);
    if (dump_path(d, name, path, sizeof path, err) != 0) return -1;
    if (npy_writer_open(w, path, dtype, ndim, shape, err) != 0) return -1;
    d->n_written++;
    return 0;
}

int dump_tensor(DumpDir *d, const char *name, const float *data, int ndim, const int64_t *shape, BlvError *err) {
    char path[4608];
    if (dump_path(d, name, path, sizeof path, err) != 0) return -1;
    if (npy_write_f32(path, data, ndim, shape, err) != 0) return -1;
    d->n_written++;
    return 0;
}

int dump_tensor_i32(DumpDir *d, const char *name, const int32_t *data, int ndim, const int64_t *shape,
                    BlvError *err) {
    char path[4608];
    if (dump_path(d, name, path, sizeof path, err) != 0) return -1;
    if (npy_write_i32(path, data, ndim, shape, err) != 0) return -1;
    d->n_written++;
    return 0;
}

/* ---- comparison ----------------------------------------------------------------------------------- */

void compare_options_default(CompareOptions *o) {
    o->tol_nmse = 1e-6;
    o->tol_top1 = 1.0;
    o->rel_eps = 1e-4;
    o->tol_max_abs = INFINITY;
    o->missing_fails = 0;
}

static int is_logits_name(const char *name) { return name && strncmp(name, "logits", 6) == 0; }

static void set_reason(CompareResult *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void set_reason(CompareResult *r, const char *fmt, ...) {
    r->failed = 1;
    if (r->reason[0]) return;  /* keep the first reason */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    va_end(ap);
}

/* top-1 and top-2 of a row (first maximum wins, as numpy.argmax; NaN rows give index -1). */
static int64_t row_argmax(const double *x, int64_t n, double *gap) {
    int64_t best = -1;
    double m1 = -INFINITY, m2 = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(x[i])) {
            *gap = NAN;
            return -1;
        }
        if (best < 0 || x[i] > m1) {
            m2 = m1;
            m1 = x[i];
            best = i;
        } else if (x[i] > m2) {
            m2 = x[i];
        }
    }
    *gap = m1 - m2;
    return best;
}

int dump_compare_files(const char *path_a, const char *path_b, const char *name, const CompareOptions *opt,
                       CompareResult *r, BlvError *err) {
    CompareOptions def;
    if (!opt) {
        compare_options_default(&def);
        opt = &def;
    }
    memset(r, 0, sizeof *r);
    r->max_abs_index = -1;
    r->first_mismatch = -1;
    r->top1_min_gap = -1;
    r->top1 = 1;
    NpyIn a, b;
    if (npy_in_open(&a, path_a, err) != 0) return -1;
    if (npy_in_open(&b, path_b, err) != 0) {
        npy_in_close(&a);
        return -1;
    }
    r->ndim_a = a.ndim;
    r->ndim_b = b.ndim;
    memcpy(r->shape_a, a.shape, sizeof r->shape_a);
    memcpy(r->shape_b, b.shape, sizeof r->shape_b);
    r->shape_ok = a.ndim == b.ndim && memcmp(a.shape, b.shape, sizeof(int64_t) * (size_t)a.ndim) == 0;
    r->is_int = npy_dtype_is_int(a.dtype) && npy_dtype_is_int(b.dtype);
    if (!r->shape_ok) {
        char sa[NPY_MAX_DIMS * 24], sb[NPY_MAX_DIMS * 24];
        set_reason(r, "shape %s vs reference %s", npy_shape_str(a.ndim, a.shape, sa, sizeof sa),
                   npy_shape_str(b.ndim, b.shape, sb, sizeof sb));
        r->max_abs = r->max_rel = r->nmse = NAN;
        r->cosine = NAN;
        npy_in_close(&a);
        npy_in_close(&b);
        return 0;
    }
    r->n = a.n;

    /* rows for top-1: the last axis (the whole array for ndim <= 1) */
    int64_t row_len = a.ndim >= 1 ? a.shape[a.ndim - 1] : 1;
    r->has_top1 = is_logits_name(name) && !r->is_int && row_len > 0 && a.n > 0;
    int64_t rows_per_chunk = row_len > 0 && row_len < CHUNK_ELEMS ? CHUNK_ELEMS / row_len : 1;
    int64_t chunk = r->has_top1 ? rows_per_chunk * row_len : CHUNK_ELEMS;
    double *xa = malloc((size_t)chunk * sizeof(double)), *xb = malloc((size_t)chunk * sizeof(double));
    int64_t *ia = malloc((size_t)chunk * sizeof(int64_t));
    uint8_t *raw = malloc((size_t)chunk * 8);
    if (!xa || !xb || !ia || !raw) {
        free(xa);
        free(xb);
        free(ia);
        free(raw);
        npy_in_close(&a);
        npy_in_close(&b);
        return blv_fail(err, "%s: out of memory comparing", path_a);
    }

    double sum_dd = 0, sum_bb = 0, sum_aa = 0, sum_ab = 0;
    int rc = 0;
    for (int64_t done = 0; done < a.n && rc == 0;) {
        int64_t k = a.n - done < chunk ? a.n - done : chunk;
        if (r->is_int) {
            /* exact: compare as int64 */
            rc = npy_in_raw(&a, raw, k, err);
            for (int64_t i = 0; i < k && rc == 0; i++) ia[i] = load_int(a.dtype, raw + i * dtype_size[a.dtype]);
            if (rc == 0) rc = npy_in_raw(&b, raw, k, err);
            for (int64_t i = 0; i < k && rc == 0; i++) {
                int64_t vb = load_int(b.dtype, raw + i * dtype_size[b.dtype]);
                if (ia[i] != vb) {
                    if (r->first_mismatch < 0) r->first_mismatch = done + i;
                    r->n_mismatch++;
                }
            }
        } else {
            rc = npy_in_f64(&a, xa, raw, k, err);
            if (rc == 0) rc = npy_in_f64(&b, xb, raw, k, err);
            for (int64_t i = 0; i < k && rc == 0; i++) {
                double va = xa[i], vb = xb[i];
                if (!isfinite(va) || !isfinite(vb)) {
                    r->n_nonfinite++;
                    continue;
                }
                double d = va - vb, ad = fabs(d);
                sum_dd += d * d;
                sum_bb += vb * vb;
                sum_aa += va * va;
                sum_ab += va * vb;
                if (r->max_abs_index < 0 || ad > r->max_abs) {
                    r->max_abs = ad;
                    r->max_abs_index = done + i;
                }
                double den = fabs(vb) > opt->rel_eps ? fabs(vb) : opt->rel_eps;
                if (ad / den > r->max_rel) r->max_rel = ad / den;
            }
            if (r->has_top1 && rc == 0) {
                for (int64_t row = 0; row < k / row_len; row++) {
                    double gap_a, gap_b;
                    int64_t top_a = row_argmax(xa + row * row_len, row_len, &gap_a);
                    int64_t top_b = row_argmax(xb + row * row_len, row_len, &gap_b);
                    r->top1_rows++;
                    if (top_a == top_b && top_a >= 0) {
                        r->top1_agree++;
                    } else if (!isnan(gap_b) && (r->top1_min_gap < 0 || gap_b < r->top1_min_gap)) {
                        r->top1_min_gap = gap_b;
                    }
                }
            }
        }
        done += k;
    }
    free(xa);
    free(xb);
    free(ia);
    free(raw);
    npy_in_close(&a);
    npy_in_close(&b);
    if (rc != 0) return -1;

    if (r->is_int) {
        r->max_abs = r->max_rel = r->nmse = NAN;
        r->cosine = NAN;
        if (r->n_mismatch) set_reason(r, "%lld of %lld differ, first at %lld", (long long)r->n_mismatch,
                                      (long long)r->n, (long long)r->first_mismatch);
        return 0;
    }
    r->nmse = sum_bb > 0 ? sum_dd / sum_bb : sum_dd > 0 ? INFINITY : 0;
    r->cosine = sum_aa > 0 && sum_bb > 0 ? sum_ab / sqrt(sum_aa * sum_bb) : sum_aa == 0 && sum_bb == 0 ? 1 : 0;
    if (r->has_top1) r->top1 = r->top1_rows ? (double)r->top1_agree / (double)r->top1_rows : 1;
    if (r->n_nonfinite) set_reason(r, "%lld NaN/Inf elements", (long long)r->n_nonfinite);
    if (!(r->nmse <= opt->tol_nmse)) set_reason(r, "NMSE %.3g > %.3g", r->nmse, opt->tol_nmse);
    if (r->max_abs > opt->tol_max_abs) set_reason(r, "max abs %.3g > %.3g", r->max_abs, opt->tol_max_abs);
    if (r->has_top1 && r->top1 < opt->tol_top1)
        set_reason(r, "top-1 %lld/%lld < %.4g (ref gap %.3g at a disagreement)", (long long)r->top1_agree,
                   (long long)r->top1_rows, opt->tol_top1, r->top1_min_gap);
    return 0;
}

/* ---- directories ------------------------------------------------------------------------------------ */

typedef struct {
    char **names;   /* stem (without .npy) */
    int n, cap;
} NameList;

static void names_free(NameList *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

static int list_npy(const char *dir, NameList *l, BlvError *err) {
    memset(l, 0, sizeof *l);
    DIR *dp = opendir(dir);
    if (!dp) return blv_fail(err, "%s: cannot list the directory: %s", dir, strerror(errno));
    struct dirent *e;
    int bad = 0;
    while (!bad && (e = readdir(dp)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 4 || strcmp(e->d_name + n - 4, ".npy") != 0 || e->d_name[0] == '.') continue;
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 32;
            char **p = realloc(l->names, (size_t)cap * sizeof *p);
            if (!p) {
                bad = 1;
                break;
            }
            l->names = p;
            l->cap = cap;
        }
        char *s = strndup(e->d_name, n - 4);
        if (!s) bad = 1;
        else l->names[l->n++] = s;
    }
    closedir(dp);
    if (bad) {
        names_free(l);
        return blv_fail(err, "%s: out of memory listing the directory", dir);
    }
    return 0;
}

/* Pipeline order of a stage name (DESIGN.md §Golden dumps), then others. */
static int stage_rank(const char *s) {
    static const char *const order[] = {"pixels", "patch_embed", "vit_block_", "vit_out", "merged",
                                        "image_embeds", "tokens", "llm_block_", "logits", "generated"};
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++) {
        size_t n = strlen(order[i]);
        if (order[i][n - 1] == '_' ? strncmp(s, order[i], n) == 0 : strcmp(s, order[i]) == 0) return i;
    }
    return 100;
}

/* Natural order: digit runs compare by value ("vit_block_2" < "vit_block_10"). */
static int natural_cmp(const char *a, const char *b) {
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0' && isdigit((unsigned char)a[1])) a++;
            while (*b == '0' && isdigit((unsigned char)b[1])) b++;
            size_t na = 0, nb = 0;
            while (isdigit((unsigned char)a[na])) na++;
            while (isdigit((unsigned char)b[nb])) nb++;
            if (na != nb) return na < nb ? -1 : 1;
            int c = strncmp(a, b, na);
            if (c) return c;
            a += na;
            b += nb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++;
            b++;
        }
    }
    return *a ? 1 : *b ? -1 : 0;
}

static int name_cmp(const void *pa, const void *pb) {
    const char *a = *(char *const *)pa, *b = *(char *const *)pb;
    int ra = stage_rank(a), rb = stage_rank(b);
    if (ra != rb) return ra < rb ? -1 : 1;
    int c = natural_cmp(a, b);
    return c ? c : strcmp(a, b);
}

static int names_has(const NameList *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->names[i], s) == 0) return 1;
    return 0;
}

static void fmt_num(char *buf, size_t cap, double v) {
    if (isnan(v)) snprintf(buf, cap, "-");
    else snprintf(buf, cap, "%.3e", v);
}

static char *join_path(const char *dir, const char *stem) {
    size_t n = strlen(dir) + strlen(stem) + 6;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s.npy", dir, stem);
    return p;
}

int dump_compare_dirs(const char *dir_a, const char *dir_b, const CompareOptions *opt, FILE *report, int *n_failed,
                      BlvError *err) {
    CompareOptions def;
    if (!opt) {
        compare_options_default(&def);
        opt = &def;
    }
    *n_failed = 0;
    if (!(opt->tol_nmse >= 0) || !(opt->tol_top1 >= 0 && opt->tol_top1 <= 1) || !(opt->rel_eps > 0) ||
        !(opt->tol_max_abs >= 0))
        return blv_fail(err, "compare: invalid tolerances (need tol_nmse >= 0, 0 <= tol_top1 <= 1, rel_eps > 0, "
                             "tol_max_abs >= 0)");
    NameList la, lb;
    if (list_npy(dir_a, &la, err) != 0) return -1;
    if (list_npy(dir_b, &lb, err) != 0) {
        names_free(&la);
        return -1;
    }
    if (la.n > 1) qsort(la.names, (size_t)la.n, sizeof(char *), name_cmp);
    if (lb.n > 1) qsort(lb.names, (size_t)lb.n, sizeof(char *), name_cmp);

    if (report) {
        fprintf(report, "compare  A: %s\n         B: %s (reference)\n", dir_a, dir_b);
        fprintf(report, "tolerances: NMSE <= %.3g, logits top-1 >= %.4g", opt->tol_nmse, opt->tol_top1);
        if (isfinite(opt->tol_max_abs)) fprintf(report, ", max_abs <= %.3g", opt->tol_max_abs);
        fprintf(report, "; max_rel = |a-b| / max(|b|, %.3g); NMSE = sum (a-b)^2 / sum b^2\n", opt->rel_eps);
        fprintf(report, "%-16s %-16s %-10s %-10s %-10s %-12s %-8s %s\n", "tensor", "shape", "max_abs", "max_rel",
                "nmse", "cosine", "top1", "result");
    }
    int n_compared = 0, n_bad = 0;
    char failed_names[512] = "";
    for (int i = 0; i < la.n; i++) {
        const char *name = la.names[i];
        if (!names_has(&lb, name)) continue;
        n_compared++;
        char *pa = join_path(dir_a, name), *pb = join_path(dir_b, name);
        CompareResult r;
        BlvError e;
        e.msg[0] = 0;
        int rc = pa && pb ? dump_compare_files(pa, pb, name, opt, &r, &e) : blv_fail(&e, "out of memory");
        free(pa);
        free(pb);
        int failed = rc != 0 || r.failed;
        if (failed) {
            n_bad++;
            size_t used = strlen(failed_names);
            if (used + strlen(name) + 8 < sizeof failed_names)
                snprintf(failed_names + used, sizeof failed_names - used, "%s%s", used ? ", " : "", name);
            else if (!strstr(failed_names, "..."))
                snprintf(failed_names + used, sizeof failed_names - used, ", ...");
        }
        if (!report) continue;
        if (rc != 0) {
            fprintf(report, "%-16s %-16s FAIL %s\n", name, "?", e.msg);
            continue;
        }
        char shape[NPY_MAX_DIMS * 24];
        npy_shape_str(r.ndim_b, r.shape_b, shape, sizeof shape);
        if (!r.shape_ok) {
            fprintf(report, "%-16s %-16s FAIL %s\n", name, shape, r.reason);
        } else if (r.is_int) {
            char what[64];
            snprintf(what, sizeof what, "exact: %lld of %lld differ", (long long)r.n_mismatch, (long long)r.n);
            fprintf(report, "%-16s %-16s %-54s %s%s%s\n", name, shape, what, r.failed ? "FAIL" : "ok",
                    r.failed ? " " : "", r.reason);
        } else {
            char ma[32], mr[32], nm[32], co[32], t1[32];
            fmt_num(ma, sizeof ma, r.max_abs);
            fmt_num(mr, sizeof mr, r.max_rel);
            fmt_num(nm, sizeof nm, r.nmse);
            if (isnan(r.cosine)) snprintf(co, sizeof co, "-");
            else snprintf(co, sizeof co, "%.9f", r.cosine);
            if (r.has_top1) snprintf(t1, sizeof t1, "%.4f", r.top1);
            else snprintf(t1, sizeof t1, "-");
            fprintf(report, "%-16s %-16s %-10s %-10s %-10s %-12s %-8s %s%s%s\n", name, shape, ma, mr, nm, co, t1,
                    r.failed ? "FAIL" : "ok", r.failed ? " " : "", r.reason);
        }
    }
    int n_only = 0;
    for (int pass = 0; pass < 2; pass++) {
        const NameList *mine = pass ? &lb : &la, *other = pass ? &la : &lb;
        for (int i = 0; i < mine->n; i++) {
            if (names_has(other, mine->names[i])) continue;
            n_only++;
            if (report) fprintf(report, "only in %s: %s.npy\n", pass ? "B" : "A", mine->names[i]);
        }
    }
    int n_fail = n_bad + (opt->missing_fails ? n_only : 0) + (n_compared == 0 ? 1 : 0);
    if (report) {
        if (n_compared == 0)
            fprintf(report, "verdict: FAIL (no tensor in common)\n");
        else if (n_fail == 0)
            fprintf(report, "verdict: PASS (%d tensor%s compared%s)\n", n_compared, n_compared == 1 ? "" : "s",
                    n_only ? ", unpaired files ignored" : "");
        else if (n_bad)
            fprintf(report, "verdict: FAIL (%d of %d tensor%s failed: %s%s)\n", n_bad, n_compared,
                    n_compared == 1 ? "" : "s", failed_names,
                    opt->missing_fails && n_only ? "; and unpaired files" : "");
        else
            fprintf(report, "verdict: FAIL (%d unpaired file%s)\n", n_only, n_only == 1 ? "" : "s");
    }
    names_free(&la);
    names_free(&lb);
    *n_failed = n_fail;
    return 0;
}
