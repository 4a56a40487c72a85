/* tests/test_quant.c — types, fp16/bf16 conversion, Q4_0/Q8_0 quantization (against hand-built
 * blocks, ggml's error bounds and a fixture made by PyPI's gguf package), every SIMD dot product and
 * matrix product against its scalar reference, and the machine probes. */
#include "test.h"
#include "../quant.h"
#include "../ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------------- */

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int half_is_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0; }
static int bf16_is_nan(uint16_t h) { return (h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0; }

/* The value of a half, derived from the IEEE definition in double (independent of fp16_to_fp32). */
static double half_value(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    double v = exp == 0 ? ldexp(mant, -24) : exp == 31 ? INFINITY : ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

/* The kernel families this CPU can run, "ref" first. */
static const char *all_families[] = {"ref", "avx2", "avx512", "neon"};
static const char *families[4];
static int n_families;

static void find_families(void) {
    n_families = 0;
    for (int i = 0; i < 4; i++)
        if (quant_force_kernels(all_families[i]) == 0) families[n_families++] = all_families[i];
    quant_force_kernels(NULL);
}

static float *random_floats(uint64_t *rng, int64_t n, float scale) {
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = scale * test_rand_normal(rng);
    return x;
}

/* ---- type table ------------------------------------------------------------------------------- */

static void test_type_table(void) {
    static const struct {
        int type;
        const char *name;
        int64_t elems, bytes;
    } expect[] = {{TYPE_F32, "f32", 1, 4}, {TYPE_F16, "f16", 1, 2}, {TYPE_BF16, "bf16", 1, 2},
                  {TYPE_Q8_0, "q8_0", 32, 34}, {TYPE_Q4_0, "q4_0", 32, 18}};
    for (int i = 0; i < 5; i++) {
        CHECK(type_is_known(expect[i].type), "%s", expect[i].name);
        CHECK(strcmp(type_name(expect[i].type), expect[i].name) == 0, "%s", type_name(expect[i].type));
        CHECK(type_from_name(expect[i].name) == expect[i].type, "%s", expect[i].name);
        CHECK(type_block_elems(expect[i].type) == expect[i].elems, "%s", expect[i].name);
        CHECK(type_block_bytes(expect[i].type) == expect[i].bytes, "%s", expect[i].name);
        CHECK(type_row_bytes(expect[i].type, 64) == 64 / expect[i].elems * expect[i].bytes, "%s", expect[i].name);
    }
    CHECK(type_from_name("Q4_0") == TYPE_Q4_0, "upper case name");
    CHECK(type_from_name("q4_1") == -1 && type_from_name("") == -1 && type_from_name("f3") == -1, "unknown names");
    CHECK(!type_is_known(3) && !type_is_known(-1), "Q4_1 and -1 are not supported");
    CHECK(strcmp(type_name(3), "type 3") == 0, "%s", type_name(3));
    CHECK(type_row_bytes(TYPE_Q4_0, 33) == -1 && type_row_bytes(TYPE_Q8_0, 16) == -1, "partial blocks");
    CHECK(type_row_bytes(TYPE_F16, 33) == 66, "f16 rows of any length");
    CHECK(type_row_bytes(3, 32) == -1, "unknown type");
    CHECK(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ8_0) == 34, "ggml block sizes");
}

/* ---- fp16 ------------------------------------------------------------------------------------- */

static void test_fp16_all_values(void) {
    int bad_value = 0, bad_trip = 0, bad_nan = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_fp32((uint16_t)h);
        uint16_t back = fp32_to_fp16(f);
        if (half_is_nan((uint16_t)h)) {
            bad_nan += !isnan(f) || !half_is_nan(back) || (back & 0x8000) != (h & 0x8000);
            continue;
        }
        bad_value += (double)f != half_value((uint16_t)h) || !!signbit(f) != (int)(h >> 15);
        bad_trip += back != h;
    }
    CHECK(bad_value == 0, "%d halves convert to the wrong float", bad_value);
    CHECK(bad_trip == 0, "%d halves do not round-trip", bad_trip);
    CHECK(bad_nan == 0, "%d NaN halves do not stay NaN", bad_nan);
}

/* The nearest half to f, ties to the even code, derived in double from the definition. */
static uint16_t nearest_half(float f) {
    if (isnan(f)) return 0x7E00;
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7C00;  /* past the midpoint between 65504 and 2^16 */
    uint16_t lo = 0, hi = 0x7BFF;  /* largest code with value <= a (values grow with the code) */
    while (lo < hi) {
        uint16_t mid = (uint16_t)((lo + hi + 1) / 2);
        if (half_value(mid) <= a) lo = mid;
        else hi = (uint16_t)(mid - 1);
    }
    if (lo == 0x7BFF) return sign | lo;
    double below = a - half_value(lo), above = half_value((uint16_t)(lo + 1)) - a;
    if (above < below || (above == below && (lo & 1))) lo++;
    return sign | lo;
}

static void test_fp16_rounding(void) {
    /* every tie between consecutive halves, and the floats just beside it */
    int bad_tie = 0;
    for (uint16_t h = 0; h < 0x7BFF; h++) {
        float mid = (float)((half_value(h) + half_value((uint16_t)(h + 1))) / 2);  /* exact in float */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : h;
        bad_tie += fp32_to_fp16(mid) != even || fp32_to_fp16(-mid) != (0x8000 | even);
        bad_tie += fp32_to_fp16(nextafterf(mid, 0.0f)) != h;
        bad_tie += fp32_to_fp16(nextafterf(mid, INFINITY)) != h + 1;
    }
    CHECK(bad_tie == 0, "%d midpoints round wrongly", bad_tie);
    CHECK(fp32_to_fp16(65504.0f) == 0x7BFF, "max half");
    CHECK(fp32_to_fp16(65519.996f) == 0x7BFF && fp32_to_fp16(65520.0f) == 0x7C00, "overflow boundary");
    CHECK(fp32_to_fp16(INFINITY) == 0x7C00 && fp32_to_fp16(-INFINITY) == 0xFC00, "inf");
    CHECK(fp32_to_fp16(1e-8f) == 0 && fp32_to_fp16(-1e-8f) == 0x8000, "underflow keeps the sign");
    CHECK(fp32_to_fp16(0x1p-25f) == 0 && fp32_to_fp16(0x1.000002p-25f) == 1, "half the smallest subnormal");
    CHECK(half_is_nan(fp32_to_fp16(NAN)) && half_is_nan(fp32_to_fp16(float_of(0x7F800001))), "NaN stays NaN");

    /* random floats over the whole half range (and beyond), checked against the derivation above
     * and, where the compiler has it, against the C _Float16 conversion */
    uint64_t rng = 1;
    int bad = 0, bad_f16 = 0;
    for (int i = 0; i < 400000; i++) {
        uint32_t exp = 90 + (uint32_t)(test_rand_u64(&rng) % 56);  /* 2^-37 .. 2^18 */
        uint32_t u = (uint32_t)(test_rand_u64(&rng) & 0x807FFFFF) | (exp << 23);
        if (i % 4 == 0) u &= 0xFFFFE000 | (uint32_t)(test_rand_u64(&rng) & 1) << 12;  /* many exact ties */
        float f = float_of(u);
        uint16_t got = fp32_to_fp16(f);
        bad += got != nearest_half(f);
#if defined(__FLT16_MAX__)
        _Float16 h16 = (_Float16)f;
        uint16_t want;
        memcpy(&want, &h16, 2);
        bad_f16 += got != want;
#endif
    }
    CHECK(bad == 0, "%d of 400000 random floats round to the wrong half", bad);
    CHECK(bad_f16 == 0, "%d of 400000 random floats differ from the _Float16 conversion", bad_f16);
#if !defined(__FLT16_MAX__)
    test_note("no _Float16 on this compiler: checked against the derivation only");
#endif
}

