/* tests/test_gguf.c — GGUF reader and writer: round trips through both load paths, the real
 * llama-spm vocabulary file, a fixture written by gguf-py (and, optionally, gguf-py reading ours),
 * hand-crafted malformed files, truncation at every offset and a byte-flip fuzz loop. */
#include "test.h"
#include "../gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------------- */

static int contains(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

static int str_is(GgufString s, const char *c) {
    return s.len == strlen(c) && (s.len == 0 || memcmp(s.ptr, c, s.len) == 0);
}

static uint64_t fnv1a64(const void *data, uint64_t n) {
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* IEEE half -> float, exact (test-local so this suite does not depend on quant.c). */
static float half_to_float(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    float v;
    if (exp == 0) v = ldexpf((float)mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = ldexpf((float)(mant | 1024), exp - 25);
    return sign ? -v : v;
}

static int write_bytes_to(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t put = fwrite(data, 1, n, fp);
    return fclose(fp) == 0 && put == n ? 0 : -1;
}

/* A growable byte buffer for building files by hand. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

static void buf_put(Buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void buf_le(Buf *b, uint64_t v, int n) {
    uint8_t tmp[8];
    for (int i = 0; i < n; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    buf_put(b, tmp, (size_t)n);
}
static void buf_u32(Buf *b, uint32_t v) { buf_le(b, v, 4); }
static void buf_u64(Buf *b, uint64_t v) { buf_le(b, v, 8); }
static void buf_str(Buf *b, const char *s) {
    buf_u64(b, strlen(s));
    buf_put(b, s, strlen(s));
}
static void buf_zeros(Buf *b, size_t n) {
    for (size_t i = 0; i < n; i++) buf_le(b, 0, 1);
}
static void buf_pad(Buf *b, size_t align) { buf_zeros(b, (align - b->len % align) % align); }

static void craft_header(Buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    buf_put(b, "GGUF", 4);
    buf_u32(b, version);
    buf_u64(b, n_tensors);
    buf_u64(b, n_kv);
}
static void craft_kv_u32(Buf *b, const char *key, uint32_t v) {
    buf_str(b, key);
    buf_u32(b, GGUF_TYPE_UINT32);
    buf_u32(b, v);
}
static void craft_kv_str(Buf *b, const char *key, const char *v) {
    buf_str(b, key);
    buf_u32(b, GGUF_TYPE_STRING);
    buf_str(b, v);
}
static void craft_tensor(Buf *b, const char *name, uint32_t n_dims, const uint64_t *dims, uint32_t type,
                         uint64_t offset) {
    buf_str(b, name);
    buf_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) buf_u64(b, dims[d]);
    buf_u32(b, type);
    buf_u64(b, offset);
}

/* Opens a copy of exactly n bytes (so ASan sees any read past the end). */
static int open_copy(GgufFile *f, const void *data, size_t n, const char *name, BlvError *err, uint8_t **copy) {
    *copy = malloc(n ? n : 1);
    if (n) memcpy(*copy, data, n);
    return gguf_open_memory(f, *copy, n, name, err);
}

/* The crafted image must be rejected with a message naming the file and containing `word`. */
static void expect_reject(const Buf *b, const char *word, const char *what) {
    GgufFile f;
    BlvError err = {{0}};
    uint8_t *copy;
    int rc = open_copy(&f, b->p, b->len, "crafted.gguf", &err, &copy);
    CHECK(rc == -1, "%s: expected an error", what);
    if (rc == -1) {
        if (getenv("BLUELMV_TEST_VERBOSE")) test_note("%s: %s", what, err.msg);   /* to review the wording */
        CHECK(contains(err.msg, "crafted.gguf"), "%s: message lacks the file name: %s", what, err.msg);
        CHECK(contains(err.msg, word), "%s: message lacks \"%s\": %s", what, word, err.msg);
        CHECK(f.base == NULL && f.kv == NULL && f.tensors == NULL, "%s: file not left closed", what);
    } else {
        gguf_close(&f);
    }
    free(copy);
}

static void expect_accept(const Buf *b, const char *what) {
    GgufFile f;
    BlvError err = {{0}};
    uint8_t *copy;
    int rc = open_copy(&f, b->p, b->len, "crafted.gguf", &err, &copy);
    CHECK(rc == 0, "%s: %s", what, err.msg);
    if (rc == 0) gguf_close(&f);
    free(copy);
}

/* ---- the sample file: every KV type and several tensor types ---------------------------------- */

typedef struct {
    const char *name;
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[4];
} TensorSpec;

static const TensorSpec sample_tensors[] = {
    {"tok.weight", 0, 1, {7, 1, 1, 1}},        /* f32, 28 bytes: padding follows */
    {"f16.w", 1, 2, {3, 5, 1, 1}},             /* f16 */
    {"q8.w", 8, 2, {64, 3, 1, 1}},             /* q8_0 */
    {"blk.0.q4.w", 2, 4, {32, 2, 3, 2}},       /* q4_0, 4-D */
    {"bf16.w", 30, 3, {5, 1, 2, 1}},           /* bf16 */
    {"q4k.w", 12, 2, {256, 1, 1, 1}},          /* q4_K: not computed with, but must load */
};
#define N_SAMPLE_TENSORS ((int)(sizeof sample_tensors / sizeof sample_tensors[0]))

static const char *const sample_strs[] = {"alpha", "", "βeta ✓", "x y"};
static const int32_t sample_i32s[] = {1, -2, 3, INT32_MAX, INT32_MIN};
static const uint8_t sample_bools[] = {1, 0, 1};
static const char sample_unicode[] = "unicode: héllo wörld ✓ 日本語 🦙";

/* The nested array [[1, 2], [3]] of u8, serialized: elem type ARRAY, count 2, then each array. */
static Buf nested_value(void) {
    Buf b = {0};
    buf_u32(&b, GGUF_TYPE_ARRAY);
    buf_u64(&b, 2);
    buf_u32(&b, GGUF_TYPE_UINT8);
    buf_u64(&b, 2);
    buf_le(&b, 1, 1);
    buf_le(&b, 2, 1);
    buf_u32(&b, GGUF_TYPE_UINT8);
    buf_u64(&b, 1);
    buf_le(&b, 3, 1);
    return b;
}

static int64_t spec_bytes(const TensorSpec *t) {
    int64_t be = 1, bb = 0;   /* an unknown type gives 0 bytes, and the checks on n_bytes fail */
    gguf_ggml_type_info(t->type, &be, &bb);
    return t->ne[0] / be * bb * t->ne[1] * t->ne[2] * t->ne[3];
}

/* Deterministic contents for sample tensor i. */
static uint8_t *sample_data(int i) {
    int64_t n = spec_bytes(&sample_tensors[i]);
    uint8_t *p = malloc((size_t)n + 1);
    uint64_t state = 1000 + (uint64_t)i;
    for (int64_t j = 0; j < n; j++) p[j] = (uint8_t)test_rand_u64(&state);
    return p;
}

static int set_sample_kvs(GgufWriter *w, uint32_t alignment) {
    int rc = 0;
    rc |= gguf_set_string(w, "general.architecture", "test");
    if (alignment) rc |= gguf_set_u32(w, "general.alignment", alignment);
    rc |= gguf_set_u8(w, "k.u8", 250);
    rc |= gguf_set_i8(w, "k.i8", -7);
    rc |= gguf_set_u16(w, "k.u16", 65535);
    rc |= gguf_set_i16(w, "k.i16", -32768);
    rc |= gguf_set_u32(w, "k.u32", 0xDEADBEEFu);
    rc |= gguf_set_i32(w, "k.i32", INT32_MIN);
    rc |= gguf_set_f32(w, "k.f32", 1.5f);
    rc |= gguf_set_bool(w, "k.bool", 1);
    rc |= gguf_set_string(w, "k.string", sample_unicode);
    rc |= gguf_set_string(w, "k.empty_string", "");
    rc |= gguf_set_u64(w, "k.u64", UINT64_MAX);
    rc |= gguf_set_i64(w, "k.i64", INT64_MIN);
    rc |= gguf_set_f64(w, "k.f64", 0.1);
    rc |= gguf_set_array(w, "k.arr_i32", GGUF_TYPE_INT32, sample_i32s, 5);
    rc |= gguf_set_array(w, "k.arr_bool", GGUF_TYPE_BOOL, sample_bools, 3);
    rc |= gguf_set_array(w, "k.empty_array", GGUF_TYPE_FLOAT32, NULL, 0);
    rc |= gguf_set_string_array(w, "k.strs", sample_strs, NULL, 4);
    rc |= gguf_set_u32(w, "k.replaced", 1);            /* set twice: the second value wins */
    rc |= gguf_set_string(w, "k.replaced", "second");
    Buf nested = nested_value();
    rc |= gguf_set_raw(w, "k.nested", GGUF_TYPE_ARRAY, nested.p, nested.len);
    free(nested.p);
    return rc;
}

/* Writes the sample to path (alignment 0: default). Returns 0 on success. */
static int write_sample(const char *path, uint32_t alignment, BlvError *err) {
    GgufWriter *w = gguf_writer_new(err);
    if (!w) return -1;
    int rc = set_sample_kvs(w, alignment);
    for (int i = 0; i < N_SAMPLE_TENSORS && rc == 0; i++)
        rc = gguf_add_tensor(w, sample_tensors[i].name, sample_tensors[i].type, sample_tensors[i].n_dims,
                             sample_tensors[i].ne);
    if (rc) snprintf(err->msg, sizeof err->msg, "declaring: %s", gguf_writer_error(w));
    if (rc == 0) rc = gguf_writer_begin(w, path, err);
    for (int i = 0; i < N_SAMPLE_TENSORS && rc == 0; i++) {
        uint8_t *data = sample_data(i);
        rc = gguf_writer_put_tensor(w, data, (uint64_t)spec_bytes(&sample_tensors[i]), err);
        free(data);
    }
    if (rc == 0) rc = gguf_writer_finish(w, err);
    gguf_writer_free(w);
    return rc;
}

/* Everything the sample file holds, checked value by value. */
static void check_sample(const GgufFile *f, uint32_t alignment, const char *how) {
    BlvError err = {{0}};
    uint64_t align = alignment ? alignment : GGUF_DEFAULT_ALIGNMENT;
    CHECK(f->version == 3, "%s: version %u", how, f->version);
    CHECK(f->alignment == align, "%s: alignment %" PRIu64, how, f->alignment);
    CHECK(f->n_kv == (alignment ? 21 : 20), "%s: n_kv %" PRId64, how, f->n_kv);
    CHECK(f->n_tensors == N_SAMPLE_TENSORS, "%s: n_tensors %" PRId64, how, f->n_tensors);

    const GgufKV *kv;
    kv = gguf_find_kv(f, "k.u8");
    CHECK(kv && kv->type == GGUF_TYPE_UINT8 && kv->v.u64 == 250, "%s: k.u8", how);
    kv = gguf_find_kv(f, "k.i8");
    CHECK(kv && kv->type == GGUF_TYPE_INT8 && kv->v.i64 == -7, "%s: k.i8", how);
    kv = gguf_find_kv(f, "k.u16");
    CHECK(kv && kv->type == GGUF_TYPE_UINT16 && kv->v.u64 == 65535, "%s: k.u16", how);
    kv = gguf_find_kv(f, "k.i16");
    CHECK(kv && kv->type == GGUF_TYPE_INT16 && kv->v.i64 == -32768, "%s: k.i16", how);
    kv = gguf_find_kv(f, "k.u32");
    CHECK(kv && kv->type == GGUF_TYPE_UINT32 && kv->v.u64 == 0xDEADBEEFu, "%s: k.u32", how);
    kv = gguf_find_kv(f, "k.i32");
    CHECK(kv && kv->type == GGUF_TYPE_INT32 && kv->v.i64 == INT32_MIN, "%s: k.i32", how);
    kv = gguf_find_kv(f, "k.f32");
    CHECK(kv && kv->type == GGUF_TYPE_FLOAT32 && kv->v.f64 == 1.5, "%s: k.f32", how);
    kv = gguf_find_kv(f, "k.bool");
    CHECK(kv && kv->type == GGUF_TYPE_BOOL && kv->v.u64 == 1, "%s: k.bool", how);
    kv = gguf_find_kv(f, "k.string");
    CHECK(kv && kv->type == GGUF_TYPE_STRING && str_is(kv->str, sample_unicode), "%s: k.string", how);
    kv = gguf_find_kv(f, "k.empty_string");
    CHECK(kv && kv->type == GGUF_TYPE_STRING && kv->str.len == 0, "%s: k.empty_string", how);
    kv = gguf_find_kv(f, "k.u64");
    CHECK(kv && kv->type == GGUF_TYPE_UINT64 && kv->v.u64 == UINT64_MAX, "%s: k.u64", how);
    kv = gguf_find_kv(f, "k.i64");
    CHECK(kv && kv->type == GGUF_TYPE_INT64 && kv->v.i64 == INT64_MIN, "%s: k.i64", how);
    kv = gguf_find_kv(f, "k.f64");
    CHECK(kv && kv->type == GGUF_TYPE_FLOAT64 && kv->v.f64 == 0.1, "%s: k.f64", how);
    kv = gguf_find_kv(f, "k.replaced");
    CHECK(kv && kv->type == GGUF_TYPE_STRING && str_is(kv->str, "second"), "%s: k.replaced", how);

    CHECK(gguf_get_array(f, "k.arr_i32", GGUF_TYPE_INT32, &kv, &err) == 0 && kv->arr_count == 5, "%s: %s", how, err.msg);
    for (uint64_t i = 0; kv && i < 5; i++) {
        CHECK(gguf_array_i64(kv, i) == sample_i32s[i], "%s: k.arr_i32[%" PRIu64 "]", how, i);
        CHECK(gguf_array_f64(kv, i) == (double)sample_i32s[i], "%s: k.arr_i32[%" PRIu64 "] as f64", how, i);
    }
    CHECK(gguf_get_array(f, "k.arr_bool", GGUF_TYPE_BOOL, &kv, &err) == 0 && kv->arr_count == 3, "%s: %s", how, err.msg);
    for (uint64_t i = 0; kv && i < 3; i++) CHECK(gguf_array_i64(kv, i) == sample_bools[i], "%s: k.arr_bool", how);
    CHECK(gguf_get_array(f, "k.empty_array", GGUF_TYPE_FLOAT32, &kv, &err) == 0 && kv->arr_count == 0, "%s: %s", how,
          err.msg);
    CHECK(gguf_get_array(f, "k.strs", GGUF_TYPE_STRING, &kv, &err) == 0 && kv->arr_count == 4, "%s: %s", how, err.msg);
    for (uint64_t i = 0; kv && i < 4; i++)
        CHECK(str_is(gguf_array_string(kv, i), sample_strs[i]), "%s: k.strs[%" PRIu64 "]", how, i);
    CHECK(kv && gguf_array_string(kv, 4).ptr == NULL, "%s: out-of-range string element", how);
    kv = gguf_find_kv(f, "k.nested");
    CHECK(kv && kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_ARRAY && kv->arr_count == 2, "%s: k.nested",
          how);

    for (int i = 0; i < N_SAMPLE_TENSORS; i++) {
        const TensorSpec *s = &sample_tensors[i];
        const GgufTensor *t = gguf_find_tensor(f, s->name);
        CHECK(t != NULL, "%s: tensor %s missing", how, s->name);
        if (!t) continue;
        CHECK(t == &f->tensors[i], "%s: tensor %s out of order", how, s->name);
        CHECK(t->type == s->type && t->n_dims == s->n_dims, "%s: tensor %s type/n_dims", how, s->name);
        for (int d = 0; d < 4; d++) CHECK(t->ne[d] == s->ne[d], "%s: %s ne[%d] = %" PRId64, how, s->name, d, t->ne[d]);
        CHECK(t->n_elements == s->ne[0] * s->ne[1] * s->ne[2] * s->ne[3], "%s: %s n_elements", how, s->name);
        CHECK(t->n_bytes == spec_bytes(s), "%s: %s n_bytes %" PRId64, how, s->name, t->n_bytes);
        CHECK(t->offset % align == 0, "%s: %s offset %" PRIu64 " unaligned", how, s->name, t->offset);
        CHECK((const uint8_t *)t->data == f->base + f->data_offset + t->offset, "%s: %s data pointer", how, s->name);
        /* mmap and the read() buffer are page-aligned, so the data is aligned in memory too */
        CHECK((uintptr_t)t->data % align == 0, "%s: %s data not %" PRIu64 "-aligned in memory", how, s->name, align);
        uint8_t *want = sample_data(i);
        CHECK(memcmp(t->data, want, (size_t)t->n_bytes) == 0, "%s: %s bytes differ", how, s->name);
        free(want);
    }
    CHECK(f->data_offset % align == 0, "%s: data_offset %" PRIu64, how, f->data_offset);
}

static void test_roundtrip(void) {
    const uint32_t alignments[] = {0, 64};
    for (int a = 0; a < 2; a++) {
        char name[64];
        snprintf(name, sizeof name, "sample_align%u.gguf", alignments[a]);
        char path[4096];
        snprintf(path, sizeof path, "%s", test_tmp(name));
        BlvError err = {{0}};
        int rc = write_sample(path, alignments[a], &err);
        CHECK(rc == 0, "write: %s", err.msg);
        if (rc) continue;
        char tmp_path[4200];
        snprintf(tmp_path, sizeof tmp_path, "%s.tmp", path);
        CHECK(access(path, F_OK) == 0 && access(tmp_path, F_OK) != 0, "output renamed into place");
        for (int use_mmap = 0; use_mmap <= 1; use_mmap++) {
            GgufFile f;
            rc = gguf_open(&f, path, use_mmap, &err);
            CHECK(rc == 0, "open (mmap=%d): %s", use_mmap, err.msg);
            if (rc) continue;
            CHECK(f.mapped == use_mmap, "mapped flag %d", f.mapped);
            check_sample(&f, alignments[a], use_mmap ? "mmap" : "read");
            gguf_close(&f);
            CHECK(f.base == NULL && f.n_kv == 0, "close leaves the struct zeroed");
        }
        /* the in-memory path, from a page-aligned copy */
        char *data;
        size_t len;
        if (blv_read_file(path, &data, &len, &err) == 0) {
            uint8_t *copy = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
            memcpy(copy, data, len);
            GgufFile f;
            rc = gguf_open_memory(&f, copy, len, "memory", &err);
            CHECK(rc == 0, "open_memory: %s", err.msg);
            if (rc == 0) {
                check_sample(&f, alignments[a], "memory");
                CHECK(f.borrowed == 1, "borrowed");
                gguf_close(&f);
            }
            free(copy);
            free(data);
        }
    }
}

/* The writer pads every tensor and the file to the alignment, with zeros. */
static void test_writer_layout(void) {
    const char *path = test_tmp("layout.gguf");
    BlvError err = {{0}};
    CHECK(write_sample(path, 64, &err) == 0, "%s", err.msg);
    char *data;
    size_t len;
    if (blv_read_file(path, &data, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    CHECK(len % 64 == 0, "file size %zu not padded to 64", len);
    GgufFile f;
    if (gguf_open_memory(&f, data, len, "layout", &err) == 0) {
        for (int64_t i = 0; i < f.n_tensors; i++) {
            const GgufTensor *t = &f.tensors[i];
            uint64_t end = f.data_offset + t->offset + (uint64_t)t->n_bytes;
            uint64_t next = i + 1 < f.n_tensors ? f.data_offset + f.tensors[i + 1].offset : len;
            CHECK(next - end < 64, "tensor %" PRId64 ": gap of %" PRIu64 " bytes", i, next - end);
            for (uint64_t p = end; p < next; p++) CHECK(data[p] == 0, "padding byte at %" PRIu64 " is not zero", p);
        }
        CHECK(f.tensors[0].offset == 0, "first offset %" PRIu64, f.tensors[0].offset);
        gguf_close(&f);
    } else {
        CHECK(0, "%s", err.msg);
    }
    free(data);
}

/* ---- getters ---------------------------------------------------------------------------------- */

static void test_getters(void) {
    const char *path = test_tmp("getters.gguf");
    BlvError err = {{0}};
    GgufWriter *w = gguf_writer_new(&err);
    gguf_set_i32(w, "neg", -1);
    gguf_set_u64(w, "big", 1ull << 40);
    gguf_set_u64(w, "huge", 1ull << 63);
    gguf_set_i16(w, "small", 1234);
    gguf_set_f64(w, "f64", 0.25);
    gguf_set_f64(w, "f64_huge", 1e300);
    gguf_set_f32(w, "f32", -2.5f);
    gguf_set_bool(w, "flag", 0);
    gguf_set_string(w, "name", "llama");
    gguf_set_raw(w, "nul", GGUF_TYPE_STRING, "\3\0\0\0\0\0\0\0a\0b", 11);
    gguf_set_array(w, "arr", GGUF_TYPE_FLOAT32, (const float[]){1.0f, 2.0f}, 2);
    CHECK(gguf_writer_begin(w, path, &err) == 0 && gguf_writer_finish(w, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);

    GgufFile f;
    if (gguf_open(&f, path, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    uint32_t u32 = 0;
    int64_t i64 = 0;
    float f32 = 0;
    int b = -1;
    char *s = NULL;
    const GgufKV *kv = NULL;
    CHECK(gguf_get_u32(&f, "small", &u32, &err) == 0 && u32 == 1234, "u32 from i16: %s", err.msg);
    CHECK(gguf_get_i64(&f, "neg", &i64, &err) == 0 && i64 == -1, "i64 from i32: %s", err.msg);
    CHECK(gguf_get_i64(&f, "big", &i64, &err) == 0 && i64 == (1ll << 40), "i64 from u64: %s", err.msg);
    CHECK(gguf_get_f32(&f, "f64", &f32, &err) == 0 && f32 == 0.25f, "f32 from f64: %s", err.msg);
    CHECK(gguf_get_f32(&f, "f32", &f32, &err) == 0 && f32 == -2.5f, "f32: %s", err.msg);
    CHECK(gguf_get_bool(&f, "flag", &b, &err) == 0 && b == 0, "bool: %s", err.msg);
    CHECK(gguf_get_string(&f, "name", &s, &err) == 0 && s && strcmp(s, "llama") == 0, "string: %s", err.msg);
    free(s);

    CHECK(gguf_get_u32(&f, "missing.key", &u32, &err) == -1 && contains(err.msg, "missing.key") &&
              contains(err.msg, "missing") && contains(err.msg, path), "missing: %s", err.msg);
    CHECK(gguf_get_u32(&f, "neg", &u32, &err) == -1 && contains(err.msg, "out of range"), "neg u32: %s", err.msg);
    CHECK(gguf_get_u32(&f, "big", &u32, &err) == -1 && contains(err.msg, "out of range"), "big u32: %s", err.msg);
    CHECK(gguf_get_i64(&f, "huge", &i64, &err) == -1 && contains(err.msg, "out of range"), "huge i64: %s", err.msg);
    CHECK(gguf_get_f32(&f, "f64_huge", &f32, &err) == -1 && contains(err.msg, "out of range"), "f32: %s", err.msg);
    CHECK(gguf_get_u32(&f, "name", &u32, &err) == -1 && contains(err.msg, "has type string"), "type: %s", err.msg);
    CHECK(gguf_get_f32(&f, "small", &f32, &err) == -1 && contains(err.msg, "has type i16"), "type: %s", err.msg);
    CHECK(gguf_get_bool(&f, "small", &b, &err) == -1 && contains(err.msg, "expected bool"), "type: %s", err.msg);
    CHECK(gguf_get_string(&f, "arr", &s, &err) == -1 && contains(err.msg, "array of f32"), "type: %s", err.msg);
    CHECK(gguf_get_string(&f, "nul", &s, &err) == -1 && contains(err.msg, "NUL"), "nul: %s", err.msg);
    CHECK(gguf_get_array(&f, "arr", GGUF_TYPE_INT32, &kv, &err) == -1 && contains(err.msg, "expected array of i32"),
          "array type: %s", err.msg);
    CHECK(gguf_get_array(&f, "arr", GGUF_TYPE_FLOAT32, &kv, &err) == 0 && gguf_array_f64(kv, 1) == 2.0, "%s", err.msg);
    CHECK(kv && gguf_array_f64(kv, 2) == 0.0 && gguf_array_i64(kv, 1) == 2, "array element access");
    CHECK(strcmp(gguf_type_name(GGUF_TYPE_ARRAY), "array") == 0 && strcmp(gguf_type_name(99), "unknown") == 0,
          "type names");
    CHECK(strcmp(gguf_ggml_type_name(12), "q4_K") == 0 && gguf_ggml_type_name(4) == NULL, "ggml type names");
    gguf_close(&f);
}

/* ---- the real llama-spm vocabulary file -------------------------------------------------------- */

static void check_llama_spm(const GgufFile *f, const char *how) {
    BlvError err = {{0}};
    const GgufKV *tokens = NULL, *scores = NULL, *types = NULL;
    char *model = NULL;
    uint32_t bos = 99, eos = 99, unk = 99;
    int add_bos = -1;
    CHECK(f->n_tensors == 0 && f->n_kv == 22, "%s: n_tensors %" PRId64 " n_kv %" PRId64, how, f->n_tensors, f->n_kv);
    CHECK(gguf_get_array(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens, &err) == 0, "%s: %s", how, err.msg);
    CHECK(tokens && tokens->arr_count == 32000, "%s: token count", how);
    if (tokens && tokens->arr_count == 32000) {
        CHECK(str_is(gguf_array_string(tokens, 0), "<unk>"), "%s: token 0", how);
        CHECK(str_is(gguf_array_string(tokens, 1), "<s>"), "%s: token 1", how);
        CHECK(str_is(gguf_array_string(tokens, 2), "</s>"), "%s: token 2", how);
        CHECK(str_is(gguf_array_string(tokens, 3), "<0x00>"), "%s: token 3", how);
        CHECK(str_is(gguf_array_string(tokens, 29871), "\xe2\x96\x81"), "%s: token 29871 (U+2581)", how);
        CHECK(str_is(gguf_array_string(tokens, 31999), "\xe7\xbb\x99"), "%s: token 31999", how);
    }
    CHECK(gguf_get_array(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &scores, &err) == 0 && scores->arr_count == 32000,
          "%s: scores: %s", how, err.msg);
    CHECK(scores && gguf_array_f64(scores, 259) == -1e9 && gguf_array_f64(scores, 31999) == -31740.0,
          "%s: score values", how);
    CHECK(gguf_get_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &types, &err) == 0 && types->arr_count == 32000,
          "%s: token_type: %s", how, err.msg);
    CHECK(types && gguf_array_i64(types, 0) == 2 && gguf_array_i64(types, 1) == 3 && gguf_array_i64(types, 3) == 6,
          "%s: token types", how);
    CHECK(gguf_get_string(f, "tokenizer.ggml.model", &model, &err) == 0 && model && strcmp(model, "llama") == 0,
          "%s: model: %s", how, err.msg);
    free(model);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &bos, &err) == 0 && bos == 1, "%s: bos %u", how, bos);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &eos, &err) == 0 && eos == 2, "%s: eos %u", how, eos);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.unknown_token_id", &unk, &err) == 0 && unk == 0, "%s: unk %u", how, unk);
    CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos, &err) == 0 && add_bos == 1, "%s: add_bos", how);
    uint32_t n_vocab = 0;
    CHECK(gguf_get_u32(f, "llama.vocab_size", &n_vocab, &err) == 0 && n_vocab == 32000, "%s: vocab_size", how);
}

static void test_vocab_llama_spm(void) {
    const char *path = test_data("vocab/ggml-vocab-llama-spm.gguf");
    for (int use_mmap = 0; use_mmap <= 1; use_mmap++) {
        GgufFile f;
        BlvError err = {{0}};
        int rc = gguf_open(&f, path, use_mmap, &err);
        CHECK(rc == 0, "open (mmap=%d): %s", use_mmap, err.msg);
        if (rc) continue;
        check_llama_spm(&f, use_mmap ? "mmap" : "read");
        gguf_close(&f);
    }
    GgufFile f;
    BlvError err = {{0}};
    CHECK(gguf_open(&f, test_data("vocab/ggml-vocab-phi-3.gguf"), 1, &err) == 0, "phi-3 vocab: %s", err.msg);
    gguf_close(&f);
}

/* gguf_copy_kv: every KV of the vocabulary copied into a new file reads back identical. */
static void test_copy_kv(void) {
    GgufFile src, dst;
    BlvError err = {{0}};
    if (gguf_open(&src, test_data("vocab/ggml-vocab-llama-spm.gguf"), 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    const char *path = test_tmp("copied.gguf");
    GgufWriter *w = gguf_writer_new(&err);
    int rc = 0;
    for (int64_t i = 0; i < src.n_kv && rc == 0; i++) rc = gguf_copy_kv(w, &src, &src.kv[i]);
    CHECK(rc == 0, "copy: %s", gguf_writer_error(w));
    Buf nested = nested_value();
    CHECK(gguf_set_raw(w, "k.nested", GGUF_TYPE_ARRAY, nested.p, nested.len) == 0, "%s", gguf_writer_error(w));
    free(nested.p);
    CHECK(rc == 0 && gguf_writer_begin(w, path, &err) == 0 && gguf_writer_finish(w, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    if (gguf_open(&dst, path, 0, &err) != 0) {
        CHECK(0, "reopen: %s", err.msg);
        gguf_close(&src);
        return;
    }
    CHECK(dst.n_kv == src.n_kv + 1, "n_kv %" PRId64, dst.n_kv);
    for (int64_t i = 0; i < src.n_kv && i < dst.n_kv; i++) {
        const GgufKV *a = &src.kv[i], *b = &dst.kv[i];
        CHECK(a->key.len == b->key.len && memcmp(a->key.ptr, b->key.ptr, a->key.len) == 0, "kv %" PRId64 " key", i);
        CHECK(a->type == b->type && a->v.u64 == b->v.u64, "kv %" PRId64 " type/value", i);
        CHECK(a->str.len == b->str.len && (a->str.len == 0 || memcmp(a->str.ptr, b->str.ptr, a->str.len) == 0),
              "kv %" PRId64 " string", i);
        CHECK(a->arr_type == b->arr_type && a->arr_count == b->arr_count, "kv %" PRId64 " array", i);
        if (a->type == GGUF_TYPE_ARRAY && a->arr_type == GGUF_TYPE_STRING) {
            int same = 1;
            for (uint64_t j = 0; j < a->arr_count; j++) {
                GgufString x = gguf_array_string(a, j), y = gguf_array_string(b, j);
                same &= x.len == y.len && (x.len == 0 || memcmp(x.ptr, y.ptr, x.len) == 0);
            }
            CHECK(same, "kv %" PRId64 " strings differ", i);
        } else if (a->type == GGUF_TYPE_ARRAY) {
            int same = 1;
            for (uint64_t j = 0; j < a->arr_count; j++) same &= gguf_array_f64(a, j) == gguf_array_f64(b, j);
            CHECK(same, "kv %" PRId64 " elements differ", i);
        }
    }
    /* and the nested array survives a copy too */
    const GgufKV *nested_kv = gguf_find_kv(&dst, "k.nested");
    GgufWriter *w2 = gguf_writer_new(&err);
    CHECK(nested_kv && gguf_copy_kv(w2, &dst, nested_kv) == 0, "copy nested: %s", gguf_writer_error(w2));
    /* a kv that does not point into the given file is refused, not read */
    static const char foreign_text[16] = "........foreign";
    GgufKV foreign;
    memset(&foreign, 0, sizeof foreign);
    foreign.key = (GgufString){"foreign", 7};
    foreign.type = GGUF_TYPE_STRING;
    foreign.str = (GgufString){foreign_text + 8, 7};
    CHECK(gguf_copy_kv(w2, &dst, &foreign) == -1 && contains(gguf_writer_error(w2), "not from"), "foreign kv: %s",
          gguf_writer_error(w2));
    gguf_writer_free(w2);
    gguf_close(&dst);
    gguf_close(&src);
}

/* ---- a file written by gguf-py (tools/make_gguf_fixture.py) ----------------------------------- */

/* A string written by the fixture script as "x" + hex. */
static int hex_matches(GgufString s, const char *hex) {
    if (hex[0] != 'x' || strlen(hex + 1) != 2 * s.len) return 0;
    for (uint64_t i = 0; i < s.len; i++) {
        unsigned v;
        if (sscanf(hex + 1 + 2 * i, "%2x", &v) != 1 || (uint8_t)s.ptr[i] != v) return 0;
    }
    return 1;
}

/* Does a scalar kv (or array element through a scratch kv) equal the sidecar's text? */
static int value_matches(uint32_t type, const GgufKV *kv, GgufString str, const char *text) {
    switch (type) {
    case GGUF_TYPE_STRING: return hex_matches(str, text);
    case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64: return kv->v.f64 == strtod(text, NULL);
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        return kv->v.i64 == strtoll(text, NULL, 10);
    default: return kv->v.u64 == strtoull(text, NULL, 10);
    }
}

static uint32_t type_from_short(const char *s) {
    for (uint32_t t = 0; t < GGUF_TYPE_COUNT; t++)
        if (strcmp(gguf_type_name(t), s) == 0) return t;
    return GGUF_TYPE_COUNT;
}

static void check_fixture_kv(const GgufFile *f, char **tok, int n_tok) {
    const GgufKV *kv = gguf_find_kv(f, tok[1]);
    uint32_t type = type_from_short(tok[2]);
    CHECK(kv != NULL, "fixture: key %s missing", tok[1]);
    if (!kv) return;
    CHECK(kv->type == type, "fixture: %s has type %s, expected %s", tok[1], gguf_type_name(kv->type), tok[2]);
    const char *text = n_tok > 3 ? tok[3] : "";
    CHECK(kv->type == type && value_matches(type, kv, kv->str, text), "fixture: %s value differs from %s", tok[1], text);
}

static void check_fixture_array(const GgufFile *f, char **tok, int n_tok) {
    const GgufKV *kv = gguf_find_kv(f, tok[1]);
    uint32_t elem = type_from_short(tok[2]);
    uint64_t count = strtoull(tok[3], NULL, 10);
    CHECK(kv && kv->type == GGUF_TYPE_ARRAY && kv->arr_type == elem && kv->arr_count == count,
          "fixture: array %s (%s x %" PRIu64 ")", tok[1], tok[2], count);
    if (!kv || kv->arr_type != elem || elem == GGUF_TYPE_ARRAY) return;
    CHECK(n_tok == (int)(4 + count), "fixture: %s: %d values listed for %" PRIu64, tok[1], n_tok - 4, count);
    for (uint64_t i = 0; i < count && (int)(4 + i) < n_tok; i++) {
        GgufKV e;   /* the element as a scalar kv, so value_matches can compare it */
        memset(&e, 0, sizeof e);
        GgufString s = {0, 0};
        if (elem == GGUF_TYPE_STRING) {
            s = gguf_array_string(kv, i);
        } else if (elem == GGUF_TYPE_FLOAT32 || elem == GGUF_TYPE_FLOAT64) {
            e.v.f64 = gguf_array_f64(kv, i);
        } else if (elem == GGUF_TYPE_UINT64) {   /* gguf_array_i64 saturates: read the raw element */
            for (int k = 7; k >= 0; k--) e.v.u64 = e.v.u64 << 8 | kv->arr_data[8 * i + (uint64_t)k];
        } else {
            e.v.i64 = gguf_array_i64(kv, i);   /* signed, unsigned (< 2^63) and bool alike */
        }
        CHECK(value_matches(elem, &e, s, tok[4 + i]), "fixture: %s[%" PRIu64 "] differs from %s", tok[1], i, tok[4 + i]);
    }
}

static void check_fixture_tensor(const GgufFile *f, char **tok, int n_tok) {
    const GgufTensor *t = gguf_find_tensor(f, tok[1]);
    CHECK(t != NULL, "fixture: tensor %s missing", tok[1]);
    if (!t) return;
    uint32_t n_dims = (uint32_t)strtoul(tok[3], NULL, 10);
    CHECK(t->type == strtoul(tok[2], NULL, 10) && t->n_dims == n_dims, "fixture: %s type/n_dims", tok[1]);
    for (uint32_t d = 0; d < n_dims && (int)(4 + d) < n_tok; d++)
        CHECK(t->ne[d] == strtoll(tok[4 + d], NULL, 10), "fixture: %s ne[%u]", tok[1], d);
    if ((int)(5 + n_dims) < n_tok) {
        CHECK(t->n_bytes == strtoll(tok[4 + n_dims], NULL, 10), "fixture: %s n_bytes", tok[1]);
        CHECK(fnv1a64(t->data, (uint64_t)t->n_bytes) == strtoull(tok[5 + n_dims], NULL, 16), "fixture: %s bytes hash",
              tok[1]);
    }
    CHECK(t->offset % f->alignment == 0, "fixture: %s offset", tok[1]);
}

/* Element i of a tensor as float, decoded here from the raw bytes. */
static float tensor_element(const GgufTensor *t, int64_t i) {
    const uint8_t *p = t->data;
    if (t->type == 0) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    if (t->type == 1) return half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    if (t->type == 8) {   /* q8_0: 34-byte blocks of f16 d + 32 int8 */
        const uint8_t *blk = p + (i / 32) * 34;
        float d = half_to_float((uint16_t)(blk[0] | blk[1] << 8));
        return d * (float)(int8_t)blk[2 + i % 32];
    }
    return NAN;
}

static void check_fixture_elem(const GgufFile *f, char **tok) {
    const GgufTensor *t = gguf_find_tensor(f, tok[1]);
    int64_t i = strtoll(tok[2], NULL, 10);
    float want = (float)strtod(tok[3], NULL);
    CHECK(t && i >= 0 && i < t->n_elements, "fixture: elem %s[%" PRId64 "]", tok[1], i);
    if (t && i >= 0 && i < t->n_elements)
        CHECK(tensor_element(t, i) == want, "fixture: %s[%" PRId64 "] = %.9g, expected %.9g", tok[1], i,
              tensor_element(t, i), want);
}

static void check_fixture(const GgufFile *f, const char *expected_text, const char *how) {
    char *text = strdup(expected_text), *save = NULL;
    int n_lines = 0;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        char *tok[64], *save2 = NULL;
        int n = 0;
        for (char *t = strtok_r(line, " ", &save2); t && n < 64; t = strtok_r(NULL, " ", &save2)) tok[n++] = t;
        if (n < 2) continue;
        n_lines++;
        if (strcmp(tok[0], "kv") == 0 && n >= 3) check_fixture_kv(f, tok, n);
        else if (strcmp(tok[0], "arr") == 0 && n >= 4) check_fixture_array(f, tok, n);
        else if (strcmp(tok[0], "tensor") == 0 && n >= 4) check_fixture_tensor(f, tok, n);
        else if (strcmp(tok[0], "elem") == 0 && n >= 4) check_fixture_elem(f, tok);
        else CHECK(0, "%s: bad sidecar line starting %s", how, tok[0]);
    }
    CHECK(n_lines > 30, "%s: only %d sidecar lines", how, n_lines);
    CHECK(f->n_kv == 21 && f->n_tensors == 4 && f->alignment == 64, "%s: counts %" PRId64 " %" PRId64, how, f->n_kv,
          f->n_tensors);
    free(text);
}

static void test_gguf_py_fixture(void) {
    char *expected;
    size_t len;
    BlvError err = {{0}};
    if (blv_read_file(test_data("gguf/fixture.expected.txt"), &expected, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    for (int use_mmap = 0; use_mmap <= 1; use_mmap++) {
        GgufFile f;
        int rc = gguf_open(&f, test_data("gguf/fixture.gguf"), use_mmap, &err);
        CHECK(rc == 0, "%s", err.msg);
        if (rc == 0) {
            check_fixture(&f, expected, use_mmap ? "mmap" : "read");
            gguf_close(&f);
        }
    }
    free(expected);
}

/* ---- gguf-py reading our writer's output (needs Python; opt in) ------------------------------- */

static void test_gguf_py_reads_ours(void) {
    const char *env = getenv("BLUELMV_PYTHON_CHECKS");
    if (!env || strcmp(env, "1") != 0) {
        test_note("skipped: set BLUELMV_PYTHON_CHECKS=1");
        return;
    }
    char path[4096], json[4096], cmd[9000];
    snprintf(path, sizeof path, "%s", test_tmp("for_python.gguf"));
    snprintf(json, sizeof json, "%s", test_tmp("for_python.json"));
    BlvError err = {{0}};
    CHECK(write_sample(path, 64, &err) == 0, "%s", err.msg);
    FILE *fp = fopen(json, "w");
    if (!fp) {
        CHECK(0, "cannot write %s", json);
        return;
    }
    fprintf(fp, "{\"kv\": {\"k.u32\": {\"type\": \"u32\", \"value\": %u},\n", 0xDEADBEEFu);
    fprintf(fp, " \"k.i64\": {\"type\": \"i64\", \"value\": %" PRId64 "},\n", INT64_MIN);
    fprintf(fp, " \"k.u64\": {\"type\": \"u64\", \"value\": %" PRIu64 "},\n", UINT64_MAX);
    fprintf(fp, " \"k.f32\": {\"type\": \"f32\", \"value\": 1.5}, \"k.f64\": {\"type\": \"f64\", \"value\": 0.1},\n");
    fprintf(fp, " \"k.bool\": {\"type\": \"bool\", \"value\": true}, \"k.i8\": {\"type\": \"i8\", \"value\": -7},\n");
    fprintf(fp, " \"k.string\": {\"type\": \"string\", \"value\": \"%s\"},\n", sample_unicode);
    fprintf(fp, " \"k.empty_string\": {\"type\": \"string\", \"value\": \"\"},\n");
    fprintf(fp, " \"k.strs\": {\"type\": \"array[string]\", \"value\": [\"%s\", \"%s\", \"%s\", \"%s\"]},\n",
            sample_strs[0], sample_strs[1], sample_strs[2], sample_strs[3]);
    fprintf(fp, " \"k.arr_i32\": {\"type\": \"array[i32]\", \"value\": [1, -2, 3, %d, %d]},\n", INT32_MAX, INT32_MIN);
    fprintf(fp, " \"k.nested\": {\"type\": \"array[array]\"},\n");
    fprintf(fp, " \"general.alignment\": {\"type\": \"u32\", \"value\": 64}},\n");
    fprintf(fp, " \"tensors\": [");
    for (int i = 0; i < N_SAMPLE_TENSORS; i++) {
        const TensorSpec *t = &sample_tensors[i];
        fprintf(fp, "%s{\"name\": \"%s\", \"type\": \"%s\", \"shape\": [", i ? ", " : "", t->name,
                gguf_ggml_type_name(t->type));
        for (uint32_t d = 0; d < t->n_dims; d++) fprintf(fp, "%s%" PRId64, d ? ", " : "", t->ne[d]);
        fprintf(fp, "]}");
    }
    fprintf(fp, "]}\n");
    fclose(fp);

    const char *python = getenv("BLUELMV_PYTHON") ? getenv("BLUELMV_PYTHON") : "python3";
    snprintf(cmd, sizeof cmd, "%s tools/check_gguf.py '%s' --expect-json '%s'", python, path, json);
    char *out = NULL, *errout = NULL;
    int status = test_run_command(cmd, &out, &errout);
    CHECK(status == 0, "check_gguf.py exit %d: %s", status, errout ? errout : "");
    if (out) {
        CHECK(contains(out, "gguf version 3 alignment 64 tensors 6 kvs 21"), "header line: %s", out);
        CHECK(contains(out, "tensor blk.0.q4.w 32,2,3,2 q4_0 216"), "4-D tensor line missing:\n%s", out);
        CHECK(contains(out, "tensor q8.w 64,3 q8_0 204"), "q8_0 tensor line missing:\n%s", out);
        CHECK(contains(out, "tensor q4k.w 256,1 q4_k 144"), "q4_K tensor line missing:\n%s", out);
        CHECK(contains(out, "kv k.replaced string 'second'"), "replaced key:\n%s", out);
    }
    free(out);
    free(errout);

    /* and the checker does fail on a broken file */
    char broken[4096];
    snprintf(broken, sizeof broken, "%s", test_tmp("broken_for_python.gguf"));
    CHECK(write_bytes_to(broken, "GGUF\3\0\0\0\1\0\0\0", 12) == 0, "write broken file");
    snprintf(cmd, sizeof cmd, "%s tools/check_gguf.py '%s'", python, broken);
    status = test_run_command(cmd, &out, &errout);
    CHECK(status == 2, "check_gguf.py on a broken file: exit %d", status);
    free(out);
    free(errout);
}

/* ---- malformed files -------------------------------------------------------------------------- */

/* A minimal valid file: one kv, one f32 tensor of 32 elements; variants below break one thing. */
static Buf minimal_valid(void) {
    Buf b = {0};
    uint64_t dims[1] = {32};
    craft_header(&b, 3, 1, 1);
    craft_kv_str(&b, "general.architecture", "x");
    craft_tensor(&b, "t", 1, dims, 0, 0);
    buf_pad(&b, 32);
    buf_zeros(&b, 128);
    return b;
}

static void test_malformed_header(void) {
    Buf b = minimal_valid();
    expect_accept(&b, "minimal valid file");
    b.p[0] = 'X';
    expect_reject(&b, "magic", "wrong magic");
    free(b.p);

    const uint32_t bad_versions[] = {0, 1, 4, 99, 0x03000000u};
    const char *words[] = {"version", "version 1", "version", "version 99", "big-endian"};
    for (int i = 0; i < 5; i++) {
        b = minimal_valid();
        b.p[4] = (uint8_t)bad_versions[i];
        b.p[7] = (uint8_t)(bad_versions[i] >> 24);
        expect_reject(&b, words[i], words[i]);
        free(b.p);
    }
    b = minimal_valid();
    b.p[4] = 2;
    expect_accept(&b, "version 2");
    free(b.p);

    /* absurd counts are refused before anything is allocated */
    Buf c = {0};
    craft_header(&c, 3, 1ull << 62, 0);
    buf_zeros(&c, 64);
    expect_reject(&c, "tensor_count", "tensor_count 2^62");
    free(c.p);
    c = (Buf){0};
    craft_header(&c, 3, 0, 1ull << 62);
    buf_zeros(&c, 64);
    expect_reject(&c, "kv_count", "kv_count 2^62");
    free(c.p);
    c = (Buf){0};
    craft_header(&c, 3, UINT64_MAX, UINT64_MAX);
    expect_reject(&c, "count", "counts 2^64-1");
    free(c.p);

    /* a vocabulary-only file with no padding after its metadata loads */
    c = (Buf){0};
    craft_header(&c, 3, 0, 1);
    craft_kv_u32(&c, "a", 1);
    expect_accept(&c, "tensor-less file without padding");
    free(c.p);
}

static void test_malformed_kv(void) {
    Buf b = {0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "general.name");
    buf_u32(&b, GGUF_TYPE_STRING);
    buf_u64(&b, UINT64_MAX);
    buf_zeros(&b, 16);
    expect_reject(&b, "string length 18446744073709551615 runs past end of file", "huge string length");
    expect_reject(&b, "kv 0 (key \"general.name\")", "message names the key");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_u64(&b, 1ull << 40);    /* key length */
    buf_zeros(&b, 16);
    expect_reject(&b, "key length", "huge key length");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_u64(&b, 70000);
    for (int i = 0; i < 70000; i++) buf_put(&b, "k", 1);
    buf_u32(&b, GGUF_TYPE_UINT8);
    buf_zeros(&b, 1);
    expect_reject(&b, "more than 65535", "key longer than 65535");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "");
    buf_u32(&b, GGUF_TYPE_UINT8);
    buf_zeros(&b, 1);
    expect_reject(&b, "empty key", "empty key");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 2);
    craft_kv_u32(&b, "dup", 1);
    craft_kv_u32(&b, "dup", 2);
    expect_reject(&b, "duplicate key \"dup\"", "duplicate key");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "k");
    buf_u32(&b, 13);
    buf_zeros(&b, 8);
    expect_reject(&b, "value type 13", "bad value type");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "k");
    buf_u32(&b, GGUF_TYPE_BOOL);
    buf_le(&b, 2, 1);
    expect_reject(&b, "bool", "bool value 2");
    free(b.p);

    /* arrays: absurd count, bad element type, bool element, depth bomb */
    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "arr");
    buf_u32(&b, GGUF_TYPE_ARRAY);
    buf_u32(&b, GGUF_TYPE_UINT32);
    buf_u64(&b, 1ull << 60);
    buf_zeros(&b, 64);
    expect_reject(&b, "array count 1152921504606846976", "array count 2^60");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "arr");
    buf_u32(&b, GGUF_TYPE_ARRAY);
    buf_u32(&b, GGUF_TYPE_STRING);
    buf_u64(&b, 1ull << 60);
    buf_zeros(&b, 64);
    expect_reject(&b, "array count", "string array count 2^60");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "arr");
    buf_u32(&b, GGUF_TYPE_ARRAY);
    buf_u32(&b, 77);
    buf_u64(&b, 1);
    buf_zeros(&b, 8);
    expect_reject(&b, "element type 77", "bad array element type");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "arr");
    buf_u32(&b, GGUF_TYPE_ARRAY);
    buf_u32(&b, GGUF_TYPE_BOOL);
    buf_u64(&b, 3);
    buf_put(&b, "\1\0\5", 3);
    expect_reject(&b, "bool array element 2", "bool array element 5");
    free(b.p);

    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "bomb");
    buf_u32(&b, GGUF_TYPE_ARRAY);
    for (int i = 0; i < 100000; i++) {   /* 100000 levels of [[[...]]] */
        buf_u32(&b, GGUF_TYPE_ARRAY);
        buf_u64(&b, 1);
    }
    buf_u32(&b, GGUF_TYPE_UINT8);
    buf_u64(&b, 0);
    expect_reject(&b, "nested deeper", "nested array depth bomb");
    free(b.p);

    /* a string inside a nested array running past the end */
    b = (Buf){0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "n");
    buf_u32(&b, GGUF_TYPE_ARRAY);
    buf_u32(&b, GGUF_TYPE_ARRAY);
    buf_u64(&b, 1);
    buf_u32(&b, GGUF_TYPE_STRING);
    buf_u64(&b, 1);
    buf_u64(&b, 1000);
    buf_zeros(&b, 10);
    expect_reject(&b, "array element 0: string length 1000", "string in nested array");
    free(b.p);
}

