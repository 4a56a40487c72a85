/* quant_neon.c — the NEON kernel family (AArch64).
 *
 * Chosen at compile time: with -march=...+dotprod (__ARM_FEATURE_DOTPROD) the int8 dot products use
 * vdotq_s32 (SDOT); without it, dot_s8 below emulates SDOT exactly with vmull_s8 + vpaddlq_s16 (+ one
 * vpaddq_s32 so that each int32 lane holds the sum of its own 4 bytes, as SDOT's does — ggml's
 * emulation skips that step because its callers only need the total). Each kernel computes what the
 * `_ref` function or QuantKernels entry it replaces computes (quant.h); only the order of float
 * additions differs. Q4_0 weights are unpacked to signed bytes (nibble - 8), so every product is
 * signed x signed and no offset correction is needed (the packed-activation offsets are 0). */
#include "quant.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <string.h>

#if defined(__ARM_FEATURE_DOTPROD)
#define NEON_NAME "neon-dotprod"
#else
#define NEON_NAME "neon"
#endif

/* acc[i] += a[4i]*b[4i] + a[4i+1]*b[4i+1] + a[4i+2]*b[4i+2] + a[4i+3]*b[4i+3]  (SDOT) */
static inline int32x4_t dot_s8(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));  /* products of bytes 0..7 */
    int16x8_t hi = vmull_high_s8(a, b);                       /* products of bytes 8..15 */
    return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
#endif
}

static inline float fp16_neon(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* The 32 weights of a Q4_0 block as signed bytes (nibble - 8): elements 0..15, then 16..31. */
static inline void q4_0_weights(const uint8_t *qs, int8x16_t *lo, int8x16_t *hi) {
    uint8x16_t q = vld1q_u8(qs);
    *lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
    *hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
}

/* sum over blocks of int_dot(block) * dx * dy; even and odd blocks in separate accumulators. */
float vec_dot_q4_0_q8_0_neon(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y) {
    float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (int64_t b = 0; b < n / QK; b++) {
        int8x16_t lo, hi;
        q4_0_weights(x[b].qs, &lo, &hi);
        int32x4_t isum = dot_s8(dot_s8(vdupq_n_s32(0), lo, vld1q_s8(y[b].qs)), hi, vld1q_s8(y[b].qs + 16));
        acc[b & 1] = vfmaq_n_f32(acc[b & 1], vcvtq_f32_s32(isum), fp16_neon(x[b].d) * fp16_neon(y[b].d));
    }
    return vaddvq_f32(vaddq_f32(acc[0], acc[1]));
}

float vec_dot_q8_0_q8_0_neon(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y) {
    float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (int64_t b = 0; b < n / QK; b++) {
        int32x4_t isum = dot_s8(vdupq_n_s32(0), vld1q_s8(x[b].qs), vld1q_s8(y[b].qs));
        isum = dot_s8(isum, vld1q_s8(x[b].qs + 16), vld1q_s8(y[b].qs + 16));
        acc[b & 1] = vfmaq_n_f32(acc[b & 1], vcvtq_f32_s32(isum), fp16_neon(x[b].d) * fp16_neon(y[b].d));
    }
    return vaddvq_f32(vaddq_f32(acc[0], acc[1]));
}

static inline float32x4_t load_f16x4(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

/* sum x[i] * y[i]: four 4-wide accumulators, then the tail one by one. */
float vec_dot_f32_f32_neon(int64_t n, const float *x, const float *y) {
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 4; j++) acc[j] = vfmaq_f32(acc[j], vld1q_f32(x + i + 4 * j), vld1q_f32(y + i + 4 * j));
    for (; i + 4 <= n; i += 4) acc[0] = vfmaq_f32(acc[0], vld1q_f32(x + i), vld1q_f32(y + i));
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    for (; i < n; i++) sum += x[i] * y[i];
    return sum;
}

float vec_dot_f16_f32_neon(int64_t n, const uint16_t *x, const float *y) {
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 4; j++) acc[j] = vfmaq_f32(acc[j], load_f16x4(x + i + 4 * j), vld1q_f32(y + i + 4 * j));
    for (; i + 4 <= n; i += 4) acc[0] = vfmaq_f32(acc[0], load_f16x4(x + i), vld1q_f32(y + i));
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    for (; i < n; i++) sum += fp16_neon(x[i]) * y[i];
    return sum;
}

