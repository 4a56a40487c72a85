/* tests/test_ops.c — the elementwise, row and attention operations of ops.h: every kernel family this
 * CPU (or qemu) can run against the scalar reference BIT FOR BIT (ops.h, "Exactness"), on random data
 * with odd lengths and extreme values; the references against double-precision libm with the ulp and
 * relative bounds ops.h states; and the two attentions against a double-precision softmax(q·kᵀ)·v. */
#include "test.h"
#include "../ops.h"
#include "../quant.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------------- */

static const char *all_families[] = {"ref", "avx2", "avx512", "neon"};
static const char *families[4];
static int n_families;

static void find_families(void) {
    n_families = 0;
    for (int i = 0; i < 4; i++)
        if (ops_force_kernels(all_families[i]) == 0) families[n_families++] = all_families[i];
    ops_force_kernels(NULL);
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Distance in representable floats (same sign assumed; 0 for equal, including -0/+0). */
static double ulp_dist(float a, float b) {
    if (a == b) return 0.0;
    if (isnan(a) || isnan(b) || isinf(a) || isinf(b)) return INFINITY;
    int64_t ia = (int64_t)bits(fabsf(a)), ib = (int64_t)bits(fabsf(b));
    if ((a < 0) != (b < 0)) return (double)(ia + ib);
    return (double)(ia > ib ? ia - ib : ib - ia);
}

/* Bitwise equality of two float arrays (NaN payloads included); index of the first difference or -1. */
static int64_t first_diff(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (bits(a[i]) != bits(b[i])) return i;
    return -1;
}

/* Random floats: mostly normal(0, scale), with some extreme values mixed in when `extreme`. */
static void fill(float *x, int64_t n, uint64_t *rng, float scale, int extreme) {
    static const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e30f, -1e30f, 88.0f, -88.0f, 89.0f, -104.0f,
                                    FLT_MAX, -FLT_MAX, 1e-45f, INFINITY, -INFINITY, 20.0f, -20.0f, 10.01f, -10.01f};
    for (int64_t i = 0; i < n; i++) {
        x[i] = scale * test_rand_normal(rng);
        if (extreme && test_rand_u64(rng) % 7 == 0)
            x[i] = special[test_rand_u64(rng) % (sizeof special / sizeof special[0])];
    }
}

static float *alloc_f(int64_t n) { return malloc(sizeof(float) * (size_t)(n > 0 ? n : 1)); }

/* Lengths that cover empty, sub-vector, one and several vectors, and every tail modulo 32. */
static const int64_t lengths[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100, 127, 129, 1000, 1152, 4321};
enum { N_LENGTHS = sizeof lengths / sizeof lengths[0] };

/* ---- exp --------------------------------------------------------------------------------------- */

/* The reference against the correctly rounded e^x over a dense sweep of the domain. */
static void exp_batch(const float *x, int n, double *worst, float *worst_x) {
    float y[4096];
    ops_exp_f32(y, x, n);
    for (int i = 0; i < n; i++) {
        double d = ulp_dist(y[i], (float)exp((double)x[i]));
        if (d > *worst) *worst = d, *worst_x = x[i];
    }
}

static void test_exp_accuracy(void) {
    ops_force_kernels("ref");
    const float lo = -87.33f, hi = 88.72f;
    double worst = 0;
    float worst_x = 0, buf[4096];
    int64_t count = 0;
    int nb = 0;
    /* every 97th float of [lo, hi] by bit pattern: about 23 million points, denser near 0 */
    for (int sign = 0; sign < 2; sign++) {
        uint32_t limit = bits(sign ? -lo : hi);
        for (uint32_t u = 0; u <= limit; u += 97) {
            buf[nb++] = from_bits(u | (sign ? 0x80000000u : 0u));
            if (nb == 4096) exp_batch(buf, nb, &worst, &worst_x), count += nb, nb = 0;
        }
    }
    if (nb > 0) exp_batch(buf, nb, &worst, &worst_x), count += nb;
    CHECK(worst <= 2, "exp: %g ulp at x = %.9g", worst, worst_x);
    test_note("exp_f32 (ref) vs correctly rounded e^x: max %g ulp (at x = %.9g) over %lld points in [-87.33, 88.72]",
              worst, worst_x, (long long)count);
    /* edges and specials */
    float xs[] = {0.0f, -0.0f, 1.0f, 88.72283f, 88.7228394f, 88.8f, 1e30f, INFINITY, -87.3365f, -87.34f, -100.0f, -1e30f,
                  -INFINITY, NAN};
    int n = (int)(sizeof xs / sizeof xs[0]);
    float ys[sizeof xs / sizeof xs[0]];
    ops_exp_f32(ys, xs, n);
    CHECK(ys[0] == 1.0f && ys[1] == 1.0f, "exp(±0) = %g %g", ys[0], ys[1]);
    CHECK(ulp_dist(ys[2], (float)M_E) <= 1, "exp(1) = %.9g", ys[2]);
    CHECK(isfinite(ys[3]) && ulp_dist(ys[3], (float)exp((double)88.72283f)) <= 1, "exp(88.72283) = %g", ys[3]);
    CHECK(isinf(ys[5]) && isinf(ys[6]) && isinf(ys[7]), "overflow to inf: %g %g %g", ys[5], ys[6], ys[7]);
    CHECK(ys[8] > 0 && ulp_dist(ys[8], (float)exp((double)-87.3365f)) <= 1, "exp(-87.3365) = %g", ys[8]);
    CHECK(ys[9] == 0 && ys[10] == 0 && ys[11] == 0 && ys[12] == 0, "underflow to 0: %g %g %g %g", ys[9], ys[10], ys[11],
          ys[12]);
    test_note("exp(88.7228394) = %g (ln FLT_MAX = 88.7228391), exp(NaN) = %g", ys[4], ys[13]);
    ops_force_kernels(NULL);
}

typedef void (*UnaryFn)(float *y, const float *x, int64_t n);

