/* quant.c — tensor element types, fp16/bf16 conversion, Q4_0/Q8_0 quantization, the scalar
 * reference dot products, kernel dispatch, the threaded matrix products and the machine probes.
 *
 * The `_ref` functions here define the numbers. The SIMD inner kernels live in quant_x86.c (AVX2,
 * AVX-512 VNNI) and quant_neon.c (NEON, with or without dotprod); each provides a QuantKernels table
 * (quant.h, internal section) and is tested against the reference. Block layouts: quant.h and
 * anchors.md §b. */
#include "quant.h"
#include "ops.h"  /* ops_swiglu */

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

_Static_assert(sizeof(BlockQ4_0) == 18, "BlockQ4_0 must be 18 bytes, as ggml's block_q4_0");
_Static_assert(sizeof(BlockQ8_0) == 34, "BlockQ8_0 must be 34 bytes, as ggml's block_q8_0");
_Static_assert(sizeof(BlockQ4_0x16) == 576, "BlockQ4_0x16 must be 9 cache lines");

/* ---- type table ----------------------------------------------------------------------------- */

typedef struct {
    int type;
    const char *name;
    int64_t block_elems, block_bytes;
} TypeInfo;

static const TypeInfo type_table[] = {
    {TYPE_F32, "f32", 1, 4},
    {TYPE_F16, "f16", 1, 2},
    {TYPE_BF16, "bf16", 1, 2},
    {TYPE_Q8_0, "q8_0", QK, sizeof(BlockQ8_0)},
    {TYPE_Q4_0, "q4_0", QK, sizeof(BlockQ4_0)},
};
enum { N_TYPES = sizeof type_table / sizeof type_table[0] };

static const TypeInfo *type_info(int type) {
    for (int i = 0; i < N_TYPES; i++)
        if (type_table[i].type == type) return &type_table[i];
    return NULL;
}

const char *type_name(int type) {
    static _Thread_local char unknown[32];
    const TypeInfo *t = type_info(type);
    if (t) return t->name;
    snprintf(unknown, sizeof unknown, "type %d", type);
    return unknown;
}

int type_is_known(int type) { return type_info(type) != NULL; }

static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }

int type_from_name(const char *name) {
    for (int i = 0; name && i < N_TYPES; i++) {
        const char *a = name, *b = type_table[i].name;
        while (*a && ascii_lower((unsigned char)*a) == *b) a++, b++;
        if (*a == 0 && *b == 0) return type_table[i].type;
    }
    return -1;
}

int64_t type_block_elems(int type) {
    const TypeInfo *t = type_info(type);
    return t ? t->block_elems : -1;
}

int64_t type_block_bytes(int type) {
    const TypeInfo *t = type_info(type);
    return t ? t->block_bytes : -1;
}

int64_t type_row_bytes(int type, int64_t n) {
    const TypeInfo *t = type_info(type);
    if (!t || n < 0 || n % t->block_elems != 0) return -1;
    return n / t->block_elems * t->block_bytes;
}

/* ---- scalar conversions --------------------------------------------------------------------- */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Half: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits. */
float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0) {  /* zero or subnormal: mant * 2^-24, exact in fp32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return f32_from_bits(sign | 0x7F800000 | (mant << 13));  /* inf, NaN (payload kept) */
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));  /* rebias 15 -> 127 */
}

/* Round-to-nearest-even on the bit pattern. `rest` are the dropped low bits and `half` the weight
 * of the highest dropped bit; returns the kept value rounded. */
static uint32_t round_nearest_even(uint32_t kept, uint32_t rest, uint32_t half) {
    if (rest > half || (rest == half && (kept & 1))) kept++;
    return kept;
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7FFFFFFF;
    if (ax > 0x7F800000)  /* NaN: stays NaN, made quiet, top payload bits kept (as F16C does) */
        return sign | 0x7E00 | (uint16_t)((ax >> 13) & 0x3FF);
    if (ax >= 0x477FF000) return sign | 0x7C00;  /* |f| >= 65520 (halfway past 65504): inf */
    if (ax >= 0x38800000) {                      /* |f| >= 2^-14: a normal half */
        uint32_t kept = (((ax >> 23) - 112) << 10) | ((ax >> 13) & 0x3FF);
        /* a carry out of the mantissa correctly bumps the exponent */
        return sign | (uint16_t)round_nearest_even(kept, ax & 0x1FFF, 0x1000);
    }
    /* subnormal half or zero: the result is |f| / 2^-24 rounded to an integer (0x400 = 2^-14 when
     * it rounds up into the normal range, which is also the right encoding). */
    uint32_t e = ax >> 23;
    if (e < 102) return sign;  /* |f| < 2^-25 rounds to zero; 2^-25 exactly is a tie, to even 0 */
    uint32_t m = (ax & 0x7FFFFF) | 0x800000;  /* |f| = m * 2^(e-150), so |f|/2^-24 = m >> (126-e) */
    uint32_t shift = 126 - e;                 /* 14 .. 24 */
    uint32_t kept = m >> shift, rest = m & ((1u << shift) - 1);
    return sign | (uint16_t)round_nearest_even(kept, rest, 1u << (shift - 1));
}

/* bf16 is the top half of an fp32. */
float bf16_to_fp32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((x >> 16) | 0x40);  /* NaN: force quiet */
    return (uint16_t)(round_nearest_even(x >> 16, x & 0xFFFF, 0x8000));
}

/* ---- quantize / dequantize ------------------------------------------------------------------ */

/* Q4_0 code of one value, as ggml's quantize_row_q4_0_ref: MIN(15, (int8_t)(x*id + 8.5f)).
 * x*id is rounded to float before 8.5 is added; the volatile keeps a compiler that contracts
 * floating-point expressions from fusing the two into one fma, which rounds differently in rare
 * cases (files must be byte-identical everywhere). A non-finite x*id (a block of fp32 subnormals
 * makes id = inf) gives code 0, as ggml on x86 and gguf's numpy quantizer do; never UB. */
static uint8_t q4_0_code(float x, float id) {
    volatile float scaled = x * id;
    float v = scaled + 8.5f;
    if (!isfinite(v)) return 0;
    if (v >= 15.0f) return 15;
    if (v >= 0.0f) return (uint8_t)v;  /* truncation toward zero, as the int8_t cast */
    return 0;
}