/* ---- bf16 ------------------------------------------------------------------------------------- */

static void test_bf16(void) {
    int bad_trip = 0, bad_nan = 0, bad_tie = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_fp32((uint16_t)h);
        CHECK(bits_of(f) == h << 16, "bf16 %04x", h);
        uint16_t back = fp32_to_bf16(f);
        if (bf16_is_nan((uint16_t)h)) bad_nan += !bf16_is_nan(back) || !(back & 0x40);
        else bad_trip += back != h;
        /* ties: the float halfway to the next bf16 up (in magnitude), and its neighbours */
        if ((h & 0x7F80) != 0x7F80 && (h & 0x7FFF) != 0x7F7F) {
            uint32_t mid = (h << 16) | 0x8000;
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            bad_tie += fp32_to_bf16(float_of(mid)) != even;
            bad_tie += fp32_to_bf16(float_of(mid - 1)) != h || fp32_to_bf16(float_of(mid + 1)) != h + 1;
        }
    }
    CHECK(bad_trip == 0, "%d bf16 values do not round-trip", bad_trip);
    CHECK(bad_nan == 0, "%d NaNs do not stay (quiet) NaN", bad_nan);
    CHECK(bad_tie == 0, "%d ties round wrongly", bad_tie);
    CHECK(fp32_to_bf16(float_of(0x7F7FFFFF)) == 0x7F80, "the largest float rounds to inf");
    CHECK(bf16_is_nan(fp32_to_bf16(float_of(0x7F800001))), "signalling NaN with a low payload stays NaN");
    /* random floats against the nearest bf16 computed in double */
    uint64_t rng = 2;
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        float f = float_of((uint32_t)test_rand_u64(&rng) & 0xBFFFFFFF);  /* exponents below 2^1 */
        uint32_t lo = bits_of(f) & 0xFFFF0000;
        double below = fabs((double)f - (double)float_of(lo)), above = fabs((double)float_of(lo + 0x10000) - (double)f);
        uint16_t want = (uint16_t)(lo >> 16);
        if (above < below || (above == below && (want & 1))) want++;
        bad += fp32_to_bf16(f) != want;
    }
    CHECK(bad == 0, "%d of 200000 random floats round to the wrong bf16", bad);
}

/* ---- quantization ----------------------------------------------------------------------------- */

/* ggml tests/test-quantize-fns.cpp: data 0.1 + 2*cos(i + offset), 32*128 values; "RMSE" there is
 * sqrt(sum of squared errors) / n, bounded by MAX_QUANTIZATION_TOTAL_ERROR = 0.002; the dot product
 * of type x Q8_0 against the float dot, divided by n, by MAX_DOT_PRODUCT_ERROR = 0.02. */
static void ggml_data(float offset, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = (float)(0.1 + 2 * cosf((float)i + offset));
}

static void test_quantize_error_ggml_bounds(void) {
    enum { N = 32 * 128 };
    static float x[N], x2[N], y[N];
    static BlockQ4_0 q4[N / QK];
    static BlockQ8_0 q8[N / QK], q8b[N / QK];
    ggml_data(0.0f, N, x);
    ggml_data(1.0f, N, x2);
    double dot = 0;
    for (int i = 0; i < N; i++) dot += (double)x[i] * x2[i];
    quantize_row_q8_0_ref(x2, q8b, N);
    for (int type = 0; type < 2; type++) {
        const char *name = type == 0 ? "q4_0" : "q8_0";
        if (type == 0) quantize_row_q4_0_ref(x, q4, N), dequantize_row_q4_0(q4, y, N);
        else quantize_row_q8_0_ref(x, q8, N), dequantize_row_q8_0(q8, y, N);
        double sum = 0;
        for (int i = 0; i < N; i++) sum += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        double total_error = sqrt(sum) / N, rmse = sqrt(sum / N);
        CHECK(total_error <= 0.002, "%s total error %g", name, total_error);
        float vdot = type == 0 ? vec_dot_q4_0_q8_0_ref(N, q4, q8b) : vec_dot_q8_0_q8_0_ref(N, q8, q8b);
        double dot_error = fabs(vdot - dot) / N;
        CHECK(dot_error <= 0.02, "%s dot error %g", name, dot_error);
        test_note("%s: ggml total error %.3g (bound 0.002), true RMSE %.3g, dot error %.3g (bound 0.02)", name,
                  total_error, rmse, dot_error);
    }
}

static void test_quantize_known_blocks(void) {
    float x[QK] = {0};
    BlockQ4_0 q4;
    BlockQ8_0 q8;
    float y[QK];
    /* all zero: d = 0 (ggml computes 0 / -8 = -0.0: bits 0x8000), Q4_0 codes 8 (value 0), Q8_0 0 */
    quantize_row_q4_0_ref(x, &q4, QK);
    quantize_row_q8_0_ref(x, &q8, QK);
    CHECK(q4.d == 0x8000 && q8.d == 0, "zero block scales %04x %04x", q4.d, q8.d);
    int ok = 1;
    for (int j = 0; j < QK / 2; j++) ok &= q4.qs[j] == 0x88;
    for (int j = 0; j < QK; j++) ok &= q8.qs[j] == 0;
    CHECK(ok, "zero block codes");
    dequantize_row_q4_0(&q4, y, QK);
    for (int j = 0; j < QK; j++) CHECK(y[j] == 0.0f, "zero block dequantizes to 0 at %d", j);

    /* a single nonzero value: it takes code 0 (-8) with d = -3/8; everything else code 8 */
    x[5] = 3.0f;
    quantize_row_q4_0_ref(x, &q4, QK);
    CHECK(q4.d == fp32_to_fp16(-0.375f) && q4.d == 0xB600, "d = %04x", q4.d);
    CHECK(q4.qs[5] == 0x80 && q4.qs[4] == 0x88, "codes %02x %02x", q4.qs[5], q4.qs[4]);
    dequantize_row_q4_0(&q4, y, QK);
    CHECK(y[5] == 3.0f && y[4] == 0.0f, "dequantized %g %g", y[5], y[4]);
    quantize_row_q8_0_ref(x, &q8, QK);
    CHECK(q8.d == fp32_to_fp16(3.0f / 127.0f) && q8.qs[5] == 127 && q8.qs[0] == 0, "q8_0 %04x %d", q8.d, q8.qs[5]);

    /* the extreme (largest magnitude, signed) maps to -8, whichever its sign */
    for (int s = 0; s < 2; s++) {
        float sign = s ? -1.0f : 1.0f;
        for (int j = 0; j < QK; j++) x[j] = sign * (float)(j % 7) * 0.5f;
        x[20] = sign * 5.0f;
        quantize_row_q4_0_ref(x, &q4, QK);
        CHECK((q4.qs[4] >> 4) == 0, "extreme code %d", q4.qs[4] >> 4);
        CHECK(fp16_to_fp32(q4.d) == -sign * 0.625f, "d %g", fp16_to_fp32(q4.d));
        dequantize_row_q4_0(&q4, y, QK);
        CHECK(y[20] == x[20], "extreme dequantizes exactly: %g", y[20]);
        for (int j = 0; j < QK; j++) CHECK(fabsf(y[j] - x[j]) <= 0.3125f + 1e-6f, "error at %d", j);
    }
    /* equal magnitudes of both signs: the first one decides the sign of d (as ggml) */
    memset(x, 0, sizeof x);
    x[3] = -2.0f, x[9] = 2.0f;
    quantize_row_q4_0_ref(x, &q4, QK);
    CHECK(fp16_to_fp32(q4.d) == 0.25f && (q4.qs[3] & 15) == 0 && (q4.qs[9] & 15) == 15, "first extreme wins");
    /* Q8_0 ties round half away from zero: with amax = 127, d = 1 and x*id = x */
    x[0] = 127.0f, x[1] = 2.5f, x[2] = -2.5f, x[3] = 0.5f, x[4] = -0.5f, x[5] = 126.5f;
    quantize_row_q8_0_ref(x, &q8, QK);
    CHECK(q8.d == 0x3C00 && q8.qs[1] == 3 && q8.qs[2] == -3 && q8.qs[3] == 1 && q8.qs[4] == -1 && q8.qs[5] == 127,
          "ties: %d %d %d %d %d", q8.qs[1], q8.qs[2], q8.qs[3], q8.qs[4], q8.qs[5]);
}

