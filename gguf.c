/* gguf.c — reading (validated; mmap or read) and writing (streaming) GGUF files. See gguf.h.
 *
 * The reader never trusts a number from the file: every count, length, offset and size is checked
 * against the bytes that remain before it is used to read or to allocate, and every sum or product
 * is checked for overflow. Metadata is not copied: keys, strings and arrays point into the file
 * image, which stays alive until gguf_close(). The first problem found is reported with the file
 * name, the item being read ("kv 3 (key ...)", "tensor 5 (...)") and the offending value. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u      /* the bytes "GGUF" read as a little-endian u32 */
#define GGUF_VERSION 3
#define GGUF_MAX_KEY_LEN 65535       /* docs/gguf.md */
#define GGUF_MAX_NAME_LEN 64         /* docs/gguf.md: tensor names are at most 64 bytes */
#define GGML_MAX_NAME_LEN 63         /* ggml's GGML_MAX_NAME is 64 including the NUL: what we write */
#define GGUF_MAX_ARRAY_DEPTH 8       /* arrays of arrays: more levels than anyone uses */
#define MIN_KV_BYTES 13              /* u64 key length + u32 type + a 1-byte value */
#define MIN_TENSOR_INFO_BYTES 24     /* u64 name length + u32 n_dims + u32 type + u64 offset */
#define READ_BUFFER_ALIGN 4096       /* the read() fallback buffer is page-aligned like a mapping */

/* ---- ggml tensor types --------------------------------------------------------------------------
 * Block geometry of every ggml type, checked against ggml's src/ggml-common.h static_asserts.
 * Note gguf-py's GGML_QUANT_SIZES still lists Q8_1 as 40 bytes (two f32); ggml's block_q8_1 has
 * been two f16 + 32 int8 = 36 bytes for a long time, and ggml is what loads the files. Ids 4, 5
 * (Q4_2/Q4_3) and 31..33, 36..38 (the removed repacked Q4_0_x_x / IQ4_NL_x_x) are unknown. */
typedef struct {
    const char *name;
    int64_t block_elems;
    int64_t block_bytes;
} GgmlType;

static const GgmlType ggml_types[] = {
    [0] = {"f32", 1, 4},          [1] = {"f16", 1, 2},          [2] = {"q4_0", 32, 18},
    [3] = {"q4_1", 32, 20},       [6] = {"q5_0", 32, 22},       [7] = {"q5_1", 32, 24},
    [8] = {"q8_0", 32, 34},       [9] = {"q8_1", 32, 36},       [10] = {"q2_K", 256, 84},
    [11] = {"q3_K", 256, 110},    [12] = {"q4_K", 256, 144},    [13] = {"q5_K", 256, 176},
    [14] = {"q6_K", 256, 210},    [15] = {"q8_K", 256, 292},    [16] = {"iq2_xxs", 256, 66},
    [17] = {"iq2_xs", 256, 74},   [18] = {"iq3_xxs", 256, 98},  [19] = {"iq1_s", 256, 50},
    [20] = {"iq4_nl", 32, 18},    [21] = {"iq3_s", 256, 110},   [22] = {"iq2_s", 256, 82},
    [23] = {"iq4_xs", 256, 136},  [24] = {"i8", 1, 1},          [25] = {"i16", 1, 2},
    [26] = {"i32", 1, 4},         [27] = {"i64", 1, 8},         [28] = {"f64", 1, 8},
    [29] = {"iq1_m", 256, 56},    [30] = {"bf16", 1, 2},        [34] = {"tq1_0", 256, 54},
    [35] = {"tq2_0", 256, 66},    [39] = {"mxfp4", 32, 17},     [40] = {"nvfp4", 64, 36},
    [41] = {"q1_0", 128, 18},
};

static const GgmlType *ggml_type_lookup(uint32_t type) {
    if (type >= sizeof ggml_types / sizeof ggml_types[0]) return NULL;
    return ggml_types[type].name ? &ggml_types[type] : NULL;
}

const char *gguf_ggml_type_name(uint32_t type) {
    const GgmlType *t = ggml_type_lookup(type);
    return t ? t->name : NULL;
}

int gguf_ggml_type_info(uint32_t type, int64_t *block_elems, int64_t *block_bytes) {
    const GgmlType *t = ggml_type_lookup(type);
    if (!t) return -1;
    if (block_elems) *block_elems = t->block_elems;
    if (block_bytes) *block_bytes = t->block_bytes;
    return 0;
}