/* Every family equals the reference bit for bit on random and extreme inputs, all tail lengths, in
 * place and out of place. */
static void check_unary_exact(const char *what, UnaryFn fn, float scale) {
    uint64_t rng = 1234;
    for (int f = 1; f < n_families; f++) {
        for (int li = 0; li < N_LENGTHS; li++) {
            int64_t n = lengths[li];
            float *x = alloc_f(n), *want = alloc_f(n), *got = alloc_f(n), *inplace = alloc_f(n);
            fill(x, n, &rng, scale, 1);
            ops_force_kernels("ref");
            fn(want, x, n);
            ops_force_kernels(families[f]);
            fn(got, x, n);
            memcpy(inplace, x, sizeof(float) * (size_t)n);
            fn(inplace, inplace, n);
            int64_t d = first_diff(got, want, n), d2 = first_diff(inplace, want, n);
            /* NaN inputs may give NaN in one and a number in another (ops.h: no NaN propagation) */
            if (d >= 0 && isnan(x[d])) d = -1;
            CHECK(d < 0, "%s %s n=%lld: [%lld] x=%.9g got %.9g want %.9g", what, families[f], (long long)n, (long long)d,
                  d >= 0 ? x[d] : 0, d >= 0 ? got[d] : 0, d >= 0 ? want[d] : 0);
            CHECK(d2 < 0 || isnan(x[d2]), "%s %s n=%lld in place: [%lld]", what, families[f], (long long)n, (long long)d2);
            free(x);
            free(want);
            free(got);
            free(inplace);
        }
    }
    ops_force_kernels(NULL);
}

static void test_exp_families(void) { check_unary_exact("exp", ops_exp_f32, 30.0f); }

/* ---- GELU --------------------------------------------------------------------------------------- */

static double gelu_tanh_d(double x) {
    double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    return x / (1.0 + exp(-2.0 * u));  /* = 0.5·x·(1 + tanh(u)), without cancellation */
}

static double gelu_erf_d(double x) { return 0.5 * x * erfc(-x * 0.70710678118654752440); }

/* Sweeps [lo, hi] (`points` values): the max of |error| / bound(x), bound(x) = (c0 + c2·x²)·|f(x)| +
 * 1e-35 (relative error growing as the function gets ill-conditioned towards -x, plus an absolute
 * floor where the value underflows), and the max ulp error where x ≥ ulp_from. */
static double sweep(UnaryFn fn, double (*ref_d)(double), float lo, float hi, int64_t points, double c0, double c2,
                    float ulp_from, double *max_ulp) {
    float *x = alloc_f(points), *y = alloc_f(points);
    for (int64_t i = 0; i < points; i++) x[i] = lo + (hi - lo) * (float)((double)i / (double)(points - 1));
    fn(y, x, points);
    double worst = 0;
    *max_ulp = 0;
    for (int64_t i = 0; i < points; i++) {
        double want = ref_d(x[i]), xd = x[i];
        double bound = (c0 + c2 * xd * xd) * fabs(want) + 1e-35;
        worst = fmax(worst, fabs(y[i] - want) / bound);
        if (x[i] >= ulp_from) *max_ulp = fmax(*max_ulp, ulp_dist(y[i], (float)want));
    }
    free(x);
    free(y);
    return worst;
}

static void test_gelu_accuracy(void) {
    ops_force_kernels("ref");
    double ulps;
    double r = sweep(ops_gelu_tanh, gelu_tanh_d, -20.0f, 12.0f, 4000001, 2e-7, 2e-7, -1.0f, &ulps);
    CHECK(r <= 1.0, "gelu_tanh: error %.3g of the bound", r);
    CHECK(ulps <= 3, "gelu_tanh: %g ulp for x >= -1", ulps);
    test_note("gelu_tanh (ref) on [-20, 12]: |error| <= %.2f of (2e-7·(1 + x²)·|gelu| + 1e-35); max %g ulp for x >= -1",
              r, ulps);
    r = sweep(ops_gelu_erf, gelu_erf_d, -20.0f, 12.0f, 4000001, 5e-7, 6e-8, 0.0f, &ulps);
    CHECK(r <= 1.0, "gelu_erf: error %.3g of the bound", r);
    CHECK(ulps <= 6, "gelu_erf: %g ulp for x >= 0", ulps);
    test_note("gelu_erf (ref) on [-20, 12]: |error| <= %.2f of ((5e-7 + 6e-8·x²)·|gelu| + 1e-35); max %g ulp for x >= 0",
              r, ulps);
    r = sweep(ops_gelu_erf, gelu_erf_d, 12.0f, 1e4f, 100001, 5e-7, 0, 0.0f, &ulps);
    CHECK(r <= 1.0 && ulps == 0, "gelu_erf for large x: %.3g, %g ulp", r, ulps);
    r = sweep(ops_gelu_tanh, gelu_tanh_d, 12.0f, 1e4f, 100001, 2e-7, 0, 0.0f, &ulps);
    CHECK(r <= 1.0 && ulps == 0, "gelu_tanh for large x: %.3g, %g ulp", r, ulps);
    /* limits and specials: no UB, sensible values */
    float sx[] = {0.0f, -0.0f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX, INFINITY, 1e-30f, -1e-30f};
    float st[9], se[9];
    ops_gelu_tanh(st, sx, 9);
    ops_gelu_erf(se, sx, 9);
    CHECK(st[0] == 0 && se[0] == 0 && st[2] == 1e30f && se[2] == 1e30f && st[3] == 0 && se[3] == 0,
          "gelu limits: tanh %g %g %g, erf %g %g %g", st[0], st[2], st[3], se[0], se[2], se[3]);
    CHECK(st[4] == FLT_MAX && se[4] == FLT_MAX && st[5] == 0 && se[5] == 0 && isinf(st[6]) && isinf(se[6]),
          "gelu at ±FLT_MAX, inf: %g %g %g %g %g %g", st[4], se[4], st[5], se[5], st[6], se[6]);
    CHECK(fabsf(st[7] - 0.5e-30f) <= 1e-36f && fabsf(se[8] + 0.5e-30f) <= 1e-36f, "gelu near 0: %g %g", st[7], se[8]);
    ops_force_kernels(NULL);
}