/* Blocks built byte by byte from the format definition (quant.h, anchors.md §b). */
static void test_ggml_block_layout(void) {
    uint8_t raw4[18] = {0x00, 0x38};  /* d = fp16 0.5, little-endian */
    for (int j = 0; j < 16; j++) raw4[2 + j] = (uint8_t)(j | (15 - j) << 4);
    BlockQ4_0 b4;
    memcpy(&b4, raw4, sizeof b4);
    float y[QK];
    dequantize_row_q4_0(&b4, y, QK);
    int ok = 1;
    for (int j = 0; j < 16; j++) {
        ok &= y[j] == (float)(j - 8) * 0.5f;            /* element j: low nibble of byte j */
        ok &= y[j + 16] == (float)(7 - j) * 0.5f;       /* element j+16: high nibble of byte j */
    }
    CHECK(ok, "Q4_0 block dequantizes as the format defines");
    BlockQ4_0 again;
    quantize_row_q4_0_ref(y, &again, QK);
    CHECK(memcmp(&again, raw4, 18) == 0, "re-quantizing the values gives the same bytes");

    uint8_t raw8[34] = {0x00, 0x2C};  /* d = fp16 0.0625 */
    for (int j = 0; j < 32; j++) raw8[2 + j] = (uint8_t)(int8_t)(4 * j - 64);
    BlockQ8_0 b8;
    memcpy(&b8, raw8, sizeof b8);
    dequantize_row_q8_0(&b8, y, QK);
    ok = 1;
    for (int j = 0; j < 32; j++) ok &= y[j] == (float)(4 * j - 64) * 0.0625f;
    CHECK(ok, "Q8_0 block dequantizes as the format defines");
    /* the generic entry points agree */
    float z[QK];
    dequantize_row(TYPE_Q8_0, raw8, z, QK);
    CHECK(memcmp(y, z, sizeof y) == 0, "dequantize_row(Q8_0)");
}

static void *read_fixture(const char *name, size_t expect_bytes) {
    char *data;
    size_t len;
    BlvError err;
    if (blv_read_file(test_data(name), &data, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return NULL;
    }
    if (len != expect_bytes) {
        CHECK(0, "%s: %zu bytes, expected %zu", name, len, expect_bytes);
        free(data);
        return NULL;
    }
    return data;
}

/* tools/make_quant_fixture.py: the gguf package's numpy quantizers on 5120 values. */
static void test_gguf_fixture(void) {
    enum { N = 32 * 160 };
    static const struct {
        int type;
        const char *file;
    } cases[] = {{TYPE_Q4_0, "quant/input.q4_0"}, {TYPE_Q8_0, "quant/input.q8_0"},
                 {TYPE_F16, "quant/input.f16"}, {TYPE_BF16, "quant/input.bf16"}};
    float *x = read_fixture("quant/input.f32", N * sizeof(float));
    if (!x) return;
    for (int c = 0; c < 4; c++) {
        size_t bytes = (size_t)type_row_bytes(cases[c].type, N);
        uint8_t *want = read_fixture(cases[c].file, bytes);
        if (!want) continue;
        uint8_t *got = malloc(bytes);
        quantize_row(cases[c].type, x, got, N);
        size_t unit = (size_t)type_block_bytes(cases[c].type), n_diff = 0, first = 0;
        for (size_t u = 0; u < bytes / unit; u++)
            if (memcmp(got + u * unit, want + u * unit, unit) != 0 && n_diff++ == 0) first = u;
        CHECK(n_diff == 0, "%s: %zu of %zu blocks differ from gguf's, first #%zu", type_name(cases[c].type), n_diff,
              bytes / unit, first);
        free(got);
        free(want);
    }
    free(x);
}

static void test_quantize_row_generic(void) {
    uint64_t rng = 3;
    enum { N = 96 };
    float *x = random_floats(&rng, N, 2.0f), y[N];
    uint8_t buf[N * 4];
    int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0};
    float max_err[] = {0, 1e-3f, 1e-2f, 0.02f, 0.35f};  /* relative to max |x| ~ 5 */
    for (int i = 0; i < 5; i++) {
        quantize_row(types[i], x, buf, N);
        dequantize_row(types[i], buf, y, N);
        float err = 0;
        for (int j = 0; j < N; j++) err = fmaxf(err, fabsf(y[j] - x[j]) / (fabsf(x[j]) > 1 ? fabsf(x[j]) : 1));
        CHECK(err <= max_err[i], "%s: max error %g", type_name(types[i]), err);
    }
    free(x);
}

/* The kernel table of a family (quant.h, internal section), for testing one piece directly. */
static const QuantKernels *family_table(const char *name) {
    if (strcmp(name, "ref") == 0) return &quant_kernels_ref;
#if defined(__x86_64__) || defined(__i386__)
    if (strcmp(name, "avx2") == 0) return &quant_kernels_avx2;
    if (strcmp(name, "avx512") == 0) return &quant_kernels_avx512;
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
    if (strcmp(name, "neon") == 0) return &quant_kernels_neon;
#endif
    return NULL;
}

/* matmul quantizes activations with the family's vector quantizer: it must give exactly the bytes
 * of quantize_row_q8_0_ref, ties and degenerate blocks included, and the right block sums. 407
 * blocks: AVX-512 takes 16 at a time, then the 7 left one by one. */