/* ---- GGUF value types ---------------------------------------------------------------------------- */
static const char *const value_type_names[GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *gguf_type_name(uint32_t type) {
    return type < GGUF_TYPE_COUNT ? value_type_names[type] : "unknown";
}

/* Bytes of one scalar value; 0 for STRING, ARRAY and invalid types. */
static uint64_t scalar_size(uint32_t type) {
    switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* The fewest bytes one element of this type can occupy, used to bound counts before any loop. */
static uint64_t min_element_bytes(uint32_t type) {
    if (type == GGUF_TYPE_STRING) return 8;        /* u64 length, maybe no bytes */
    if (type == GGUF_TYPE_ARRAY) return 12;        /* u32 element type + u64 count */
    return scalar_size(type);
}

static int is_unsigned_type(uint32_t t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}
static int is_signed_type(uint32_t t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}
static int is_float_type(uint32_t t) { return t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64; }

/* ---- little-endian bytes (assembled byte by byte: no alignment or host-order assumptions) ----- */
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Decodes one scalar of `type` at p into kv->v (unsigned and bool zero-extended, signed
 * sign-extended, floats widened to double). */
static void decode_scalar(uint32_t type, const uint8_t *p, GgufKV *kv) {
    switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_BOOL: kv->v.u64 = p[0]; break;
    case GGUF_TYPE_INT8: kv->v.i64 = (int8_t)p[0]; break;
    case GGUF_TYPE_UINT16: kv->v.u64 = le16(p); break;
    case GGUF_TYPE_INT16: kv->v.i64 = (int16_t)le16(p); break;
    case GGUF_TYPE_UINT32: kv->v.u64 = le32(p); break;
    case GGUF_TYPE_INT32: kv->v.i64 = (int32_t)le32(p); break;
    case GGUF_TYPE_UINT64: kv->v.u64 = le64(p); break;
    case GGUF_TYPE_INT64: kv->v.i64 = (int64_t)le64(p); break;
    case GGUF_TYPE_FLOAT32: {
        uint32_t bits = le32(p);
        float x;
        memcpy(&x, &bits, sizeof x);
        kv->v.f64 = x;
        break;
    }
    case GGUF_TYPE_FLOAT64: {
        uint64_t bits = le64(p);
        memcpy(&kv->v.f64, &bits, sizeof kv->v.f64);
        break;
    }
    default: kv->v.u64 = 0; break;
    }
}

/* ---- overflow-checked arithmetic --------------------------------------------------------------- */
static int add_overflows(uint64_t a, uint64_t b, uint64_t *sum) {
    if (b > UINT64_MAX - a) return 1;
    *sum = a + b;
    return 0;
}

/* Rounds x up to a multiple of `align` (a power of two). */
static int align_up(uint64_t x, uint64_t align, uint64_t *out) {
    uint64_t r = x % align;
    if (r == 0) {
        *out = x;
        return 0;
    }
    return add_overflows(x, align - r, out);
}

static int is_valid_alignment(uint64_t a) {
    /* ggml needs a power of two; docs/gguf.md also asks for a multiple of 8, which keeps every
     * tensor's data at least 8-byte aligned for the typed loads done on it. */
    return a >= 8 && (a & (a - 1)) == 0;
}

/* A name or key made safe to print: at most 64 bytes, control characters and quotes as '?'. */
static void printable(const char *s, uint64_t len, char *buf, size_t cap) {
    size_t n = 0;
    uint64_t show = len > 64 ? 64 : len;
    for (uint64_t i = 0; i < show && n + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[n++] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
    }
    if (show < len && n + 4 < cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
}

/* ==== reader ===================================================================================== */

typedef struct {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;          /* next byte to read */
    const char *path;      /* for messages */
    char where[160];       /* the item being read, e.g. `kv 3 (key "general.name")` */
    BlvError *err;
} Reader;

static int rfail(Reader *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int rfail(Reader *r, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->where[0]) return blv_fail(r->err, "%s: %s: %s", r->path, r->where, msg);
    return blv_fail(r->err, "%s: %s", r->path, msg);
}

static uint64_t remaining(const Reader *r) { return r->size - r->pos; }

/* Checks that n more bytes exist; `what` names the field for the message. */
static int need(Reader *r, uint64_t n, const char *what) {
    if (n <= remaining(r)) return 0;
    return rfail(r, "%s (%" PRIu64 " bytes at offset %" PRIu64 ") runs past end of file (file size %" PRIu64 ")",
                 what, n, r->pos, r->size);
}

static int read_u32(Reader *r, uint32_t *out, const char *what) {
    if (need(r, 4, what)) return -1;
    *out = le32(r->base + r->pos);
    r->pos += 4;
    return 0;
}

static int read_u64(Reader *r, uint64_t *out, const char *what) {
    if (need(r, 8, what)) return -1;
    *out = le64(r->base + r->pos);
    r->pos += 8;
    return 0;
}

/* A GGUF string: u64 length, then that many bytes. */
static int read_string(Reader *r, GgufString *out, const char *what) {
    uint64_t start = r->pos, len;
    char lenwhat[96];
    snprintf(lenwhat, sizeof lenwhat, "%s length", what);
    if (read_u64(r, &len, lenwhat)) return -1;
    if (len > remaining(r))
        return rfail(r, "%s length %" PRIu64 " runs past end of file (offset %" PRIu64 ", file size %" PRIu64 ")",
                     what, len, start, r->size);
    out->ptr = (const char *)(r->base + r->pos);
    out->len = len;
    r->pos += len;
    return 0;
}

static int parse_array(Reader *r, int depth, GgufKV *kv);

/* Builds the O(1) index of a validated STRING array: offsets[i] is where element i's u64 length
 * sits, counted from arr_data. Done after validation so the allocation is never based on a count
 * that the file could not back. */
static int index_string_array(Reader *r, GgufKV *kv) {
    uint64_t *offsets = malloc(kv->arr_count ? kv->arr_count * sizeof *offsets : 1);
    if (!offsets) return rfail(r, "out of memory indexing %" PRIu64 " strings", kv->arr_count);
    uint64_t off = 0;
    for (uint64_t i = 0; i < kv->arr_count; i++) {
        offsets[i] = off;
        off += 8 + le64(kv->arr_data + off);
    }
    kv->arr_str_offsets = offsets;
    return 0;
}

/* Validates the elements of an array of strings or arrays (each one is walked). */
static int parse_array_elements(Reader *r, uint32_t elem_type, uint64_t count, int depth) {
    char what[64];
    for (uint64_t i = 0; i < count; i++) {
        if (elem_type == GGUF_TYPE_STRING) {
            GgufString s;
            snprintf(what, sizeof what, "array element %" PRIu64 ": string", i);
            if (read_string(r, &s, what)) return -1;
        } else if (parse_array(r, depth + 1, NULL)) {
            return -1;
        }
    }
    return 0;
}

/* An array value: u32 element type, u64 count, elements. depth is 1 for a top-level array.
 * kv is NULL for nested arrays, which are validated and skipped but not indexed. */
static int parse_array(Reader *r, int depth, GgufKV *kv) {
    uint64_t start = r->pos, count;
    uint32_t elem_type;
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return rfail(r, "arrays nested deeper than %d levels (offset %" PRIu64 ")", GGUF_MAX_ARRAY_DEPTH, start);
    if (read_u32(r, &elem_type, "array element type") || read_u64(r, &count, "array count")) return -1;
    if (elem_type >= GGUF_TYPE_COUNT)
        return rfail(r, "array element type %u (offset %" PRIu64 ") is not a GGUF value type", elem_type, start);
    uint64_t min = min_element_bytes(elem_type);
    if (count > remaining(r) / min)
        return rfail(r, "array count %" PRIu64 " of %s (offset %" PRIu64 ") needs at least %" PRIu64
                        " bytes but only %" PRIu64 " remain in the file",
                     count, gguf_type_name(elem_type), start, min, remaining(r));
    const uint8_t *first = r->base + r->pos;
    if (elem_type == GGUF_TYPE_STRING || elem_type == GGUF_TYPE_ARRAY) {
        if (parse_array_elements(r, elem_type, count, depth)) return -1;
    } else {
        if (elem_type == GGUF_TYPE_BOOL)
            for (uint64_t i = 0; i < count; i++)
                if (first[i] > 1) return rfail(r, "bool array element %" PRIu64 " is %u, not 0 or 1", i, first[i]);
        r->pos += count * min;   /* cannot overflow or pass the end: count <= remaining / min */
    }
    if (!kv) return 0;
    kv->arr_type = elem_type;
    kv->arr_count = count;
    kv->arr_data = first;
    return elem_type == GGUF_TYPE_STRING ? index_string_array(r, kv) : 0;
}

/* One value of a validated type; kv receives it (NULL when only validating). */
static int parse_value(Reader *r, uint32_t type, GgufKV *kv) {
    if (type == GGUF_TYPE_STRING) {
        GgufString s;
        if (read_string(r, &s, "string")) return -1;
        if (kv) kv->str = s;
        return 0;
    }
    if (type == GGUF_TYPE_ARRAY) return parse_array(r, 1, kv);
    uint64_t n = scalar_size(type);
    if (need(r, n, gguf_type_name(type))) return -1;
    const uint8_t *p = r->base + r->pos;
    if (type == GGUF_TYPE_BOOL && p[0] > 1)
        return rfail(r, "bool value %u (offset %" PRIu64 ") is not 0 or 1", p[0], r->pos);
    if (kv) decode_scalar(type, p, kv);
    r->pos += n;
    return 0;
}

/* Returns arr grown (zero-filled, doubling) to hold at least need_n elements, or NULL with arr
 * untouched. Used instead of one allocation of a declared count so that memory follows what was
 * actually parsed, not what a header claims. */
static void *grow(void *arr, int64_t *cap, int64_t need_n, size_t elem) {
    if (need_n <= *cap) return arr;
    int64_t new_cap = *cap ? *cap * 2 : 16;
    if (new_cap < need_n) new_cap = need_n;
    if ((uint64_t)new_cap > SIZE_MAX / elem) return NULL;
    char *p = realloc(arr, (size_t)new_cap * elem);
    if (!p) return NULL;
    memset(p + (size_t)*cap * elem, 0, (size_t)(new_cap - *cap) * elem);
    *cap = new_cap;
    return p;
}

static int parse_kv(Reader *r, int64_t i, GgufKV *kv) {
    char shown[80];
    uint32_t type;
    snprintf(r->where, sizeof r->where, "kv %" PRId64, i);
    if (read_string(r, &kv->key, "key")) return -1;
    if (kv->key.len == 0) return rfail(r, "empty key");
    if (kv->key.len > GGUF_MAX_KEY_LEN)
        return rfail(r, "key length %" PRIu64 " is more than %d", kv->key.len, GGUF_MAX_KEY_LEN);
    printable(kv->key.ptr, kv->key.len, shown, sizeof shown);
    snprintf(r->where, sizeof r->where, "kv %" PRId64 " (key \"%s\")", i, shown);
    if (read_u32(r, &type, "value type")) return -1;
    if (type >= GGUF_TYPE_COUNT) return rfail(r, "value type %u is not a GGUF value type (0..12)", type);
    kv->type = type;
    return parse_value(r, type, kv);
}

/* Sort helper for duplicate detection: names compared bytewise, ties broken by index. */
typedef struct {
    const char *ptr;
    uint64_t len;
    int64_t index;
} NameRef;

static int compare_names(const void *a, const void *b) {
    const NameRef *x = a, *y = b;
    uint64_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->ptr, y->ptr, (size_t)n) : 0;
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Sorts refs[0..n) and finds a repeated name: returns 1 and the two indices (first < second),
 * or 0 if all names differ. O(n log n), so files with many thousands of tensors stay fast. */
static int find_duplicate(NameRef *refs, int64_t n, int64_t *first, int64_t *second) {
    if (n < 2) return 0;
    qsort(refs, (size_t)n, sizeof *refs, compare_names);
    for (int64_t i = 0; i + 1 < n; i++) {
        if (refs[i].len == refs[i + 1].len &&
            (refs[i].len == 0 || memcmp(refs[i].ptr, refs[i + 1].ptr, (size_t)refs[i].len) == 0)) {
            *first = refs[i].index;
            *second = refs[i + 1].index;
            return 1;
        }
    }
    return 0;
}

/* Reports the first repeated kv key (tensors = 0) or tensor name (tensors = 1). */
static int check_duplicates(Reader *r, const GgufFile *f, int tensors) {
    int64_t n = tensors ? f->n_tensors : f->n_kv, a = 0, b = 0;
    r->where[0] = 0;
    if (n < 2) return 0;
    NameRef *refs = malloc((size_t)n * sizeof *refs);
    if (!refs) return rfail(r, "out of memory checking %" PRId64 " names", n);
    for (int64_t i = 0; i < n; i++) {
        GgufString s = tensors ? f->tensors[i].name : f->kv[i].key;
        refs[i] = (NameRef){s.ptr, s.len, i};
    }
    int found = find_duplicate(refs, n, &a, &b);
    free(refs);
    if (!found) return 0;
    char shown[80];
    GgufString s = tensors ? f->tensors[a].name : f->kv[a].key;
    printable(s.ptr, s.len, shown, sizeof shown);
    if (tensors) return rfail(r, "duplicate tensor name \"%s\" (tensors %" PRId64 " and %" PRId64 ")", shown, a, b);
    return rfail(r, "duplicate key \"%s\" (kv %" PRId64 " and kv %" PRId64 ")", shown, a, b);
}

/* general.alignment, if present, must be a u32 power of two (and a multiple of 8). */
static int read_alignment(Reader *r, GgufFile *f) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const GgufKV *kv = gguf_find_kv(f, "general.alignment");
    if (!kv) return 0;
    r->where[0] = 0;
    if (kv->type != GGUF_TYPE_UINT32)
        return rfail(r, "general.alignment has type %s, expected u32", gguf_type_name(kv->type));
    if (!is_valid_alignment(kv->v.u64))
        return rfail(r, "general.alignment = %" PRIu64 " is not a power of two of at least 8", kv->v.u64);
    f->alignment = kv->v.u64;
    return 0;
}

/* The shape: n_dims (<= 4) dims, each 1..INT64_MAX, whose product fits in int64. */
static int parse_dims(Reader *r, GgufTensor *t) {
    uint64_t dims[GGUF_MAX_DIMS];
    if (read_u32(r, &t->n_dims, "n_dims")) return -1;
    if (t->n_dims > GGUF_MAX_DIMS) return rfail(r, "n_dims %u is more than %d", t->n_dims, GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        char what[32];
        snprintf(what, sizeof what, "dim %u", d);
        if (read_u64(r, &dims[d], what)) return -1;
        if (dims[d] == 0 || dims[d] > (uint64_t)INT64_MAX)
            return rfail(r, "dim %u is %" PRIu64 " (must be 1..%" PRId64 ")", d, dims[d], INT64_MAX);
    }
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if ((int64_t)dims[d] > INT64_MAX / n) {
            char shape[128];
            int len = 0;
            for (uint32_t e = 0; e < t->n_dims; e++)
                len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%" PRIu64, e ? " x " : "", dims[e]);
            return rfail(r, "dims %s overflow int64", shape);
        }
        n *= (int64_t)dims[d];
        t->ne[d] = (int64_t)dims[d];
    }
    t->n_elements = n;
    return 0;
}

