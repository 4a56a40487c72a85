/* ops_avx512.c — the AVX-512 (F/BW/VL + VNNI) family of ops.h: a vector layer of 16 lanes, then the
 * shared code of ops_simd.h instantiated over it (ops_avx2.c is the AVX2 family, ops_neon.c NEON).
 *
 * Every function carries a target attribute, so the default build (no -march) contains it and still
 * runs on any x86-64; ops.c calls it only after checking the CPU and the OS's vector state. It
 * reproduces the scalar reference bit for bit (ops.h, "Exactness"): x86 max/min return their second
 * operand when the first is NaN, which is what the reference's clamps do; vscalefps is ldexpf.
 *
 * The int8 dot products: VNNI vpdpbusd multiplies unsigned by signed bytes, so the packed queries are
 * stored XOR 0x80 (q + 128) and the score accumulators start at -128·Σk; probabilities are 0..127
 * and need nothing. */
#include "ops_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

static inline int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ================================ AVX-512 ========================================================= */

#define TGT __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define L 16
#define VF __m512
#define VI __m512i
#define FN(name) name##_avx512
#define FAMILY_NAME "avx512"

TGT INLINE __mmask16 m16(int n) { return (__mmask16)((1u << n) - 1); }
TGT INLINE VF vf_zero(void) { return _mm512_setzero_ps(); }
TGT INLINE VF vf_set1(float x) { return _mm512_set1_ps(x); }
TGT INLINE VF vf_load(const float *p) { return _mm512_loadu_ps(p); }
TGT INLINE void vf_store(float *p, VF v) { _mm512_storeu_ps(p, v); }
/* L halves (IEEE binary16) converted to floats, exactly */
TGT INLINE VF vf_load_h(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
TGT INLINE VF vf_load_n(const float *p, int n) { return _mm512_maskz_loadu_ps(m16(n), p); }
TGT INLINE VF vf_load_n_fill(const float *p, int n, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m16(n), p);
}
TGT INLINE void vf_store_n(float *p, VF v, int n) { _mm512_mask_storeu_ps(p, m16(n), v); }
TGT INLINE VF vf_keep_n(VF v, int n) { return _mm512_maskz_mov_ps(m16(n), v); }
TGT INLINE VF vf_add(VF a, VF b) { return _mm512_add_ps(a, b); }
TGT INLINE VF vf_sub(VF a, VF b) { return _mm512_sub_ps(a, b); }
TGT INLINE VF vf_mul(VF a, VF b) { return _mm512_mul_ps(a, b); }
TGT INLINE VF vf_div(VF a, VF b) { return _mm512_div_ps(a, b); }
TGT INLINE VF vf_fma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
TGT INLINE VF vf_max(VF a, VF b) { return _mm512_max_ps(a, b); }
TGT INLINE VF vf_abs(VF a) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7FFFFFFF)));
}
TGT INLINE VF vf_neg(VF a) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32((int32_t)0x80000000u)));
}
TGT INLINE VF vf_select_ge0(VF x, VF pos, VF neg) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), neg, pos);
}
TGT INLINE VF vf_div_or_zero(VF num, VF den) {
    return _mm512_maskz_div_ps(_mm512_cmp_ps_mask(den, _mm512_setzero_ps(), _CMP_GT_OQ), num, den);
}
TGT INLINE VI vf_rne_clamp(VF x, float lo, float hi) {
    x = _mm512_max_ps(x, _mm512_set1_ps(lo));
    x = _mm512_min_ps(x, _mm512_set1_ps(hi));
    return _mm512_cvtps_epi32(x);  /* MXCSR default: round to nearest even */
}
TGT INLINE VI vf_rne(VF x) { return _mm512_cvtps_epi32(x); }
TGT INLINE float vf_hmax(VF v) { return _mm512_reduce_max_ps(v); }
/* lanes k += k + s for s = 8, 4, 2, 1; lane 0 */
TGT INLINE float vf_tree_sum(VF v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
/* e^x as ops_exp1_ref: the reduction and polynomial are the same operations; er·2^n is one vscalefps
 * (the reference's two exact scalings give the same single rounding). x ≤ 88 (n ≤ 127) for vf_exp_lo,
 * which skips the overflow handling (softmax arguments are ≤ 0). */
TGT INLINE VF exp_core(VF x, VF xc) {
    VF t = _mm512_fmadd_ps(xc, _mm512_set1_ps(OPS_LOG2E), _mm512_set1_ps(OPS_SHIFTER));
    VF n = _mm512_sub_ps(t, _mm512_set1_ps(OPS_SHIFTER));
    VF r = _mm512_fmadd_ps(n, _mm512_set1_ps(-OPS_LN2_HI), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-OPS_LN2_LO), r);
    VF p = _mm512_set1_ps(OPS_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_P5));
    VF r2 = _mm512_mul_ps(r, r);
    VF er = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
    /* below OPS_EXP_LO: 0 (NaN keeps its lane: the comparison is unordered-true) */
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(OPS_EXP_LO), _CMP_NLT_UQ), er, n);
}
TGT INLINE VF vf_exp(VF x) {
    VF xc = _mm512_min_ps(x, _mm512_set1_ps(OPS_EXP_HI));
    xc = _mm512_max_ps(xc, _mm512_set1_ps(OPS_EXP_LO));
    VF y = exp_core(x, xc);
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(OPS_EXP_HI), _CMP_GT_OQ), _mm512_set1_ps(INFINITY));
}
TGT INLINE VF vf_exp_lo(VF x) { return exp_core(x, _mm512_max_ps(x, _mm512_set1_ps(OPS_EXP_LO))); }
/* 2^x as ops_exp2_ref; n = rint(x) by vrndscaleps (the same integer as the reference's shifter),
 * 2^n by vscalefps (= ldexpf). vf_exp2_le: x ≤ 127, where the upper clamp has no effect. */