void quantize_row_q4_0_ref(const float *x, BlockQ4_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++) {
        const float *xb = x + b * QK;
        float amax = 0.0f, max = 0.0f;  /* max: the signed value of largest magnitude (first one) */
        for (int j = 0; j < QK; j++) {
            if (amax < fabsf(xb[j])) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        }
        const float d = max / -8.0f;  /* so that `max` itself maps to code 0, i.e. -8 */
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK / 2; j++)
            y[b].qs[j] = (uint8_t)(q4_0_code(xb[j], id) | (q4_0_code(xb[j + QK / 2], id) << 4));
    }
}

/* roundf(v) (half away from zero) for the products v = x*id of Q8_0 quantization, |v| <= ~127.
 * Written with comparisons only, so no compiler can fuse the product into an add (see q4_0_code),
 * and without branches, so that compilers vectorize the loop. A non-finite v (a block of fp32
 * subnormals makes id = inf) gives 0, as ggml on x86 and gguf's numpy quantizer do; so would a
 * finite |v| >= 127.5, which finite input cannot produce. Never undefined behaviour. */
static int8_t q8_0_code(float v) {
    float c = v > -127.5f && v < 127.5f ? v : 0.0f;
    int q = (int)c;  /* truncated toward zero; at most one of the two corrections applies */
    q += (c >= (float)q + 0.5f) - (c <= (float)q - 0.5f);
    return (int8_t)q;
}

void quantize_row_q8_0_ref(const float *x, BlockQ8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++) {
        const float *xb = x + b * QK;
        float amax = 0.0f;  /* (a NaN is skipped) */
        for (int j = 0; j < QK; j++) amax = fabsf(xb[j]) > amax ? fabsf(xb[j]) : amax;
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK; j++) y[b].qs[j] = q8_0_code(xb[j] * id);
    }
}

void dequantize_row_q4_0(const BlockQ4_0 *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK / 2; j++) {
            y[b * QK + j] = (float)((x[b].qs[j] & 0x0F) - 8) * d;
            y[b * QK + j + QK / 2] = (float)((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

void dequantize_row_q8_0(const BlockQ8_0 *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK; j++) y[b * QK + j] = (float)x[b].qs[j] * d;
    }
}

static const QuantKernels *kernels(void);  /* the active family; fills quant_fp16_table */

/* quantize_row_q8_0_ref's bytes through the active family's vector quantizer (tested identical; its
 * block sums go to a scratch array). The decode quantizes a Q8_0 cache's rows and queries with it. */
static void quantize_q8_0_fast(const float *x, BlockQ8_0 *y, int64_t n) {
    int32_t sums[64];
    for (int64_t b = 0; b < n / QK; b += 64) {
        int64_t nb = n / QK - b < 64 ? n / QK - b : 64;
        kernels()->quantize_q8_0(x + b * QK, y + b, sums, nb * QK);
    }
}

void quantize_row(int type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case TYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = fp32_to_fp16(src[i]);
        break;
    case TYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = fp32_to_bf16(src[i]);
        break;
    case TYPE_Q8_0: quantize_q8_0_fast(src, dst, n); break;
    case TYPE_Q4_0: quantize_row_q4_0_ref(src, dst, n); break;
    default: break;
    }
}

void dequantize_row(int type, const void *src, float *dst, int64_t n) {
    switch (type) {
    case TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case TYPE_F16:  /* the table holds fp16_to_fp32 of every half */
        kernels();
        for (int64_t i = 0; i < n; i++) dst[i] = quant_fp16_table[((const uint16_t *)src)[i]];
        break;
    case TYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_fp32(((const uint16_t *)src)[i]);
        break;
    case TYPE_Q8_0: dequantize_row_q8_0(src, dst, n); break;
    case TYPE_Q4_0: dequantize_row_q4_0(src, dst, n); break;
    default: break;
    }
}

/* ---- reference dot products ----------------------------------------------------------------- */

/* sum over blocks of (sum_j (q4_j - 8) * q8_j) * dx * dy; the int sum of a block is exact. */
float vec_dot_q4_0_q8_0_ref(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK; b++) {
        int32_t isum = 0;
        for (int j = 0; j < QK / 2; j++) {
            isum += ((x[b].qs[j] & 0x0F) - 8) * y[b].qs[j];
            isum += ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + QK / 2];
        }
        sum += (float)isum * fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d);
    }
    return sum;
}

float vec_dot_q8_0_q8_0_ref(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y) {
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK; b++) {
        int32_t isum = 0;
        for (int j = 0; j < QK; j++) isum += x[b].qs[j] * y[b].qs[j];
        sum += (float)isum * fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d);
    }
    return sum;
}

float vec_dot_f16_f32_ref(int64_t n, const uint16_t *x, const float *y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += fp16_to_fp32(x[i]) * y[i];
    return sum;
}

float vec_dot_f32_f32_ref(int64_t n, const float *x, const float *y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += x[i] * y[i];
    return sum;
}

/* ---- Q4_0 repacked by 16 rows (layout: quant.h) ----------------------------------------------- */

int64_t q4_0x16_bytes(int64_t n_out, int64_t n_in) {
    return (n_out + 15) / 16 * ((n_in / QK + 1) / 2) * (int64_t)sizeof(BlockQ4_0x16);
}

int64_t type_matrix_bytes(int type, int64_t rows, int64_t cols) {
    if (type == TYPE_Q4_0X16) return cols % QK == 0 && rows >= 0 ? q4_0x16_bytes(rows, cols) : -1;
    int64_t row_bytes = type_row_bytes(type, cols);
    return row_bytes < 0 || rows < 0 ? -1 : rows * row_bytes;
}

BlockQ4_0 q4_0x16_block(const void *R, int64_t n_pairs, int64_t row, int64_t b) {
    const BlockQ4_0x16 *x = (const BlockQ4_0x16 *)R + row / 16 * n_pairs + b / 2;
    const int i = (int)(row % 16), h = (int)(b % 2);
    BlockQ4_0 blk;
    blk.d = x->d[h][i];
    for (int k = 0; k < 4; k++) memcpy(blk.qs + 4 * k, x->qs[h][k][i], 4);
    return blk;
}

void unpack_q4_0x16_row(const void *R, int64_t n_in, int64_t row, BlockQ4_0 *dst) {
    const int64_t nb = n_in / QK;
    for (int64_t b = 0; b < nb; b++) dst[b] = q4_0x16_block(R, (nb + 1) / 2, row, b);
}