static void test_malformed_alignment(void) {
    const uint32_t bad[] = {0, 3, 4, 48};
    for (int i = 0; i < 4; i++) {
        Buf b = {0};
        craft_header(&b, 3, 0, 1);
        craft_kv_u32(&b, "general.alignment", bad[i]);
        expect_reject(&b, "alignment", "bad alignment value");
        free(b.p);
    }
    Buf b = {0};
    craft_header(&b, 3, 0, 1);
    buf_str(&b, "general.alignment");
    buf_u32(&b, GGUF_TYPE_UINT64);
    buf_u64(&b, 32);
    expect_reject(&b, "general.alignment has type u64, expected u32", "alignment as u64");
    free(b.p);

    /* a valid custom alignment moves the data section */
    b = (Buf){0};
    uint64_t dims[1] = {32};
    craft_header(&b, 3, 1, 1);
    craft_kv_u32(&b, "general.alignment", 256);
    craft_tensor(&b, "t", 1, dims, 0, 0);
    buf_pad(&b, 256);
    buf_zeros(&b, 128);
    GgufFile f;
    BlvError err;
    CHECK(gguf_open_memory(&f, b.p, b.len, "aligned", &err) == 0 && f.data_offset == 256 && f.alignment == 256,
          "alignment 256: %s", err.msg);
    gguf_close(&f);
    free(b.p);
}