static void test_gelu_families(void) {
    check_unary_exact("gelu_tanh", ops_gelu_tanh, 4.0f);
    check_unary_exact("gelu_erf", ops_gelu_erf, 4.0f);
}

/* ---- binary / bias ops ----------------------------------------------------------------------------- */

static void test_bias_ops_exact(void) {
    uint64_t rng = 99;
    for (int f = 1; f < n_families; f++)
        for (int li = 0; li < N_LENGTHS; li++) {
            int64_t n = lengths[li];
            float *x = alloc_f(n), *y = alloc_f(n), *b = alloc_f(n), *r = alloc_f(n), *g = alloc_f(n);
            fill(x, n, &rng, 3.0f, 1);
            fill(y, n, &rng, 3.0f, 1);
            fill(b, n, &rng, 1.0f, 0);
            for (int op = 0; op < 6; op++) {
                memcpy(r, x, sizeof(float) * (size_t)n);
                memcpy(g, x, sizeof(float) * (size_t)n);
                for (int pass = 0; pass < 2; pass++) {
                    ops_force_kernels(pass == 0 ? "ref" : families[f]);
                    float *t = pass == 0 ? r : g;
                    switch (op) {
                    case 0: ops_add(t, y, n); break;
                    case 1: ops_add_bias(t, b, n); break;
                    case 2: ops_add_bias_residual(t, y, b, n); break;
                    case 3: ops_bias_gelu_tanh(t, b, n); break;
                    case 4: ops_bias_gelu_erf(t, b, n); break;
                    case 5: ops_swiglu(t, y, n); break;
                    }
                }
                int64_t d = first_diff(g, r, n);
                if (d >= 0 && (isnan(r[d]) || isnan(x[d]) || isnan(y[d]))) d = -1;
                CHECK(d < 0, "op %d %s n=%lld: [%lld] %.9g vs %.9g", op, families[f], (long long)n, (long long)d,
                      d >= 0 ? g[d] : 0, d >= 0 ? r[d] : 0);
            }
            free(x);
            free(y);
            free(b);
            free(r);
            free(g);
        }
    /* the reference definitions themselves */
    ops_force_kernels("ref");
    float x[3] = {1.0f, 1e8f, -2.0f}, y[3] = {1e-8f, 1.0f, 0.5f}, b[3] = {-1e-8f, -1.0f, 0.25f};
    ops_add_bias_residual(x, y, b, 3);  /* x + (y + b): the bias meets the sublayer output first */
    CHECK(x[0] == 1.0f && x[1] == 1e8f && x[2] == -1.25f, "add_bias_residual order: %.9g %.9g %.9g", x[0], x[1], x[2]);
    ops_force_kernels(NULL);
}

/* SwiGLU against double precision: g / (1 + e^-g) · u is three roundings plus the exp's (a few ulp);
 * where e^-g overflows the result is ∓0, as SiLU's limit. */
static void test_swiglu_accuracy(void) {
    enum { N = 20001 };
    float *g = alloc_f(N), *u = alloc_f(N), *want_g = alloc_f(N);
    for (int64_t i = 0; i < N; i++) g[i] = -100.0f + 200.0f * (float)i / (N - 1), u[i] = 0.5f + (float)(i % 7) * 0.25f;
    memcpy(want_g, g, sizeof(float) * N);
    for (int f = 0; f < n_families; f++) {
        float *t = alloc_f(N);
        memcpy(t, g, sizeof(float) * N);
        ops_force_kernels(families[f]);
        ops_swiglu(t, u, N);
        double worst = 0;
        for (int64_t i = 0; i < N; i++) {
            double x = want_g[i], want = x / (1.0 + exp(-x)) * u[i];
            if (fabs(want) < 1e-30) CHECK(fabs(t[i]) < 1e-30, "%s: swiglu(%.9g) = %.9g, want %.3g", families[f], x, t[i], want);
            else worst = fmax(worst, fabs(t[i] - want) / fabs(want));
        }
        CHECK(worst < 1e-6, "%s: swiglu relative error %.3g", families[f], worst);
        if (f == 0) test_note("swiglu vs double on [-100, 100]: max relative error %.3g", worst);
        free(t);
    }
    ops_force_kernels(NULL);
    free(g), free(u), free(want_g);
}

/* ---- LayerNorm ------------------------------------------------------------------------------------- */

static void layernorm_d(double *out, const float *x, const float *w, const float *b, int64_t n, double eps) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= (double)n;
    for (int64_t i = 0; i < n; i++) out[i] = (x[i] - mean) / sqrt(var + eps) * w[i] + b[i];
}