typedef struct {
    const uint8_t *W;
    int64_t n_out, n_in;
    BlockQ4_0x16 *dst;
} RepackTask;

/* The thread's share of the 16-row groups; padding (rows past n_out, an odd last block) is zero. */
static void repack_task(void *p, int ith, int nth) {
    const RepackTask *t = p;
    const int64_t nb = t->n_in / QK, n_pairs = (nb + 1) / 2, row_bytes = nb * (int64_t)sizeof(BlockQ4_0);
    int64_t g0, g1;
    split_range((t->n_out + 15) / 16, ith, nth, 1, &g0, &g1);
    for (int64_t g = g0; g < g1; g++)
        for (int64_t pair = 0; pair < n_pairs; pair++) {
            BlockQ4_0x16 *x = &t->dst[g * n_pairs + pair];
            memset(x, 0, sizeof *x);
            for (int h = 0; h < 2 && 2 * pair + h < nb; h++)
                for (int i = 0; i < 16 && g * 16 + i < t->n_out; i++) {
                    const BlockQ4_0 *blk = (const BlockQ4_0 *)(t->W + (g * 16 + i) * row_bytes) + 2 * pair + h;
                    x->d[h][i] = blk->d;
                    for (int k = 0; k < 4; k++) memcpy(x->qs[h][k][i], blk->qs + 4 * k, 4);
                }
        }
}

void repack_q4_0x16(ThreadPool *pool, const void *W, int64_t n_out, int64_t n_in, void *dst) {
    RepackTask t = {W, n_out, n_in, dst};
    if (pool) threadpool_run(pool, repack_task, &t);
    else repack_task(&t, 0, 1);
}

/* A repacked row · y, adding block by block exactly as vec_dot_q4_0_q8_0_ref adds them (each call
 * on one block returns that block's term; -std=c11 keeps the compiler from fusing the steps). */
static float dot_q4_0x16_row_ref(const void *R, int64_t n_in, int64_t row, const BlockQ8_0 *y) {
    const int64_t nb = n_in / QK;
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        BlockQ4_0 blk = q4_0x16_block(R, (nb + 1) / 2, row, b);
        sum += vec_dot_q4_0_q8_0_ref(QK, &blk, y + b);
    }
    return sum;
}

static void quantize_q8_0_ref(const float *x, BlockQ8_0 *y, int32_t *sums, int64_t n) {
    quantize_row_q8_0_ref(x, y, n);
    for (int64_t b = 0; b < n / QK; b++) {
        sums[b] = 0;
        for (int j = 0; j < QK; j++) sums[b] += y[b].qs[j];
    }
}

/* bf16 row · f32 vector: the same sequential sum as converting the row and using the f32 dot. */
static float dot_bf16_f32_ref(int64_t n, const uint16_t *x, const float *y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += bf16_to_fp32(x[i]) * y[i];
    return sum;
}

/* ---- the "ref" kernel family: the matmul pieces built from the reference dots --------------- */

static void gemv_q_ref(const MatmulJob *job, int64_t t0, int nt, int64_t r0, int64_t r1) {
    for (int64_t t = t0; t < t0 + nt; t++) {
        const BlockQ8_0 *xq = job->xq + t * job->nb;
        for (int64_t r = r0; r < r1; r++) {
            const void *w = job->W + r * job->row_bytes;
            float *o = &job->out[t * job->n_out + r];
            if (job->wtype == TYPE_Q4_0X16) *o = dot_q4_0x16_row_ref(job->W, job->n_in, r, xq);
            else if (job->wtype == TYPE_Q4_0) *o = vec_dot_q4_0_q8_0_ref(job->n_in, w, xq);
            else *o = vec_dot_q8_0_q8_0_ref(job->n_in, w, xq);
        }
    }
}

static void float_tile_ref(const MatmulJob *job, int64_t t, int ntok, int64_t r, int nrows, float res[4][4]) {
    for (int j = 0; j < ntok; j++) {
        const float *x = job->x + (t + j) * job->n_in;
        for (int i = 0; i < nrows; i++) {
            const void *w = job->W + (r + i) * job->row_bytes;
            if (job->wtype == TYPE_F32) res[j][i] = vec_dot_f32_f32_ref(job->n_in, w, x);
            else if (job->wtype == TYPE_F16) res[j][i] = vec_dot_f16_f32_ref(job->n_in, w, x);
            else res[j][i] = dot_bf16_f32_ref(job->n_in, w, x);
        }
    }
}

static uint64_t probe_read_ref(const uint8_t *p, int64_t bytes) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = 0; i < bytes; i += 32) {
        uint64_t v[4];
        memcpy(v, p + i, sizeof v);
        s0 += v[0], s1 += v[1], s2 += v[2], s3 += v[3];
    }
    return s0 + s1 + s2 + s3;
}

/* Plain C int8 multiply-adds: 16 independent int32 accumulators over 64-byte vectors. One input
 * byte changes every round so that the compiler cannot hoist the work out of the loop. */
static int64_t probe_int8_ref(int64_t iters) {
    int8_t a[64], b[64];
    uint32_t acc[16] = {0};  /* unsigned: the sums wrap by design (signed overflow is undefined) */
    for (int i = 0; i < 64; i++) a[i] = (int8_t)(i - 32), b[i] = (int8_t)(7 - i);
    for (int64_t it = 0; it < iters; it++) {
        for (int i = 0; i < 64; i++) acc[i & 15] += (uint32_t)(a[i] * b[i]);
        a[it & 63] = (int8_t)(acc[it & 15] & 0x3F);
    }
    uint32_t s = 0;
    for (int i = 0; i < 16; i++) s += acc[i];
    volatile uint32_t sink = s;
    (void)sink;
    return iters * 64;
}

const QuantKernels quant_kernels_ref = {
    .name = "ref",
    .dot_q4_0_q8_0 = vec_dot_q4_0_q8_0_ref,
    .dot_q8_0_q8_0 = vec_dot_q8_0_q8_0_ref,
    .dot_f16_f32 = vec_dot_f16_f32_ref,
    .dot_f32_f32 = vec_dot_f32_f32_ref,
    .quantize_q8_0 = quantize_q8_0_ref,
    .gemv_q = gemv_q_ref,
    .float_tile = float_tile_ref,
    .gemm_group = 0,  /* no GEMM tile kernel: T > 1 runs the GEMV for each token */
    .probe_read = probe_read_ref,
    .probe_int8 = probe_int8_ref,
};