/* One tensor info with the given fields, after a minimal header; the data section holds `data` bytes. */
static Buf one_tensor(const char *name, uint32_t n_dims, const uint64_t *dims, uint32_t type, uint64_t offset,
                      size_t data) {
    Buf b = {0};
    craft_header(&b, 3, 1, 0);
    craft_tensor(&b, name, n_dims, dims, type, offset);
    buf_pad(&b, 32);
    buf_zeros(&b, data);
    return b;
}

static void test_malformed_tensors(void) {
    const uint64_t d32[4] = {32, 1, 1, 1}, d5[5] = {32, 1, 1, 1, 1};
    Buf b;
    b = one_tensor("t", 5, d5, 0, 0, 256);
    expect_reject(&b, "n_dims 5", "n_dims 5");
    free(b.p);
    b = one_tensor("blk.0.attn_q.weight", 2, (const uint64_t[]){1ull << 32, 1ull << 32}, 0, 0, 256);
    expect_reject(&b, "dims 4294967296 x 4294967296 overflow", "dims overflow");
    expect_reject(&b, "tensor 0 (\"blk.0.attn_q.weight\")", "message names the tensor");
    free(b.p);
    b = one_tensor("t", 2, (const uint64_t[]){32, 0}, 0, 0, 256);
    expect_reject(&b, "dim 1 is 0", "zero dim");
    free(b.p);
    b = one_tensor("t", 1, (const uint64_t[]){1ull << 63}, 0, 0, 256);
    expect_reject(&b, "dim 0 is 9223372036854775808", "negative dim as int64");
    free(b.p);
    b = one_tensor("t", 1, (const uint64_t[]){1ull << 61}, 28, 0, 256);   /* f64: 2^61 * 8 bytes */
    expect_reject(&b, "overflows", "byte size overflow");
    free(b.p);
    b = one_tensor("t", 1, d32, 999, 0, 256);
    expect_reject(&b, "unknown ggml type id 999", "type 999");
    free(b.p);
    b = one_tensor("t", 1, d32, 4, 0, 256);
    expect_reject(&b, "unknown ggml type id 4", "removed type Q4_2");
    free(b.p);
    b = one_tensor("t", 1, (const uint64_t[]){33}, 8, 0, 256);
    expect_reject(&b, "not a multiple of the block size 32", "q8_0 ne[0] = 33");
    free(b.p);
    b = one_tensor("t", 1, d32, 0, 1024, 256);
    expect_reject(&b, "lies outside the file", "offset outside");
    free(b.p);
    b = one_tensor("t", 1, d32, 0, 0, 100);    /* 128 bytes needed, 100 present */
    expect_reject(&b, "lies outside the file", "data cut short");
    free(b.p);
    b = one_tensor("t", 1, d32, 0, UINT64_MAX - 31, 256);
    expect_reject(&b, "overflow", "offset + size overflows");
    free(b.p);
    b = one_tensor("t", 1, d32, 0, 4, 256);
    expect_reject(&b, "offset 4 not a multiple of alignment 32", "misaligned offset");
    free(b.p);
    char long_name[70];
    memset(long_name, 'n', 65);
    long_name[65] = 0;
    b = one_tensor(long_name, 1, d32, 0, 0, 256);
    expect_reject(&b, "name length 65", "name too long");
    free(b.p);
    long_name[64] = 0;   /* 64 bytes: the gguf.md limit, accepted */
    b = one_tensor(long_name, 1, d32, 0, 0, 256);
    expect_accept(&b, "64-byte name");
    free(b.p);
    b = one_tensor("", 1, d32, 0, 0, 256);
    expect_reject(&b, "empty tensor name", "empty name");
    free(b.p);
    b = one_tensor("t", 0, d32, 0, 0, 256);
    expect_accept(&b, "n_dims 0 (a scalar)");
    free(b.p);
    b = one_tensor("t", 1, (const uint64_t[]){256}, 12, 0, 256);
    expect_accept(&b, "q4_K tensor (a type ggml knows)");
    free(b.p);

    /* two tensors: duplicate names, overlapping data */
    const char *names[2][2] = {{"same", "same"}, {"a", "b"}};
    const uint64_t offsets[2][2] = {{0, 128}, {0, 96}};
    const char *words[2] = {"duplicate tensor name \"same\"", "overlaps"};
    for (int k = 0; k < 2; k++) {
        b = (Buf){0};
        craft_header(&b, 3, 2, 0);
        craft_tensor(&b, names[k][0], 1, d32, 0, offsets[k][0]);
        craft_tensor(&b, names[k][1], 1, d32, 0, offsets[k][1]);
        buf_pad(&b, 32);
        buf_zeros(&b, 512);
        expect_reject(&b, words[k], words[k]);
        free(b.p);
    }
    /* tensors out of offset order but disjoint are fine */
    b = (Buf){0};
    craft_header(&b, 3, 2, 0);
    craft_tensor(&b, "late", 1, d32, 0, 128);
    craft_tensor(&b, "early", 1, d32, 0, 0);
    buf_pad(&b, 32);
    buf_zeros(&b, 256);
    expect_accept(&b, "out-of-order disjoint tensors");
    free(b.p);
}