/* Type and byte size: ne[0] must hold whole blocks, the byte count must fit in int64. */
static int parse_tensor_type(Reader *r, GgufTensor *t) {
    if (read_u32(r, &t->type, "type")) return -1;
    const GgmlType *gt = ggml_type_lookup(t->type);
    if (!gt) return rfail(r, "unknown ggml type id %u", t->type);
    if (t->ne[0] % gt->block_elems != 0)
        return rfail(r, "ne[0] = %" PRId64 " is not a multiple of the block size %" PRId64 " of type %s",
                     t->ne[0], gt->block_elems, gt->name);
    int64_t blocks = t->ne[0] / gt->block_elems, rows = t->n_elements / t->ne[0];
    if (blocks > INT64_MAX / gt->block_bytes)
        return rfail(r, "row of %" PRId64 " %s elements overflows int64 bytes", t->ne[0], gt->name);
    int64_t row_bytes = blocks * gt->block_bytes;
    if (row_bytes > INT64_MAX / rows)
        return rfail(r, "size in bytes of %" PRId64 " rows of %" PRId64 " bytes overflows int64", rows, row_bytes);
    t->n_bytes = row_bytes * rows;
    return 0;
}

static int parse_tensor_info(Reader *r, const GgufFile *f, int64_t i, GgufTensor *t) {
    char shown[80];
    snprintf(r->where, sizeof r->where, "tensor %" PRId64, i);
    if (read_string(r, &t->name, "name")) return -1;
    if (t->name.len == 0) return rfail(r, "empty tensor name");
    printable(t->name.ptr, t->name.len, shown, sizeof shown);
    snprintf(r->where, sizeof r->where, "tensor %" PRId64 " (\"%s\")", i, shown);
    if (t->name.len > GGUF_MAX_NAME_LEN)
        return rfail(r, "name length %" PRIu64 " is more than %d", t->name.len, GGUF_MAX_NAME_LEN);
    if (parse_dims(r, t) || parse_tensor_type(r, t)) return -1;
    if (read_u64(r, &t->offset, "offset")) return -1;
    if (t->offset % f->alignment != 0)
        return rfail(r, "offset %" PRIu64 " not a multiple of alignment %" PRIu64, t->offset, f->alignment);
    return 0;
}