static void test_layernorm(void) {
    uint64_t rng = 7;
    double worst_acc = 0;
    for (int li = 1; li < N_LENGTHS; li++) {
        int64_t n = lengths[li];
        float *x = alloc_f(n), *w = alloc_f(n), *b = alloc_f(n), *want = alloc_f(n), *got = alloc_f(n);
        float *y = alloc_f(n), *yb = alloc_f(n), *xr = alloc_f(n), *xg = alloc_f(n), *o2 = alloc_f(n);
        double *d = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            x[i] = 3.0f + 2.0f * test_rand_normal(&rng);  /* an offset mean, as residual streams have */
            w[i] = 1.0f + 0.1f * test_rand_normal(&rng);
            b[i] = 0.1f * test_rand_normal(&rng);
            y[i] = test_rand_normal(&rng);
            yb[i] = 0.1f * test_rand_normal(&rng);
        }
        ops_force_kernels("ref");
        ops_layernorm(want, x, w, b, n, 1e-6f);
        layernorm_d(d, x, w, b, n, 1e-6);
        double rms = 0, err = 0;
        for (int64_t i = 0; i < n; i++) {
            rms += d[i] * d[i];
            err = fmax(err, fabs(want[i] - d[i]));
        }
        rms = sqrt(rms / (double)n);
        if (n >= 8) {  /* (tiny rows have a tiny variance relative to their mean: not the case this bound is about) */
            CHECK(err <= 2e-6 * rms, "layernorm n=%lld: max error %.3g, rms %.3g", (long long)n, err, rms);
            worst_acc = fmax(worst_acc, err / rms);
        }
        /* fused residual + LayerNorm = the two steps; out may alias y */
        memcpy(xr, x, sizeof(float) * (size_t)n);
        ops_add_bias_residual(xr, y, yb, n);
        ops_layernorm(o2, xr, w, b, n, 1e-6f);
        memcpy(xg, x, sizeof(float) * (size_t)n);
        float *yc = alloc_f(n);
        memcpy(yc, y, sizeof(float) * (size_t)n);
        ops_residual_layernorm(xg, yc, yb, yc, w, b, n, 1e-6f);
        CHECK(first_diff(xg, xr, n) < 0 && first_diff(yc, o2, n) < 0, "residual_layernorm n=%lld differs from the two steps",
              (long long)n);
        for (int f = 1; f < n_families; f++) {
            ops_force_kernels(families[f]);
            ops_layernorm(got, x, w, b, n, 1e-6f);
            int64_t k = first_diff(got, want, n);
            CHECK(k < 0, "layernorm %s n=%lld: [%lld] %.9g vs %.9g", families[f], (long long)n, (long long)k,
                  k >= 0 ? got[k] : 0, k >= 0 ? want[k] : 0);
            memcpy(got, x, sizeof(float) * (size_t)n);
            ops_layernorm(got, got, w, b, n, 1e-6f);  /* in place */
            CHECK(first_diff(got, want, n) < 0, "layernorm %s n=%lld in place", families[f], (long long)n);
            memcpy(xg, x, sizeof(float) * (size_t)n);
            memcpy(yc, y, sizeof(float) * (size_t)n);
            ops_residual_layernorm(xg, yc, yb, yc, w, b, n, 1e-6f);
            CHECK(first_diff(xg, xr, n) < 0 && first_diff(yc, o2, n) < 0, "residual_layernorm %s n=%lld", families[f],
                  (long long)n);
        }
        free(yc);
        free(x), free(w), free(b), free(want), free(got), free(y), free(yb), free(xr), free(xg), free(o2), free(d);
    }
    test_note("layernorm (ref) vs double: max error %.3g of the output rms (rows of 8..4321)", worst_acc);
    /* a constant row: var 0 → (x - mean) = 0 → out = b exactly */
    float c[40], wc[40], bc[40], oc[40];
    for (int i = 0; i < 40; i++) c[i] = 5.0f, wc[i] = 2.0f, bc[i] = (float)i;
    for (int f = 0; f < n_families; f++) {
        ops_force_kernels(families[f]);
        ops_layernorm(oc, c, wc, bc, 40, 1e-6f);
        int ok = 1;
        for (int i = 0; i < 40; i++) ok &= oc[i] == (float)i;
        CHECK(ok, "%s: constant row", families[f]);
    }
    ops_force_kernels(NULL);
}

/* ---- softmax --------------------------------------------------------------------------------------- */

static void test_softmax_row(void) {
    uint64_t rng = 11;
    for (int li = 1; li < N_LENGTHS; li++) {
        int64_t n = lengths[li];
        float *s = alloc_f(n), *p = alloc_f(n), *q = alloc_f(n);
        fill(s, n, &rng, 8.0f, 0);
        if (li % 3 == 0) s[n / 2] = 1e4f;  /* one dominating score */
        ops_force_kernels("ref");
        float sum = ops_softmax_row(p, s, n, 0.125f);
        /* against double */
        double m = -INFINITY, sd = 0, err = 0;
        for (int64_t j = 0; j < n; j++) m = fmax(m, (double)s[j] * 0.125);
        for (int64_t j = 0; j < n; j++) sd += exp((double)s[j] * 0.125 - m);
        for (int64_t j = 0; j < n; j++) err = fmax(err, fabs(p[j] / sum - exp((double)s[j] * 0.125 - m) / sd));
        CHECK(err < 1e-6, "softmax n=%lld: max error %.3g", (long long)n, err);
        for (int f = 1; f < n_families; f++) {
            ops_force_kernels(families[f]);
            float sum2 = ops_softmax_row(q, s, n, 0.125f);
            CHECK(bits(sum2) == bits(sum) && first_diff(q, p, n) < 0, "softmax %s n=%lld: sum %.9g vs %.9g", families[f],
                  (long long)n, sum2, sum);
            memcpy(q, s, sizeof(float) * (size_t)n);
            sum2 = ops_softmax_row(q, q, n, 0.125f);
            CHECK(bits(sum2) == bits(sum) && first_diff(q, p, n) < 0, "softmax %s n=%lld in place", families[f], (long long)n);
        }
        free(s), free(p), free(q);
    }
    ops_force_kernels(NULL);
}

/* ---- attention ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t n, hd, ld;
    float *q, *k, *v, *bq, *bk, *bv;
} AttnCase;

/* n tokens, head_dim hd, inside rows of ld floats (the head at column `col`); kind 0: normal data,
 * 1: peaked attention (large q·k for a few keys), 2: near-uniform attention (tiny q), 3: an outlier
 * token with huge values (as high-norm tokens in ViTs). */