static void test_open_errors(void) {
    GgufFile f;
    BlvError err = {{0}};
    const char *missing = test_tmp("does-not-exist.gguf");
    CHECK(gguf_open(&f, missing, 1, &err) == -1 && contains(err.msg, missing) && contains(err.msg, "cannot open"),
          "missing file: %s", err.msg);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_tmp(""));
    CHECK(gguf_open(&f, dir, 1, &err) == -1 && contains(err.msg, "not a regular file"), "directory: %s", err.msg);
    const char *empty = test_tmp("empty.gguf");
    CHECK(write_bytes_to(empty, "", 0) == 0, "write empty");
    CHECK(gguf_open(&f, empty, 1, &err) == -1 && contains(err.msg, "empty"), "empty: %s", err.msg);
    const char *bad = test_tmp("bad_magic.gguf");
    CHECK(write_bytes_to(bad, "\x78\x56\x34\x12 and some more bytes here", 29) == 0, "write");
    for (int use_mmap = 0; use_mmap <= 1; use_mmap++)
        CHECK(gguf_open(&f, bad, use_mmap, &err) == -1 && contains(err.msg, bad) &&
                  contains(err.msg, "bad magic 0x12345678 (expected \"GGUF\")"), "bad magic: %s", err.msg);
    CHECK(gguf_open_memory(&f, NULL, 0, "nothing", &err) == -1 && contains(err.msg, "nothing"), "NULL image: %s",
          err.msg);
}