/* ---- dispatch ------------------------------------------------------------------------------- */

#if defined(__x86_64__) || defined(__i386__)
/* CPU features from CPUID, and XCR0 (xgetbv): which register state the operating system saves and
 * restores on a context switch, i.e. may be used. (CPUID directly rather than
 * __builtin_cpu_supports, which not every compiler knows "f16c" for.) */
typedef struct {
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512vnni;
    int os_ymm, os_zmm;
} X86Features;

static X86Features x86_features(void) {
    X86Features f = {0};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    f.fma = (c & bit_FMA) != 0;
    f.f16c = (c & bit_F16C) != 0;
    if (c & bit_OSXSAVE) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        f.os_ymm = (lo & 0x6) == 0x6;    /* SSE and AVX (upper ymm) state */
        f.os_zmm = (lo & 0xE6) == 0xE6;  /* plus opmask, upper zmm0-15, zmm16-31 */
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        f.avx2 = (b & (1u << 5)) != 0;
        f.avx512f = (b & (1u << 16)) != 0;
        f.avx512bw = (b & (1u << 30)) != 0;
        f.avx512vl = (b & (1u << 31)) != 0;
        f.avx512vnni = (c & (1u << 11)) != 0;
    }
    return f;
}

static int cpu_can_avx2(void) {
    X86Features f = x86_features();
    return f.os_ymm && f.avx2 && f.fma && f.f16c;
}

static int cpu_can_avx512(void) {
    X86Features f = x86_features();
    return cpu_can_avx2() && f.os_zmm && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
}
#endif

static const QuantKernels *best_kernels(void) {
#if defined(__x86_64__) || defined(__i386__)
    if (cpu_can_avx512()) return &quant_kernels_avx512;
    if (cpu_can_avx2()) return &quant_kernels_avx2;
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
    return &quant_kernels_neon;
#endif
    return &quant_kernels_ref;
}

/* Chosen once (pthread_once), replaced only by quant_force_kernels. */
static const QuantKernels *active_kernels;
static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;

float quant_fp16_table[65536];

static void choose_kernels(void) {
    for (uint32_t h = 0; h < 65536; h++) quant_fp16_table[h] = fp16_to_fp32((uint16_t)h);
    active_kernels = best_kernels();
}

static const QuantKernels *kernels(void) {
    pthread_once(&kernels_once, choose_kernels);
    return active_kernels;
}

const char *quant_kernel_name(void) { return kernels()->name; }

/* Not to be called while another thread is inside a quant function. */
int quant_force_kernels(const char *name) {
    pthread_once(&kernels_once, choose_kernels);
    const QuantKernels *k = NULL;
    if (!name) k = best_kernels();
    else if (strcmp(name, "ref") == 0) k = &quant_kernels_ref;
#if defined(__x86_64__) || defined(__i386__)
    else if (strcmp(name, "avx2") == 0 && cpu_can_avx2()) k = &quant_kernels_avx2;
    else if (strcmp(name, "avx512") == 0 && cpu_can_avx512()) k = &quant_kernels_avx512;
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
    else if (strcmp(name, "neon") == 0 || strcmp(name, quant_kernels_neon.name) == 0) k = &quant_kernels_neon;
#endif
    if (!k) return -1;
    active_kernels = k;
    return 0;
}

int quant_has_q4_0x16(void) { return kernels()->q4_0x16; }

/* The family that computes a product with weights of wtype: repacked weights under a family without
 * kernels for them (e.g. after quant_force_kernels) go through the reference family's GEMV. */
static const QuantKernels *kernels_for(int wtype) {
    const QuantKernels *k = kernels();
    return wtype == TYPE_Q4_0X16 && !k->q4_0x16 ? &quant_kernels_ref : k;
}

float vec_dot_q4_0_q8_0(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y) {
    return kernels()->dot_q4_0_q8_0(n, x, y);
}
float vec_dot_q8_0_q8_0(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y) {
    return kernels()->dot_q8_0_q8_0(n, x, y);
}
float vec_dot_f16_f32(int64_t n, const uint16_t *x, const float *y) { return kernels()->dot_f16_f32(n, x, y); }
float vec_dot_f32_f32(int64_t n, const float *x, const float *y) { return kernels()->dot_f32_f32(n, x, y); }

/* ---- matrix products ------------------------------------------------------------------------ */

static int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int is_quantized(int wtype) { return wtype == TYPE_Q4_0 || wtype == TYPE_Q8_0 || wtype == TYPE_Q4_0X16; }

/* Scratch for quantized weights, each region at a 64-byte aligned offset from an aligned base:
 *   xq      T * nb  BlockQ8_0   the activations quantized (quantize_row_q8_0_ref)
 *   xsum    T * nb  int32       the sum of each block's 32 int8 values
 *   packed  T rounded up to 16 tokens, nb records of 40 bytes per token (QPACK_RECORD_BYTES)
 * For BF16 weights, matmul_ref needs one converted row: n_in floats. */
typedef struct {
    int64_t xq, xsum, packed, end;
} ScratchLayout;

static ScratchLayout scratch_layout(int64_t n_in, int64_t T) {
    ScratchLayout s;
    int64_t nb = n_in / QK;
    s.xq = 0;
    s.xsum = align_up(s.xq + T * nb * (int64_t)sizeof(BlockQ8_0), 64);
    s.packed = align_up(s.xsum + T * nb * (int64_t)sizeof(int32_t), 64);
    s.end = s.packed + (T > 1 ? align_up(T, 16) * nb * QPACK_RECORD_BYTES(1) : 0);
    return s;
}

int64_t matmul_scratch_bytes(int wtype, int64_t n_in, int64_t T) {
    if (is_quantized(wtype)) return scratch_layout(n_in, T).end + 64;  /* + 64: to align the base */
    if (wtype == TYPE_BF16) return n_in * (int64_t)sizeof(float) + 64;
    return 0;
}