/* quantize_row_q8_0_ref 4 floats at a time, byte for byte (the same IEEE operations on each
 * element): amax with FMAXNM (skips NaN, as the ref), d = amax / 127 and id = 1 / d as scalars,
 * v = x * id, round half away from zero as truncation (FCVTZS) plus two comparisons, fp16 of d
 * with FCVTN (round to nearest even). Also the block sums. */
static void quantize_q8_0_neon(const float *x, BlockQ8_0 *y, int32_t *sums, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++) {
        float32x4_t v[8], m = vdupq_n_f32(0.0f);
        for (int h = 0; h < 8; h++) {
            v[h] = vld1q_f32(x + b * QK + 4 * h);
            m = vmaxnmq_f32(vabsq_f32(v[h]), m);
        }
        const float amax = vmaxnmvq_f32(m);
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(d))), 0);
        int32x4_t q[8], total = vdupq_n_s32(0);
        for (int h = 0; h < 8; h++) {
            float32x4_t p = vmulq_n_f32(v[h], id);
            uint32x4_t in_range = vandq_u32(vcgtq_f32(p, vdupq_n_f32(-127.5f)), vcltq_f32(p, vdupq_n_f32(127.5f)));
            float32x4_t c = vbslq_f32(in_range, p, vdupq_n_f32(0.0f));  /* out of range or NaN -> 0 */
            int32x4_t t = vcvtq_s32_f32(c);
            float32x4_t tf = vcvtq_f32_s32(t);
            uint32x4_t up = vcgeq_f32(c, vaddq_f32(tf, vdupq_n_f32(0.5f)));   /* all ones = -1 */
            uint32x4_t down = vcleq_f32(c, vsubq_f32(tf, vdupq_n_f32(0.5f)));
            q[h] = vaddq_s32(vsubq_s32(t, vreinterpretq_s32_u32(up)), vreinterpretq_s32_u32(down));
            total = vaddq_s32(total, q[h]);
        }
        for (int h = 0; h < 8; h += 2) {
            int16x8_t q16 = vcombine_s16(vmovn_s32(q[h]), vmovn_s32(q[h + 1]));
            vst1_s8(y[b].qs + 4 * h, vmovn_s16(q16));
        }
        sums[b] = vaddvq_s32(total);
    }
}

/* The 32 signed weights of block b of a quantized row, and its scale. */
static inline void row_block_weights(const uint8_t *row, int wtype, int64_t b, int8x16_t *lo, int8x16_t *hi,
                                     uint16_t *d) {
    if (wtype == TYPE_Q4_0) {
        const BlockQ4_0 *w = (const BlockQ4_0 *)row + b;
        q4_0_weights(w->qs, lo, hi);
        *d = w->d;
    } else {
        const BlockQ8_0 *w = (const BlockQ8_0 *)row + b;
        *lo = vld1q_s8(w->qs);
        *hi = vld1q_s8(w->qs + 16);
        *d = w->d;
    }
}

/* GEMV: out[t][r] for r in [r0, r1) and NT tokens t0.. at once; four rows at a time (in
 * gemv_step_rows order, quant.h) share each activation load, and each weight block is unpacked
 * once for the NT tokens. */