static void make_case(AttnCase *c, int64_t n, int64_t hd, int64_t ld, int kind, uint64_t seed) {
    c->n = n, c->hd = hd, c->ld = ld;
    c->q = alloc_f(n * ld), c->k = alloc_f(n * ld), c->v = alloc_f(n * ld);
    c->bq = alloc_f(hd), c->bk = alloc_f(hd), c->bv = alloc_f(hd);
    uint64_t rng = seed;
    float qs = kind == 1 ? 3.0f : kind == 2 ? 0.01f : 1.0f;
    for (int64_t i = 0; i < n * ld; i++) {
        c->q[i] = qs * test_rand_normal(&rng);
        c->k[i] = test_rand_normal(&rng);
        c->v[i] = test_rand_normal(&rng);
    }
    for (int64_t d = 0; d < hd; d++) {
        c->bq[d] = 0.1f * test_rand_normal(&rng);
        c->bk[d] = 0.1f * test_rand_normal(&rng);
        c->bv[d] = 0.1f * test_rand_normal(&rng);
    }
    if (kind == 3 && n > 2)
        for (int64_t d = 0; d < hd; d++) {
            c->k[(n / 3) * ld + d] *= 30.0f;
            c->v[(n / 3) * ld + d] *= 30.0f;
        }
}

static void free_case(AttnCase *c) {
    free(c->q), free(c->k), free(c->v), free(c->bq), free(c->bk), free(c->bv);
}

/* softmax((q+bq)·(k+bk)ᵀ·scale)·(v+bv) in double, (n, hd). */
static void attn_d(const AttnCase *c, double *out) {
    int64_t n = c->n, hd = c->hd;
    double scale = 1.0 / sqrt((double)hd), *s = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t d = 0; d < hd; d++)
                acc += ((double)c->q[i * c->ld + d] + c->bq[d]) * ((double)c->k[j * c->ld + d] + c->bk[d]);
            s[j] = acc * scale;
            m = fmax(m, s[j]);
        }
        for (int64_t j = 0; j < n; j++) sum += (s[j] = exp(s[j] - m));
        for (int64_t d = 0; d < hd; d++) {
            double o = 0;
            for (int64_t j = 0; j < n; j++) o += s[j] * ((double)c->v[j * c->ld + d] + c->bv[d]);
            out[i * hd + d] = o / sum;
        }
    }
    free(s);
}

static void run_attn(const AttnCase *c, int q8, float *out, int64_t ldo) {
    OpsAttn a = {c->q, c->k, c->v, c->bq, c->bk, c->bv, out, c->n, c->hd, c->ld, ldo, 1.0f / sqrtf((float)c->hd)};
    void *work = malloc((size_t)ops_attn_work_bytes(c->n, c->hd));
    if (q8) ops_attn_head_q8(&a, work);
    else ops_attn_head_f32(&a, work);
    free(work);
}

static void test_attention(void) {
    static const struct {
        int64_t n, hd, ld;
        int kind;
    } cases[] = {{1, 8, 8, 0},    {2, 4, 4, 0},     {5, 12, 20, 0},   {31, 16, 16, 0},  {33, 17, 17, 0},
                 {64, 72, 72, 0}, {65, 72, 144, 1}, {70, 5, 9, 0},    {129, 64, 64, 2}, {200, 72, 1152, 3},
                 {13, 1, 1, 0},   {100, 40, 40, 1}, {45, 128, 131, 0}, {729, 72, 1152, 0}};
    int nc = (int)(sizeof cases / sizeof cases[0]);
    double worst_f32 = 0, worst_q8 = 0, worst_cos = 1;
    for (int ci = 0; ci < nc; ci++) {
        AttnCase c;
        make_case(&c, cases[ci].n, cases[ci].hd, cases[ci].ld, cases[ci].kind, 1000 + (uint64_t)ci);
        int64_t n = c.n, hd = c.hd, ldo = hd + 3, no = n * ldo;
        double *want = malloc(sizeof(double) * (size_t)(n * hd));
        attn_d(&c, want);
        float *ref[2], *got = alloc_f(no);
        for (int q8 = 0; q8 < 2; q8++) {
            ref[q8] = alloc_f(no);
            for (int64_t i = 0; i < no; i++) ref[q8][i] = -7.0f;  /* the gaps between rows stay untouched */
            ops_force_kernels("ref");
            run_attn(&c, q8, ref[q8], ldo);
            double num = 0, den = 0, dot = 0, gg = 0, maxe = 0;
            int untouched = 1;
            for (int64_t i = 0; i < n; i++) {
                for (int64_t d = 0; d < hd; d++) {
                    double g = ref[q8][i * ldo + d], w = want[i * hd + d];
                    num += (g - w) * (g - w), den += w * w, dot += g * w, gg += g * g;
                    maxe = fmax(maxe, fabs(g - w));
                }
                for (int64_t d = hd; d < ldo; d++) untouched &= ref[q8][i * ldo + d] == -7.0f;
            }
            double nmse = num / den, cosine = dot / sqrt(gg * den);
            CHECK(untouched, "n=%lld hd=%lld: wrote outside the head's columns", (long long)n, (long long)hd);
            if (!q8) {
                CHECK(nmse < 1e-11, "f32 attention n=%lld hd=%lld: NMSE %.3g", (long long)n, (long long)hd, nmse);
                worst_f32 = fmax(worst_f32, nmse);
            } else {
                CHECK(nmse < 2e-3 && cosine > 0.999, "q8 attention n=%lld hd=%lld kind %d: NMSE %.3g cosine %.6f",
                      (long long)n, (long long)hd, cases[ci].kind, nmse, cosine);
                worst_q8 = fmax(worst_q8, nmse);
                worst_cos = fmin(worst_cos, cosine);
                if (n == 729) test_note("q8 attention, n 729, head_dim 72: NMSE %.3g cosine %.6f vs double", nmse, cosine);
            }
            for (int f = 1; f < n_families; f++) {
                for (int64_t i = 0; i < no; i++) got[i] = -7.0f;
                ops_force_kernels(families[f]);
                run_attn(&c, q8, got, ldo);
                int64_t k = first_diff(got, ref[q8], no);
                CHECK(k < 0, "%s attention %s n=%lld hd=%lld: [%lld] %.9g vs %.9g", q8 ? "q8" : "f32", families[f],
                      (long long)n, (long long)hd, (long long)k, k >= 0 ? got[k] : 0, k >= 0 ? ref[q8][k] : 0);
            }
        }
        free(ref[0]), free(ref[1]), free(got), free(want);
        free_case(&c);
    }
    test_note("attention vs double: f32 max NMSE %.3g; q8 max NMSE %.3g, min cosine %.6f", worst_f32, worst_q8, worst_cos);
    ops_force_kernels(NULL);
}