TGT INLINE VF exp2_core(VF xc) {
    VF n = _mm512_roundscale_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    VF r = _mm512_sub_ps(xc, n);
    VF p = _mm512_set1_ps(OPS_EXP2_C5);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP2_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP2_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP2_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP2_C1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
TGT INLINE VF vf_exp2(VF x) {
    VF xc = _mm512_max_ps(x, _mm512_set1_ps(OPS_EXP2_LO));
    return exp2_core(_mm512_min_ps(xc, _mm512_set1_ps(OPS_EXP2_HI)));
}
TGT INLINE VF vf_exp2_le(VF x) { return exp2_core(_mm512_max_ps(x, _mm512_set1_ps(OPS_EXP2_LO))); }

/* r[i][j] → r[j][i] for a 16 × 16 block (4 × 4 transposes inside 128-bit lanes, then of the lanes) */
TGT INLINE void vf_transpose(VF *r) {
    VF t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        u[4 * k + 0] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {  /* u[j], u[4+j], u[8+j], u[12+j]: lane L holds column 4L + j */
        VF x0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44), x1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
        VF x2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44), x3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
        r[j] = _mm512_shuffle_f32x4(x0, x2, 0x88);
        r[4 + j] = _mm512_shuffle_f32x4(x0, x2, 0xDD);
        r[8 + j] = _mm512_shuffle_f32x4(x1, x3, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(x1, x3, 0xDD);
    }
}
TGT INLINE VI vi_xor(VI a, VI b) { return _mm512_xor_si512(a, b); }

TGT INLINE VI vi_zero(void) { return _mm512_setzero_si512(); }
TGT INLINE VI vi_set1(int32_t x) { return _mm512_set1_epi32(x); }
TGT INLINE VI vi_add(VI a, VI b) { return _mm512_add_epi32(a, b); }
TGT INLINE VI vi_load(const void *p) { return _mm512_loadu_si512(p); }
TGT INLINE void vi_store(void *p, VI v) { _mm512_storeu_si512(p, v); }
TGT INLINE void vi_store_n(void *p, VI v, int n) { _mm512_mask_storeu_epi32(p, m16(n), v); }
TGT INLINE VI vi_bcast4(const void *p) { return _mm512_set1_epi32(load_i32(p)); }
TGT INLINE VF vi_cvt(VI v) { return _mm512_cvtepi32_ps(v); }
TGT INLINE int32_t vi_hsum(VI v) { return _mm512_reduce_add_epi32(v); }
/* lane i: bytes r0[i], r1[i], r2[i], r3[i] (each in -128..127) */
TGT INLINE VI vi_pack4(VI r0, VI r1, VI r2, VI r3) {
    const VI ff = _mm512_set1_epi32(0xFF);
    VI w = _mm512_and_si512(r0, ff);
    w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(r1, ff), 8));
    w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_and_si512(r2, ff), 16));
    return _mm512_or_si512(w, _mm512_slli_epi32(r3, 24));
}
/* the same for values 0..127 */
TGT INLINE VI vi_pack4u(VI r0, VI r1, VI r2, VI r3) {
    VI w = _mm512_or_si512(r0, _mm512_slli_epi32(r1, 8));
    return _mm512_or_si512(w, _mm512_or_si512(_mm512_slli_epi32(r2, 16), _mm512_slli_epi32(r3, 24)));
}
TGT INLINE void vi_store_bytes(int8_t *p, VI v, int n) { _mm_mask_storeu_epi8(p, m16(n), _mm512_cvtepi32_epi8(v)); }
/* vpdpbusd acc += a (unsigned bytes) · b (signed bytes), as _mm512_dpbusd_epi32(acc, a, b). Written as
 * inline assembly with the accumulator tied ("+v"): GCC 12 copies every accumulator of the
 * intrinsic's version through another register (and spills) once a tile has more than a few. */
TGT INLINE VI dpbusd(VI acc, VI a, VI b) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}
TGT INLINE VI dot4_qk(VI acc, VI a, VI b) { return dpbusd(acc, a, b); }
TGT INLINE VI dot4_pv(VI acc, VI a, VI b) { return dpbusd(acc, a, b); }
/* vpdpbusd with the 4 bytes at p broadcast by the instruction itself ({1to16} memory operand; p
 * need not be aligned) */
typedef int32_t unaligned_i32 __attribute__((aligned(1), may_alias));
TGT INLINE VI dot4_qk_b(VI acc, VI a, const void *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*(const unaligned_i32 *)p));
    return acc;
}

#define QK_XOR 0x80
#define QK_CORR (-128)
#define NK_Q8 12
#define QVT_Q8 2
#define ND_Q8 12
#define NK_F32 12
#define ND_F32 12
#define KV_ND 4            /* value vectors per decode-attention tile (ops_attn_kv_f16) */
#define KV_HEADS 5         /* query heads per decode-attention tile (<= 6; KV_HEADS·KV_ND + KV_ND + 1 registers) */
#define KV_KBLOCK 32        /* keys per decode-attention P·V block */
#define KV_QK_HEADS 6       /* query heads per decode-attention score step (accumulators: 24 of the 32 registers) */
#define QVT_F32 2

#include "ops_simd.h"

#endif