/* Every tensor's bytes must lie inside the file, after the start of the data section. */
static int place_tensor(Reader *r, GgufFile *f, int64_t i) {
    GgufTensor *t = &f->tensors[i];
    char shown[80];
    uint64_t avail = f->data_offset <= f->size ? f->size - f->data_offset : 0, end;
    printable(t->name.ptr, t->name.len, shown, sizeof shown);
    snprintf(r->where, sizeof r->where, "tensor %" PRId64 " (\"%s\")", i, shown);
    if (add_overflows(t->offset, (uint64_t)t->n_bytes, &end))
        return rfail(r, "tensor data [%" PRIu64 ", %" PRIu64 " + %" PRId64 ") overflows", t->offset, t->offset,
                     t->n_bytes);
    if (end > avail)
        return rfail(r, "tensor data [%" PRIu64 ", %" PRIu64 ") lies outside the file (data section at %" PRIu64
                        ", file size %" PRIu64 ")",
                     t->offset, end, f->data_offset, f->size);
    t->data = f->base + f->data_offset + t->offset;
    return 0;
}

static int compare_offsets(const void *a, const void *b) {
    const GgufTensor *x = *(const GgufTensor *const *)a, *y = *(const GgufTensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* No two tensors may share bytes (a writer bug or a crafted file aliasing weights). */
static int check_overlaps(Reader *r, const GgufFile *f) {
    if (f->n_tensors < 2) return 0;
    const GgufTensor **order = malloc((size_t)f->n_tensors * sizeof *order);
    r->where[0] = 0;
    if (!order) return rfail(r, "out of memory checking %" PRId64 " tensors", f->n_tensors);
    for (int64_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n_tensors, sizeof *order, compare_offsets);
    int rc = 0;
    for (int64_t i = 0; i + 1 < f->n_tensors && rc == 0; i++) {
        const GgufTensor *a = order[i], *b = order[i + 1];
        if (a->offset + (uint64_t)a->n_bytes > b->offset) {   /* no overflow: checked in place_tensor */
            char na[80], nb[80];
            printable(a->name.ptr, a->name.len, na, sizeof na);
            printable(b->name.ptr, b->name.len, nb, sizeof nb);
            rc = rfail(r, "tensor \"%s\" [%" PRIu64 ", %" PRIu64 ") overlaps tensor \"%s\" at offset %" PRIu64,
                       na, a->offset, a->offset + (uint64_t)a->n_bytes, nb, b->offset);
        }
    }
    free(order);
    return rc;
}

/* Magic, version and the two counts, which are bounded here by the bytes that follow. */
static int parse_header(Reader *r, GgufFile *f, uint64_t *n_tensors_out, uint64_t *n_kv_out) {
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    if (r->size < 4) return rfail(r, "file is too small (%" PRIu64 " bytes) to be a GGUF file", r->size);
    magic = le32(r->base);
    if (magic != GGUF_MAGIC) return rfail(r, "bad magic 0x%08x (expected \"GGUF\")", magic);
    r->pos = 4;
    if (read_u32(r, &f->version, "version")) return -1;
    if (f->version == 1)
        return rfail(r, "version 1 is not supported (GGUF v1 used 32-bit counts; only versions 2 and 3 are read)");
    if (f->version == 0x03000000u || f->version == 0x02000000u)
        return rfail(r, "version 0x%08x: big-endian GGUF files are not supported", f->version);
    if (f->version != 2 && f->version != 3)
        return rfail(r, "version %u is not supported (only versions 2 and 3)", f->version);
    if (read_u64(r, &n_tensors, "tensor_count") || read_u64(r, &n_kv, "kv_count")) return -1;
    /* Bound the counts by what the remaining bytes could hold before anything is allocated. */
    uint64_t rest = remaining(r);
    if (n_kv > rest / MIN_KV_BYTES)
        return rfail(r, "kv_count %" PRIu64 " is more than the %" PRIu64 " remaining bytes could hold", n_kv, rest);
    if (n_tensors > rest / MIN_TENSOR_INFO_BYTES)
        return rfail(r, "tensor_count %" PRIu64 " is more than the %" PRIu64 " remaining bytes could hold",
                     n_tensors, rest);
    if (n_tensors * MIN_TENSOR_INFO_BYTES > rest - n_kv * MIN_KV_BYTES)
        return rfail(r, "kv_count %" PRIu64 " and tensor_count %" PRIu64 " are more than the %" PRIu64
                        " remaining bytes could hold", n_kv, n_tensors, rest);
    *n_tensors_out = n_tensors;
    *n_kv_out = n_kv;
    return 0;
}

static int parse_kvs(Reader *r, GgufFile *f, uint64_t n) {
    int64_t cap = 0;
    for (int64_t i = 0; (uint64_t)i < n; i++) {
        GgufKV *kv = grow(f->kv, &cap, i + 1, sizeof *kv);
        if (!kv) return rfail(r, "out of memory reading kv %" PRId64, i);
        f->kv = kv;
        f->n_kv = i + 1;   /* so gguf_close frees what this kv allocates even if it then fails */
        if (parse_kv(r, i, &f->kv[i])) return -1;
    }
    return check_duplicates(r, f, 0);
}

static int parse_tensor_infos(Reader *r, GgufFile *f, uint64_t n) {
    int64_t cap = 0;
    for (int64_t i = 0; (uint64_t)i < n; i++) {
        GgufTensor *t = grow(f->tensors, &cap, i + 1, sizeof *t);
        if (!t) return rfail(r, "out of memory reading tensor %" PRId64, i);
        f->tensors = t;
        f->n_tensors = i + 1;
        if (parse_tensor_info(r, f, i, &f->tensors[i])) return -1;
    }
    return check_duplicates(r, f, 1);
}

/* Validates the image f->base[0..size) and fills f. */
static int parse_file(GgufFile *f, BlvError *err) {
    Reader r = {.base = f->base, .size = f->size, .pos = 0, .path = f->path, .where = "", .err = err};
    uint64_t n_tensors = 0, n_kv = 0;
    if (parse_header(&r, f, &n_tensors, &n_kv) || parse_kvs(&r, f, n_kv) || read_alignment(&r, f) ||
        parse_tensor_infos(&r, f, n_tensors))
        return -1;
    r.where[0] = 0;
    if (align_up(r.pos, f->alignment, &f->data_offset))
        return rfail(&r, "data section offset overflows");
    /* A file without tensors (a vocabulary) may end right after its metadata, unpadded. */
    if (f->n_tensors == 0 && f->data_offset > f->size) f->data_offset = f->size;
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (place_tensor(&r, f, i)) return -1;
    return check_overlaps(&r, f);
}

static char *copy_name(const char *name, BlvError *err) {
    const char *s = name ? name : "(unnamed)";
    size_t n = strlen(s);
    char *p = blv_malloc(n + 1, "file name", err);
    if (p) memcpy(p, s, n + 1);
    return p;
}

/* Reads the whole file into a page-aligned buffer (the fallback when mmap is off or fails). */
static int read_whole(int fd, uint64_t size, uint8_t **out, const char *path, BlvError *err) {
    uint64_t cap = size + (READ_BUFFER_ALIGN - size % READ_BUFFER_ALIGN) % READ_BUFFER_ALIGN;
    uint8_t *buf = aligned_alloc(READ_BUFFER_ALIGN, (size_t)cap);
    if (!buf) return blv_fail(err, "%s: out of memory reading %" PRIu64 " bytes", path, size);
    uint64_t got = 0;
    while (got < size) {
        size_t chunk = size - got > (1u << 30) ? (1u << 30) : (size_t)(size - got);
        ssize_t n = read(fd, buf + got, chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            free(buf);
            if (n == 0)
                return blv_fail(err, "%s: file shrank while reading (%" PRIu64 " of %" PRIu64 " bytes)", path, got, size);
            return blv_fail(err, "%s: read failed: %s", path, strerror(e));
        }
        got += (uint64_t)n;
    }
    *out = buf;
    return 0;
}

/* Maps or reads `path` into f->base / f->size. */
static int load_image(GgufFile *f, const char *path, int use_mmap, BlvError *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return blv_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) rc = blv_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode)) rc = blv_fail(err, "%s: not a regular file", path);
    else if (st.st_size == 0) rc = blv_fail(err, "%s: file is empty, not a GGUF file", path);  /* mmap needs >0 */
    else if ((uint64_t)st.st_size > SIZE_MAX) rc = blv_fail(err, "%s: file too large for this platform", path);
    if (rc == 0) {
        f->size = (uint64_t)st.st_size;
        void *p = use_mmap ? mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
        if (p != MAP_FAILED) {
            f->base = p;
            f->mapped = 1;
        } else {
            rc = read_whole(fd, f->size, &f->base, path, err);
        }
    }
    close(fd);
    return rc;
}