static uint8_t *align_ptr(void *p) { return (uint8_t *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

typedef struct {
    MatmulJob job;
    const QuantKernels *k;
    int use_gemm;  /* the GEMM path (else the GEMV): decides how prepare_task lays out the input */
} MatmulTask;

static void quantize_token(const MatmulTask *task, int64_t t) {
    const MatmulJob *job = &task->job;
    task->k->quantize_q8_0(job->x + t * job->n_in, job->xq + t * job->nb, job->xsum + t * job->nb, job->n_in);
}

/* Writes the packed records of token group g (layout: QPACK_* in quant.h). */
static void pack_group(const MatmulJob *job, int G, int offset, int64_t g) {
    for (int64_t b = 0; b < job->nb; b++) {
        uint8_t *rec = job->packed + (g * job->nb + b) * QPACK_RECORD_BYTES(G);
        float d[16];
        int32_t corr[16];
        for (int t = 0; t < G; t++) {
            int64_t tok = g * G + t;
            if (tok >= job->T) {
                for (int k4 = 0; k4 < 8; k4++) memset(rec + (k4 * G + t) * 4, 0, 4);
                d[t] = 0.0f;
                corr[t] = 0;
                continue;
            }
            const BlockQ8_0 *blk = &job->xq[tok * job->nb + b];
            for (int k4 = 0; k4 < 8; k4++) memcpy(rec + (k4 * G + t) * 4, blk->qs + 4 * k4, 4);
            d[t] = fp16_to_fp32(blk->d);
            corr[t] = -offset * job->xsum[tok * job->nb + b];
        }
        memcpy(rec + 32 * G, d, (size_t)G * sizeof(float));
        memcpy(rec + 36 * G, corr, (size_t)G * sizeof(int32_t));
    }
}

/* Threads quantize (and, for the GEMM, pack) disjoint token groups; the GEMM runs after. */
static void prepare_task(void *p, int ith, int nth) {
    const MatmulTask *task = p;
    const MatmulJob *job = &task->job;
    int G = task->k->gemm_group > 0 ? task->k->gemm_group : 1;
    int64_t g0, g1;
    split_range((job->T + G - 1) / G, ith, nth, 1, &g0, &g1);
    if (task->use_gemm && task->k->gemm_rows) {
        if (g0 < g1) task->k->gemm_prepare(job, g0 * G, min64(job->T, g1 * G));
        return;
    }
    for (int64_t g = g0; g < g1; g++) {
        for (int64_t t = g * G; t < min64(job->T, (g + 1) * G); t++) quantize_token(task, t);
        if (task->k->gemm_group > 0) {
            int offset = job->wtype == TYPE_Q4_0 ? task->k->q4_0_offset : task->k->q8_0_offset;
            pack_group(job, G, offset, g);
        }
    }
}

/* Output rows are split across threads in pieces aligned to 16 rows; the GEMV kernel takes up to
 * QGEMV_MAX_TOKENS tokens per pass over the weights. */
static void gemv_task(void *p, int ith, int nth) {
    const MatmulTask *task = p;
    int64_t r0, r1;
    split_range(task->job.n_out, ith, nth, 16, &r0, &r1);
    for (int64_t t = 0; t < task->job.T && r0 < r1; t += QGEMV_MAX_TOKENS)
        task->k->gemv_q(&task->job, t, (int)min64(QGEMV_MAX_TOKENS, task->job.T - t), r0, r1);
}

/* Adds (or, for the first K chunk, stores) a tile's results res[token][row] into out. */
static void store_tile(const MatmulJob *job, float res[32][QTILE_ROWS], int64_t r, int nrows, int64_t t0,
                       int64_t ntok, int first) {
    for (int64_t j = 0; j < ntok; j++) {
        float *o = job->out + (t0 + j) * job->n_out + r;
        if (first) memcpy(o, res[j], (size_t)nrows * sizeof(float));
        else
            for (int i = 0; i < nrows; i++) o[i] += res[j][i];
    }
}

/* Asks for part `part` of `parts` of the weights of a tile (rows [r, r + 4), blocks [kb, kb + nkb))
 * to be brought into cache. The GEMM calls this for the next tile while it computes the current
 * one, spread over its tile-kernel calls: between two unpacks the weight stream is idle, so the
 * hardware prefetcher would not fetch them early, and one burst of ~100 prefetches would overflow
 * the core's outstanding-miss buffers. */
static void prefetch_tile(const MatmulJob *job, int64_t r, int64_t kb, int64_t nkb, int64_t part, int64_t parts) {
    const int64_t block_bytes = type_block_bytes(job->wtype), len = nkb * block_bytes;
    for (int64_t i = r; i < r + QTILE_ROWS && i < job->n_out; i++) {
        const uint8_t *p = job->W + i * job->row_bytes + kb * block_bytes;
        for (int64_t off = len * part / parts / 64 * 64; off < len * (part + 1) / parts; off += 64)
            __builtin_prefetch(p + off, 0, 3);
    }
}

/* The tile after (r, kb) in gemm_task's order: the next 4 rows of the same K chunk, or the first
 * rows of the next chunk. */
static void prefetch_next_tile(const MatmulJob *job, int64_t r, int64_t r0, int64_t r1, int64_t kb, int64_t chunk,
                               int64_t part, int64_t parts) {
    if (r + QTILE_ROWS < r1) prefetch_tile(job, r + QTILE_ROWS, kb, min64(chunk, job->nb - kb), part, parts);
    else if (kb + chunk < job->nb) prefetch_tile(job, r0, kb + chunk, min64(chunk, job->nb - kb - chunk), part, parts);
}

/* The GEMM of one thread, over its rows [r0, r1):
 *   for each block of 128 tokens               (their packed activations stay in L2)
 *     for each K chunk                         (all of K if the block's activations fit 512 KiB,
 *                                               else chunks of 64 blocks = 2048 elements)
 *       for each tile of 4 rows                (unpacked once into an L1-resident tile)
 *         for each pair of token groups        (the register-blocked tile kernel)
 * Partial sums of K chunks are added up in `out`. */
enum { GEMM_TOKEN_BLOCK = 128, GEMM_L2_BUDGET = 512 * 1024, GEMM_CHUNK_BLOCKS = 64 };

/* Below this many tokens the GEMV kernel (QGEMV_MAX_TOKENS tokens per pass over the weights) is
 * faster than the GEMM, whose tiles are padded to whole token groups (measured on AVX-512: the
 * GEMM costs about the same for 1..16 tokens, the GEMV about 0.15 of that per token). */
enum { GEMM_MIN_TOKENS = 7 };

static void gemm_task(void *p, int ith, int nth) {
    const MatmulTask *task = p;
    const MatmulJob *job = &task->job;
    const QuantKernels *k = task->k;
    if (k->gemm_rows) {
        int64_t r0, r1;
        split_range(job->n_out, ith, nth, 16, &r0, &r1);
        if (r0 < r1) k->gemm_rows(job, r0, r1);
        return;
    }
    const int G = k->gemm_group;
    const int64_t rec = QPACK_RECORD_BYTES(G), n_groups = (job->T + G - 1) / G;
    const int64_t groups_per_block = GEMM_TOKEN_BLOCK / G;
    int64_t chunk = job->nb;
    if (job->nb > QTILE_MAX_BLOCKS || GEMM_TOKEN_BLOCK * job->nb * QPACK_RECORD_BYTES(1) > GEMM_L2_BUDGET) {
        int64_t n_chunks = (job->nb + GEMM_CHUNK_BLOCKS - 1) / GEMM_CHUNK_BLOCKS;
        chunk = (job->nb + n_chunks - 1) / n_chunks;
    }
    _Alignas(64) float tile_storage[QTILE_BYTES / sizeof(float)];  /* float: holds fp32 scales too */
    uint8_t *tile = (uint8_t *)tile_storage;
    float res[32][QTILE_ROWS];
    int64_t r0, r1;
    split_range(job->n_out, ith, nth, 16, &r0, &r1);

    for (int64_t gb = 0; gb < n_groups; gb += groups_per_block) {
        int64_t gb_end = min64(n_groups, gb + groups_per_block);
        for (int64_t kb = 0; kb < job->nb; kb += chunk) {
            int64_t nkb = min64(chunk, job->nb - kb);
            for (int64_t r = r0; r < r1; r += QTILE_ROWS) {
                int nrows = (int)min64(QTILE_ROWS, r1 - r);
                k->gemm_unpack(job, r, nrows, kb, nkb, tile);
                const int64_t n_tiles = (gb_end - gb + 1) / 2;
                for (int64_t g = gb; g < gb_end; g += 2) {
                    prefetch_next_tile(job, r, r0, r1, kb, chunk, (g - gb) / 2, n_tiles);
                    const uint8_t *act0 = job->packed + (g * job->nb + kb) * rec;
                    const uint8_t *act1 = g + 1 < gb_end ? act0 + job->nb * rec : NULL;
                    k->gemm_tile(tile, act0, act1, nkb, res);
                    int64_t t0 = g * G, ntok = min64(job->T, t0 + (act1 ? 2 : 1) * G) - t0;
                    store_tile(job, res, r, nrows, t0, ntok, kb == 0);
                }
            }
        }
    }
}

/* Float weights: tiles of 4 rows x 4 tokens, over blocks of tokens whose activations stay in L2
 * while the thread's rows go by. */
static void float_task(void *p, int ith, int nth) {
    const MatmulTask *task = p;
    const MatmulJob *job = &task->job;
    int64_t r0, r1;
    split_range(job->n_out, ith, nth, 16, &r0, &r1);
    int64_t token_block = 4 * (1 + 65536 / (4 * (job->n_in + 1)));  /* ~256 KiB of activations */
    for (int64_t tb = 0; tb < job->T; tb += token_block) {
        for (int64_t r = r0; r < r1; r += 4) {
            int nrows = (int)min64(4, r1 - r);
            for (int64_t t = tb; t < min64(job->T, tb + token_block); t += 4) {
                int ntok = (int)min64(4, job->T - t);
                float res[4][4];
                task->k->float_tile(job, t, ntok, r, nrows, res);
                for (int j = 0; j < ntok; j++)
                    memcpy(job->out + (t + j) * job->n_out + r, res[j], (size_t)nrows * sizeof(float));
            }
        }
    }
}

/* A product's description and the kernel family that computes it (scratch pointers set apart). */
static void init_task(MatmulTask *task, float *out, const void *W, int wtype, const float *x, int64_t n_in,
                      int64_t n_out, int64_t T) {
    memset(task, 0, sizeof *task);
    task->k = kernels_for(wtype);
    MatmulJob *job = &task->job;
    job->W = W;
    job->wtype = wtype;
    job->row_bytes = wtype == TYPE_Q4_0X16 ? 0 : type_row_bytes(wtype, n_in);
    job->n_in = n_in;
    job->n_out = n_out;
    job->T = T;
    job->nb = n_in / QK;
    job->n_pairs = (job->nb + 1) / 2;
    job->x = x;
    job->out = out;
}

void matmul(ThreadPool *pool, float *out, const void *W, int wtype, const float *x, int64_t n_in,
            int64_t n_out, int64_t T, void *scratch) {
    MatmulTask task;
    init_task(&task, out, W, wtype, x, n_in, n_out, T);
    MatmulJob *job = &task.job;
    if (T <= 0 || n_out <= 0) return;
    if (!is_quantized(wtype)) {
        threadpool_run(pool, float_task, &task);
        return;
    }
    uint8_t *base = align_ptr(scratch);
    ScratchLayout s = scratch_layout(n_in, T);
    job->xq = (BlockQ8_0 *)(base + s.xq);
    job->xsum = (int32_t *)(base + s.xsum);
    job->packed = base + s.packed;
    if (T < GEMM_MIN_TOKENS || task.k->gemm_group == 0) {
        if (T == 1) quantize_token(&task, 0);  /* ~n_in operations: not worth waking the threads */
        else threadpool_run(pool, prepare_task, &task);
        threadpool_run(pool, gemv_task, &task);
    } else {
        task.use_gemm = 1;
        threadpool_run(pool, prepare_task, &task);
        threadpool_run(pool, gemm_task, &task);
    }
}

/* ---- several matrices, one input ---------------------------------------------------------------
 * A layer's q, k and v projections (and its gate and up projections) read the same input. Doing
 * them as one job quantizes the input once and wakes the threads once: each thread takes the same
 * share of every matrix's rows (split_range with the GEMV/GEMM alignment) and goes through them one
 * matrix after the other, so the memory stream never stops at a barrier between two matrices. With
 * the same share of the gate and up rows, a thread can apply SwiGLU to its rows as soon as it has
 * them. */
enum { MATMUL_MAX_PARTS = 3 };

typedef struct {
    MatmulTask parts[MATMUL_MAX_PARTS];
    int n_parts;
    int use_gemm;
    int swiglu;   /* parts[0] is the gate, parts[1] the up projection: gate rows become SwiGLU */
} MultiTask;

/* hidden = silu(gate) * up, silu(g) = g * sigmoid(g), for rows [r0, r1) of T tokens (ops_swiglu) */
static void swiglu_rows(float *gate, const float *up, int64_t n, int64_t T, int64_t r0, int64_t r1) {
    for (int64_t t = 0; t < T && r0 < r1; t++) ops_swiglu(gate + t * n + r0, up + t * n + r0, r1 - r0);
}

static void multi_task(void *p, int ith, int nth) {
    MultiTask *mt = p;
    for (int i = 0; i < mt->n_parts; i++) (mt->use_gemm ? gemm_task : gemv_task)(&mt->parts[i], ith, nth);
    if (mt->swiglu) {
        const MatmulJob *gate = &mt->parts[0].job, *up = &mt->parts[1].job;
        int64_t r0, r1;
        split_range(gate->n_out, ith, nth, 16, &r0, &r1);  /* the rows gemv_task/gemm_task gave this thread */
        swiglu_rows(gate->out, up->out, gate->n_out, gate->T, r0, r1);
    }
}

static int can_share_input(const MatmulPart *parts, int n_parts) {
    if (n_parts < 1 || n_parts > MATMUL_MAX_PARTS) return 0;
    for (int i = 0; i < n_parts; i++)
        if (parts[i].wtype != parts[0].wtype || !is_quantized(parts[i].wtype)) return 0;
    return 1;
}

static void run_parts(ThreadPool *pool, const MatmulPart *parts, int n_parts, const float *x, int64_t n_in,
                      int64_t T, void *scratch, int swiglu) {
    if (T <= 0) return;
    if (!can_share_input(parts, n_parts)) {  /* float weights or mixed types: one product at a time */
        for (int i = 0; i < n_parts; i++)
            matmul(pool, parts[i].out, parts[i].W, parts[i].wtype, x, n_in, parts[i].n_out, T, scratch);
        if (swiglu) swiglu_rows(parts[0].out, parts[1].out, parts[0].n_out, T, 0, parts[0].n_out);
        return;
    }
    MultiTask mt;
    memset(&mt, 0, sizeof mt);
    mt.n_parts = n_parts;
    mt.swiglu = swiglu;
    uint8_t *base = align_ptr(scratch);
    ScratchLayout s = scratch_layout(n_in, T);
    for (int i = 0; i < n_parts; i++) {
        init_task(&mt.parts[i], parts[i].out, parts[i].W, parts[i].wtype, x, n_in, parts[i].n_out, T);
        MatmulJob *job = &mt.parts[i].job;
        job->xq = (BlockQ8_0 *)(base + s.xq);  /* all parts read the one quantized input */
        job->xsum = (int32_t *)(base + s.xsum);
        job->packed = base + s.packed;
    }
    const MatmulTask *first = &mt.parts[0];
    mt.use_gemm = T >= GEMM_MIN_TOKENS && first->k->gemm_group > 0;
    for (int i = 0; i < n_parts; i++) mt.parts[i].use_gemm = mt.use_gemm;
    if (T == 1 && !mt.use_gemm) quantize_token(first, 0);
    else threadpool_run(pool, prepare_task, (void *)first);
    threadpool_run(pool, multi_task, &mt);
}

void matmul_shared_input(ThreadPool *pool, const MatmulPart *parts, int n_parts, const float *x, int64_t n_in,
                         int64_t T, void *scratch) {
    run_parts(pool, parts, n_parts, x, n_in, T, scratch, 0);
}

void matmul_swiglu(ThreadPool *pool, MatmulPart gate, MatmulPart up, const float *x, int64_t n_in, int64_t T,
                   void *scratch) {
    MatmulPart parts[2] = {gate, up};
    if (gate.n_out != up.n_out) return;  /* not a feed-forward pair: nothing defined to compute */
    run_parts(pool, parts, 2, x, n_in, T, scratch, 1);
}

/* ---- one token, rows chosen by the caller ------------------------------------------------------
 * The input area is scratch_layout(n_in, 1): xq, then xsum, as matmul lays out its scratch. */
int64_t matvec_input_bytes(int64_t n_in) { return scratch_layout(n_in, 1).end; }

void matvec_prepare_input(int wtype, const float *x, int64_t n_in, void *input) {
    if (!is_quantized(wtype)) return;
    ScratchLayout s = scratch_layout(n_in, 1);
    kernels_for(wtype)->quantize_q8_0(x, (BlockQ8_0 *)((uint8_t *)input + s.xq), (int32_t *)((uint8_t *)input + s.xsum),
                                      n_in);
}

/* gemv_task's and float_task's work for one token on rows [r0, r1) */
void matvec_rows(float *out, const void *W, int wtype, int64_t n_in, int64_t n_out, const float *x, const void *input,
                 int64_t r0, int64_t r1) {
    MatmulTask task;
    init_task(&task, out, W, wtype, x, n_in, n_out, 1);
    if (r0 >= r1) return;
    if (is_quantized(wtype)) {
        ScratchLayout s = scratch_layout(n_in, 1);
        task.job.xq = (BlockQ8_0 *)((uint8_t *)input + s.xq);
        task.job.xsum = (int32_t *)((uint8_t *)input + s.xsum);
        task.k->gemv_q(&task.job, 0, 1, r0, r1);
        return;
    }
    for (int64_t r = r0; r < r1; r += 4) {
        int nrows = (int)min64(4, r1 - r);
        float res[4][4];
        task.k->float_tile(&task.job, 0, 1, r, nrows, res);
        memcpy(out + r, res[0], (size_t)nrows * sizeof(float));
    }
}

void matmul_ref(float *out, const void *W, int wtype, const float *x, int64_t n_in, int64_t n_out, int64_t T,
                void *scratch) {
    const uint8_t *w = W;
    const int64_t row_bytes = type_row_bytes(wtype, n_in), nb = n_in / QK;
    if (is_quantized(wtype)) {
        BlockQ8_0 *xq = (BlockQ8_0 *)align_ptr(scratch);
        for (int64_t t = 0; t < T; t++) quantize_row_q8_0_ref(x + t * n_in, xq + t * nb, n_in);
        for (int64_t t = 0; t < T; t++)
            for (int64_t r = 0; r < n_out; r++) {
                float *o = &out[t * n_out + r];
                if (wtype == TYPE_Q4_0X16) *o = dot_q4_0x16_row_ref(W, n_in, r, xq + t * nb);
                else if (wtype == TYPE_Q4_0) *o = vec_dot_q4_0_q8_0_ref(n_in, (const void *)(w + r * row_bytes), xq + t * nb);
                else *o = vec_dot_q8_0_q8_0_ref(n_in, (const void *)(w + r * row_bytes), xq + t * nb);
            }
    } else if (wtype == TYPE_BF16) {
        float *row = (float *)align_ptr(scratch);
        for (int64_t r = 0; r < n_out; r++) {
            dequantize_row(TYPE_BF16, w + r * row_bytes, row, n_in);
            for (int64_t t = 0; t < T; t++) out[t * n_out + r] = vec_dot_f32_f32_ref(n_in, row, x + t * n_in);
        }
    } else {
        for (int64_t t = 0; t < T; t++)
            for (int64_t r = 0; r < n_out; r++) {
                const void *row = w + r * row_bytes;
                out[t * n_out + r] = wtype == TYPE_F16 ? vec_dot_f16_f32_ref(n_in, row, x + t * n_in)
                                                       : vec_dot_f32_f32_ref(n_in, row, x + t * n_in);
            }
    }
}

/* ---- machine probes --------------------------------------------------------------------------- */

enum { PROBE_RUNS = 5 };

typedef struct {
    const QuantKernels *k;
    const ReadSpan *spans;  /* read probe: 4 KiB-aligned spans, whole 4 KiB pages each */
    int n_spans;
    int64_t bytes;          /* their total */
    int64_t iters;
    uint64_t *sink;   /* one per thread: keeps the reads from being optimized away */
    int64_t *macs;    /* one per thread */
    int scaled;       /* probe_int8_scaled instead of probe_int8 */
} ProbeTask;

/* The thread's share of the spans' bytes (whole 4 KiB pieces of their concatenation), read span by span. */
static void read_probe_task(void *p, int ith, int nth) {
    ProbeTask *q = p;
    int64_t s, e, base = 0;
    split_range(q->bytes, ith, nth, 4096, &s, &e);
    uint64_t sink = 0;
    for (int i = 0; i < q->n_spans && base < e; base += q->spans[i].bytes, i++) {
        int64_t lo = s > base ? s - base : 0, hi = e - base < q->spans[i].bytes ? e - base : q->spans[i].bytes;
        if (hi > lo) sink += q->k->probe_read((const uint8_t *)q->spans[i].p + lo, hi - lo);
    }
    q->sink[ith] = sink;
}

static void int8_probe_task(void *p, int ith, int nth) {
    (void)nth;
    ProbeTask *q = p;
    q->macs[ith] = q->scaled ? q->k->probe_int8_scaled(q->iters) : q->k->probe_int8(q->iters);
}

/* Median wall time of PROBE_RUNS runs of fn on the pool. */
static double median_run_time(ThreadPool *pool, ThreadTask fn, ProbeTask *q) {
    double times[PROBE_RUNS];
    for (int i = 0; i < PROBE_RUNS; i++) {
        double t0 = blv_now();
        threadpool_run(pool, fn, q);
        times[i] = blv_now() - t0;
    }
    return blv_median(times, PROBE_RUNS);
}

/* Times reading the spans (already page-aligned and whole pages); a warm-up pass first. */
static double read_spans_gbs(ThreadPool *pool, const ReadSpan *spans, int n_spans, int64_t bytes) {
    ProbeTask q = {.k = kernels(), .spans = spans, .n_spans = n_spans, .bytes = bytes};
    q.sink = calloc((size_t)threadpool_size(pool), sizeof *q.sink);
    if (!q.sink || bytes <= 0) {
        free(q.sink);
        return -1.0;
    }
    threadpool_run(pool, read_probe_task, &q);  /* warm-up */
    double t = median_run_time(pool, read_probe_task, &q);
    free(q.sink);
    return (double)bytes / t * 1e-9;
}

double probe_read_bandwidth(ThreadPool *pool, int64_t bytes) {
    int nth = threadpool_size(pool);
    bytes = align_up(bytes < 4096 * nth ? 4096 * nth : bytes, 4096);
    uint8_t *buf = aligned_alloc(4096, (size_t)bytes);
    if (!buf) return -1.0;
    memset(buf, 1, (size_t)bytes);  /* make every page resident before timing */
    ReadSpan span = {buf, bytes};
    double gbs = read_spans_gbs(pool, &span, 1, bytes);
    free(buf);
    return gbs;
}

double probe_read_spans(ThreadPool *pool, const ReadSpan *spans, int n_spans) {
    ReadSpan *inner = malloc(sizeof *inner * (size_t)(n_spans > 0 ? n_spans : 1));
    if (!inner) return -1.0;
    int64_t total = 0;
    int n = 0;
    for (int i = 0; i < n_spans; i++) {  /* the whole 4 KiB pages inside each span */
        uintptr_t lo = ((uintptr_t)spans[i].p + 4095) & ~(uintptr_t)4095;
        uintptr_t hi = ((uintptr_t)spans[i].p + (uintptr_t)spans[i].bytes) & ~(uintptr_t)4095;
        if (hi <= lo) continue;
        inner[n++] = (ReadSpan){(const void *)lo, (int64_t)(hi - lo)};
        total += (int64_t)(hi - lo);
    }
    double gbs = read_spans_gbs(pool, inner, n, total);
    free(inner);
    return gbs;
}

static double int8_probe(ThreadPool *pool, int scaled) {
    int nth = threadpool_size(pool);
    ProbeTask q = {.k = kernels(), .iters = 256, .scaled = scaled};
    if (scaled && !q.k->probe_int8_scaled) return -1.0;
    q.macs = calloc((size_t)nth, sizeof *q.macs);
    if (!q.macs) return -1.0;
    for (;;) {  /* calibrate: about 30 ms per run */
        double t0 = blv_now();
        threadpool_run(pool, int8_probe_task, &q);
        double t = blv_now() - t0;
        if (t >= 0.03 || q.iters > ((int64_t)1 << 40)) break;
        q.iters = t < 0.003 ? q.iters * 8 : (int64_t)((double)q.iters * 0.035 / t) + 1;
    }
    double t = median_run_time(pool, int8_probe_task, &q);
    int64_t macs = 0;
    for (int i = 0; i < nth; i++) macs += q.macs[i];
    free(q.macs);
    return 2.0 * (double)macs / t * 1e-9;
}

double probe_int8_peak(ThreadPool *pool) { return int8_probe(pool, 0); }
double probe_int8_block_scaled(ThreadPool *pool) { return int8_probe(pool, 1); }