static inline __attribute__((always_inline)) void gemv_rows_neon(const MatmulJob *job, int64_t t0, const int NT,
                                                                 const int64_t idx[4], int nrows) {
    const uint8_t *rows[4];
    for (int i = 0; i < 4; i++) rows[i] = job->W + idx[i] * job->row_bytes;
    float32x4_t acc[4][QGEMV_MAX_TOKENS];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) acc[i][j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < job->nb; b++) {
        int8x16_t a_lo[QGEMV_MAX_TOKENS], a_hi[QGEMV_MAX_TOKENS];
        float dy[QGEMV_MAX_TOKENS];
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) {
            const BlockQ8_0 *xb = &job->xq[(t0 + j) * job->nb + b];
            a_lo[j] = vld1q_s8(xb->qs);
            a_hi[j] = vld1q_s8(xb->qs + 16);
            dy[j] = quant_fp16_table[xb->d];
        }
        for (int i = 0; i < 4; i++) {
            int8x16_t lo, hi;
            uint16_t dx;
            row_block_weights(rows[i], job->wtype, b, &lo, &hi, &dx);
            float dxf = quant_fp16_table[dx];
#pragma GCC unroll 4
            for (int j = 0; j < NT; j++) {
                int32x4_t isum = dot_s8(dot_s8(vdupq_n_s32(0), lo, a_lo[j]), hi, a_hi[j]);
                acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(isum), dxf * dy[j]);
            }
        }
    }
    float sums[QGEMV_MAX_TOKENS][4];  /* all four rows, so that acc is indexed with constants only */
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++)
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) sums[j][i] = vaddvq_f32(acc[i][j]);
    for (int j = 0; j < NT; j++)
        for (int i = 0; i < nrows; i++) job->out[(t0 + j) * job->n_out + idx[i]] = sums[j][i];
}

static void gemv_q_neon(const MatmulJob *job, int64_t t0, int nt, int64_t r0, int64_t r1) {
    int64_t rows[4];
    for (int64_t s = 0, n; (n = gemv_step_rows(r0, r1, s, rows)) > 0; s++) {
        switch (nt) {  /* each case a copy specialized for its token count */
        case 1: gemv_rows_neon(job, t0, 1, rows, (int)n); break;
        case 2: gemv_rows_neon(job, t0, 2, rows, (int)n); break;
        case 3: gemv_rows_neon(job, t0, 3, rows, (int)n); break;
        default: gemv_rows_neon(job, t0, 4, rows, (int)n); break;
        }
    }
}

/* Four f32 values of a float-typed row (f32, f16 or bf16). */
static inline float32x4_t load_row4(const uint8_t *row, int wtype, int64_t k) {
    if (wtype == TYPE_F32) return vld1q_f32((const float *)row + k);
    if (wtype == TYPE_F16) return load_f16x4((const uint16_t *)row + k);
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)row + k), 16));  /* bf16 */
}

static inline float row_elem(const uint8_t *row, int wtype, int64_t k) {
    if (wtype == TYPE_F32) return ((const float *)row)[k];
    uint16_t h;
    memcpy(&h, row + 2 * k, 2);
    return wtype == TYPE_F16 ? fp16_neon(h) : bf16_to_fp32(h);
}

/* res[j][i] = dot(W row r+i, x[t+j]), 4 rows x NT tokens (NT = 4, or 1 for a single token) in
 * accumulators: each weight vector is loaded (and converted) once for NT tokens; the tail one
 * element at a time. Missing rows and tokens repeat the first (computed, not used). */
static inline __attribute__((always_inline)) void float_tile_neon_typed(const MatmulJob *job, int64_t t, int ntok,
                                                                        int64_t r, int nrows, float res[4][4],
                                                                        const int wtype, const int NT) {
    const uint8_t *rows[4];
    const float *xs[4];
    for (int i = 0; i < 4; i++) rows[i] = job->W + (r + (i < nrows ? i : 0)) * job->row_bytes;
    for (int j = 0; j < 4; j++) xs[j] = job->x + (t + (j < ntok ? j : 0)) * job->n_in;
    const int64_t n = job->n_in, n4 = n / 4 * 4;
    float32x4_t acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) acc[i][j] = vdupq_n_f32(0.0f);
    for (int64_t k = 0; k < n4; k += 4) {
        float32x4_t x[4];
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) x[j] = vld1q_f32(xs[j] + k);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            float32x4_t w = load_row4(rows[i], wtype, k);
#pragma GCC unroll 4
            for (int j = 0; j < NT; j++) acc[i][j] = vfmaq_f32(acc[i][j], w, x[j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) {
            res[j][i] = vaddvq_f32(acc[i][j]);
            for (int64_t k = n4; k < n; k++) res[j][i] += row_elem(rows[i], wtype, k) * xs[j][k];
        }
}