static void test_vector_quantizer_is_ref(void) {
    enum { NB = 407, N = NB * QK };
    float *x = malloc(N * sizeof *x);
    uint64_t rng = 8;
    for (int b = 0; b < NB; b++) {
        float *xb = x + b * QK;
        float scale = powf(10.0f, test_rand_uniform(&rng, -6.0f, 6.0f));
        for (int j = 0; j < QK; j++) xb[j] = scale * test_rand_normal(&rng);
        switch (b % 10) {
        case 0:  /* amax 127: d = 1, x*id = x, exact ties k + 0.5 */
            for (int j = 0; j < QK; j++) xb[j] = (float)((int)(test_rand_u64(&rng) % 254) - 127) + 0.5f;
            xb[7] = -127.0f;
            break;
        case 1: memset(xb, 0, QK * sizeof *xb); break;
        case 2: for (int j = 0; j < QK; j++) xb[j] *= 1e-38f; break;  /* subnormals: id = inf */
        case 3: xb[3] = NAN, xb[9] = -NAN; break;
        case 4: xb[5] = INFINITY; break;
        case 5: for (int j = 0; j < QK; j++) xb[j] *= 1e25f; break;  /* d overflows fp16 */
        case 6: xb[0] = 0x1.fffffep-1f * 127.0f, xb[1] = 126.49999f, xb[2] = -0.5f; break;
        default: break;
        }
    }
    BlockQ8_0 *want = malloc(NB * sizeof *want), *got = malloc(NB * sizeof *got);
    int32_t sums[NB];
    quantize_row_q8_0_ref(x, want, N);
    for (int f = 0; f < n_families; f++) {
        const QuantKernels *k = family_table(families[f]);
        memset(got, 0x55, NB * sizeof *got);
        k->quantize_q8_0(x, got, sums, N);
        int bad_blocks = 0, bad_sums = 0, first = -1;
        for (int b = 0; b < NB; b++) {
            int s = 0;
            for (int j = 0; j < QK; j++) s += want[b].qs[j];
            if (memcmp(&got[b], &want[b], sizeof got[b]) != 0 && bad_blocks++ == 0) first = b;
            bad_sums += sums[b] != s;
        }
        CHECK(bad_blocks == 0 && bad_sums == 0, "%s: %d blocks differ (first %d), %d sums wrong", k->name, bad_blocks,
              first, bad_sums);
    }
    free(x), free(want), free(got);
}

/* ---- dot products ----------------------------------------------------------------------------- */

static const int64_t dot_sizes[] = {32, 64, 96, 160, 224, 1056, 4096, 4096 + 32, 4096 + 96};
enum { N_DOT_SIZES = sizeof dot_sizes / sizeof dot_sizes[0] };

/* |fast - ref| <= 1e-5 * sum |terms| + 1e-6: float sums of the same terms in another order. */
static int close_enough(float fast, float ref, double abs_terms) {
    return fabs((double)fast - (double)ref) <= 1e-5 * abs_terms + 1e-6;
}

static void random_q8_blocks(uint64_t *rng, BlockQ8_0 *b, int64_t nb, int lo, int hi, int unit_scale) {
    for (int64_t i = 0; i < nb; i++) {
        b[i].d = unit_scale ? 0x3C00 : fp32_to_fp16(test_rand_uniform(rng, 0.001f, 0.1f));
        for (int j = 0; j < QK; j++) b[i].qs[j] = (int8_t)(lo + (int)(test_rand_u64(rng) % (uint64_t)(hi - lo + 1)));
    }
}

static void random_q4_blocks(uint64_t *rng, BlockQ4_0 *b, int64_t nb, int unit_scale) {
    for (int64_t i = 0; i < nb; i++) {
        b[i].d = unit_scale ? 0x3C00 : fp32_to_fp16(test_rand_uniform(rng, -0.1f, 0.1f));
        for (int j = 0; j < QK / 2; j++) b[i].qs[j] = (uint8_t)test_rand_u64(rng);
    }
}

