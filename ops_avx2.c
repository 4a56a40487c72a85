/* ops_avx2.c — the AVX2 (+FMA) family of ops.h: a vector layer of 8 lanes, then the shared code of
 * ops_simd.h instantiated over it (ops_avx512.c is the AVX-512 family, ops_neon.c NEON).
 *
 * Every function carries a target attribute, so the default build (no -march) contains it and still
 * runs on any x86-64; ops.c calls it only after checking the CPU and the OS's vector state. It
 * reproduces the scalar reference bit for bit (ops.h, "Exactness"): x86 max/min return their second
 * operand when the first is NaN, which is what the reference's clamps do.
 *
 * The int8 dot products: vpmaddubsw multiplies unsigned by signed bytes into saturating int16 pairs.
 * The scores use the sign trick |q|·(k·sign q) (pairs ≤ 2·127·127 < 2^15); p·v multiplies p (0..127)
 * by v directly. Pairs are widened by vpmaddwd, so the int32 sums are exact. */
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

/* ================================ AVX2 =========================================================== */

#define TGT __attribute__((target("avx2,fma,f16c")))
#define L 8
#define VF __m256
#define VI __m256i
#define FN(name) name##_avx2
#define FAMILY_NAME "avx2"

TGT INLINE __m256i m8(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
TGT INLINE VF vf_zero(void) { return _mm256_setzero_ps(); }
TGT INLINE VF vf_set1(float x) { return _mm256_set1_ps(x); }
TGT INLINE VF vf_load(const float *p) { return _mm256_loadu_ps(p); }
TGT INLINE void vf_store(float *p, VF v) { _mm256_storeu_ps(p, v); }
/* L halves (IEEE binary16) converted to floats, exactly */
TGT INLINE VF vf_load_h(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
TGT INLINE VF vf_load_n(const float *p, int n) { return _mm256_maskload_ps(p, m8(n)); }
TGT INLINE VF vf_load_n_fill(const float *p, int n, float fill) {
    __m256i m = m8(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
TGT INLINE void vf_store_n(float *p, VF v, int n) { _mm256_maskstore_ps(p, m8(n), v); }
TGT INLINE VF vf_keep_n(VF v, int n) { return _mm256_and_ps(v, _mm256_castsi256_ps(m8(n))); }
TGT INLINE VF vf_add(VF a, VF b) { return _mm256_add_ps(a, b); }
TGT INLINE VF vf_sub(VF a, VF b) { return _mm256_sub_ps(a, b); }
TGT INLINE VF vf_mul(VF a, VF b) { return _mm256_mul_ps(a, b); }
TGT INLINE VF vf_div(VF a, VF b) { return _mm256_div_ps(a, b); }
TGT INLINE VF vf_fma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
TGT INLINE VF vf_max(VF a, VF b) { return _mm256_max_ps(a, b); }
TGT INLINE VF vf_abs(VF a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF))); }
TGT INLINE VF vf_neg(VF a) { return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32((int32_t)0x80000000u))); }
TGT INLINE VF vf_select_ge0(VF x, VF pos, VF neg) {
    return _mm256_blendv_ps(neg, pos, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
}
TGT INLINE VF vf_div_or_zero(VF num, VF den) {
    return _mm256_and_ps(_mm256_div_ps(num, den), _mm256_cmp_ps(den, _mm256_setzero_ps(), _CMP_GT_OQ));
}
TGT INLINE VI vf_rne_clamp(VF x, float lo, float hi) {
    x = _mm256_max_ps(x, _mm256_set1_ps(lo));
    x = _mm256_min_ps(x, _mm256_set1_ps(hi));
    return _mm256_cvtps_epi32(x);
}
TGT INLINE VI vf_rne(VF x) { return _mm256_cvtps_epi32(x); }
TGT INLINE float vf_hmax(VF v) {
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
TGT INLINE float vf_tree_sum(VF v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
/* e^x as ops_exp1_ref, step for step. vf_exp_lo: x ≤ 88 (n ≤ 127), where er·2^n is one exact scaling
 * (or one rounding into the subnormals, as the reference's second scaling) and no overflow handling
 * is needed (softmax arguments are ≤ 0). */
TGT INLINE VF exp_er(VF xc, VF *t_out) {
    VF t = _mm256_fmadd_ps(xc, _mm256_set1_ps(OPS_LOG2E), _mm256_set1_ps(OPS_SHIFTER));
    *t_out = t;
    VF n = _mm256_sub_ps(t, _mm256_set1_ps(OPS_SHIFTER));
    VF r = _mm256_fmadd_ps(n, _mm256_set1_ps(-OPS_LN2_HI), xc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-OPS_LN2_LO), r);
    VF p = _mm256_set1_ps(OPS_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_P5));
    VF r2 = _mm256_mul_ps(r, r);
    return _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
}
TGT INLINE VF vf_exp(VF x) {
    VF xc = _mm256_min_ps(x, _mm256_set1_ps(OPS_EXP_HI)), t;
    xc = _mm256_max_ps(xc, _mm256_set1_ps(OPS_EXP_LO));
    VF er = exp_er(xc, &t);
    __m256i nb = _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32((int32_t)OPS_SHIFTER_BITS)),
                                  _mm256_set1_epi32(128));
    __m256i n1 = _mm256_srli_epi32(nb, 1), n2 = _mm256_sub_epi32(nb, n1);
    VF s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(63)), 23));
    VF s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(63)), 23));
    VF y = _mm256_mul_ps(_mm256_mul_ps(er, s1), s2);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(OPS_EXP_HI), _CMP_GT_OQ));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(OPS_EXP_LO), _CMP_LT_OQ), y);
}
TGT INLINE VF vf_exp_lo(VF x) {
    VF t, er = exp_er(_mm256_max_ps(x, _mm256_set1_ps(OPS_EXP_LO)), &t);
    __m256i e = _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32((int32_t)(127u - OPS_SHIFTER_BITS)));
    VF y = _mm256_mul_ps(er, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(OPS_EXP_LO), _CMP_LT_OQ), y);
}