int gguf_open(GgufFile *f, const char *path, int use_mmap, BlvError *err) {
    memset(f, 0, sizeof *f);
    if (!path) return blv_fail(err, "gguf_open: no path given");
    f->path = copy_name(path, err);
    if (!f->path) return -1;
    if (load_image(f, path, use_mmap, err) || parse_file(f, err)) {
        gguf_close(f);
        return -1;
    }
    return 0;
}

int gguf_open_memory(GgufFile *f, const void *data, uint64_t size, const char *name, BlvError *err) {
    memset(f, 0, sizeof *f);
    f->path = copy_name(name, err);
    if (!f->path) return -1;
    f->base = (uint8_t *)(uintptr_t)data;   /* read only; the non-const field also holds owned buffers */
    f->size = data ? size : 0;
    f->borrowed = 1;
    if (parse_file(f, err)) {
        gguf_close(f);
        return -1;
    }
    return 0;
}

void gguf_close(GgufFile *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_kv; i++) free((void *)f->kv[i].arr_str_offsets);
    free(f->kv);
    free(f->tensors);
    if (f->base && !f->borrowed) {
        if (f->mapped) munmap(f->base, (size_t)f->size);
        else free(f->base);
    }
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ---- lookups and typed getters ------------------------------------------------------------------ */

static int string_equals(GgufString s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

const GgufKV *gguf_find_kv(const GgufFile *f, const char *key) {
    for (int64_t i = 0; i < f->n_kv; i++)
        if (string_equals(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name) {
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (string_equals(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

static const GgufKV *find_for_get(const GgufFile *f, const char *key, BlvError *err) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv) blv_fail(err, "%s: key %s is missing", f->path, key);
    return kv;
}

static int wrong_type(const GgufFile *f, const GgufKV *kv, const char *key, const char *expected, BlvError *err) {
    if (kv->type == GGUF_TYPE_ARRAY)
        return blv_fail(err, "%s: key %s has type array of %s, expected %s", f->path, key,
                        gguf_type_name(kv->arr_type), expected);
    return blv_fail(err, "%s: key %s has type %s, expected %s", f->path, key, gguf_type_name(kv->type), expected);
}

static int get_integer(const GgufFile *f, const char *key, int64_t lo, uint64_t hi, const char *tname,
                       uint64_t *as_u64, int64_t *as_i64, BlvError *err) {
    const GgufKV *kv = find_for_get(f, key, err);
    if (!kv) return -1;
    if (is_unsigned_type(kv->type)) {
        if (kv->v.u64 > hi)
            return blv_fail(err, "%s: key %s value %" PRIu64 " is out of range for %s", f->path, key, kv->v.u64, tname);
        *as_u64 = kv->v.u64;
        *as_i64 = (int64_t)kv->v.u64;
        return 0;
    }
    if (is_signed_type(kv->type)) {
        if (kv->v.i64 < lo || (kv->v.i64 >= 0 && (uint64_t)kv->v.i64 > hi))
            return blv_fail(err, "%s: key %s value %" PRId64 " is out of range for %s", f->path, key, kv->v.i64, tname);
        *as_u64 = (uint64_t)kv->v.i64;
        *as_i64 = kv->v.i64;
        return 0;
    }
    return wrong_type(f, kv, key, "an integer", err);
}

int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *out, BlvError *err) {
    uint64_t u;
    int64_t i;
    if (get_integer(f, key, 0, UINT32_MAX, "u32", &u, &i, err)) return -1;
    *out = (uint32_t)u;
    return 0;
}

int gguf_get_i64(const GgufFile *f, const char *key, int64_t *out, BlvError *err) {
    uint64_t u;
    int64_t i;
    if (get_integer(f, key, INT64_MIN, (uint64_t)INT64_MAX, "i64", &u, &i, err)) return -1;
    *out = i;
    return 0;
}

int gguf_get_f32(const GgufFile *f, const char *key, float *out, BlvError *err) {
    const GgufKV *kv = find_for_get(f, key, err);
    if (!kv) return -1;
    if (!is_float_type(kv->type)) return wrong_type(f, kv, key, "f32 or f64", err);
    if (isfinite(kv->v.f64) && fabs(kv->v.f64) > FLT_MAX)
        return blv_fail(err, "%s: key %s value %g is out of range for f32", f->path, key, kv->v.f64);
    *out = (float)kv->v.f64;
    return 0;
}

int gguf_get_bool(const GgufFile *f, const char *key, int *out, BlvError *err) {
    const GgufKV *kv = find_for_get(f, key, err);
    if (!kv) return -1;
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(f, kv, key, "bool", err);
    *out = kv->v.u64 != 0;
    return 0;
}

int gguf_get_string(const GgufFile *f, const char *key, char **out, BlvError *err) {
    const GgufKV *kv = find_for_get(f, key, err);
    *out = NULL;
    if (!kv) return -1;
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(f, kv, key, "string", err);
    /* A NUL inside would silently cut the C string short. */
    if (kv->str.len && memchr(kv->str.ptr, 0, (size_t)kv->str.len))
        return blv_fail(err, "%s: key %s: string contains a NUL byte", f->path, key);
    char *s = blv_malloc((size_t)kv->str.len + 1, key, err);
    if (!s) return -1;
    if (kv->str.len) memcpy(s, kv->str.ptr, (size_t)kv->str.len);
    s[kv->str.len] = 0;
    *out = s;
    return 0;
}

int gguf_get_array(const GgufFile *f, const char *key, uint32_t elem_type, const GgufKV **out, BlvError *err) {
    const GgufKV *kv = find_for_get(f, key, err);
    *out = NULL;
    if (!kv) return -1;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != elem_type) {
        char expected[32];
        snprintf(expected, sizeof expected, "array of %s", gguf_type_name(elem_type));
        return wrong_type(f, kv, key, expected, err);
    }
    *out = kv;
    return 0;
}

GgufString gguf_array_string(const GgufKV *kv, uint64_t i) {
    GgufString s = {NULL, 0};
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING || i >= kv->arr_count) return s;
    const uint8_t *p = kv->arr_data + kv->arr_str_offsets[i];
    s.len = le64(p);
    s.ptr = (const char *)(p + 8);
    return s;
}

/* Element i of a numeric array decoded into a scratch KV; 0 if i or the type is out of range. */
static int array_element(const GgufKV *kv, uint64_t i, GgufKV *tmp) {
    uint64_t n = scalar_size(kv->arr_type);
    if (kv->type != GGUF_TYPE_ARRAY || n == 0 || i >= kv->arr_count) return 0;
    decode_scalar(kv->arr_type, kv->arr_data + i * n, tmp);
    return 1;
}

double gguf_array_f64(const GgufKV *kv, uint64_t i) {
    GgufKV e;
    if (!array_element(kv, i, &e)) return 0.0;
    if (is_float_type(kv->arr_type)) return e.v.f64;
    if (is_signed_type(kv->arr_type)) return (double)e.v.i64;
    return (double)e.v.u64;
}

int64_t gguf_array_i64(const GgufKV *kv, uint64_t i) {
    GgufKV e;
    if (!array_element(kv, i, &e)) return 0;
    if (is_signed_type(kv->arr_type)) return e.v.i64;
    if (is_float_type(kv->arr_type)) {   /* truncated, saturated: a float -> int cast out of range is UB */
        if (isnan(e.v.f64)) return 0;
        if (e.v.f64 >= 9223372036854775807.0) return INT64_MAX;
        if (e.v.f64 <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)e.v.f64;
    }
    return e.v.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)e.v.u64;
}