static double abs_terms_q4(int64_t nb, const BlockQ4_0 *x, const BlockQ8_0 *y, int64_t *isum) {
    double s = 0;
    *isum = 0;
    for (int64_t b = 0; b < nb; b++) {
        double d = fabs((double)fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
        for (int j = 0; j < QK; j++) {
            int w = (j < 16 ? x[b].qs[j] & 15 : x[b].qs[j - 16] >> 4) - 8;
            s += abs(w * y[b].qs[j]) * d;
            *isum += w * y[b].qs[j];
        }
    }
    return s;
}

static double abs_terms_q8(int64_t nb, const BlockQ8_0 *x, const BlockQ8_0 *y, int64_t *isum) {
    double s = 0;
    *isum = 0;
    for (int64_t b = 0; b < nb; b++) {
        double d = fabs((double)fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
        for (int j = 0; j < QK; j++) {
            s += abs(x[b].qs[j] * y[b].qs[j]) * d;
            *isum += x[b].qs[j] * y[b].qs[j];
        }
    }
    return s;
}

static void test_dot_products_vs_ref(void) {
    uint64_t rng = 4;
    for (int f = 0; f < n_families; f++) {
        quant_force_kernels(families[f]);
        int bad[4] = {0};
        for (int s = 0; s < N_DOT_SIZES; s++) {
            int64_t n = dot_sizes[s], nb = n / QK;
            BlockQ4_0 *q4 = malloc((size_t)nb * sizeof *q4);
            BlockQ8_0 *q8x = malloc((size_t)nb * sizeof *q8x), *q8y = malloc((size_t)nb * sizeof *q8y);
            random_q4_blocks(&rng, q4, nb, 0);
            random_q8_blocks(&rng, q8x, nb, -128, 127, 0);  /* weights may hold -128 */
            random_q8_blocks(&rng, q8y, nb, -127, 127, 0);  /* activations never do */
            int64_t isum;
            bad[0] += !close_enough(vec_dot_q4_0_q8_0(n, q4, q8y), vec_dot_q4_0_q8_0_ref(n, q4, q8y),
                                    abs_terms_q4(nb, q4, q8y, &isum));
            bad[1] += !close_enough(vec_dot_q8_0_q8_0(n, q8x, q8y), vec_dot_q8_0_q8_0_ref(n, q8x, q8y),
                                    abs_terms_q8(nb, q8x, q8y, &isum));
            /* float dots also at lengths that are not multiples of any vector width */
            for (int64_t m = n - 1; m <= n + 5; m += 3) {
                float *x = random_floats(&rng, m, 1.0f), *y = random_floats(&rng, m, 1.0f);
                uint16_t *h = malloc((size_t)m * sizeof *h);
                quantize_row(TYPE_F16, x, h, m);
                double terms = 0, terms16 = 0;
                for (int64_t i = 0; i < m; i++) {
                    terms += fabs((double)x[i] * y[i]);
                    terms16 += fabs((double)fp16_to_fp32(h[i]) * y[i]);
                }
                bad[2] += !close_enough(vec_dot_f16_f32(m, h, y), vec_dot_f16_f32_ref(m, h, y), terms16);
                bad[3] += !close_enough(vec_dot_f32_f32(m, x, y), vec_dot_f32_f32_ref(m, x, y), terms);
                free(x), free(y), free(h);
            }
            free(q4), free(q8x), free(q8y);
        }
        CHECK(bad[0] + bad[1] + bad[2] + bad[3] == 0, "%s: q4_0 %d, q8_0 %d, f16 %d, f32 %d mismatches",
              quant_kernel_name(), bad[0], bad[1], bad[2], bad[3]);
    }
    quant_force_kernels(NULL);
}

/* With every scale 1.0 (fp16 0x3C00) the quantized dots are integer sums, exact in float as long as
 * every partial sum stays below 2^24 (the value ranges below make sure of that). */
static void test_dot_products_int_exact(void) {
    uint64_t rng = 5;
    for (int f = 0; f < n_families; f++) {
        quant_force_kernels(families[f]);
        int bad = 0;
        for (int s = 0; s < N_DOT_SIZES; s++) {
            int64_t n = dot_sizes[s], nb = n / QK, isum;
            BlockQ4_0 *q4 = malloc((size_t)nb * sizeof *q4);
            BlockQ8_0 *q8x = malloc((size_t)nb * sizeof *q8x), *q8y = malloc((size_t)nb * sizeof *q8y);
            random_q4_blocks(&rng, q4, nb, 1);
            random_q8_blocks(&rng, q8y, nb, -127, 127, 1);
            double terms = abs_terms_q4(nb, q4, q8y, &isum);
            CHECK(terms < 16777216.0, "test data too large for exactness");
            bad += vec_dot_q4_0_q8_0(n, q4, q8y) != (float)isum || vec_dot_q4_0_q8_0_ref(n, q4, q8y) != (float)isum;
            random_q8_blocks(&rng, q8x, nb, -60, 60, 1);
            random_q8_blocks(&rng, q8y, nb, -60, 60, 1);
            terms = abs_terms_q8(nb, q8x, q8y, &isum);
            CHECK(terms < 16777216.0, "test data too large for exactness");
            bad += vec_dot_q8_0_q8_0(n, q8x, q8y) != (float)isum || vec_dot_q8_0_q8_0_ref(n, q8x, q8y) != (float)isum;
            if (nb <= 8) {  /* the extremes: -128 weights against +-127 activations */
                random_q8_blocks(&rng, q8x, nb, -128, -126, 1);
                random_q8_blocks(&rng, q8y, nb, 126, 127, 1);
                for (int64_t b = 0; b < nb; b++) q8y[b].qs[b % 32] = -127;
                abs_terms_q8(nb, q8x, q8y, &isum);
                bad += vec_dot_q8_0_q8_0(n, q8x, q8y) != (float)isum;
            }
            free(q4), free(q8x), free(q8y);
        }
        CHECK(bad == 0, "%s: %d inexact integer dots", quant_kernel_name(), bad);
    }
    quant_force_kernels(NULL);
}

/* ---- matrix products -------------------------------------------------------------------------- */

typedef struct {
    int wtype;
    int64_t n_in, n_out, T;
} MatmulCase;

/* Compares matmul (each kernel family, 1 and 2 threads) with matmul_ref on random data.
 * Tolerance per output: 1e-5 * sum_k |w_k * x_k| + 1e-6 over the values the product really uses
 * (dequantized weights, and for quantized weights the quantized activations). */
/* A repacked copy (64-byte aligned, as a loader allocates it) of n_out Q4_0 rows. */
static void *repacked_copy(ThreadPool *pool, const void *W, int64_t n_out, int64_t n_in) {
    size_t bytes = (size_t)q4_0x16_bytes(n_out, n_in);
    void *R = aligned_alloc(64, (bytes + 63) / 64 * 64);
    repack_q4_0x16(pool, W, n_out, n_in, R);
    return R;
}

/* TYPE_Q4_0X16 cases: the weights are quantized to Q4_0, matmul_ref runs on those Q4_0 rows (the
 * file layout: the definition) and every family's matmul on their repacked copy. */
static int check_matmul_case(const MatmulCase *c, ThreadPool *pools[2], uint64_t *rng, char *why, size_t why_len) {
    const int repack = c->wtype == TYPE_Q4_0X16, ftype = repack ? TYPE_Q4_0 : c->wtype;
    const int64_t n_in = c->n_in, n_out = c->n_out, T = c->T, row_bytes = type_row_bytes(ftype, n_in);
    float *wf = random_floats(rng, n_out * n_in, 0.5f), *x = random_floats(rng, T * n_in, 1.0f);
    uint8_t *W = malloc((size_t)(row_bytes * n_out));
    for (int64_t r = 0; r < n_out; r++) quantize_row(ftype, wf + r * n_in, W + r * row_bytes, n_in);
    for (int64_t r = 0; r < n_out; r++) dequantize_row(ftype, W + r * row_bytes, wf + r * n_in, n_in);
    void *Wm = repack ? repacked_copy(pools[1], W, n_out, n_in) : W;  /* what matmul is given */
    float *xa = malloc((size_t)(T * n_in) * sizeof *xa);  /* the activations the product uses */
    memcpy(xa, x, (size_t)(T * n_in) * sizeof *xa);
    if (ftype == TYPE_Q4_0 || ftype == TYPE_Q8_0) {
        uint8_t *tmp = malloc((size_t)type_row_bytes(TYPE_Q8_0, n_in));
        for (int64_t t = 0; t < T; t++) {
            quantize_row(TYPE_Q8_0, x + t * n_in, tmp, n_in);
            dequantize_row(TYPE_Q8_0, tmp, xa + t * n_in, n_in);
        }
        free(tmp);
    }
    int64_t scratch_bytes = matmul_scratch_bytes(c->wtype, n_in, T);
    void *scratch = malloc((size_t)scratch_bytes + 1);
    float *ref = malloc((size_t)(T * n_out) * sizeof *ref), *out = malloc((size_t)(T * n_out) * sizeof *out);
    matmul_ref(ref, W, ftype, x, n_in, n_out, T, scratch);
    int ok = 1;
    if (repack) {  /* the repacked reference adds the same terms in the same order: bit for bit */
        matmul_ref(out, Wm, TYPE_Q4_0X16, x, n_in, n_out, T, scratch);
        if (memcmp(out, ref, sizeof(float) * (size_t)(T * n_out)) != 0) {
            snprintf(why, why_len, "q4_0x16 n_in=%lld n_out=%lld T=%lld: matmul_ref differs from the Q4_0 rows'",
                     (long long)n_in, (long long)n_out, (long long)T);
            ok = 0;
        }
    }
    for (int f = 0; f < n_families && ok; f++) {
        quant_force_kernels(families[f]);
        for (int p = 0; p < 2 && ok; p++) {
            for (int64_t i = 0; i < T * n_out; i++) out[i] = NAN;
            matmul(pools[p], out, Wm, c->wtype, x, n_in, n_out, T, scratch);
            for (int64_t t = 0; t < T && ok; t++)
                for (int64_t r = 0; r < n_out && ok; r++) {
                    double terms = 0;
                    for (int64_t k = 0; k < n_in; k++) terms += fabs((double)wf[r * n_in + k] * xa[t * n_in + k]);
                    float got = out[t * n_out + r], want = ref[t * n_out + r];
                    if (!close_enough(got, want, terms)) {
                        snprintf(why, why_len,
                                 "%s n_in=%lld n_out=%lld T=%lld %s %d thread(s): out[%lld][%lld] = %.9g, ref %.9g",
                                 type_name(c->wtype), (long long)n_in, (long long)n_out, (long long)T,
                                 quant_kernel_name(), p + 1, (long long)t, (long long)r, got, want);
                        ok = 0;
                    }
                }
        }
    }
    quant_force_kernels(NULL);
    if (repack) free(Wm);
    free(wf), free(x), free(W), free(xa), free(scratch), free(ref), free(out);
    return ok;
}

static ThreadPool *two_threads(void) {
    BlvError err;
    ThreadPool *pool = threadpool_create(2, &err);
    CHECK(pool != NULL, "%s", err.msg);
    return pool;
}

static void run_matmul_cases(int wtype, const int64_t *n_ins, int n_n_in) {
    static const int64_t n_outs[] = {1, 5, 37, 300};
    /* GEMV passes of 1-4 tokens below 7; GEMM from 7, in blocks of 128 tokens (150: two blocks;
     * AVX-512: blocks of 256 tokens in register blocks of 12, so 270 = a whole block + 14) */
    static const int64_t Ts[] = {1, 2, 3, 5, 7, 17, 128, 150, 270};
    ThreadPool *pools[2] = {NULL, two_threads()};
    uint64_t rng = 6 + (uint64_t)wtype;
    char why[512];
    int n_cases = 0, n_bad = 0;
    for (int i = 0; i < n_n_in; i++)
        for (int o = 0; o < 4; o++)
            for (int t = 0; t < 9; t++) {
                MatmulCase c = {wtype, n_ins[i], n_outs[o], Ts[t]};
                if (n_ins[i] > 1024 && (n_outs[o] != 37 || (Ts[t] != 1 && Ts[t] != 5 && Ts[t] != 17 && Ts[t] != 270)))
                    continue;
                n_cases++;
                if (!check_matmul_case(&c, pools, &rng, why, sizeof why)) {
                    if (n_bad++ < 5) CHECK(0, "%s", why);
                }
            }
    CHECK(n_bad == 0, "%d of %d cases failed", n_bad, n_cases);
    threadpool_free(pools[1]);
}

/* n_in 4160 = 130 blocks: the GEMM splits K into chunks (the generic tile loop: two chunks, as a
 * 128-token block's activations would overflow its L2 budget; AVX-512: three chunks of at most 48
 * blocks), whose partial sums are added in the output. */
static void test_matmul_q4_0(void) {
    const int64_t n_ins[] = {32, 96, 160, 4160};
    run_matmul_cases(TYPE_Q4_0, n_ins, 4);
}

/* The same cases on repacked Q4_0: 1, 5 and 37 rows leave a partial 16-row group (padding rows),
 * n_in 32, 96, 160 an odd number of blocks (a padding block); 4160 also three AVX-512 K chunks of
 * 44 blocks, which start in the middle of a block pair. */
static void test_matmul_q4_0x16(void) {
    const int64_t n_ins[] = {32, 96, 160, 4160};
    run_matmul_cases(TYPE_Q4_0X16, n_ins, 4);
}

/* Repacking moves bytes only: every row comes back byte for byte, whatever the shape and thread
 * count, and the padding (rows past n_out, a block past an odd n_in / 32) is zero. The size is the
 * Q4_0 size exactly when nothing is padded. */
/* The repacked GEMV (1-4 tokens) of every SIMD family adds the same terms in the same order (even
 * and odd blocks apart, float(dot)·(dx·dy) fused into each): the AVX2 and AVX-512 kernels give the
 * same bits, so a laptop without AVX-512 decodes exactly as this machine does. */
static void test_gemv_q4_0x16_families_agree(void) {
    enum { N_IN = 4160, N_OUT = 300, T_MAX = 4 };
    uint64_t rng = 77;
    float *wf = random_floats(&rng, N_OUT * N_IN, 0.5f), *x = random_floats(&rng, T_MAX * N_IN, 1.0f);
    const int64_t row_bytes = type_row_bytes(TYPE_Q4_0, N_IN);
    uint8_t *W = malloc((size_t)(row_bytes * N_OUT));
    for (int64_t r = 0; r < N_OUT; r++) quantize_row(TYPE_Q4_0, wf + r * N_IN, W + r * row_bytes, N_IN);
    void *R = repacked_copy(NULL, W, N_OUT, N_IN);
    void *scratch = malloc((size_t)matmul_scratch_bytes(TYPE_Q4_0X16, N_IN, T_MAX));
    float *first = malloc(sizeof(float) * N_OUT * T_MAX), *out = malloc(sizeof(float) * N_OUT * T_MAX);
    int n_simd = 0, bad = 0;
    for (int T = 1; T <= T_MAX; T++) {
        const char *first_name = NULL;
        n_simd = 0;
        for (int f = 0; f < n_families; f++) {
            if (strcmp(families[f], "ref") == 0) continue;
            quant_force_kernels(families[f]);
            matmul(NULL, n_simd == 0 ? first : out, R, TYPE_Q4_0X16, x, N_IN, N_OUT, T, scratch);
            if (n_simd++ == 0) {
                first_name = families[f];
                continue;
            }
            int same = memcmp(out, first, sizeof(float) * (size_t)(N_OUT * T)) == 0;
            CHECK(same, "%d token(s): %s's repacked GEMV differs from %s's", T, families[f], first_name);
            bad += !same;
        }
    }
    quant_force_kernels(NULL);
    if (n_simd > 1 && bad == 0) test_note("%d SIMD families, 1-4 tokens: the same bits", n_simd);
    free(wf), free(x), free(W), free(R), free(scratch), free(first), free(out);
}

static void test_q4_0x16_repack_roundtrip(void) {
    static const int64_t n_outs[] = {1, 5, 16, 37, 300}, n_ins[] = {32, 96, 160, 4160};
    ThreadPool *pools[2] = {NULL, two_threads()};
    uint64_t rng = 41;
    int bad_rows = 0, bad_pad = 0, bad_size = 0, cases = 0;
    for (int o = 0; o < 5; o++)
        for (int i = 0; i < 4; i++) {
            const int64_t n_out = n_outs[o], n_in = n_ins[i], nb = n_in / QK;
            BlockQ4_0 *W = malloc(sizeof(BlockQ4_0) * (size_t)(nb * n_out)), *row = malloc(sizeof(BlockQ4_0) * (size_t)nb);
            random_q4_blocks(&rng, W, nb * n_out, 0);
            const int64_t bytes = q4_0x16_bytes(n_out, n_in);
            if (n_out % 16 == 0 && nb % 2 == 0) bad_size += bytes != n_out * type_row_bytes(TYPE_Q4_0, n_in);
            bad_size += type_matrix_bytes(TYPE_Q4_0X16, n_out, n_in) != bytes;
            for (int p = 0; p < 2; p++) {
                BlockQ4_0x16 *R = repacked_copy(pools[p], W, n_out, n_in);
                for (int64_t r = 0; r < n_out; r++) {
                    unpack_q4_0x16_row(R, n_in, r, row);
                    bad_rows += memcmp(row, W + r * nb, sizeof(BlockQ4_0) * (size_t)nb) != 0;
                }
                const int64_t n_pairs = (nb + 1) / 2;
                for (int64_t g = 0; g < (n_out + 15) / 16; g++)
                    for (int64_t pr = 0; pr < n_pairs; pr++)
                        for (int h = 0; h < 2; h++)
                            for (int ri = 0; ri < 16; ri++) {
                                if (g * 16 + ri < n_out && 2 * pr + h < nb) continue;
                                const BlockQ4_0x16 *x = &R[g * n_pairs + pr];
                                int nonzero = x->d[h][ri] != 0;
                                for (int k = 0; k < 4; k++)
                                    for (int j = 0; j < 4; j++) nonzero |= x->qs[h][k][ri][j] != 0;
                                bad_pad += nonzero;
                            }
                free(R);
                cases++;
            }
            free(W), free(row);
        }
    CHECK(bad_rows == 0, "%d rows do not come back byte for byte (%d cases)", bad_rows, cases);
    CHECK(bad_pad == 0, "%d padding entries are not zero", bad_pad);
    CHECK(bad_size == 0, "%d sizes wrong", bad_size);
    CHECK(type_is_known(TYPE_Q4_0X16) == 0, "the repacked type is not a file type");
    threadpool_free(pools[1]);
}

static void test_matmul_q8_0(void) {
    const int64_t n_ins[] = {32, 96, 160, 4160};
    run_matmul_cases(TYPE_Q8_0, n_ins, 4);
}

static void test_matmul_f16(void) {
    const int64_t n_ins[] = {7, 32, 33, 160, 2081};
    run_matmul_cases(TYPE_F16, n_ins, 5);
}

static void test_matmul_f32(void) {
    const int64_t n_ins[] = {7, 32, 33, 160, 2081};
    run_matmul_cases(TYPE_F32, n_ins, 5);
}

static void test_matmul_bf16(void) {
    const int64_t n_ins[] = {7, 32, 33, 160};
    run_matmul_cases(TYPE_BF16, n_ins, 4);
}

/* Integer-valued activations with a +-127 in every block quantize with scale 1.0 exactly; with
 * unit weight scales too, every output is an exact integer sum, whatever the summation order. */
static void test_matmul_int_exact(void) {
    enum { N_IN = 2080, N_OUT = 37, T = 19 };
    const int64_t nb = N_IN / QK;
    uint64_t rng = 7;
    ThreadPool *pools[2] = {NULL, two_threads()};
    float *x = malloc(sizeof(float) * T * N_IN), *out = malloc(sizeof(float) * T * N_OUT);
    for (int64_t i = 0; i < T * N_IN; i++) x[i] = (float)((int)(test_rand_u64(&rng) % 255) - 127);
    for (int64_t i = 0; i < T * N_IN; i += QK) x[i] = (i / QK) % 2 ? 127.0f : -127.0f;
    BlockQ4_0 *w4 = malloc(sizeof(BlockQ4_0) * nb * N_OUT);
    BlockQ8_0 *w8 = malloc(sizeof(BlockQ8_0) * nb * N_OUT);
    random_q4_blocks(&rng, w4, nb * N_OUT, 1);
    random_q8_blocks(&rng, w8, nb * N_OUT, -30, 30, 1);
    void *w4r = repacked_copy(NULL, w4, N_OUT, N_IN);
    void *scratch = malloc((size_t)matmul_scratch_bytes(TYPE_Q8_0, N_IN, T));
    int bad = 0;
    for (int f = 0; f < n_families; f++) {
        quant_force_kernels(families[f]);
        for (int p = 0; p < 2; p++)
            for (int wt = 0; wt < 3; wt++) {  /* Q4_0, Q8_0, Q4_0 repacked */
                const void *W = wt == 1 ? (const void *)w8 : wt == 2 ? (const void *)w4r : (const void *)w4;
                matmul(pools[p], out, W, wt == 1 ? TYPE_Q8_0 : wt == 2 ? TYPE_Q4_0X16 : TYPE_Q4_0, x, N_IN, N_OUT, T,
                       scratch);
                for (int64_t t = 0; t < T; t++)
                    for (int64_t r = 0; r < N_OUT; r++) {
                        int64_t want = 0;
                        for (int64_t k = 0; k < N_IN; k++) {
                            const int64_t b = r * nb + k / QK, j = k % QK;
                            int w = wt == 1 ? w8[b].qs[j] : (j < 16 ? w4[b].qs[j] & 15 : w4[b].qs[j - 16] >> 4) - 8;
                            want += w * (int64_t)x[t * N_IN + k];
                        }
                        bad += out[t * N_OUT + r] != (float)want;
                    }
            }
    }
    quant_force_kernels(NULL);
    CHECK(bad == 0, "%d outputs are not the exact integer sum", bad);
    threadpool_free(pools[1]);
    free(x), free(out), free(w4), free(w8), free(w4r), free(scratch);
}

/* matmul_shared_input and matmul_swiglu must give exactly what separate matmul calls (and the
 * SwiGLU loop after them) give: the same kernels see the same quantized activations. */
static void test_matmul_parts_equal_separate(void) {
    enum { N_IN = 320, MAX_T = 150 };
    static const int types[] = {TYPE_Q4_0, TYPE_Q8_0, TYPE_F16, TYPE_Q4_0X16};
    static const int64_t n_outs[3] = {37, 5, 300}, Ts[] = {1, 3, 7, 150};
    ThreadPool *pools[2] = {NULL, two_threads()};
    uint64_t rng = 99;
    float *x = random_floats(&rng, MAX_T * N_IN, 1.0f);
    void *scratch = malloc((size_t)matmul_scratch_bytes(TYPE_Q8_0, N_IN, MAX_T));
    int bad = 0, cases = 0;
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        int wtype = types[ty], ftype = wtype == TYPE_Q4_0X16 ? TYPE_Q4_0 : wtype;
        int64_t row_bytes = type_row_bytes(ftype, N_IN);
        uint8_t *W[3];
        float *want[3], *got[3];
        for (int i = 0; i < 3; i++) {
            float *wf = random_floats(&rng, n_outs[i] * N_IN, 0.5f);
            W[i] = malloc((size_t)(row_bytes * n_outs[i]));
            for (int64_t r = 0; r < n_outs[i]; r++) quantize_row(ftype, wf + r * N_IN, W[i] + r * row_bytes, N_IN);
            if (wtype == TYPE_Q4_0X16) {
                void *R = repacked_copy(NULL, W[i], n_outs[i], N_IN);
                free(W[i]);
                W[i] = R;
            }
            free(wf);
            want[i] = malloc(sizeof(float) * MAX_T * 300);
            got[i] = malloc(sizeof(float) * MAX_T * 300);
        }
        for (int f = 0; f < n_families; f++) {
            quant_force_kernels(families[f]);
            for (int p = 0; p < 2; p++)
                for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
                    int64_t T = Ts[ti];
                    MatmulPart parts[3];
                    for (int i = 0; i < 3; i++) {
                        matmul(pools[p], want[i], W[i], wtype, x, N_IN, n_outs[i], T, scratch);
                        parts[i] = (MatmulPart){got[i], W[i], wtype, n_outs[i]};
                    }
                    matmul_shared_input(pools[p], parts, 3, x, N_IN, T, scratch);
                    for (int i = 0; i < 3; i++) bad += memcmp(got[i], want[i], sizeof(float) * T * n_outs[i]) != 0;
                    /* SwiGLU over parts 2 (gate) and 2 again (up): the same n_out; the elementwise
                     * step is ops_swiglu's (every ops family equals its reference) */
                    memcpy(want[0], want[2], sizeof(float) * T * n_outs[2]);
                    ops_swiglu_ref(want[0], want[2], T * n_outs[2]);
                    MatmulPart gate = {got[0], W[2], wtype, n_outs[2]}, up = {got[1], W[2], wtype, n_outs[2]};
                    matmul_swiglu(pools[p], gate, up, x, N_IN, T, scratch);
                    bad += memcmp(got[0], want[0], sizeof(float) * T * n_outs[2]) != 0;
                    bad += memcmp(got[1], want[2], sizeof(float) * T * n_outs[2]) != 0;
                    cases += 5;
                }
        }
        quant_force_kernels(NULL);
        for (int i = 0; i < 3; i++) free(W[i]), free(want[i]), free(got[i]);
    }
    CHECK(bad == 0, "%d of %d shared-input/SwiGLU products differ from separate matmul calls", bad, cases);
    threadpool_free(pools[1]);
    free(x), free(scratch);
}