static void float_tile_neon(const MatmulJob *job, int64_t t, int ntok, int64_t r, int nrows, float res[4][4]) {
    const int one = ntok == 1;
    if (job->wtype == TYPE_F32) one ? float_tile_neon_typed(job, t, ntok, r, nrows, res, TYPE_F32, 1)
                                    : float_tile_neon_typed(job, t, ntok, r, nrows, res, TYPE_F32, 4);
    else if (job->wtype == TYPE_F16) one ? float_tile_neon_typed(job, t, ntok, r, nrows, res, TYPE_F16, 1)
                                         : float_tile_neon_typed(job, t, ntok, r, nrows, res, TYPE_F16, 4);
    else one ? float_tile_neon_typed(job, t, ntok, r, nrows, res, TYPE_BF16, 1)
             : float_tile_neon_typed(job, t, ntok, r, nrows, res, TYPE_BF16, 4);
}

/* GEMM tile: signed weight bytes at tile[(row * nkb + b) * 32 + k], fp32 scales after the weights
 * at [b * 4 + row]. Rows past nrows are zero. */
static float *tile_scales(uint8_t *tile) { return (float *)(tile + QTILE_ROWS * QTILE_MAX_BLOCKS * QK); }

static void gemm_unpack_neon(const MatmulJob *job, int64_t r, int nrows, int64_t kb, int64_t nkb, uint8_t *tile) {
    float *scales = tile_scales(tile);
    for (int i = 0; i < QTILE_ROWS; i++) {
        const uint8_t *row = job->W + (r + (i < nrows ? i : 0)) * job->row_bytes;
        for (int64_t b = 0; b < nkb; b++) {
            int8x16_t lo = vdupq_n_s8(0), hi = vdupq_n_s8(0);
            uint16_t d = 0;
            if (i < nrows) row_block_weights(row, job->wtype, kb + b, &lo, &hi, &d);
            vst1q_s8((int8_t *)tile + (i * nkb + b) * QK, lo);
            vst1q_s8((int8_t *)tile + (i * nkb + b) * QK + 16, hi);
            scales[b * QTILE_ROWS + i] = quant_fp16_table[d];
        }
    }
}

/* res[j][i] (token j, row i) for 4 rows x (4 * NG) tokens (NG packed groups of G = 4). Per block:
 * for each of the 8 four-byte weight groups k4, the row's 4 bytes are loaded into every lane (ld1r)
 * and SDOT with the group's q[k4] (4 tokens x 4 bytes) adds 4 products per token; then
 * acc += float(int) * dx * dy. Lane j of a vector = token j of the group. */
static inline __attribute__((always_inline)) void tile_neon(const uint8_t *tile, const uint8_t *act0,
                                                            const uint8_t *act1, int64_t nkb,
                                                            float res[32][QTILE_ROWS], const int NG) {
    const float *dx = (const float *)(tile + QTILE_ROWS * QTILE_MAX_BLOCKS * QK);
    const uint8_t *acts[2] = {act0, act1};
    float32x4_t accf[4][2];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NG; v++) accf[i][v] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nkb; b++) {
        int32x4_t acci[4][2];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
#pragma GCC unroll 2
            for (int v = 0; v < NG; v++) acci[i][v] = vdupq_n_s32(0);
#pragma GCC unroll 8
        for (int k4 = 0; k4 < 8; k4++) {
            int8x16_t a[2];
#pragma GCC unroll 2
            for (int v = 0; v < NG; v++) a[v] = vld1q_s8((const int8_t *)acts[v] + b * QPACK_RECORD_BYTES(4) + k4 * 16);
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                int32_t w4;
                memcpy(&w4, tile + (i * nkb + b) * QK + k4 * 4, sizeof w4);
                int8x16_t w = vreinterpretq_s8_s32(vdupq_n_s32(w4));  /* ld1r */
#pragma GCC unroll 2
                for (int v = 0; v < NG; v++) acci[i][v] = dot_s8(acci[i][v], a[v], w);
            }
        }
        float32x4_t dy[2];
