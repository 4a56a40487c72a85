/* tests/test_dump.c — .npy reading and writing, the dump directory, and `compare`.
 *
 * Fixtures: the .npy files in tests/data/npy/, written by NumPy (tools/make_npy_fixtures.py, which lists the
 * formulas the values follow; they are repeated here). With BLUELMV_PYTHON_CHECKS=1 a file written
 * here is also loaded by numpy. */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dump.h"
#include "util.h"

void suite_dump(void);

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

static int shape_is(const NpyArray *a, int ndim, const int64_t *shape) {
    if (a->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (a->shape[i] != shape[i]) return 0;
    return 1;
}

/* Reads a fixture as double; CHECKs and returns -1 on failure. */
static int load(const char *name, NpyArray *a) {
    char rel[128];
    snprintf(rel, sizeof rel, "npy/%s.npy", name);
    BlvError err;
    if (npy_read(test_data(rel), a, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* ---- reading NumPy's files ------------------------------------------------------------------------ */

static void test_read_float32_fixtures(void) {
    NpyArray a;
    if (load("f32_2d", &a) == 0) {
        int64_t s[] = {3, 4};
        CHECK(shape_is(&a, 2, s) && a.n == 12 && a.file_dtype == NPY_F32 && a.dtype == NPY_F64, "f32_2d: shape");
        for (int i = 0; i < 12 && a.n == 12; i++) CHECK(a.f64[i] == i * 0.25 - 1.5, "f32_2d[%d] = %g", i, a.f64[i]);
        npy_free(&a);
    }
    if (load("f32_4d", &a) == 0) {
        int64_t s[] = {2, 3, 2, 2};
        CHECK(shape_is(&a, 4, s) && a.n == 24, "f32_4d: shape");
        for (int i = 0; i < 24 && a.n == 24; i++)
            CHECK(a.f64[i] == (i % 2 ? -1 : 1) * i / 8.0, "f32_4d[%d] = %g", i, a.f64[i]);
        npy_free(&a);
    }
    if (load("f32_1d", &a) == 0) {
        int64_t s[] = {5};
        const float want[] = {1, -2, 0.5f, 1e-3f, 3.4e38f};
        CHECK(shape_is(&a, 1, s), "f32_1d: shape");
        for (int i = 0; i < 5 && a.n == 5; i++) CHECK(a.f64[i] == (double)want[i], "f32_1d[%d] = %g", i, a.f64[i]);
        npy_free(&a);
    }
    if (load("f32_scalar", &a) == 0) {
        CHECK(a.ndim == 0 && a.n == 1 && a.f64[0] == 2.5, "scalar: ndim %d n %lld", a.ndim, (long long)a.n);
        npy_free(&a);
    }
    if (load("f32_empty", &a) == 0) {
        int64_t s[] = {0, 3};
        CHECK(shape_is(&a, 2, s) && a.n == 0, "empty: n %lld", (long long)a.n);
        npy_free(&a);
    }
    /* the same values as float32 */
    BlvError err;
    if (npy_read_as(test_data("npy/f32_2d.npy"), NPY_F32, &a, &err) == 0) {
        CHECK(a.dtype == NPY_F32 && a.n == 12, "as f32");
        for (int i = 0; i < 12 && a.n == 12; i++) CHECK(a.f32[i] == i * 0.25f - 1.5f, "f32[%d]", i);
        npy_free(&a);
    } else {
        CHECK(0, "%s", err.msg);
    }
}

static void test_read_other_dtypes(void) {
    NpyArray a;
    if (load("f16", &a) == 0) {
        const double want[] = {1, -2, 65504, 0x1p-24, 0x1p-14, INFINITY};
        CHECK(a.file_dtype == NPY_F16 && a.ndim == 1 && a.n == 6, "f16: shape");
        for (int i = 0; i < 6 && a.n == 6; i++) CHECK(a.f64[i] == want[i], "f16[%d] = %g, want %g", i, a.f64[i], want[i]);
        npy_free(&a);
    }
    if (load("f64", &a) == 0) {
        const double want[] = {1.0 / 3, -2.0 / 3, 1e-300, 1e300};
        int64_t s[] = {2, 2};
        CHECK(a.file_dtype == NPY_F64 && shape_is(&a, 2, s), "f64: shape");
        for (int i = 0; i < 4 && a.n == 4; i++) CHECK(a.f64[i] == want[i], "f64[%d] = %.17g", i, a.f64[i]);
        npy_free(&a);
    }
    if (load("i32", &a) == 0) {
        const double want[] = {-1, 2147483647.0, -2147483648.0, 7};
        CHECK(a.file_dtype == NPY_I32 && a.n == 4, "i32: shape");
        for (int i = 0; i < 4 && a.n == 4; i++) CHECK(a.f64[i] == want[i], "i32[%d] = %.17g", i, a.f64[i]);
        npy_free(&a);
    }
    if (load("i64", &a) == 0) {
        const double want[] = {-5, 1099511627776.0, 0};
        CHECK(a.file_dtype == NPY_I64 && a.n == 3, "i64: shape");
        for (int i = 0; i < 3 && a.n == 3; i++) CHECK(a.f64[i] == want[i], "i64[%d] = %.17g", i, a.f64[i]);
        npy_free(&a);
    }
    if (load("v2", &a) == 0) {
        int64_t s[] = {2, 3};
        CHECK(shape_is(&a, 2, s), "v2: shape");
        for (int i = 0; i < 6 && a.n == 6; i++) CHECK(a.f64[i] == i + 0.5, "v2[%d] = %g", i, a.f64[i]);
        npy_free(&a);
    }
    if (load("v3", &a) == 0) {
        int64_t s[] = {2, 2};
        CHECK(shape_is(&a, 2, s), "v3: shape");
        for (int i = 0; i < 4 && a.n == 4; i++) CHECK(a.f64[i] == -i, "v3[%d] = %g", i, a.f64[i]);
        npy_free(&a);
    }
    /* int32 reading: exact, and range-checked from int64 */
    BlvError err;
    if (npy_read_as(test_data("npy/i32.npy"), NPY_I32, &a, &err) == 0) {
        CHECK(a.i32[0] == -1 && a.i32[1] == INT32_MAX && a.i32[2] == INT32_MIN && a.i32[3] == 7, "i32 values");
        npy_free(&a);
    } else {
        CHECK(0, "%s", err.msg);
    }
    CHECK(npy_read_as(test_data("npy/i64.npy"), NPY_I32, &a, &err) != 0 && strstr(err.msg, "i64.npy") &&
              strstr(err.msg, "does not fit in int32"),
          "int64 2^40 read as int32: %s", err.msg);
    CHECK(npy_read_as(test_data("npy/f64.npy"), NPY_I32, &a, &err) != 0 && strstr(err.msg, "integer"),
          "float read as int32: %s", err.msg);
}

/* Files NumPy writes that bluelmv refuses, with a message naming the file and the reason. */
static void test_read_unsupported(void) {
    struct {
        const char *name, *needle;
    } cases[] = {
        {"fortran", "Fortran-order"},
        {"bigendian", "big-endian"},
        {"u8", "'|u1' is not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "npy/%s.npy", cases[i].name);
        NpyArray a;
        BlvError err = {{0}};
        int rc = npy_read(test_data(rel), &a, &err);
        CHECK(rc == -1 && strstr(err.msg, rel) && strstr(err.msg, cases[i].needle), "%s: rc %d, '%s'",
              cases[i].name, rc, err.msg);
        CHECK(a.data == NULL, "%s: data left", cases[i].name);
        if (getenv("BLUELMV_TEST_VERBOSE")) test_note("%s", err.msg);
    }
}

/* ---- writing ---------------------------------------------------------------------------------------- */

/* npy_write_f32 / npy_write_i32 produce the bytes numpy.save wrote for the same arrays. */
static void test_write_matches_numpy_bytes(void) {
    float v2d[12], v4d[24], v1d[5] = {1, -2, 0.5f, 1e-3f, 3.4e38f}, scalar = 2.5f;
    for (int i = 0; i < 12; i++) v2d[i] = i * 0.25f - 1.5f;
    for (int i = 0; i < 24; i++) v4d[i] = (float)((i % 2 ? -1 : 1) * i) / 8.0f;
    int32_t i32[4] = {-1, INT32_MAX, INT32_MIN, 7};
    struct {
        const char *name;
        const void *data;
        int is_int, ndim;
        int64_t shape[4];
    } cases[] = {
        {"f32_2d", v2d, 0, 2, {3, 4}},     {"f32_4d", v4d, 0, 4, {2, 3, 2, 2}}, {"f32_1d", v1d, 0, 1, {5}},
        {"f32_scalar", &scalar, 0, 0, {0}}, {"f32_empty", NULL, 0, 2, {0, 3}},  {"i32", i32, 1, 1, {4}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[64], name[64];
        snprintf(rel, sizeof rel, "npy/%s.npy", cases[i].name);
        snprintf(name, sizeof name, "w_%s.npy", cases[i].name);
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", test_tmp(name));
        BlvError err;
        int rc = cases[i].is_int ? npy_write_i32(tmp, cases[i].data, cases[i].ndim, cases[i].shape, &err)
                                 : npy_write_f32(tmp, cases[i].data, cases[i].ndim, cases[i].shape, &err);
        CHECK(rc == 0, "%s: %s", cases[i].name, err.msg);
        char *want, *got;
        size_t nw, ng;
        if (blv_read_file(test_data(rel), &want, &nw, &err) != 0) {
            CHECK(0, "%s", err.msg);
            continue;
        }
        if (blv_read_file(tmp, &got, &ng, &err) == 0) {
            CHECK(nw == ng && memcmp(want, got, nw) == 0, "%s: %zu bytes written, numpy wrote %zu (or the bytes differ)",
                  cases[i].name, ng, nw);
            free(got);
        } else {
            CHECK(0, "%s", err.msg);
        }
        free(want);
    }
}

static void test_roundtrip(void) {
    uint64_t rng = 42;
    const int64_t shape[3] = {4, 7, 9};
    float *x = malloc(sizeof(float) * 252);
    for (int i = 0; i < 252; i++) x[i] = test_rand_normal(&rng) * 3.0f;
    x[5] = NAN;
    x[6] = -INFINITY;
    x[7] = -0.0f;
    x[8] = 1e-45f;  /* a float subnormal */
    const char *path = test_tmp("rt.npy");
    BlvError err;
    CHECK(npy_write_f32(path, x, 3, shape, &err) == 0, "%s", err.msg);
    NpyArray a;
    if (npy_read_as(path, NPY_F32, &a, &err) == 0) {
        CHECK(shape_is(&a, 3, shape) && a.n == 252, "shape");
        CHECK(a.n == 252 && memcmp(a.f32, x, sizeof(float) * 252) == 0, "float32 bits differ after a round trip");
        npy_free(&a);
    } else {
        CHECK(0, "%s", err.msg);
    }
    /* in pieces */
    NpyWriter w;
    const char *path2 = test_tmp("rt2.npy");
    CHECK(npy_writer_open(&w, path2, NPY_F32, 3, shape, &err) == 0, "%s", err.msg);
    CHECK(npy_writer_append_f32(&w, x, 100, &err) == 0 && npy_writer_append_f32(&w, x + 100, 0, &err) == 0 &&
              npy_writer_append_f32(&w, x + 100, 152, &err) == 0 && npy_writer_close(&w, &err) == 0,
          "%s", err.msg);
    char *b1, *b2;
    size_t n1, n2;
    if (blv_read_file(path, &b1, &n1, &err) == 0) {
        if (blv_read_file(path2, &b2, &n2, &err) == 0) {
            CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0, "pieces differ from a whole write");
            free(b2);
        }
        free(b1);
    }
    /* too few / too many elements: the file is removed */
    const char *path3 = test_tmp("rt3.npy");
    CHECK(npy_writer_open(&w, path3, NPY_F32, 3, shape, &err) == 0, "%s", err.msg);
    CHECK(npy_writer_append_f32(&w, x, 251, &err) == 0, "%s", err.msg);
    CHECK(npy_writer_close(&w, &err) != 0 && strstr(err.msg, "251 of 252"), "short close: %s", err.msg);
    CHECK(!file_exists(path3), "short file left behind");
    CHECK(npy_writer_open(&w, path3, NPY_F32, 3, shape, &err) == 0, "%s", err.msg);
    CHECK(npy_writer_append_f32(&w, x, 252, &err) == 0, "%s", err.msg);
    CHECK(npy_writer_append_f32(&w, x, 1, &err) != 0 && strstr(err.msg, "rt3.npy"), "overflow: %s", err.msg);
    CHECK(!file_exists(path3), "overflowing file left behind");
    CHECK(npy_writer_open(&w, path3, NPY_I32, 1, shape, &err) == 0, "%s", err.msg);
    CHECK(npy_writer_append_f32(&w, x, 1, &err) != 0 && strstr(err.msg, "<f4"), "type mismatch: %s", err.msg);
    npy_writer_abort(&w);  /* after a failed append: harmless */
    /* int32 round trip */
    int32_t ids[6] = {1, 512, 514, -1, -1, 515};
    int64_t n6 = 6;
    CHECK(npy_write_i32(path, ids, 1, &n6, &err) == 0, "%s", err.msg);
    if (npy_read_as(path, NPY_I32, &a, &err) == 0) {
        CHECK(a.n == 6 && a.file_dtype == NPY_I32 && memcmp(a.i32, ids, sizeof ids) == 0, "int32 round trip");
        npy_free(&a);
    } else {
        CHECK(0, "%s", err.msg);
    }
    /* bad arguments */
    int64_t neg[2] = {3, -1};
    CHECK(npy_write_f32(path, x, 2, neg, &err) != 0 && strstr(err.msg, "invalid shape"), "negative dim: %s", err.msg);
    CHECK(npy_write_f32(path, x, NPY_MAX_DIMS + 1, shape, &err) != 0, "too many dims");
    CHECK(npy_write_f32("/nonexistent-dir/x.npy", x, 3, shape, &err) != 0 && strstr(err.msg, "/nonexistent-dir/x.npy"),
          "unwritable: %s", err.msg);
    free(x);
}

/* numpy.load reads what npy_write_f32 / npy_write_i32 wrote (needs Python: BLUELMV_PYTHON_CHECKS=1). */
static void test_numpy_loads_our_files(void) {
    if (!getenv("BLUELMV_PYTHON_CHECKS")) {
        test_note("skipped: set BLUELMV_PYTHON_CHECKS=1 to load the files with numpy");
        return;
    }
    const char *python = getenv("BLUELMV_PYTHON") ? getenv("BLUELMV_PYTHON") : "python3";
    float x[2 * 3 * 5];
    for (int i = 0; i < 30; i++) x[i] = (float)i * 0.5f - 7.0f;
    int64_t shape[3] = {2, 3, 5};
    char pf[4096], pi[4096];
    snprintf(pf, sizeof pf, "%s", test_tmp("py_f32.npy"));
    snprintf(pi, sizeof pi, "%s", test_tmp("py_i32.npy"));
    BlvError err;
    CHECK(npy_write_f32(pf, x, 3, shape, &err) == 0, "%s", err.msg);
    int32_t ids[4] = {1, -1, 70000, INT32_MIN};
    int64_t n4 = 4;
    CHECK(npy_write_i32(pi, ids, 1, &n4, &err) == 0, "%s", err.msg);
    char cmd[10000];
    snprintf(cmd, sizeof cmd,
             "%s -c \"import numpy as np; a = np.load('%s'); b = np.load('%s'); "
             "assert a.dtype == np.float32 and a.shape == (2, 3, 5) and a.flags.c_contiguous; "
             "assert (a.reshape(-1) == np.arange(30, dtype=np.float32) * np.float32(0.5) - 7).all(); "
             "assert b.dtype == np.int32 and b.shape == (4,) and b.tolist() == [1, -1, 70000, -2**31]; print('ok')\"",
             python, pf, pi);
    char *out = NULL, *errout = NULL;
    int rc = test_run_command(cmd, &out, &errout);
    CHECK(rc == 0 && out && strstr(out, "ok"), "numpy.load: rc %d, stdout '%s', stderr '%s'", rc, out ? out : "",
          errout ? errout : "");
    free(out);
    free(errout);
}

/* ---- malformed files --------------------------------------------------------------------------------- */

/* A v1.0 file with the given header dict (padded as numpy does) followed by data_len bytes. */
static size_t make_npy(char *buf, size_t cap, const char *dict, size_t data_len) {
    size_t dl = strlen(dict);
    size_t hlen = dl + 1, pad = 64 - (10 + hlen) % 64;
    size_t total = 10 + hlen + pad + data_len;
    if (total > cap) return 0;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)((hlen + pad) & 255);
    buf[9] = (char)((hlen + pad) >> 8);
    memcpy(buf + 10, dict, dl);
    memset(buf + 10 + dl, ' ', pad);
    buf[10 + hlen + pad - 1] = '\n';
    memset(buf + 10 + hlen + pad, 0, data_len);
    return total;
}

static void test_malformed(void) {
    static char buf[4096];
    struct {
        const char *what, *dict;
        long data_len;     /* -1: use raw bytes below instead */
        const char *needle;
    } cases[] = {
        {"valid control", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, NULL},
        {"truncated data", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20, "truncated data"},
        {"trailing bytes", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28, "after the data"},
        {"huge shape", "{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000, 4000000000, 4000000000), }", 8,
         "too large"},
        {"large shape, little data", "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }", 8,
         "truncated data"},
        {"dimension overflow", "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0,
         "too large"},
        {"negative dimension", "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 0, "shape"},
        {"shape not a tuple", "{'descr': '<f4', 'fortran_order': False, 'shape': (5), }", 20, "not a tuple"},
        {"shape is a list", "{'descr': '<f4', 'fortran_order': False, 'shape': [5], }", 20, "expected '('"},
        {"missing shape", "{'descr': '<f4', 'fortran_order': False, }", 4, "missing 'shape'"},
        {"missing descr", "{'fortran_order': False, 'shape': (1,), }", 4, "missing 'descr'"},
        {"extra key", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1, }", 4, "unexpected key 'x'"},
        {"duplicate key", "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4, "twice"},
        {"bad fortran_order", "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }", 4, "True or False"},
        {"unknown dtype", "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", 8, "'<c8' is not supported"},
        {"structured dtype", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 4, "structured"},
        {"not a dict", "['descr', '<f4']", 4, "expected '{'"},
        {"unterminated", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,", 4, "shape"},
        {"text after dict", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x", 4, "after the dictionary"},
        {"too many dims", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
                          "1,1,1,1,1,1,1,1,1,1,1,1,1), }", 4, "more than 32 dimensions"},
    };
    const char *path = test_tmp("bad.npy");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = make_npy(buf, sizeof buf, cases[i].dict, (size_t)cases[i].data_len);
        CHECK(n > 0 && write_bytes(path, buf, n) == 0, "%s: could not write", cases[i].what);
        NpyArray a;
        BlvError err = {{0}};
        int rc = npy_read(path, &a, &err);
        if (!cases[i].needle) {
            CHECK(rc == 0, "%s: %s", cases[i].what, err.msg);
            if (rc == 0) npy_free(&a);
            continue;
        }
        CHECK(rc == -1 && strstr(err.msg, "bad.npy") && strstr(err.msg, cases[i].needle), "%s: rc %d, '%s'",
              cases[i].what, rc, err.msg);
        if (getenv("BLUELMV_TEST_VERBOSE")) test_note("%s: %s", cases[i].what, err.msg);
    }

    /* damaged prefixes */
    size_t n = make_npy(buf, sizeof buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
    struct {
        const char *what;
        size_t len;
        int byte;       /* index to overwrite, or -1 */
        char value;
        const char *needle;
    } raw[] = {
        {"empty file", 0, -1, 0, "bad magic"},
        {"bad magic", n, 1, 'X', "bad magic"},
        {"magic only", 6, -1, 0, "truncated .npy header"},
        {"no header length", 9, -1, 0, "truncated .npy header"},
        {"truncated header", 40, -1, 0, "truncated .npy header"},
        {"version 4.0", n, 6, 4, "version 4.0"},
        {"version 1.1", n, 7, 1, "version 1.1"},
        {"header length huge", n, 9, (char)0xFF, "truncated .npy header"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        static char copy[4096];
        memcpy(copy, buf, n);
        if (raw[i].byte >= 0) copy[raw[i].byte] = raw[i].value;
        CHECK(write_bytes(path, copy, raw[i].len) == 0, "write");
        NpyArray a;
        BlvError err = {{0}};
        int rc = npy_read(path, &a, &err);
        CHECK(rc == -1 && strstr(err.msg, "bad.npy") && strstr(err.msg, raw[i].needle), "%s: rc %d, '%s'", raw[i].what,
              rc, err.msg);
        if (getenv("BLUELMV_TEST_VERBOSE")) test_note("%s: %s", raw[i].what, err.msg);
    }
    /* a v2.0 header announcing 4 GiB */
    char v2[16] = "\x93NUMPY\x02\x00\xff\xff\xff\xff{}";
    CHECK(write_bytes(path, v2, 14) == 0, "write");
    NpyArray a;
    BlvError err = {{0}};
    CHECK(npy_read(path, &a, &err) == -1 && strstr(err.msg, "implausible"), "v2 huge header: %s", err.msg);
    CHECK(npy_read(test_tmp("does-not-exist.npy"), &a, &err) == -1 && strstr(err.msg, "does-not-exist.npy") &&
              strstr(err.msg, "cannot open"),
          "missing file: %s", err.msg);
}

/* Random byte damage to a valid file never crashes (run under ASan/UBSan by `make sanitize`). */
static void test_fuzz(void) {
    static char good[4096], bad[4096];
    size_t n = make_npy(good, sizeof good, "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 5), }", 30);
    uint64_t rng = 7;
    const char *path = test_tmp("fuzz.npy");
    int n_ok = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(bad, good, n);
        size_t len = n;
        int kind = (int)(test_rand_u64(&rng) % 3);
        if (kind == 0) len = (size_t)(test_rand_u64(&rng) % (n + 1));
        int flips = 1 + (int)(test_rand_u64(&rng) % 4);
        for (int f = 0; f < flips && len > 0; f++) {
            size_t at = (size_t)(test_rand_u64(&rng) % (kind == 2 ? (len < 80 ? len : 80) : len));
            const char pool[] = "0123456789(),:'{}<>fi TrueFalse\n\x93";
            bad[at] = test_rand_u64(&rng) % 2 ? (char)test_rand_u64(&rng) : pool[test_rand_u64(&rng) % (sizeof pool - 1)];
        }
        if (write_bytes(path, bad, len) != 0) continue;
        NpyArray a;
        BlvError err = {{0}};
        if (npy_read(path, &a, &err) == 0) {
            n_ok++;
            CHECK(a.n >= 0 && (a.n == 0 || a.data), "accepted without data");
            npy_free(&a);
        } else {
            CHECK(strstr(err.msg, "fuzz.npy") != NULL, "message without the file name: %s", err.msg);
        }
    }
    test_note("3000 damaged files: %d still valid (data-only damage), the rest rejected", n_ok);
}

/* ---- the dump directory ----------------------------------------------------------------------------- */

static void test_dump_dir(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_tmp("dumps"));
    DumpDir d;
    BlvError err;
    CHECK(dump_open(&d, dir, &err) == 0, "%s", err.msg);
    float px[2 * 3 * 4 * 4];
    for (int i = 0; i < 96; i++) px[i] = (float)i / 96.0f;
    int64_t s_px[4] = {2, 3, 4, 4};
    CHECK(dump_tensor(&d, "pixels", px, 4, s_px, &err) == 0, "%s", err.msg);
    int32_t tok[5] = {1, 512, -1, -1, 513};
    int64_t s_tok[1] = {5};
    CHECK(dump_tensor_i32(&d, "tokens", tok, 1, s_tok, &err) == 0, "%s", err.msg);
    /* in pieces, a batch at a time */
    NpyWriter w;
    int64_t s_blk[3] = {3, 2, 4};
    CHECK(dump_begin(&d, "vit_block_0", NPY_F32, 3, s_blk, &w, &err) == 0, "%s", err.msg);
    CHECK(npy_writer_append_f32(&w, px, 16, &err) == 0 && npy_writer_append_f32(&w, px + 16, 8, &err) == 0 &&
              npy_writer_close(&w, &err) == 0,
          "%s", err.msg);
    CHECK(d.n_written == 3, "n_written %d", d.n_written);
    char path[4300];
    snprintf(path, sizeof path, "%s/pixels.npy", dir);
    NpyArray a;
    if (npy_read_as(path, NPY_F32, &a, &err) == 0) {
        CHECK(shape_is(&a, 4, s_px) && memcmp(a.f32, px, sizeof px) == 0, "pixels.npy content");
        npy_free(&a);
    } else {
        CHECK(0, "%s", err.msg);
    }
    snprintf(path, sizeof path, "%s/tokens.npy", dir);
    if (npy_read_as(path, NPY_I32, &a, &err) == 0) {
        CHECK(shape_is(&a, 1, s_tok) && memcmp(a.i32, tok, sizeof tok) == 0, "tokens.npy content");
        npy_free(&a);
    } else {
        CHECK(0, "%s", err.msg);
    }
    const char *bad_names[] = {"", "../x", "a/b", ".hidden", "sp ace"};
    for (size_t i = 0; i < 5; i++)
        CHECK(dump_tensor(&d, bad_names[i], px, 4, s_px, &err) != 0 && strstr(err.msg, "invalid dump name"),
              "name '%s' accepted", bad_names[i]);
    dump_close(&d);
    /* an existing directory is fine; a file in the way is not */
    CHECK(dump_open(&d, dir, &err) == 0, "%s", err.msg);
    dump_close(&d);
    CHECK(dump_open(&d, path, &err) != 0 && strstr(err.msg, "not a directory"), "file as dir: %s", err.msg);
    CHECK(dump_open(&d, "/nonexistent-parent/dumps", &err) != 0 && strstr(err.msg, "/nonexistent-parent/dumps"),
          "no parent: %s", err.msg);
}

/* ---- compare ------------------------------------------------------------------------------------------- */

/* Makes directory `name` under the temp dir with a few stage tensors (seeded values). */
static void make_stage_dir(const char *dirname, char *dir, size_t cap) {
    snprintf(dir, cap, "%s", test_tmp(dirname));
    DumpDir d;
    BlvError err;
    CHECK(dump_open(&d, dir, &err) == 0, "%s", err.msg);
    uint64_t rng = 1234;
    float x[1000];
    for (int i = 0; i < 1000; i++) x[i] = test_rand_normal(&rng);
    int64_t s_px[4] = {2, 3, 5, 5};   /* 150 */
    int64_t s_blk[3] = {2, 10, 50};   /* 1000 */
    int64_t s_log[2] = {10, 37};      /* 370 */
    CHECK(dump_tensor(&d, "pixels", x, 4, s_px, &err) == 0, "%s", err.msg);
    CHECK(dump_tensor(&d, "vit_block_10", x, 3, s_blk, &err) == 0, "%s", err.msg);
    CHECK(dump_tensor(&d, "vit_block_2", x, 3, s_blk, &err) == 0, "%s", err.msg);
    CHECK(dump_tensor(&d, "image_embeds", x, 3, s_blk, &err) == 0, "%s", err.msg);
    CHECK(dump_tensor(&d, "logits", x, 2, s_log, &err) == 0, "%s", err.msg);
    int32_t tok[6] = {1, 512, 514, -1, -1, 515};
    int64_t n6 = 6;
    CHECK(dump_tensor_i32(&d, "tokens", tok, 1, &n6, &err) == 0, "%s", err.msg);
    dump_close(&d);
}

static char *compare_report(const char *a, const char *b, const CompareOptions *o, int *n_failed, int *rc) {
    FILE *f = tmpfile();
    BlvError err = {{0}};
    *rc = dump_compare_dirs(a, b, o, f, n_failed, &err);
    if (*rc != 0) CHECK(0, "compare: %s", err.msg);
    long n = ftell(f);
    char *s = calloc((size_t)n + 1, 1);
    rewind(f);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
    fclose(f);
    if (getenv("BLUELMV_TEST_VERBOSE")) printf("%s", s);
    return s;
}

/* The report line of a tensor ("" if none). */
static const char *row_of(const char *report, const char *name, char *buf, size_t cap) {
    buf[0] = 0;
    size_t n = strlen(name);
    for (const char *p = report; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > n && strncmp(p, name, n) == 0 && p[n] == ' ') {
            snprintf(buf, cap, "%.*s", (int)len, p);
            return buf;
        }
        p = eol ? eol + 1 : NULL;
    }
    return buf;
}

static void test_compare_identical(void) {
    char a[4096], b[4096];
    make_stage_dir("cmp_a", a, sizeof a);
    make_stage_dir("cmp_b", b, sizeof b);
    int n_failed = -1, rc;
    char *rep = compare_report(a, b, NULL, &n_failed, &rc);
    CHECK(rc == 0 && n_failed == 0, "identical dirs: rc %d, n_failed %d", rc, n_failed);
    CHECK(rep && strstr(rep, "verdict: PASS (6 tensors compared)") != NULL, "verdict:\n%s", rep ? rep : "(no report)");
    /* pipeline order, numbers compared naturally */
    const char *p1 = strstr(rep, "\npixels"), *p2 = strstr(rep, "\nvit_block_2 "), *p3 = strstr(rep, "\nvit_block_10 "),
               *p4 = strstr(rep, "\nimage_embeds"), *p5 = strstr(rep, "\ntokens"), *p6 = strstr(rep, "\nlogits");
    CHECK(p1 && p2 && p3 && p4 && p5 && p6 && p1 < p2 && p2 < p3 && p3 < p4 && p4 < p5 && p5 < p6, "row order:\n%s", rep);
    char row[512];
    CHECK(strstr(row_of(rep, "logits", row, sizeof row), "1.0000") && strstr(row, "ok"), "logits row: %s", row);
    CHECK(strstr(row_of(rep, "tokens", row, sizeof row), "exact: 0 of 6 differ"), "tokens row: %s", row);
    CHECK(strstr(row_of(rep, "pixels", row, sizeof row), "2x3x5x5") && strstr(row, "0.000e+00") &&
              strstr(row, "1.000000000"),
          "pixels row: %s", row);
    free(rep);
}

static void test_compare_perturbed(void) {
    char a[4096], b[4096], path[4300];
    make_stage_dir("per_a", a, sizeof a);
    make_stage_dir("per_b", b, sizeof b);
    /* one element of a 1000-element tensor off by 1e-2 relative */
    snprintf(path, sizeof path, "%s/vit_block_2.npy", a);
    NpyArray t;
    BlvError err;
    int64_t worst = -1;
    if (npy_read_as(path, NPY_F32, &t, &err) == 0) {
        worst = 0;
        for (int64_t i = 1; i < t.n; i++)
            if (fabsf(t.f32[i]) > fabsf(t.f32[worst])) worst = i;
        t.f32[worst] *= 1.01f;
        CHECK(npy_write_f32(path, t.f32, t.ndim, t.shape, &err) == 0, "%s", err.msg);
        npy_free(&t);
    } else {
        CHECK(0, "%s", err.msg);
    }
    /* with NMSE 1e-8 it fails; the default (1e-6) tolerates one 1 % error among 1000 elements
     * unless it is also asked to bound max_abs */
    CompareOptions o;
    compare_options_default(&o);
    o.tol_nmse = 1e-8;
    int n_failed, rc;
    char *rep = compare_report(a, b, &o, &n_failed, &rc);
    char row[512];
    CHECK(rc == 0 && n_failed == 1, "n_failed %d", n_failed);
    CHECK(strstr(row_of(rep, "vit_block_2", row, sizeof row), "FAIL NMSE"), "row: %s\n%s", row, rep);
    CHECK(rep && strstr(rep, "verdict: FAIL (1 of 6 tensors failed: vit_block_2)"), "verdict:\n%s", rep ? rep : "(no report)");
    CHECK(strstr(row_of(rep, "vit_block_10", row, sizeof row), " ok"), "untouched tensor: %s", row);
    free(rep);
    /* the numbers: max_rel 1e-2 (the element is > rel_eps), max_abs at the perturbed index */
    CompareResult r;
    char pb[4300];
    snprintf(pb, sizeof pb, "%s/vit_block_2.npy", b);
    CHECK(dump_compare_files(path, pb, "vit_block_2", NULL, &r, &err) == 0, "%s", err.msg);
    CHECK(r.max_abs_index == worst && fabs(r.max_rel - 0.01) < 1e-6 && r.nmse > 1e-8 && r.nmse < 1e-5 &&
              r.cosine < 1 && r.cosine > 0.99999,
          "max_abs_index %lld (want %lld), max_rel %g, nmse %g, cosine %.10f", (long long)r.max_abs_index,
          (long long)worst, r.max_rel, r.nmse, r.cosine);
    test_note("one element of 1000 off by 1%% (the largest, |x| = %.3g): NMSE %.3g, max_rel %.3g", 0.0 + r.max_abs / 0.01,
              r.nmse, r.max_rel);
    o.tol_nmse = 1e-6;
    o.tol_max_abs = 1e-3;
    rep = compare_report(a, b, &o, &n_failed, &rc);
    CHECK(n_failed == 1 && strstr(row_of(rep, "vit_block_2", row, sizeof row), "FAIL max abs"), "max_abs: %s", row);
    free(rep);
    /* a larger error fails with the defaults */
    snprintf(path, sizeof path, "%s/image_embeds.npy", a);
    if (npy_read_as(path, NPY_F32, &t, &err) == 0) {
        for (int64_t i = 0; i < t.n; i += 10) t.f32[i] *= 1.01f;   /* 100 elements off by 1 % */
        CHECK(npy_write_f32(path, t.f32, t.ndim, t.shape, &err) == 0, "%s", err.msg);
        npy_free(&t);
    }
    rep = compare_report(a, b, NULL, &n_failed, &rc);
    CHECK(n_failed == 1 && strstr(row_of(rep, "image_embeds", row, sizeof row), "FAIL NMSE"), "defaults: %s\n%s", row, rep);
    free(rep);
}

static void test_compare_shape_missing_int(void) {
    char a[4096], b[4096], path[4300];
    make_stage_dir("shp_a", a, sizeof a);
    make_stage_dir("shp_b", b, sizeof b);
    BlvError err;
    /* pixels reshaped (same element count), tokens changed, merged only in A, vit_out only in B */
    snprintf(path, sizeof path, "%s/pixels.npy", a);
    NpyArray t;
    if (npy_read_as(path, NPY_F32, &t, &err) == 0) {
        int64_t s[4] = {2, 3, 25, 1};
        CHECK(npy_write_f32(path, t.f32, 4, s, &err) == 0, "%s", err.msg);
        npy_free(&t);
    }
    snprintf(path, sizeof path, "%s/tokens.npy", a);
    int32_t tok[6] = {1, 512, 514, -1, 7, 515};
    int64_t n6 = 6;
    CHECK(npy_write_i32(path, tok, 1, &n6, &err) == 0, "%s", err.msg);
    float z[4] = {0};
    int64_t s4 = 4;
    snprintf(path, sizeof path, "%s/merged.npy", a);
    CHECK(npy_write_f32(path, z, 1, &s4, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/vit_out.npy", b);
    CHECK(npy_write_f32(path, z, 1, &s4, &err) == 0, "%s", err.msg);
    int n_failed, rc;
    char row[512];
    char *rep = compare_report(a, b, NULL, &n_failed, &rc);
    CHECK(rc == 0 && n_failed == 2, "n_failed %d\n%s", n_failed, rep);
    CHECK(strstr(row_of(rep, "pixels", row, sizeof row), "FAIL shape 2x3x25x1 vs reference 2x3x5x5"), "shape row: %s",
          row);
    CHECK(strstr(row_of(rep, "tokens", row, sizeof row), "exact: 1 of 6 differ") && strstr(row, "first at 4"),
          "tokens row: %s", row);
    CHECK(strstr(rep, "only in A: merged.npy") && strstr(rep, "only in B: vit_out.npy"), "unpaired:\n%s", rep);
    CHECK(rep && strstr(rep, "verdict: FAIL (2 of 6 tensors failed: pixels, tokens)"), "verdict:\n%s", rep ? rep : "(no report)");
    free(rep);
    CompareOptions o;
    compare_options_default(&o);
    o.missing_fails = 1;
    rep = compare_report(a, b, &o, &n_failed, &rc);
    CHECK(n_failed == 4, "missing_fails: n_failed %d", n_failed);
    free(rep);
    /* float vs int dtypes for the same name: compared as floats */
    /* a malformed file in one directory fails its row, the others still compare */
    snprintf(path, sizeof path, "%s/logits.npy", a);
    CHECK(write_bytes(path, "garbage", 7) == 0, "write");
    rep = compare_report(a, b, NULL, &n_failed, &rc);
    CHECK(rc == 0 && n_failed == 3 && strstr(row_of(rep, "logits", row, sizeof row), "bad magic"), "malformed: %s\n%s",
          row, rep);
    free(rep);
    /* no tensor in common; an unlistable directory */
    char e[4096];
    snprintf(e, sizeof e, "%s", test_tmp("empty_dir"));
    DumpDir d;
    CHECK(dump_open(&d, e, &err) == 0, "%s", err.msg);
    dump_close(&d);
    rep = compare_report(a, e, NULL, &n_failed, &rc);
    CHECK(n_failed == 1 && strstr(rep, "verdict: FAIL (no tensor in common)"), "empty:\n%s", rep);
    free(rep);
    FILE *f = tmpfile();
    CHECK(dump_compare_dirs(a, "/nonexistent-dir", NULL, f, &n_failed, &err) == -1 &&
              strstr(err.msg, "/nonexistent-dir"),
          "unlistable: %s", err.msg);
    fclose(f);
}

/* top-1 agreement on a constructed case: 4 rows of 5 logits; rows 1 and 3 disagree. */
static void test_compare_top1(void) {
    const float ref[4][5] = {{0, 1, 5, 2, 3}, {9, 8.9f, 0, 0, 0}, {-1, -2, -3, -4, -0.5f}, {1, 1, 0, 0, 0}};
    float got[4][5];
    memcpy(got, ref, sizeof got);
    got[1][1] = 9.05f;   /* argmax 0 → 1 (the reference gap there is 0.1) */
    got[3][0] = 0.99f;   /* a tie in the reference: first maximum (0) vs now 1 */
    got[0][0] = 0.001f;  /* a change that keeps the argmax */
    int64_t shape[2] = {4, 5};
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s", test_tmp("logits_a.npy"));
    snprintf(pb, sizeof pb, "%s", test_tmp("logits_b.npy"));
    BlvError err;
    CHECK(npy_write_f32(pa, &got[0][0], 2, shape, &err) == 0 && npy_write_f32(pb, &ref[0][0], 2, shape, &err) == 0,
          "%s", err.msg);
    CompareResult r;
    CompareOptions o;
    compare_options_default(&o);
    o.tol_nmse = 1;
    CHECK(dump_compare_files(pa, pb, "logits", &o, &r, &err) == 0, "%s", err.msg);
    CHECK(r.has_top1 && r.top1_rows == 4 && r.top1_agree == 2 && r.top1 == 0.5, "top1 %lld/%lld",
          (long long)r.top1_agree, (long long)r.top1_rows);
    CHECK(r.top1_min_gap == 0, "min gap at disagreements %g (the tie row)", r.top1_min_gap);
    CHECK(r.failed && strstr(r.reason, "top-1 2/4"), "reason '%s'", r.reason);
    o.tol_top1 = 0.5;
    CHECK(dump_compare_files(pa, pb, "logits", &o, &r, &err) == 0 && !r.failed, "tol_top1 0.5: '%s'", r.reason);
    /* other names get no top-1 */
    CHECK(dump_compare_files(pa, pb, "llm_block_0", &o, &r, &err) == 0 && !r.has_top1 && !r.failed, "no top1");
    /* a 1-D logits vector is one row */
    int64_t v = 5;
    CHECK(npy_write_f32(pa, got[1], 1, &v, &err) == 0 && npy_write_f32(pb, ref[1], 1, &v, &err) == 0, "%s", err.msg);
    CHECK(dump_compare_files(pa, pb, "logits", &o, &r, &err) == 0 && r.top1_rows == 1 && r.top1_agree == 0 &&
              fabs(r.top1_min_gap - 0.1) < 1e-5,
          "1-D: %lld/%lld gap %g", (long long)r.top1_agree, (long long)r.top1_rows, r.top1_min_gap);
    /* NaN fails regardless of the tolerance */
    float nanrow[5] = {0, NAN, 1, 2, 3};
    CHECK(npy_write_f32(pa, nanrow, 1, &v, &err) == 0, "%s", err.msg);
    o.tol_nmse = INFINITY;
    o.tol_top1 = 0;
    CHECK(dump_compare_files(pa, pb, "logits", &o, &r, &err) == 0 && r.failed && r.n_nonfinite == 1 &&
              strstr(r.reason, "NaN"),
          "NaN: '%s'", r.reason);
}

/* NMSE and cosine on hand-computed values; f16 and f64 references compare against f32. */
static void test_compare_numbers(void) {
    const float a[4] = {1, 2, 3, 4.5f};
    const double b[4] = {1, 2, 3, 4};
    /* Σd² = 0.25, Σb² = 30: NMSE = 1/120; cosine = Σab / sqrt(Σa² Σb²) = 32 / sqrt(34.25 · 30) */
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s", test_tmp("num_a.npy"));
    snprintf(pb, sizeof pb, "%s", test_tmp("num_b.npy"));
    int64_t n = 4;
    BlvError err;
    CHECK(npy_write_f32(pa, a, 1, &n, &err) == 0, "%s", err.msg);
    /* b as float64, written by hand (numpy's header for '<f8', shape (4,)) */
    static char buf[256];
    size_t len = make_npy(buf, sizeof buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", 32);
    memcpy(buf + len - 32, b, 32);  /* the test host is little-endian (x86-64, aarch64) */
    CHECK(write_bytes(pb, buf, len) == 0, "write");
    CompareResult r;
    CHECK(dump_compare_files(pa, pb, "x", NULL, &r, &err) == 0, "%s", err.msg);
    CHECK(fabs(r.nmse - 1.0 / 120) < 1e-15 && fabs(r.cosine - 32 / sqrt(34.25 * 30)) < 1e-15 && r.max_abs == 0.5 &&
              r.max_abs_index == 3 && r.max_rel == 0.125 && r.failed,
          "nmse %.17g cosine %.17g max_abs %g max_rel %g", r.nmse, r.cosine, r.max_abs, r.max_rel);
    /* all-zero reference: NMSE 0 if a is zero too, +inf otherwise; rel uses rel_eps */
    float z[4] = {0}, s[4] = {0, 0, 1e-5f, 0};
    CHECK(npy_write_f32(pa, z, 1, &n, &err) == 0 && npy_write_f32(pb, z, 1, &n, &err) == 0, "%s", err.msg);
    CHECK(dump_compare_files(pa, pb, "x", NULL, &r, &err) == 0 && r.nmse == 0 && r.cosine == 1 && !r.failed, "zeros");
    CHECK(npy_write_f32(pa, s, 1, &n, &err) == 0, "%s", err.msg);
    CHECK(dump_compare_files(pa, pb, "x", NULL, &r, &err) == 0 && isinf(r.nmse) && r.cosine == 0 && r.failed &&
              fabs(r.max_rel - 0.1) < 1e-6,
          "zero ref: nmse %g cos %g max_rel %g", r.nmse, r.cosine, r.max_rel);
    /* the f16 fixture against itself as f64 values */
    CHECK(dump_compare_files(test_data("npy/f32_2d.npy"), test_data("npy/f32_2d.npy"), "x", NULL, &r, &err) == 0 &&
              !r.failed && r.nmse == 0,
          "self");
    /* int32 vs int64 files compare exactly */
    int32_t i32[3] = {-5, 0, 0};
    int64_t n3 = 3;
    CHECK(npy_write_i32(pa, i32, 1, &n3, &err) == 0, "%s", err.msg);
    CHECK(dump_compare_files(pa, test_data("npy/i64.npy"), "tokens", NULL, &r, &err) == 0 && r.is_int &&
              r.n_mismatch == 1 && r.first_mismatch == 1 && r.failed,
          "i32 vs i64: %lld mismatches first %lld", (long long)r.n_mismatch, (long long)r.first_mismatch);
}

/* A tensor larger than the streaming block (2^16 elements): the sums and top-1 over many blocks. */
static void test_compare_large(void) {
    const int64_t rows = 7, V = 30011;   /* 210077 elements; blocks of 2 rows */
    float *x = malloc(sizeof(float) * (size_t)(rows * V)), *y = malloc(sizeof(float) * (size_t)(rows * V));
    uint64_t rng = 99;
    for (int64_t i = 0; i < rows * V; i++) x[i] = test_rand_normal(&rng);
    for (int64_t r = 0; r < rows; r++) x[r * V + (r * 977) % V] = 50;   /* a clear argmax per row */
    for (int64_t i = 0; i < rows * V; i++) y[i] = x[i] + 1e-4f * test_rand_normal(&rng);
    y[5 * V + 1] = 60;                                                /* row 5's argmax moves */
    double bb = 0, dd = 0, second5 = -INFINITY;
    for (int64_t i = 0; i < rows * V; i++) {
        double d = (double)y[i] - x[i];
        bb += (double)x[i] * x[i];
        dd += d * d;
    }
    for (int64_t j = 0; j < V; j++)
        if (j != (5 * 977) % V && x[5 * V + j] > second5) second5 = x[5 * V + j];
    int64_t shape[2] = {rows, V};
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s", test_tmp("big_a.npy"));
    snprintf(pb, sizeof pb, "%s", test_tmp("big_b.npy"));
    BlvError err;
    CHECK(npy_write_f32(pa, y, 2, shape, &err) == 0 && npy_write_f32(pb, x, 2, shape, &err) == 0, "%s", err.msg);
    CompareResult res;
    CHECK(dump_compare_files(pa, pb, "logits", NULL, &res, &err) == 0, "%s", err.msg);
    CHECK(res.n == rows * V && res.top1_rows == rows && res.top1_agree == rows - 1, "n %lld top1 %lld/%lld",
          (long long)res.n, (long long)res.top1_agree, (long long)res.top1_rows);
    CHECK(fabs(res.top1_min_gap - (50 - second5)) < 1e-9, "gap %g, want %g", res.top1_min_gap, 50 - second5);
    CHECK(fabs(res.nmse / (dd / bb) - 1) < 1e-9, "nmse %.10g, want %.10g", res.nmse, dd / bb);
    CHECK(res.max_abs_index == 5 * V + 1, "max_abs_index %lld", (long long)res.max_abs_index);
    CHECK(res.failed && strstr(res.reason, "NMSE"), "reason '%s'", res.reason);
    free(x);
    free(y);
}

/* The end-to-end golden (tests/data/e2e, tools/gen_e2e_golden.py) reads back with consistent
 * shapes, and compares clean against itself: 11 tensors, two of them integer. */
static void test_e2e_golden_files(void) {
    NpyArray tok, a;
    BlvError err;
    if (npy_read_as(test_data("e2e/tokens.npy"), NPY_I32, &tok, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    int64_t n_img = 0;
    for (int64_t i = 0; i < tok.n; i++) n_img += tok.i32[i] == -1;
    CHECK(tok.ndim == 1 && tok.n == 133 && n_img == 112 && tok.i32[0] == 1 && tok.i32[tok.n - 1] == 513,
          "tokens: n %lld, image positions %lld", (long long)tok.n, (long long)n_img);
    struct {
        const char *name;
        int ndim;
        int64_t shape[4];
    } want[] = {
        {"pixels", 4, {7, 3, 60, 60}},   {"patch_embed", 3, {7, 49, 64}}, {"vit_block_0", 3, {7, 49, 64}},
        {"vit_out", 3, {7, 49, 64}},     {"merged", 3, {7, 16, 256}},     {"image_embeds", 3, {7, 16, 64}},
        {"llm_block_0", 2, {133, 64}},   {"llm_block_1", 2, {133, 64}},   {"logits", 2, {133, 516}},
        {"generated", 1, {32}},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "e2e/%s.npy", want[i].name);
        if (npy_read(test_data(rel), &a, &err) != 0) {
            CHECK(0, "%s", err.msg);
            continue;
        }
        CHECK(shape_is(&a, want[i].ndim, want[i].shape), "%s: ndim %d, shape[0] %lld", want[i].name, a.ndim,
              (long long)a.shape[0]);
        npy_free(&a);
    }
    npy_free(&tok);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_data("e2e"));
    int n_failed, rc;
    char *rep = compare_report(dir, dir, NULL, &n_failed, &rc);
    CHECK(rc == 0 && n_failed == 0 && strstr(rep, "verdict: PASS (11 tensors compared)"), "self-compare:\n%s", rep);
    free(rep);
}

void suite_dump(void) {
    RUN_TEST(test_read_float32_fixtures);
    RUN_TEST(test_read_other_dtypes);
    RUN_TEST(test_read_unsupported);
    RUN_TEST(test_write_matches_numpy_bytes);
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_numpy_loads_our_files);
    RUN_TEST(test_malformed);
    RUN_TEST(test_fuzz);
    RUN_TEST(test_dump_dir);
    RUN_TEST(test_compare_identical);
    RUN_TEST(test_compare_perturbed);
    RUN_TEST(test_compare_shape_missing_int);
    RUN_TEST(test_compare_top1);
    RUN_TEST(test_compare_numbers);
    RUN_TEST(test_compare_large);
    RUN_TEST(test_e2e_golden_files);
}