/* 2^x as ops_exp2_ref; 2^n as two exact power-of-two factors (n = n1 + n2, each ≥ -75): the second
 * product rounds once, as ldexpf */
TGT INLINE VF vf_exp2(VF x) {
    VF xc = _mm256_max_ps(x, _mm256_set1_ps(OPS_EXP2_LO));
    xc = _mm256_min_ps(xc, _mm256_set1_ps(OPS_EXP2_HI));
    VF t = _mm256_add_ps(xc, _mm256_set1_ps(OPS_SHIFTER));
    VF n = _mm256_sub_ps(t, _mm256_set1_ps(OPS_SHIFTER));
    VF r = _mm256_sub_ps(xc, n);
    VF p = _mm256_set1_ps(OPS_EXP2_C5);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP2_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP2_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP2_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP2_C1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32((int32_t)OPS_SHIFTER_BITS));
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    VF s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    VF s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* r[i][j] → r[j][i] for an 8 × 8 block */
TGT INLINE void vf_transpose(VF *r) {
    VF t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) {
        u[4 * k + 0] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}
TGT INLINE VI vi_xor(VI a, VI b) { return _mm256_xor_si256(a, b); }

TGT INLINE VF vf_exp2_le(VF x) { return vf_exp2(x); }

TGT INLINE VI vi_zero(void) { return _mm256_setzero_si256(); }
TGT INLINE VI vi_set1(int32_t x) { return _mm256_set1_epi32(x); }
TGT INLINE VI vi_add(VI a, VI b) { return _mm256_add_epi32(a, b); }
TGT INLINE VI vi_load(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
TGT INLINE void vi_store(void *p, VI v) { _mm256_storeu_si256((__m256i *)p, v); }
TGT INLINE void vi_store_n(void *p, VI v, int n) { _mm256_maskstore_epi32((int *)p, m8(n), v); }
TGT INLINE VI vi_bcast4(const void *p) { return _mm256_set1_epi32(load_i32(p)); }
TGT INLINE VF vi_cvt(VI v) { return _mm256_cvtepi32_ps(v); }
TGT INLINE int32_t vi_hsum(VI v) {
    __m128i q = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0x4E));
    q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0xB1));
    return _mm_cvtsi128_si32(q);
}
TGT INLINE VI vi_pack4(VI r0, VI r1, VI r2, VI r3) {
    const VI ff = _mm256_set1_epi32(0xFF);
    VI w = _mm256_and_si256(r0, ff);
    w = _mm256_or_si256(w, _mm256_slli_epi32(_mm256_and_si256(r1, ff), 8));
    w = _mm256_or_si256(w, _mm256_slli_epi32(_mm256_and_si256(r2, ff), 16));
    return _mm256_or_si256(w, _mm256_slli_epi32(r3, 24));
}
TGT INLINE VI vi_pack4u(VI r0, VI r1, VI r2, VI r3) {
    VI w = _mm256_or_si256(r0, _mm256_slli_epi32(r1, 8));
    return _mm256_or_si256(w, _mm256_or_si256(_mm256_slli_epi32(r2, 16), _mm256_slli_epi32(r3, 24)));
}
TGT INLINE void vi_store_bytes(int8_t *p, VI v, int n) {
    if (n == L) {  /* the low bytes of the 8 lanes as one 8-byte store (later 4-byte loads forward from it) */
        const __m256i low = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                             0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        __m256i b = _mm256_shuffle_epi8(v, low);
        _mm_storel_epi64((__m128i *)p, _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
        return;
    }
    int32_t tmp[8];
    _mm256_storeu_si256((__m256i *)tmp, v);
    for (int i = 0; i < n; i++) p[i] = (int8_t)tmp[i];
}
/* sign trick: |a|·(b·sign a), pairs ≤ 2·127·127 */
TGT INLINE VI dot4_qk(VI acc, VI a, VI b) {
    __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}
TGT INLINE VI dot4_pv(VI acc, VI a, VI b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
}
TGT INLINE VI dot4_qk_b(VI acc, VI a, const void *p) { return dot4_qk(acc, a, vi_bcast4(p)); }

#define QK_XOR 0
#define QK_CORR 0
#define NK_Q8 3
#define QVT_Q8 2
#define ND_Q8 3
#define NK_F32 6
#define ND_F32 6
#define KV_ND 2            /* value vectors per decode-attention tile (ops_attn_kv_f16) */
#define KV_HEADS 6         /* query heads per decode-attention tile (<= 6; KV_HEADS·KV_ND + KV_ND + 1 registers) */
#define KV_KBLOCK 32        /* keys per decode-attention P·V block */
#define KV_QK_HEADS 3       /* query heads per decode-attention score step (accumulators: 12 of the 16 registers) */
#define QVT_F32 2

#include "ops_simd.h"

#endif