/* matvec_prepare_input + matvec_rows on each thread's rows (split as matmul splits them, for 1, 2
 * and 3 threads) give matmul's one-token result bit for bit, for every weight type and kernel
 * family: the decode task (llm.c) relies on it to give the same logits as a step-by-step decode. */
static void test_matvec_rows_equal_matmul(void) {
    enum { N_IN = 4160, MAX_OUT = 300 };
    static const int types[] = {TYPE_Q4_0, TYPE_Q8_0, TYPE_F16, TYPE_BF16, TYPE_F32, TYPE_Q4_0X16};
    static const int64_t n_outs[] = {5, 37, 300}, n_ins[] = {96, N_IN};
    ThreadPool *pools[3] = {NULL, two_threads(), NULL};
    BlvError err;
    pools[2] = threadpool_create(3, &err);
    CHECK(pools[2] != NULL, "%s", err.msg);
    uint64_t rng = 123;
    float *x = random_floats(&rng, N_IN, 1.0f), *want = malloc(sizeof(float) * MAX_OUT),
          *got = malloc(sizeof(float) * MAX_OUT);
    void *scratch = malloc((size_t)matmul_scratch_bytes(TYPE_Q8_0, N_IN, 1));
    void *input = aligned_alloc(64, (size_t)(matvec_input_bytes(N_IN) + 63) / 64 * 64);
    int bad = 0, cases = 0;
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++)
        for (int i = 0; i < 2; i++)
            for (int o = 0; o < 3; o++) {
                int wtype = types[ty], ftype = wtype == TYPE_Q4_0X16 ? TYPE_Q4_0 : wtype;
                int64_t n_in = n_ins[i], n_out = n_outs[o], row_bytes = type_row_bytes(ftype, n_in);
                float *wf = random_floats(&rng, n_out * n_in, 0.5f);
                void *W = malloc((size_t)(row_bytes * n_out));
                for (int64_t r = 0; r < n_out; r++) quantize_row(ftype, wf + r * n_in, (uint8_t *)W + r * row_bytes, n_in);
                if (wtype == TYPE_Q4_0X16) {
                    void *R = repacked_copy(NULL, W, n_out, n_in);
                    free(W);
                    W = R;
                }
                for (int f = 0; f < n_families; f++) {
                    quant_force_kernels(families[f]);
                    for (int nth = 1; nth <= 3; nth++) {
                        matmul(pools[nth - 1], want, W, wtype, x, n_in, n_out, 1, scratch);
                        for (int64_t r = 0; r < n_out; r++) got[r] = NAN;
                        for (int ith = 0; ith < nth; ith++) {
                            int64_t r0, r1;
                            split_range(n_out, ith, nth, MATVEC_ROW_ALIGN, &r0, &r1);
                            matvec_prepare_input(wtype, x, n_in, input);
                            matvec_rows(got, W, wtype, n_in, n_out, x, input, r0, r1);
                        }
                        bad += memcmp(got, want, sizeof(float) * (size_t)n_out) != 0;
                        cases++;
                    }
                }
                quant_force_kernels(NULL);
                free(wf), free(W);
            }
    CHECK(bad == 0, "%d of %d one-token products by rows differ from matmul", bad, cases);
    threadpool_free(pools[1]), threadpool_free(pools[2]);
    free(x), free(want), free(got), free(scratch), free(input);
}