/* Unnormalised softmax probabilities of query row q (hd values) over the n keys k (n × hd,
 * position-major) in double precision: p[j] = e^(s_j - max s), s_j = q·k_j / sqrt(hd); returns Σ p. */
static double double_probabilities(double *p, const float *q, const float *k, int64_t n, int64_t hd) {
    double m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; j++) {
        double acc = 0;
        for (int64_t d = 0; d < hd; d++) acc += (double)q[d] * k[j * hd + d];
        p[j] = acc / sqrt((double)hd);
        m = fmax(m, p[j]);
    }
    for (int64_t j = 0; j < n; j++) sum += (p[j] = exp(p[j] - m));
    return sum;
}

/* NMSE of a decode attention's output `out` (group × hd) against double precision over float inputs:
 * q (group × hd), k and v (n × hd, position-major), scores scaled by 1/sqrt(hd). */
static double kv_attention_nmse(const float *out, const float *q, const float *k, const float *v, int64_t n,
                                int64_t hd, int64_t group) {
    double num = 0, den = 0, *s = malloc(sizeof(double) * (size_t)n);
    for (int64_t g = 0; g < group; g++) {
        double sum = double_probabilities(s, q + g * hd, k, n, hd);
        for (int64_t d = 0; d < hd; d++) {
            double o = 0;
            for (int64_t j = 0; j < n; j++) o += s[j] * v[j * hd + d];
            o /= sum;
            num += (out[g * hd + d] - o) * (out[g * hd + d] - o), den += o * o;
        }
    }
    free(s);
    return num / den;
}

/* Runs `run` with every non-reference family (output into got, pre-filled with NaN) and reports the
 * first element that differs from ref. */
static void kv_families_match(const char *what, void (*run)(void *ctx, float *out), void *ctx, float *got,
                              const float *ref, int64_t count, int64_t n, int64_t hd, int64_t group) {
    for (int f = 1; f < n_families; f++) {
        ops_force_kernels(families[f]);
        for (int64_t i = 0; i < count; i++) got[i] = NAN;
        run(ctx, got);
        int64_t d = first_diff(got, ref, count);
        CHECK(d < 0, "%s %s n=%lld hd=%lld group=%lld: [%lld] %.9g vs %.9g", what, families[f], (long long)n,
              (long long)hd, (long long)group, (long long)d, d >= 0 ? got[d] : 0, d >= 0 ? ref[d] : 0);
    }
    ops_force_kernels(NULL);
}

typedef struct {
    OpsAttnKV *a;
    void *work;
} KvF16Run;

static void run_kv_f16(void *ctx, float *out) {
    KvF16Run *r = ctx;
    OpsAttnKV a = *r->a;
    a.out = out;
    ops_attn_kv_f16(&a, r->work);
}

/* Decode attention over an F16 cache: the reference against double precision (the inputs being the
 * f16 values), and every family bit for bit against the reference. */
static void test_attention_kv_f16(void) {
    static const struct {
        int64_t n, hd, group, ld;
    } cases[] = {{1, 128, 5, 512}, {2, 128, 5, 640}, {37, 128, 5, 512}, {300, 128, 5, 512}, {17, 64, 8, 64},
                 {9, 72, 3, 80},   {33, 5, 1, 7},    {65, 40, 4, 40},   {1000, 128, 1, 128}, {12, 33, 9, 35}, {2048, 128, 5, 128}, {49, 128, 4, 128},
                 {21, 32, 7, 32}, {50, 96, 2, 100}, {130, 128, 6, 256},
                 /* head sizes leaving 1, 2 and 3 dimensions past the last whole OPS_KV_CHAINS */
                 {29, 35, 3, 40}, {19, 18, 2, 18}, {40, 7, 5, 9}, {20, 2, 3, 2}, {17, 3, 6, 3}};
    double worst = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int64_t n = cases[ci].n, hd = cases[ci].hd, group = cases[ci].group, ld = cases[ci].ld;
        uint64_t rng = 77 + ci;
        float *q = alloc_f(group * hd), *ref = alloc_f(group * hd), *got = alloc_f(group * hd);
        /* keys in whole blocks of OPS_KV_KEYS (the positions past n hold values too, to be ignored) */
        int64_t k_elems = (n + OPS_KV_KEYS - 1) / OPS_KV_KEYS * OPS_KV_KEYS * hd;
        uint16_t *k = malloc(sizeof(uint16_t) * (size_t)k_elems), *v = malloc(sizeof(uint16_t) * (size_t)(n * ld));
        for (int64_t i = 0; i < group * hd; i++) q[i] = (ci % 3 == 1 ? 3.0f : 1.0f) * test_rand_normal(&rng);
        for (int64_t i = 0; i < k_elems; i++) k[i] = fp32_to_fp16(test_rand_normal(&rng));
        for (int64_t i = 0; i < n * ld; i++) v[i] = fp32_to_fp16(test_rand_normal(&rng));
        OpsAttnKV a = {q, k, v, ref, n, hd, ld, group, 1.0f / sqrtf((float)hd)};
        void *work = malloc((size_t)ops_attn_kv_work_bytes(n, group, hd));
        ops_force_kernels("ref");
        ops_attn_kv_f16(&a, work);
        /* the inputs as the kernel reads them: f16 keys (from their blocks) and values, converted */
        float *kf = alloc_f(n * hd), *vf = alloc_f(n * hd);
        for (int64_t j = 0; j < n; j++)
            for (int64_t d = 0; d < hd; d++)
                kf[j * hd + d] = fp16_to_fp32(k[ops_kv_key_index(j, d, hd)]), vf[j * hd + d] = fp16_to_fp32(v[j * ld + d]);
        double e = kv_attention_nmse(ref, q, kf, vf, n, hd, group);
        CHECK(e < 1e-11, "kv attention n=%lld hd=%lld group=%lld: NMSE %.3g vs double", (long long)n, (long long)hd,
              (long long)group, e);
        worst = fmax(worst, e);
        KvF16Run r = {&a, work};
        kv_families_match("kv attention", run_kv_f16, &r, got, ref, group * hd, n, hd, group);
        free(q), free(ref), free(got), free(k), free(v), free(work), free(kf), free(vf);
    }
    test_note("decode attention (F16 cache) vs double: max NMSE %.3g; families bit-identical to ref", worst);
    ops_force_kernels(NULL);
}