/* ==== writer ===================================================================================== */

typedef struct {
    char *key;
    uint32_t type;
    uint8_t *value;       /* serialized value: the bytes that follow the type in the file */
    uint64_t value_len;
} WriterKV;

typedef struct {
    char *name;
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint64_t n_bytes;
    uint64_t offset;      /* relative to the data section, set by gguf_writer_begin */
} WriterTensor;

enum { W_DECLARING, W_WRITING, W_FINISHED, W_FAILED };

struct GgufWriter {
    WriterKV *kv;
    int64_t n_kv, cap_kv;
    WriterTensor *tensors;
    int64_t n_tensors, cap_tensors;
    int state;
    FILE *fp;
    char *path;           /* final name */
    char *tmp_path;       /* written here, renamed to path by gguf_writer_finish */
    uint64_t alignment;
    uint64_t pos;         /* bytes written so far */
    int64_t next_tensor;  /* index of the tensor gguf_writer_put_tensor expects */
    char msg[1024];
};

static int wfail(GgufWriter *w, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Records a declaration-phase error in the writer's own message. */
static int wfail(GgufWriter *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->msg, sizeof w->msg, fmt, ap);
    va_end(ap);
    return -1;
}

const char *gguf_writer_error(const GgufWriter *w) { return w ? w->msg : "no writer"; }

GgufWriter *gguf_writer_new(BlvError *err) {
    GgufWriter *w = blv_calloc(1, sizeof *w, "GGUF writer", err);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

/* Abandons the output: closes and deletes the partial temporary file. */
static void discard_output(GgufWriter *w) {
    if (w->fp) fclose(w->fp);
    w->fp = NULL;
    if (w->tmp_path) remove(w->tmp_path);
}

void gguf_writer_free(GgufWriter *w) {
    if (!w) return;
    if (w->state == W_WRITING) discard_output(w);
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].value);
    }
    free(w->kv);
    for (int64_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

static char *dup_bytes(const void *p, size_t n) {
    char *s = malloc(n + 1);
    if (s) {
        if (n) memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

/* The general.alignment rule, checked when it is set so that the caller hears at once. */
static int check_alignment_kv(GgufWriter *w, uint32_t type, const uint8_t *value, uint64_t len) {
    if (type != GGUF_TYPE_UINT32) return wfail(w, "general.alignment must be a u32, not %s", gguf_type_name(type));
    uint32_t a = len == 4 ? le32(value) : 0;
    if (!is_valid_alignment(a)) return wfail(w, "general.alignment = %u is not a power of two of at least 8", a);
    return 0;
}

/* Stores a serialized value under key, replacing an earlier value of the same key. */
static int set_value(GgufWriter *w, const char *key, uint32_t type, const uint8_t *value, uint64_t len) {
    if (!w) return -1;
    if (!key) return wfail(w, "NULL key");
    size_t key_len = strlen(key);
    if (w->state != W_DECLARING) return wfail(w, "key %s: set after gguf_writer_begin", key);
    if (key_len == 0 || key_len > GGUF_MAX_KEY_LEN)
        return wfail(w, "key length %zu is not 1..%d", key_len, GGUF_MAX_KEY_LEN);
    if (strcmp(key, "general.alignment") == 0 && check_alignment_kv(w, type, value, len)) return -1;
    if (len > SIZE_MAX) return wfail(w, "key %s: value too large", key);
    uint8_t *copy = malloc(len ? (size_t)len : 1);
    if (!copy) return wfail(w, "key %s: out of memory (%" PRIu64 " bytes)", key, len);
    if (len) memcpy(copy, value, (size_t)len);
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].value);
            w->kv[i].type = type;
            w->kv[i].value = copy;
            w->kv[i].value_len = len;
            return 0;
        }
    }
    char *kcopy = dup_bytes(key, key_len);
    WriterKV *kvs = kcopy ? grow(w->kv, &w->cap_kv, w->n_kv + 1, sizeof *kvs) : NULL;
    if (!kvs) {
        free(copy);
        free(kcopy);
        return wfail(w, "key %s: out of memory", key);
    }
    w->kv = kvs;
    w->kv[w->n_kv++] = (WriterKV){kcopy, type, copy, len};
    return 0;
}

static int set_scalar(GgufWriter *w, const char *key, uint32_t type, uint64_t bits) {
    uint8_t buf[8];
    int n = (int)scalar_size(type);
    put_le(buf, bits, n);
    return set_value(w, key, type, buf, (uint64_t)n);
}

int gguf_set_u8(GgufWriter *w, const char *key, uint8_t v) { return set_scalar(w, key, GGUF_TYPE_UINT8, v); }
/* Signed values are stored as their two's complement bits of the type's width. */
int gguf_set_i8(GgufWriter *w, const char *key, int8_t v) {
    return set_scalar(w, key, GGUF_TYPE_INT8, (uint64_t)(uint8_t)v);
}
int gguf_set_u16(GgufWriter *w, const char *key, uint16_t v) { return set_scalar(w, key, GGUF_TYPE_UINT16, v); }
int gguf_set_i16(GgufWriter *w, const char *key, int16_t v) {
    return set_scalar(w, key, GGUF_TYPE_INT16, (uint64_t)(uint16_t)v);
}
int gguf_set_u32(GgufWriter *w, const char *key, uint32_t v) { return set_scalar(w, key, GGUF_TYPE_UINT32, v); }
int gguf_set_i32(GgufWriter *w, const char *key, int32_t v) {
    return set_scalar(w, key, GGUF_TYPE_INT32, (uint64_t)(uint32_t)v);
}
int gguf_set_u64(GgufWriter *w, const char *key, uint64_t v) { return set_scalar(w, key, GGUF_TYPE_UINT64, v); }
int gguf_set_i64(GgufWriter *w, const char *key, int64_t v) { return set_scalar(w, key, GGUF_TYPE_INT64, (uint64_t)v); }
int gguf_set_bool(GgufWriter *w, const char *key, int v) { return set_scalar(w, key, GGUF_TYPE_BOOL, v != 0); }

int gguf_set_f32(GgufWriter *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return set_scalar(w, key, GGUF_TYPE_FLOAT32, bits);
}

int gguf_set_f64(GgufWriter *w, const char *key, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return set_scalar(w, key, GGUF_TYPE_FLOAT64, bits);
}