static void test_kernel_dispatch(void) {
    const char *best = quant_kernel_name();
    CHECK(n_families >= 1 && strcmp(families[0], "ref") == 0, "ref is always available");
    CHECK(quant_force_kernels("no-such-kernels") == -1, "unknown family rejected");
    CHECK(strcmp(quant_kernel_name(), best) == 0, "a rejected force leaves the choice alone");
    CHECK(quant_force_kernels("ref") == 0 && strcmp(quant_kernel_name(), "ref") == 0, "force ref");
    CHECK(quant_force_kernels(NULL) == 0 && strcmp(quant_kernel_name(), best) == 0, "back to automatic");
    char list[128] = "";
    for (int i = 0; i < n_families; i++) strcat(strcat(list, " "), families[i]);
    test_note("automatic choice: %s; available:%s", best, list);
#if defined(__x86_64__)
    CHECK(n_families >= 2 || strcmp(best, "ref") == 0, "x86 family list");
#endif
#if defined(__aarch64__)
    CHECK(strncmp(best, "neon", 4) == 0, "aarch64 always has NEON: %s", best);
#endif
}

static void test_probes(void) {
    /* every family's probe kernels: the read checksum (the sum of the buffer's 64-bit words) and
     * the count of multiply-adds */
    enum { BYTES = 1 << 16 };
    uint8_t *buf = aligned_alloc(4096, BYTES);
    memset(buf, 1, BYTES);
    for (int f = 0; f < n_families; f++) {
        const QuantKernels *k = family_table(families[f]);
        uint64_t want = (uint64_t)(BYTES / 8) * 0x0101010101010101ull;
        CHECK(k->probe_read(buf, BYTES) == want, "%s read checksum", k->name);
        int64_t macs = k->probe_int8(1000);
        CHECK(macs >= 1000 * 8 && macs % 1000 == 0, "%s: %lld multiply-adds", k->name, (long long)macs);
    }
    free(buf);
    ThreadPool *pool = two_threads();
    double bw = probe_read_bandwidth(pool, 64 << 20);
    double peak = probe_int8_peak(pool);
    CHECK(bw > 0.01 && bw < 1e4, "read bandwidth %g GB/s", bw);
    CHECK(peak > 0.01 && peak < 1e6, "int8 peak %g GOP/s", peak);
    /* the span probe reads only whole 4 KiB pages inside its spans (ASan would flag a read outside
     * the heap buffer): unaligned spans of 5 MiB keep their inner pages, a 3000-byte span has none */
    uint8_t *mem = malloc((size_t)(10 << 20) + 3000);
    memset(mem, 2, (size_t)(10 << 20) + 3000);
    ReadSpan spans[3] = {{mem + 7, 5 << 20}, {mem + (5 << 20) + 100, 5 << 20}, {mem + (10 << 20), 3000}};
    double span_bw = probe_read_spans(pool, spans, 3);
    CHECK(span_bw > 0.01 && span_bw < 1e4, "span read bandwidth %g GB/s", span_bw);
    CHECK(probe_read_spans(pool, spans + 2, 1) < 0, "a span without a whole page reads nothing");
    free(mem);
    test_note("%s, 2 threads: read bandwidth (64 MiB) %.1f GB/s, int8 peak %.1f GOP/s", quant_kernel_name(), bw, peak);
    threadpool_free(pool);
}