/* Decode attention over a Q8_0 cache: keys and values quantized row by row (quantize_row_q8_0_ref) and
 * stored in the blocked layouts of ops.h, the query quantized the same way; the positions past n in
 * the last block hold random codes and NaN scales, to be ignored. The reference against double
 * precision on the dequantized inputs, element by element within the bound that the probabilities'
 * quantization allows (ops.h: half a step W/254 per position, W the block's largest p·dv, computed
 * here in double), its scores against vec_dot_q8_0_q8_0_ref on the rows they came from (through a
 * single key: out = that key's value row, and two keys: their probability ratio), and every family
 * bit for bit against the reference. */
static void store_q8_row(uint8_t *cache, int64_t j, int64_t hd, const BlockQ8_0 *row, int values) {
    for (int64_t b = 0; b < hd / QK; b++) {
        memcpy(cache + ops_kv_q8_scale_offset(j, b, hd), &row[b].d, sizeof row[b].d);
        for (int i = 0; i < QK; i++)
            cache[values ? ops_kv_q8_value_offset(j, b * QK + i, hd) : ops_kv_q8_code_offset(j, b * QK + i, hd)] =
                (uint8_t)row[b].qs[i];
    }
}

typedef struct {
    OpsAttnKVQ8 *a;
    void *work;
} KvQ8Run;

static void run_kv_q8(void *ctx, float *out) {
    KvQ8Run *r = ctx;
    OpsAttnKVQ8 a = *r->a;
    a.out = out;
    ops_attn_kv_q8(&a, r->work);
}

/* The largest |out - exact| / bound over the group's outputs, exact in double from the dequantized
 * inputs; bound = the probabilities' quantization (Σ_blocks W/254 · Σ_j |vq[j][d]|, W = max_j p·dv
 * over the block's positions and the dimension's 32-block) plus 1e-5 of Σ p·|v| for the float
 * rounding of the scores, exponentials and sums, all over Σ p. Also the NMSE. */
static double q8_pv_bound_ratio(const float *out, const float *qf, const float *kf, const float *vf, const BlockQ8_0 *vb,
                                int64_t n, int64_t hd, int64_t group, double *nmse_out) {
    double worst = 0, num = 0, den = 0, *p = malloc(sizeof(double) * (size_t)n);
    for (int64_t g = 0; g < group; g++) {
        double sum = double_probabilities(p, qf + g * hd, kf, n, hd);
        for (int64_t d = 0; d < hd; d++) {
            double exact = 0, mag = 0, bound = 0;
            for (int64_t j0 = 0; j0 < n; j0 += OPS_KV_KEYS) {
                double wmax = 0, codes = 0;
                for (int64_t j = j0; j < n && j < j0 + OPS_KV_KEYS; j++) {
                    const BlockQ8_0 *blk = vb + j * (hd / QK) + d / QK;
                    wmax = fmax(wmax, p[j] * fp16_to_fp32(blk->d));
                    codes += abs(blk->qs[d % QK]);
                }
                bound += wmax / 254 * codes;
            }
            for (int64_t j = 0; j < n; j++) exact += p[j] * vf[j * hd + d], mag += p[j] * fabs(vf[j * hd + d]);
            exact /= sum;
            bound = (1.01 * bound + 1e-5 * mag) / sum + 1e-30;
            double err = fabs(out[g * hd + d] - exact);
            worst = fmax(worst, err / bound);
            num += err * err, den += exact * exact;
        }
    }
    free(p);
    *nmse_out = num / den;
    return worst;
}