#pragma GCC unroll 2
        for (int v = 0; v < NG; v++) dy[v] = vld1q_f32((const float *)(acts[v] + b * QPACK_RECORD_BYTES(4) + 32 * 4));
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
#pragma GCC unroll 2
            for (int v = 0; v < NG; v++)
                accf[i][v] = vfmaq_f32(accf[i][v], vcvtq_f32_s32(acci[i][v]), vmulq_n_f32(dy[v], dx[b * 4 + i]));
    }
    float by_row[QTILE_ROWS][32];  /* a row's tokens are one vector; res is token-major */
    for (int i = 0; i < 4; i++)
        for (int v = 0; v < NG; v++) vst1q_f32(&by_row[i][4 * v], accf[i][v]);
    for (int j = 0; j < 4 * NG; j++)
        for (int i = 0; i < QTILE_ROWS; i++) res[j][i] = by_row[i][j];
}

static void gemm_tile_neon(const uint8_t *tile, const uint8_t *act0, const uint8_t *act1, int64_t nkb,
                           float res[32][QTILE_ROWS]) {
    if (act1) tile_neon(tile, act0, act1, nkb, res, 2);
    else tile_neon(tile, act0, act0, nkb, res, 1);
}

static uint64_t probe_read_neon(const uint8_t *p, int64_t bytes) {
    uint64x2_t acc[4] = {vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0)};
    for (int64_t i = 0; i < bytes; i += 256)
        for (int j = 0; j < 16; j++)
            acc[j & 3] = vaddq_u64(acc[j & 3], vld1q_u64((const uint64_t *)(p + i + 16 * j)));
    return vaddvq_u64(vaddq_u64(vaddq_u64(acc[0], acc[1]), vaddq_u64(acc[2], acc[3])));
}

/* The int8 multiply-add instruction into 16 independent accumulators: SDOT (16 multiply-adds) with
 * dotprod, otherwise SMLAL (vmlal_s8: 8 multiply-adds into int16 lanes). */
static int64_t probe_int8_neon(int64_t iters) {
    volatile int8_t seed = 3;
    const int8x16_t a = vdupq_n_s8(seed), b = vdupq_n_s8((int8_t)(seed - 5));
#if defined(__ARM_FEATURE_DOTPROD)
    int32x4_t acc[16];
    for (int j = 0; j < 16; j++) acc[j] = vdupq_n_s32(j);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) acc[j] = vdotq_s32(acc[j], a, b);
    }
    int32x4_t s = acc[0];
    for (int j = 1; j < 16; j++) s = vaddq_s32(s, acc[j]);
    volatile int32_t sink = vaddvq_s32(s);
    (void)sink;
    return iters * 16 * 16;
#else
    int16x8_t acc[16];
    for (int j = 0; j < 16; j++) acc[j] = vdupq_n_s16((int16_t)j);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) acc[j] = vmlal_s8(acc[j], vget_low_s8(a), vget_low_s8(b));
    }
    int16x8_t s = acc[0];
    for (int j = 1; j < 16; j++) s = vaddq_s16(s, acc[j]);
    volatile int32_t sink = vaddvq_s16(s);
    (void)sink;
    return iters * 16 * 8;
#endif
}

const QuantKernels quant_kernels_neon = {
    .name = NEON_NAME,
    .dot_q4_0_q8_0 = vec_dot_q4_0_q8_0_neon,
    .dot_q8_0_q8_0 = vec_dot_q8_0_q8_0_neon,
    .dot_f16_f32 = vec_dot_f16_f32_neon,
    .dot_f32_f32 = vec_dot_f32_f32_neon,
    .quantize_q8_0 = quantize_q8_0_neon,
    .gemv_q = gemv_q_neon,
    .float_tile = float_tile_neon,
    .gemm_group = 4,
    .q4_0_offset = 0,
    .q8_0_offset = 0,
    .gemm_unpack = gemm_unpack_neon,
    .gemm_tile = gemm_tile_neon,
    .probe_read = probe_read_neon,
    .probe_int8 = probe_int8_neon,
};

#endif /* __aarch64__ && __ARM_NEON */