void suite_quant(void) {
    find_families();
    RUN_TEST(test_type_table);
    RUN_TEST(test_fp16_all_values);
    RUN_TEST(test_fp16_rounding);
    RUN_TEST(test_bf16);
    RUN_TEST(test_quantize_error_ggml_bounds);
    RUN_TEST(test_quantize_known_blocks);
    RUN_TEST(test_ggml_block_layout);
    RUN_TEST(test_gguf_fixture);
    RUN_TEST(test_quantize_row_generic);
    RUN_TEST(test_kernel_dispatch);
    RUN_TEST(test_vector_quantizer_is_ref);
    RUN_TEST(test_dot_products_vs_ref);
    RUN_TEST(test_dot_products_int_exact);
    RUN_TEST(test_matmul_q4_0);
    RUN_TEST(test_matmul_q4_0x16);
    RUN_TEST(test_gemv_q4_0x16_families_agree);
    RUN_TEST(test_q4_0x16_repack_roundtrip);
    RUN_TEST(test_matmul_q8_0);
    RUN_TEST(test_matmul_f16);
    RUN_TEST(test_matmul_f32);
    RUN_TEST(test_matmul_bf16);
    RUN_TEST(test_matmul_int_exact);
    RUN_TEST(test_matmul_parts_equal_separate);
    RUN_TEST(test_matvec_rows_equal_matmul);
    RUN_TEST(test_probes);
}