static void test_attention_kv_q8(void) {
    static const struct {
        int64_t n, hd, group;
    } cases[] = {{1, 128, 5},  {2, 128, 5},  {37, 128, 5},  {300, 128, 5}, {17, 64, 8},  {9, 96, 3},
                 {33, 32, 1},  {65, 160, 4}, {1000, 128, 1}, {12, 32, 9},  {2048, 128, 5}, {49, 256, 4},
                 {21, 32, 7},  {130, 128, 6}, {16, 64, 2},   {31, 64, 3}};
    double worst_ratio = 0, worst_nmse = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int64_t n = cases[ci].n, hd = cases[ci].hd, group = cases[ci].group, nb = hd / QK;
        uint64_t rng = 177 + ci;
        int64_t n_keys = (n + OPS_KV_KEYS - 1) / OPS_KV_KEYS * OPS_KV_KEYS;  /* whole blocks */
        float *x = alloc_f(hd), *ref = alloc_f(group * hd), *got = alloc_f(group * hd);
        float *qf = alloc_f(group * hd), *kf = alloc_f(n_keys * hd), *vf = alloc_f(n_keys * hd);
        BlockQ8_0 *qb = malloc(sizeof(BlockQ8_0) * (size_t)(group * nb)), *kb = malloc(sizeof(BlockQ8_0) * (size_t)(n_keys * nb));
        BlockQ8_0 *vb = malloc(sizeof(BlockQ8_0) * (size_t)(n_keys * nb));
        uint8_t *k = malloc((size_t)(n_keys * nb * 34)), *v = malloc((size_t)(n_keys * nb * 34));
        const float qscale = ci % 3 == 1 ? 3.0f : 1.0f;
        for (int64_t g = 0; g < group; g++) {
            for (int64_t d = 0; d < hd; d++) x[d] = qscale * test_rand_normal(&rng);
            quantize_row_q8_0_ref(x, qb + g * nb, hd);
            dequantize_row_q8_0(qb + g * nb, qf + g * hd, hd);
        }
        for (int64_t j = 0; j < n_keys; j++) {
            for (int64_t d = 0; d < hd; d++) x[d] = test_rand_normal(&rng);
            quantize_row_q8_0_ref(x, kb + j * nb, hd);
            dequantize_row_q8_0(kb + j * nb, kf + j * hd, hd);
            store_q8_row(k, j, hd, kb + j * nb, 0);
            for (int64_t d = 0; d < hd; d++) x[d] = (ci % 4 == 2 ? 5.0f + 0.1f * (float)d : 0.0f) + test_rand_normal(&rng);
            quantize_row_q8_0_ref(x, vb + j * nb, hd);
            if (j >= n)  /* padding: NaN scales */
                for (int64_t b = 0; b < nb; b++) vb[j * nb + b].d = 0x7E00;
            dequantize_row_q8_0(vb + j * nb, vf + j * hd, hd);
            store_q8_row(v, j, hd, vb + j * nb, 1);
        }
        OpsAttnKVQ8 a = {(const uint8_t *)qb, k, v, ref, n, hd, group, 1.0f / sqrtf((float)hd)};
        void *work = malloc((size_t)ops_attn_kv_q8_work_bytes(n, group, hd));
        ops_force_kernels("ref");
        ops_attn_kv_q8(&a, work);
        double e, ratio = q8_pv_bound_ratio(ref, qf, kf, vf, vb, n, hd, group, &e);
        CHECK(ratio <= 1.0, "q8 kv attention n=%lld hd=%lld group=%lld: error %.3g times the quantization bound",
              (long long)n, (long long)hd, (long long)group, ratio);
        worst_ratio = fmax(worst_ratio, ratio), worst_nmse = fmax(worst_nmse, e);
        if (n == 1)  /* one key: the output is the value row, dequantized (127·(dv·(1/127)): a few ulps) */
            for (int64_t g = 0; g < group; g++) {
                double err = 0;
                for (int64_t d = 0; d < hd; d++) err = fmax(err, fabs(ref[g * hd + d] - vf[d]) / fmax(fabs(vf[d]), 1e-30));
                CHECK(err <= 2.5e-7, "q8 kv attention, one key, head %lld: relative error %.3g vs the value row",
                      (long long)g, err);
            }
        if (n == 2) {  /* two keys: p1 / p0 = e^((s1 - s0)·scale), the scores those of vec_dot_q8_0_q8_0_ref */
            float p[2];
            for (int64_t g = 0; g < group; g++) {
                OpsAttnKVQ8 one = a;
                one.q = (const uint8_t *)(qb + g * nb), one.group = 1, one.out = got;
                ops_attn_kv_q8(&one, work);
                memcpy(p, work, sizeof p);  /* the reference leaves the probabilities (unnormalised) in work */
                double s0 = vec_dot_q8_0_q8_0_ref(hd, kb, qb + g * nb), s1 = vec_dot_q8_0_q8_0_ref(hd, kb + nb, qb + g * nb);
                double want = exp((s1 - s0) * a.scale), have = (double)p[1] / p[0];
                CHECK(fabs(have - want) <= 1e-5 * want, "q8 kv scores, head %lld: ratio %.9g vs %.9g from vec_dot", (long long)g, have, want);
            }
        }
        KvQ8Run r = {&a, work};
        kv_families_match("q8 kv attention", run_kv_q8, &r, got, ref, group * hd, n, hd, group);
        free(x), free(ref), free(got), free(qf), free(kf), free(vf), free(qb), free(kb), free(vb), free(k), free(v), free(work);
    }
    test_note("decode attention (Q8_0 cache) vs double on the dequantized inputs: error at most %.2f of the "
              "probabilities' quantization bound, max NMSE %.3g; families bit-identical to ref", worst_ratio, worst_nmse);
}

/* The int8 attention's output is a convex combination of the values: with v constant per dimension,
 * the output is that constant up to the value quantization (one step of 127). */
static void test_attention_q8_convex(void) {
    AttnCase c;
    make_case(&c, 97, 24, 24, 1, 5);
    for (int64_t j = 0; j < c.n; j++)
        for (int64_t d = 0; d < c.hd; d++) c.v[j * c.ld + d] = (float)(d + 1) - c.bv[d];
    float *out = alloc_f(c.n * c.hd);
    for (int f = 0; f < n_families; f++) {
        ops_force_kernels(families[f]);
        run_attn(&c, 1, out, c.hd);
        double worst = 0;
        for (int64_t i = 0; i < c.n; i++)
            for (int64_t d = 0; d < c.hd; d++) worst = fmax(worst, fabs(out[i * c.hd + d] - (float)(d + 1)) / (double)(d + 1));
        CHECK(worst < 1e-5, "%s: constant values reproduced to %.3g", families[f], worst);
    }
    free(out);
    free_case(&c);
    ops_force_kernels(NULL);
}

void suite_ops(void) {
    find_families();
    printf("  ops kernel families: ");
    for (int f = 0; f < n_families; f++) printf("%s%s", families[f], f + 1 < n_families ? ", " : "\n");
    RUN_TEST(test_exp_accuracy);
    RUN_TEST(test_exp_families);
    RUN_TEST(test_gelu_accuracy);
    RUN_TEST(test_gelu_families);
    RUN_TEST(test_bias_ops_exact);
    RUN_TEST(test_swiglu_accuracy);
    RUN_TEST(test_layernorm);
    RUN_TEST(test_softmax_row);
    RUN_TEST(test_attention);
    RUN_TEST(test_attention_q8_convex);
    RUN_TEST(test_attention_kv_f16);
    RUN_TEST(test_attention_kv_q8);
}