int gguf_set_string(GgufWriter *w, const char *key, const char *v) {
    if (!w) return -1;
    if (!v) return wfail(w, "key %s: NULL string", key ? key : "(null)");
    uint64_t len = strlen(v);
    uint8_t *buf = malloc((size_t)len + 8);
    if (!buf) return wfail(w, "key %s: out of memory", key ? key : "(null)");
    put_le(buf, len, 8);
    memcpy(buf + 8, v, (size_t)len);
    int rc = set_value(w, key, GGUF_TYPE_STRING, buf, len + 8);
    free(buf);
    return rc;
}

int gguf_set_array(GgufWriter *w, const char *key, uint32_t elem_type, const void *data, uint64_t count) {
    if (!w) return -1;
    const char *k = key ? key : "(null)";
    uint64_t esize = scalar_size(elem_type);
    if (esize == 0)
        return wfail(w, "key %s: gguf_set_array takes numeric or bool elements, not %s", k, gguf_type_name(elem_type));
    if (count > (SIZE_MAX - 12) / esize) return wfail(w, "key %s: array of %" PRIu64 " elements is too large", k, count);
    if (count && !data) return wfail(w, "key %s: NULL array data", k);
    const uint8_t *src = data;
    if (elem_type == GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < count; i++)
            if (src[i] > 1) return wfail(w, "key %s: bool array element %" PRIu64 " is %u, not 0 or 1", k, i, src[i]);
    uint64_t len = 12 + count * esize;
    uint8_t *buf = malloc((size_t)len);
    if (!buf) return wfail(w, "key %s: out of memory", k);
    put_le(buf, elem_type, 4);
    put_le(buf + 4, count, 8);
    if (count) memcpy(buf + 12, data, (size_t)(count * esize));
    int rc = set_value(w, key, GGUF_TYPE_ARRAY, buf, len);
    free(buf);
    return rc;
}

int gguf_set_string_array(GgufWriter *w, const char *key, const char *const *strs, const uint64_t *lens,
                          uint64_t count) {
    if (!w) return -1;
    const char *k = key ? key : "(null)";
    uint64_t len = 12;
    if (count && !strs) return wfail(w, "key %s: NULL string array", k);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t n = lens ? lens[i] : (strs[i] ? strlen(strs[i]) : 0);
        if (!strs[i] && n) return wfail(w, "key %s: string %" PRIu64 " is NULL", k, i);
        if (add_overflows(len, 8, &len) || add_overflows(len, n, &len) || len > SIZE_MAX)
            return wfail(w, "key %s: string array too large", k);
    }
    uint8_t *buf = malloc((size_t)len);
    if (!buf) return wfail(w, "key %s: out of memory (%" PRIu64 " bytes)", k, len);
    put_le(buf, GGUF_TYPE_STRING, 4);
    put_le(buf + 4, count, 8);
    uint64_t pos = 12;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t n = lens ? lens[i] : (strs[i] ? strlen(strs[i]) : 0);
        put_le(buf + pos, n, 8);
        if (n) memcpy(buf + pos + 8, strs[i], (size_t)n);
        pos += 8 + n;
    }
    int rc = set_value(w, key, GGUF_TYPE_ARRAY, buf, len);
    free(buf);
    return rc;
}

int gguf_set_raw(GgufWriter *w, const char *key, uint32_t type, const void *value, uint64_t n_bytes) {
    if (!w) return -1;
    const char *k = key ? key : "(null)";
    if (type >= GGUF_TYPE_COUNT) return wfail(w, "key %s: value type %u is not a GGUF value type", k, type);
    if (n_bytes && !value) return wfail(w, "key %s: NULL value", k);
    /* Validate with the reader itself, over just these bytes. */
    BlvError err;
    char name[96];
    snprintf(name, sizeof name, "gguf_set_raw(%.64s)", k);
    Reader r = {.base = value, .size = n_bytes, .pos = 0, .path = name, .where = "", .err = &err};
    GgufKV tmp;
    memset(&tmp, 0, sizeof tmp);
    int rc = parse_value(&r, type, type == GGUF_TYPE_ARRAY ? NULL : &tmp);
    if (rc == 0 && r.pos != n_bytes) rc = rfail(&r, "%" PRIu64 " bytes left over after the value", n_bytes - r.pos);
    if (rc) return wfail(w, "%s", err.msg);
    return set_value(w, key, type, value, n_bytes);
}

int gguf_copy_kv(GgufWriter *w, const GgufFile *src, const GgufKV *kv) {
    if (!w) return -1;
    if (!src || !kv) return wfail(w, "gguf_copy_kv: NULL file or kv");
    if (kv->key.len > GGUF_MAX_KEY_LEN || memchr(kv->key.ptr, 0, (size_t)kv->key.len))
        return wfail(w, "%s: key cannot be copied (too long or contains NUL)", src->path);
    char *key = dup_bytes(kv->key.ptr, (size_t)kv->key.len);
    if (!key) return wfail(w, "gguf_copy_kv: out of memory");
    int rc;
    if (kv->type == GGUF_TYPE_STRING || kv->type == GGUF_TYPE_ARRAY) {
        /* The value's bytes are still in the source image, starting with the string's u64 length
         * or the array's u32 element type and u64 count; walk them to find where they end. */
        uintptr_t at = kv->type == GGUF_TYPE_STRING ? (uintptr_t)kv->str.ptr - 8 : (uintptr_t)kv->arr_data - 12;
        uintptr_t base = (uintptr_t)src->base;
        if (at < base || at - base >= src->size) {   /* a kv of some other file: refuse, don't read */
            free(key);
            return wfail(w, "gguf_copy_kv: the kv is not from %s", src->path);
        }
        uint64_t start = at - base;
        BlvError err;
        Reader r = {.base = src->base, .size = src->size, .pos = start, .path = src->path, .where = "", .err = &err};
        rc = parse_value(&r, kv->type, NULL);
        rc = rc ? wfail(w, "%s", err.msg) : gguf_set_raw(w, key, kv->type, src->base + start, r.pos - start);
    } else {
        uint64_t bits = 0;
        if (kv->type == GGUF_TYPE_FLOAT32) {
            float x = (float)kv->v.f64;
            uint32_t b32;
            memcpy(&b32, &x, sizeof b32);
            bits = b32;
        } else {
            memcpy(&bits, &kv->v, sizeof bits);   /* u64, i64 (two's complement) or f64 bits */
        }
        rc = set_scalar(w, key, kv->type, bits);
    }
    free(key);
    return rc;
}

int gguf_add_tensor(GgufWriter *w, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne) {
    if (!w) return -1;
    if (w->state != W_DECLARING) return wfail(w, "tensor %s: added after gguf_writer_begin", name ? name : "(null)");
    if (!name || !name[0]) return wfail(w, "tensor with an empty name");
    size_t name_len = strlen(name);
    if (name_len > GGML_MAX_NAME_LEN)
        return wfail(w, "tensor %s: name is %zu bytes, ggml allows at most %d", name, name_len, GGML_MAX_NAME_LEN);
    const GgmlType *gt = ggml_type_lookup(type);
    if (!gt) return wfail(w, "tensor %s: unknown ggml type id %u", name, type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return wfail(w, "tensor %s: n_dims %u is not 1..%d", name, n_dims, GGUF_MAX_DIMS);
    int64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) return wfail(w, "tensor %s: ne[%u] = %" PRId64 " is not positive", name, d, ne[d]);
        if (ne[d] > INT64_MAX / n) return wfail(w, "tensor %s: element count overflows int64", name);
        n *= ne[d];
    }
    if (ne[0] % gt->block_elems)
        return wfail(w, "tensor %s: ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64, name, ne[0],
                     gt->name, gt->block_elems);
    int64_t blocks = ne[0] / gt->block_elems, rows = n / ne[0];
    if (blocks > INT64_MAX / gt->block_bytes || blocks * gt->block_bytes > INT64_MAX / rows)
        return wfail(w, "tensor %s: size in bytes overflows int64", name);
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return wfail(w, "tensor %s: declared twice", name);
    char *copy = dup_bytes(name, name_len);
    WriterTensor *ts = copy ? grow(w->tensors, &w->cap_tensors, w->n_tensors + 1, sizeof *ts) : NULL;
    if (!ts) {
        free(copy);
        return wfail(w, "tensor %s: out of memory", name);
    }
    w->tensors = ts;
    WriterTensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = copy;
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->n_bytes = (uint64_t)(blocks * gt->block_bytes * rows);
    return 0;
}