/* Truncating a valid file anywhere before the end of its last tensor's data must fail cleanly. */
static void test_truncation(void) {
    const char *path = test_tmp("trunc_src.gguf");
    BlvError err = {{0}};
    char *data;
    size_t len;
    if (write_sample(path, 0, &err) != 0 || blv_read_file(path, &data, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    GgufFile f;
    uint64_t data_end = 0;
    if (gguf_open_memory(&f, data, len, "full", &err) == 0) {
        for (int64_t i = 0; i < f.n_tensors; i++) {
            uint64_t end = f.data_offset + f.tensors[i].offset + (uint64_t)f.tensors[i].n_bytes;
            if (end > data_end) data_end = end;
        }
        gguf_close(&f);
    }
    CHECK(data_end > 0 && data_end <= len, "data end %" PRIu64, data_end);
    int n_ok = 0, n_bad_msg = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy;
        int rc = open_copy(&f, data, cut, "truncated.gguf", &err, &copy);
        if (rc == 0) {
            n_ok++;
            CHECK(cut >= data_end, "truncated at %zu (< data end %" PRIu64 ") but opened", cut, data_end);
            gguf_close(&f);
        } else if (!contains(err.msg, "truncated.gguf")) {
            n_bad_msg++;
            if (n_bad_msg < 5) CHECK(0, "cut %zu: message lacks the name: %s", cut, err.msg);
        }
        free(copy);
    }
    /* a few through real files and both load paths */
    const size_t cuts[] = {1, 3, 4, 23, 24, 100, len / 2, (size_t)data_end - 1};
    for (int i = 0; i < 8; i++) {
        const char *tpath = test_tmp("truncated_file.gguf");
        CHECK(write_bytes_to(tpath, data, cuts[i]) == 0, "write");
        for (int use_mmap = 0; use_mmap <= 1; use_mmap++)
            CHECK(gguf_open(&f, tpath, use_mmap, &err) == -1 && contains(err.msg, tpath), "cut %zu: %s", cuts[i],
                  err.msg);
    }
    test_note("%zu-byte file: %zu truncations rejected, %d accepted (cut inside the final padding)", len,
              len - (size_t)n_ok, n_ok);
    free(data);
}

/* Touches every key, string, array element and the first and last byte of every tensor, so that
 * ASan notices any pointer an accepted file left dangling. Returns a checksum to keep it live. */
static uint64_t walk_file(const GgufFile *f) {
    uint64_t sum = 0;
    for (int64_t i = 0; i < f->n_kv; i++) {
        const GgufKV *kv = &f->kv[i];
        sum += kv->key.len ? (uint8_t)kv->key.ptr[kv->key.len - 1] : 0;
        if (kv->type == GGUF_TYPE_STRING && kv->str.len) sum += (uint8_t)kv->str.ptr[kv->str.len - 1];
        if (kv->type != GGUF_TYPE_ARRAY) continue;
        for (uint64_t j = 0; j < kv->arr_count && j < 100000; j++) {
            if (kv->arr_type == GGUF_TYPE_STRING) {
                GgufString s = gguf_array_string(kv, j);
                if (s.len) sum += (uint8_t)s.ptr[s.len - 1];
            } else if (kv->arr_type != GGUF_TYPE_ARRAY) {
                double d = gguf_array_f64(kv, j);   /* may be NaN or huge: not cast to an integer */
                sum += (uint64_t)gguf_array_i64(kv, j) + (d > 0.0);
            }
        }
    }
    for (int64_t i = 0; i < f->n_tensors; i++) {
        const uint8_t *p = f->tensors[i].data;
        sum += p[0] + p[f->tensors[i].n_bytes - 1] + (uint8_t)f->tensors[i].name.ptr[0];
    }
    return sum;
}

/* One mutated copy of img[0..len): a few bit flips, random bytes, "interesting" u64 values or a
 * truncation, mostly in the first `hot` bytes (the metadata, where every byte matters). */
static uint8_t *mutate(const char *img, size_t len, size_t hot, uint64_t *state, size_t *out_len) {
    static const uint64_t interesting[] = {0, 1, 2, 5, 31, 32, 33, 255, 0xFFFFFFFFull, 1ull << 32, 1ull << 62,
                                           1ull << 63, UINT64_MAX, UINT64_MAX - 7};
    uint8_t *m = malloc(len);
    memcpy(m, img, len);
    size_t n = len;
    int n_mut = 1 + (int)(test_rand_u64(state) % 4);
    for (int k = 0; k < n_mut && n > 0; k++) {
        size_t region = test_rand_u64(state) % 4 ? (n < hot ? n : hot) : n;
        size_t at = (size_t)(test_rand_u64(state) % region);
        switch (test_rand_u64(state) % 4) {
        case 0: m[at] ^= (uint8_t)(1u << (test_rand_u64(state) % 8)); break;
        case 1: m[at] = (uint8_t)test_rand_u64(state); break;
        case 2:
            if (at + 8 <= n) {
                uint64_t v = interesting[test_rand_u64(state) % (sizeof interesting / sizeof interesting[0])];
                for (int b = 0; b < 8; b++) m[at + (size_t)b] = (uint8_t)(v >> (8 * b));
            }
            break;
        default: n = at; break;
        }
    }
    *out_len = n;
    return m;
}

/* Random mutations of valid images (our sample; the gguf-py fixture, which has nested arrays):
 * every outcome must be a clean accept or reject (ASan and UBSan watch), and an accepted file's
 * metadata and tensors must be safe to walk. BLUELMV_FUZZ_ITERS overrides the count. */
static void test_fuzz(void) {
    const char *path = test_tmp("fuzz_src.gguf");
    BlvError err = {{0}};
    char *img[2];
    size_t len[2];
    if (write_sample(path, 0, &err) != 0 || blv_read_file(path, &img[0], &len[0], &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    if (blv_read_file(test_data("gguf/fixture.gguf"), &img[1], &len[1], &err) != 0) {
        CHECK(0, "%s", err.msg);
        free(img[0]);
        return;
    }
    long iters = getenv("BLUELMV_FUZZ_ITERS") ? strtol(getenv("BLUELMV_FUZZ_ITERS"), NULL, 10) : 6000;
    uint64_t state = 0x5eed, sink = 0;
    long n_ok = 0, n_fail = 0, n_bad_msg = 0;
    for (long iter = 0; iter < iters; iter++) {
        int which = (int)(iter & 1);
        size_t n;
        uint8_t *m = mutate(img[which], len[which], 900, &state, &n), *copy;
        GgufFile f;
        if (open_copy(&f, m, n, "fuzz.gguf", &err, &copy) == 0) {
            n_ok++;
            sink += walk_file(&f);
            gguf_close(&f);
        } else {
            n_fail++;
            if (!contains(err.msg, "fuzz.gguf") && ++n_bad_msg < 5) CHECK(0, "message lacks the name: %s", err.msg);
        }
        free(copy);
        free(m);
    }
    test_note("%ld mutations: %ld opened, %ld rejected (checksum %" PRIu64 ")", iters, n_ok, n_fail, sink % 1000);
    CHECK(n_fail > iters / 2, "suspiciously few rejections: %ld of %ld", n_fail, iters);
    free(img[0]);
    free(img[1]);
}

/* ---- writer misuse ---------------------------------------------------------------------------- */

static void test_writer_errors(void) {
    BlvError err = {{0}};
    GgufWriter *w = gguf_writer_new(&err);
    const int64_t ne32[2] = {32, 2}, ne33[1] = {33}, neg[2] = {32, -1};
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = 0;
    CHECK(gguf_add_tensor(w, long_name, 0, 1, ne32) == -1 && contains(gguf_writer_error(w), "at most 63"),
          "64-byte name: %s", gguf_writer_error(w));
    CHECK(gguf_add_tensor(w, "t", 999, 1, ne32) == -1 && contains(gguf_writer_error(w), "unknown ggml type"), "type");
    CHECK(gguf_add_tensor(w, "t", 8, 1, ne33) == -1 && contains(gguf_writer_error(w), "multiple"), "block");
    CHECK(gguf_add_tensor(w, "t", 0, 5, ne32) == -1 && contains(gguf_writer_error(w), "n_dims"), "n_dims");
    CHECK(gguf_add_tensor(w, "t", 0, 2, neg) == -1 && contains(gguf_writer_error(w), "not positive"), "neg");
    CHECK(gguf_add_tensor(w, "", 0, 1, ne32) == -1, "empty name");
    CHECK(gguf_add_tensor(w, "t", 0, 2, ne32) == 0, "%s", gguf_writer_error(w));
    CHECK(gguf_add_tensor(w, "t", 0, 2, ne32) == -1 && contains(gguf_writer_error(w), "declared twice"), "dup");
    CHECK(gguf_add_tensor(w, "u", 8, 1, ne32) == 0, "%s", gguf_writer_error(w));
    CHECK(gguf_set_u64(w, "general.alignment", 64) == -1 && contains(gguf_writer_error(w), "u32"), "alignment u64");
    CHECK(gguf_set_u32(w, "general.alignment", 3) == -1 && contains(gguf_writer_error(w), "power of two"), "align 3");
    CHECK(gguf_set_u32(w, "general.alignment", 0) == -1, "align 0");
    CHECK(gguf_set_array(w, "s", GGUF_TYPE_STRING, "x", 1) == -1, "string via gguf_set_array");
    CHECK(gguf_set_array(w, "b", GGUF_TYPE_BOOL, "\2", 1) == -1 && contains(gguf_writer_error(w), "bool"), "bool 2");
    CHECK(gguf_set_u8(w, "", 1) == -1 && contains(gguf_writer_error(w), "key length"), "empty key");
    uint8_t raw[12] = {GGUF_TYPE_UINT32, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK(gguf_set_raw(w, "raw", GGUF_TYPE_ARRAY, raw, 12) == -1 && contains(gguf_writer_error(w), "array count"),
          "raw: %s", gguf_writer_error(w));
    CHECK(gguf_set_raw(w, "raw", GGUF_TYPE_UINT8, "\1\2", 2) == -1 && contains(gguf_writer_error(w), "left over"),
          "raw extra: %s", gguf_writer_error(w));

    /* wrong byte count: error names the path, nothing left on disk */
    char path[4096];
    snprintf(path, sizeof path, "%s", test_tmp("writer_errors.gguf"));
    CHECK(gguf_writer_begin(w, path, &err) == 0, "%s", err.msg);
    CHECK(gguf_set_u8(w, "late", 1) == -1 && contains(gguf_writer_error(w), "after gguf_writer_begin"), "late set");
    CHECK(gguf_add_tensor(w, "late", 0, 1, ne32) == -1, "late tensor");
    uint8_t buf[256] = {0};
    CHECK(gguf_writer_put_tensor(w, buf, 256, &err) == 0, "first tensor: %s", err.msg);
    CHECK(gguf_writer_put_tensor(w, buf, 100, &err) == -1 && contains(err.msg, path) &&
              contains(err.msg, "got 100 bytes") && contains(err.msg, "need 34"), "wrong size: %s", err.msg);
    CHECK(gguf_writer_finish(w, &err) == -1, "finish after failure");
    gguf_writer_free(w);
    char tmp_path[4200];
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp", path);
    CHECK(access(path, F_OK) != 0 && access(tmp_path, F_OK) != 0, "partial output left behind");

    /* finishing early fails and leaves nothing; an existing file at path is untouched */
    CHECK(write_bytes_to(path, "old", 3) == 0, "write old");
    w = gguf_writer_new(&err);
    gguf_add_tensor(w, "a", 0, 1, ne32);
    gguf_add_tensor(w, "b", 0, 1, ne32);
    CHECK(gguf_writer_begin(w, path, &err) == 0, "%s", err.msg);
    CHECK(gguf_writer_put_tensor(w, buf, 128, &err) == 0, "%s", err.msg);
    CHECK(gguf_writer_finish(w, &err) == -1 && contains(err.msg, "only 1 of 2 tensors"), "early finish: %s", err.msg);
    gguf_writer_free(w);
    char *old;
    size_t old_len;
    CHECK(blv_read_file(path, &old, &old_len, &err) == 0 && old_len == 3, "existing file clobbered");
    if (old_len == 3) free(old);
    CHECK(access(tmp_path, F_OK) != 0, "temp file left behind");

    /* too many tensors; freeing a writer mid-way removes its temp file */
    w = gguf_writer_new(&err);
    gguf_add_tensor(w, "a", 0, 1, ne32);
    CHECK(gguf_writer_begin(w, path, &err) == 0, "%s", err.msg);
    CHECK(gguf_writer_put_tensor(w, buf, 128, &err) == 0, "%s", err.msg);
    CHECK(gguf_writer_put_tensor(w, buf, 128, &err) == -1 && contains(err.msg, "more times"), "extra: %s", err.msg);
    gguf_writer_free(w);
    w = gguf_writer_new(&err);
    CHECK(gguf_writer_begin(w, path, &err) == 0, "%s", err.msg);
    CHECK(access(tmp_path, F_OK) == 0, "temp file exists while writing");
    gguf_writer_free(w);
    CHECK(access(tmp_path, F_OK) != 0, "temp file left after free");

    /* an unwritable path */
    w = gguf_writer_new(&err);
    const char *nowhere = "/nonexistent-bluelmv-dir/x.gguf";
    CHECK(gguf_writer_begin(w, nowhere, &err) == -1 && contains(err.msg, nowhere), "unwritable: %s", err.msg);
    gguf_writer_free(w);

    /* a tensor-less file round-trips */
    w = gguf_writer_new(&err);
    gguf_set_string(w, "general.architecture", "none");
    CHECK(gguf_writer_begin(w, path, &err) == 0 && gguf_writer_finish(w, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    GgufFile f;
    CHECK(gguf_open(&f, path, 1, &err) == 0 && f.n_tensors == 0 && f.n_kv == 1, "%s", err.msg);
    gguf_close(&f);
}

void suite_gguf(void) {
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_writer_layout);
    RUN_TEST(test_getters);
    RUN_TEST(test_vocab_llama_spm);
    RUN_TEST(test_copy_kv);
    RUN_TEST(test_gguf_py_fixture);
    RUN_TEST(test_gguf_py_reads_ours);
    RUN_TEST(test_malformed_header);
    RUN_TEST(test_malformed_kv);
    RUN_TEST(test_malformed_alignment);
    RUN_TEST(test_malformed_tensors);
    RUN_TEST(test_open_errors);
    RUN_TEST(test_truncation);
    RUN_TEST(test_fuzz);
    RUN_TEST(test_writer_errors);
}