/* Writing-phase failure: message to err (and the writer), output deleted, writer unusable. */
static int write_fail(GgufWriter *w, BlvError *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int write_fail(GgufWriter *w, BlvError *err, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(w->msg, sizeof w->msg, "%s: %s", w->path ? w->path : "(no path)", msg);
    if (w->state == W_WRITING) discard_output(w);
    w->state = W_FAILED;
    return blv_fail(err, "%s", w->msg);
}

static int write_bytes(GgufWriter *w, const void *p, uint64_t n, BlvError *err) {
    if (n > SIZE_MAX) return write_fail(w, err, "write of %" PRIu64 " bytes too large", n);
    if (n && fwrite(p, 1, (size_t)n, w->fp) != (size_t)n) return write_fail(w, err, "write failed: %s", strerror(errno));
    w->pos += n;
    return 0;
}

static int write_le(GgufWriter *w, uint64_t v, int n, BlvError *err) {
    uint8_t buf[8];
    put_le(buf, v, n);
    return write_bytes(w, buf, (uint64_t)n, err);
}

/* Zero bytes up to the next multiple of the alignment. */
static int write_padding(GgufWriter *w, BlvError *err) {
    static const uint8_t zeros[256];
    uint64_t target;
    if (align_up(w->pos, w->alignment, &target)) return write_fail(w, err, "file size overflows");
    while (w->pos < target) {
        uint64_t n = target - w->pos < sizeof zeros ? target - w->pos : sizeof zeros;
        if (write_bytes(w, zeros, n, err)) return -1;
    }
    return 0;
}

/* Tensor offsets, each aligned, in declaration order. */
static int layout_tensors(GgufWriter *w, BlvError *err) {
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = off;
        if (add_overflows(off, w->tensors[i].n_bytes, &off) || align_up(off, w->alignment, &off))
            return write_fail(w, err, "total tensor size overflows");
    }
    return 0;
}

static int write_header(GgufWriter *w, BlvError *err) {
    if (write_le(w, GGUF_MAGIC, 4, err) || write_le(w, GGUF_VERSION, 4, err) ||
        write_le(w, (uint64_t)w->n_tensors, 8, err) || write_le(w, (uint64_t)w->n_kv, 8, err))
        return -1;
    for (int64_t i = 0; i < w->n_kv; i++) {
        const WriterKV *kv = &w->kv[i];
        uint64_t klen = strlen(kv->key);
        if (write_le(w, klen, 8, err) || write_bytes(w, kv->key, klen, err) || write_le(w, kv->type, 4, err) ||
            write_bytes(w, kv->value, kv->value_len, err))
            return -1;
    }
    for (int64_t i = 0; i < w->n_tensors; i++) {
        const WriterTensor *t = &w->tensors[i];
        uint64_t nlen = strlen(t->name);
        if (write_le(w, nlen, 8, err) || write_bytes(w, t->name, nlen, err) || write_le(w, t->n_dims, 4, err))
            return -1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if (write_le(w, (uint64_t)t->ne[d], 8, err)) return -1;
        if (write_le(w, t->type, 4, err) || write_le(w, t->offset, 8, err)) return -1;
    }
    return write_padding(w, err);
}

int gguf_writer_begin(GgufWriter *w, const char *path, BlvError *err) {
    if (!w) return blv_fail(err, "gguf_writer_begin: no writer");
    if (!path) return blv_fail(err, "gguf_writer_begin: no path");
    if (w->state != W_DECLARING) return blv_fail(err, "%s: gguf_writer_begin called twice", path);
    free(w->path);
    free(w->tmp_path);
    w->path = dup_bytes(path, strlen(path));
    w->tmp_path = malloc(strlen(path) + 5);
    if (!w->path || !w->tmp_path) return write_fail(w, err, "out of memory");
    snprintf(w->tmp_path, strlen(path) + 5, "%s.tmp", path);
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, "general.alignment") == 0) w->alignment = le32(w->kv[i].value);
    if (layout_tensors(w, err)) return -1;
    /* Written under a temporary name so that a failed run never leaves a half file at `path`. */
    w->fp = fopen(w->tmp_path, "wb");
    if (!w->fp) return write_fail(w, err, "cannot create %s: %s", w->tmp_path, strerror(errno));
    w->state = W_WRITING;
    w->pos = 0;
    w->next_tensor = 0;
    return write_header(w, err);
}

int gguf_writer_put_tensor(GgufWriter *w, const void *data, uint64_t n_bytes, BlvError *err) {
    if (!w) return blv_fail(err, "gguf_writer_put_tensor: no writer");
    if (w->state != W_WRITING)
        return blv_fail(err, "%s: gguf_writer_put_tensor called %s", w->path ? w->path : "(no path)",
                        w->state == W_DECLARING ? "before gguf_writer_begin" : "after the writer finished or failed");
    if (w->next_tensor >= w->n_tensors)
        return write_fail(w, err, "gguf_writer_put_tensor called more times than the %" PRId64 " tensors declared",
                          w->n_tensors);
    const WriterTensor *t = &w->tensors[w->next_tensor];
    if (n_bytes != t->n_bytes)
        return write_fail(w, err, "tensor %" PRId64 " (%s): got %" PRIu64 " bytes, its shape and type %s need %" PRIu64,
                          w->next_tensor, t->name, n_bytes, gguf_ggml_type_name(t->type), t->n_bytes);
    if (!data && n_bytes) return write_fail(w, err, "tensor %s: NULL data", t->name);
    if (write_bytes(w, data, n_bytes, err) || write_padding(w, err)) return -1;
    w->next_tensor++;
    return 0;
}

int gguf_writer_finish(GgufWriter *w, BlvError *err) {
    if (!w) return blv_fail(err, "gguf_writer_finish: no writer");
    if (w->state != W_WRITING)
        return blv_fail(err, "%s: gguf_writer_finish called %s", w->path ? w->path : "(no path)",
                        w->state == W_DECLARING ? "before gguf_writer_begin" : "twice or after a failure");
    if (w->next_tensor != w->n_tensors)
        return write_fail(w, err, "only %" PRId64 " of %" PRId64 " tensors were written", w->next_tensor, w->n_tensors);
    FILE *fp = w->fp;
    w->fp = NULL;
    if (fflush(fp) != 0 || ferror(fp)) {
        int e = errno;
        fclose(fp);
        return write_fail(w, err, "write failed: %s", strerror(e));
    }
    if (fclose(fp) != 0) return write_fail(w, err, "close failed: %s", strerror(errno));
    if (rename(w->tmp_path, w->path) != 0)
        return write_fail(w, err, "cannot rename %s to %s: %s", w->tmp_path, w->path, strerror(errno));
    w->state = W_FINISHED;
    return 0;
}
