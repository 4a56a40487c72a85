/* ops_neon.c — the NEON family of ops.h (aarch64): a vector layer of 4 lanes, then the shared code of
 * ops_simd.h instantiated over it. Chosen at compile time; the int8 dot products use vdotq_s32 when
 * the target has the dotprod extension (-march=armv8.2-a+dotprod and later) and widening multiplies
 * (vmull_s8 + pairwise adds) otherwise — both exact.
 *
 * It reproduces the scalar reference bit for bit (ops.h, "Exactness"). Float max/min are the IEEE
 * maxNum/minNum forms (vmaxnmq/vminnmq), which return the number when one operand is NaN — what the
 * reference's clamps do; they can differ from x86 only in the sign of a zero maximum, which no result
 * depends on (e^(±0) = 1; amax is a maximum of absolute values). */
#include "ops_internal.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define TGT
#define L 4
#define VF float32x4_t
#define VI int32x4_t
#define FN(name) name##_neon
#define FAMILY_NAME "neon"

INLINE VF vf_zero(void) { return vdupq_n_f32(0.0f); }
INLINE VF vf_set1(float x) { return vdupq_n_f32(x); }
INLINE VF vf_load(const float *p) { return vld1q_f32(p); }
INLINE void vf_store(float *p, VF v) { vst1q_f32(p, v); }
/* L halves (IEEE binary16) converted to floats, exactly */
INLINE VF vf_load_h(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
INLINE VF vf_load_n(const float *p, int n) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(t, p, (size_t)n * sizeof(float));
    return vld1q_f32(t);
}
INLINE VF vf_load_n_fill(const float *p, int n, float fill) {
    float t[4] = {fill, fill, fill, fill};
    memcpy(t, p, (size_t)n * sizeof(float));
    return vld1q_f32(t);
}
INLINE void vf_store_n(float *p, VF v, int n) {
    float t[4];
    vst1q_f32(t, v);
    memcpy(p, t, (size_t)n * sizeof(float));
}
INLINE uint32x4_t lanes_below(int n) {
    const uint32_t idx[4] = {0, 1, 2, 3};
    return vcltq_u32(vld1q_u32(idx), vdupq_n_u32((uint32_t)n));
}
INLINE VF vf_keep_n(VF v, int n) { return vbslq_f32(lanes_below(n), v, vdupq_n_f32(0.0f)); }
INLINE VF vf_add(VF a, VF b) { return vaddq_f32(a, b); }
INLINE VF vf_sub(VF a, VF b) { return vsubq_f32(a, b); }
INLINE VF vf_mul(VF a, VF b) { return vmulq_f32(a, b); }
INLINE VF vf_div(VF a, VF b) { return vdivq_f32(a, b); }
INLINE VF vf_fma(VF a, VF b, VF c) { return vfmaq_f32(c, a, b); }  /* a·b + c, fused */
INLINE VF vf_max(VF a, VF b) { return vmaxnmq_f32(a, b); }
INLINE VF vf_abs(VF a) { return vabsq_f32(a); }
INLINE VF vf_neg(VF a) { return vnegq_f32(a); }
INLINE VF vf_select_ge0(VF x, VF pos, VF neg) { return vbslq_f32(vcgeq_f32(x, vdupq_n_f32(0.0f)), pos, neg); }
INLINE VF vf_div_or_zero(VF num, VF den) {
    return vbslq_f32(vcgtq_f32(den, vdupq_n_f32(0.0f)), vdivq_f32(num, den), vdupq_n_f32(0.0f));
}
INLINE VI vf_rne_clamp(VF x, float lo, float hi) {
    x = vmaxnmq_f32(x, vdupq_n_f32(lo));
    x = vminnmq_f32(x, vdupq_n_f32(hi));
    return vcvtnq_s32_f32(x);  /* round to nearest, ties to even */
}
INLINE VI vf_rne(VF x) { return vcvtnq_s32_f32(x); }
INLINE float vf_hmax(VF v) { return vmaxnmvq_f32(v); }
INLINE float vf_tree_sum(VF v) {  /* lanes k += k + 2, then lane 0 + lane 1 */
    float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(s, 0) + vget_lane_f32(s, 1);
}

/* e^x as ops_exp1_ref: er and t (whose low mantissa bits hold n) */
INLINE VF exp_er(VF xc, VF *t_out) {
    VF t = vfmaq_f32(vdupq_n_f32(OPS_SHIFTER), xc, vdupq_n_f32(OPS_LOG2E));
    *t_out = t;
    VF n = vsubq_f32(t, vdupq_n_f32(OPS_SHIFTER));
    VF r = vfmaq_f32(xc, n, vdupq_n_f32(-OPS_LN2_HI));
    r = vfmaq_f32(r, n, vdupq_n_f32(-OPS_LN2_LO));
    VF p = vdupq_n_f32(OPS_EXP_P0);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_P1), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_P2), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_P3), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_P4), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_P5), p, r);
    VF r2 = vmulq_f32(r, r);
    return vaddq_f32(vfmaq_f32(r, p, r2), vdupq_n_f32(1.0f));
}
INLINE VF vf_exp(VF x) {
    VF xc = vminnmq_f32(x, vdupq_n_f32(OPS_EXP_HI)), t;
    xc = vmaxnmq_f32(xc, vdupq_n_f32(OPS_EXP_LO));
    VF er = exp_er(xc, &t);
    uint32x4_t nb = vaddq_u32(vsubq_u32(vreinterpretq_u32_f32(t), vdupq_n_u32(OPS_SHIFTER_BITS)), vdupq_n_u32(128));
    uint32x4_t n1 = vshrq_n_u32(nb, 1), n2 = vsubq_u32(nb, n1);
    VF s1 = vreinterpretq_f32_u32(vshlq_n_u32(vaddq_u32(n1, vdupq_n_u32(63)), 23));
    VF s2 = vreinterpretq_f32_u32(vshlq_n_u32(vaddq_u32(n2, vdupq_n_u32(63)), 23));
    VF y = vmulq_f32(vmulq_f32(er, s1), s2);
    y = vbslq_f32(vcgtq_f32(x, vdupq_n_f32(OPS_EXP_HI)), vdupq_n_f32(INFINITY), y);
    return vbslq_f32(vcltq_f32(x, vdupq_n_f32(OPS_EXP_LO)), vdupq_n_f32(0.0f), y);
}
/* x ≤ 88: one exact scaling (or one rounding into the subnormals, as the reference's second one) */
INLINE VF vf_exp_lo(VF x) {
    VF t, er = exp_er(vmaxnmq_f32(x, vdupq_n_f32(OPS_EXP_LO)), &t);
    uint32x4_t e = vaddq_u32(vreinterpretq_u32_f32(t), vdupq_n_u32(127u - OPS_SHIFTER_BITS));
    VF y = vmulq_f32(er, vreinterpretq_f32_u32(vshlq_n_u32(e, 23)));
    return vbslq_f32(vcltq_f32(x, vdupq_n_f32(OPS_EXP_LO)), vdupq_n_f32(0.0f), y);
}
/* 2^x as ops_exp2_ref; 2^n as two exact power-of-two factors (each ≥ 2^-75), one rounding (ldexpf) */
INLINE VF vf_exp2(VF x) {
    VF xc = vmaxnmq_f32(x, vdupq_n_f32(OPS_EXP2_LO));
    xc = vminnmq_f32(xc, vdupq_n_f32(OPS_EXP2_HI));
    VF t = vaddq_f32(xc, vdupq_n_f32(OPS_SHIFTER));
    VF n = vsubq_f32(t, vdupq_n_f32(OPS_SHIFTER));
    VF r = vsubq_f32(xc, n);
    VF p = vdupq_n_f32(OPS_EXP2_C5);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP2_C4), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP2_C3), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP2_C2), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP2_C1), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    int32x4_t ni = vreinterpretq_s32_u32(vsubq_u32(vreinterpretq_u32_f32(t), vdupq_n_u32(OPS_SHIFTER_BITS)));
    int32x4_t n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    VF s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, vdupq_n_s32(127)), 23));
    VF s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, vdupq_n_s32(127)), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}
INLINE VF vf_exp2_le(VF x) { return vf_exp2(x); }
INLINE void vf_transpose(VF *r) {
    float32x4x2_t a = vtrnq_f32(r[0], r[1]), b = vtrnq_f32(r[2], r[3]);
    r[0] = vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0]));
    r[1] = vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1]));
    r[2] = vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0]));
    r[3] = vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1]));
}

INLINE VI vi_zero(void) { return vdupq_n_s32(0); }
INLINE VI vi_set1(int32_t x) { return vdupq_n_s32(x); }
INLINE VI vi_add(VI a, VI b) { return vaddq_s32(a, b); }
INLINE VI vi_xor(VI a, VI b) { return veorq_s32(a, b); }
INLINE VI vi_load(const void *p) { return vreinterpretq_s32_s8(vld1q_s8((const int8_t *)p)); }
INLINE void vi_store(void *p, VI v) { vst1q_s8((int8_t *)p, vreinterpretq_s8_s32(v)); }
INLINE void vi_store_n(void *p, VI v, int n) {
    int32_t t[4];
    vst1q_s32(t, v);
    memcpy(p, t, (size_t)n * sizeof(int32_t));
}
INLINE VI vi_bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return vdupq_n_s32(v);
}
INLINE VF vi_cvt(VI v) { return vcvtq_f32_s32(v); }
INLINE int32_t vi_hsum(VI v) { return vaddvq_s32(v); }
INLINE VI vi_pack4(VI r0, VI r1, VI r2, VI r3) {
    const VI ff = vdupq_n_s32(0xFF);
    VI w = vandq_s32(r0, ff);
    w = vorrq_s32(w, vshlq_n_s32(vandq_s32(r1, ff), 8));
    w = vorrq_s32(w, vshlq_n_s32(vandq_s32(r2, ff), 16));
    return vorrq_s32(w, vshlq_n_s32(r3, 24));
}
INLINE VI vi_pack4u(VI r0, VI r1, VI r2, VI r3) {
    VI w = vorrq_s32(r0, vshlq_n_s32(r1, 8));
    return vorrq_s32(w, vorrq_s32(vshlq_n_s32(r2, 16), vshlq_n_s32(r3, 24)));
}
INLINE void vi_store_bytes(int8_t *p, VI v, int n) {
    int16x4_t h = vmovn_s32(v);
    int8x8_t b = vmovn_s16(vcombine_s16(h, h));
    int8_t t[8];
    vst1_s8(t, b);
    memcpy(p, t, (size_t)n);
}

#if defined(__ARM_FEATURE_DOTPROD)
INLINE VI dot4(VI acc, VI a, VI b) { return vdotq_s32(acc, vreinterpretq_s8_s32(a), vreinterpretq_s8_s32(b)); }
#define NK_Q8 5  /* 5 keys × 4 query vectors: 20 accumulators (with 6, GCC spills two per step) */
#define ND_Q8 4
#else
/* the 4-byte dot products from widening multiplies: |product| ≤ 127², pairs summed in int32 */
INLINE VI dot4(VI acc, VI a, VI b) {
    int8x16_t x = vreinterpretq_s8_s32(a), y = vreinterpretq_s8_s32(b);
    int16x8_t lo = vmull_s8(vget_low_s8(x), vget_low_s8(y)), hi = vmull_high_s8(x, y);
    return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
}
#define NK_Q8 4
#define ND_Q8 4
#endif
INLINE VI dot4_qk(VI acc, VI a, VI b) { return dot4(acc, a, b); }
INLINE VI dot4_pv(VI acc, VI a, VI b) { return dot4(acc, a, b); }
INLINE VI dot4_qk_b(VI acc, VI a, const void *p) { return dot4_qk(acc, a, vi_bcast4(p)); }

#define QK_XOR 0
#define QK_CORR 0
#define QVT_Q8 4
#define NK_F32 6
#define ND_F32 6
#define KV_ND 4            /* value vectors per decode-attention tile (ops_attn_kv_f16) */
#define KV_HEADS 5         /* query heads per decode-attention tile (<= 6; KV_HEADS·KV_ND + KV_ND + 1 registers) */
#define KV_KBLOCK 32        /* keys per decode-attention P·V block */
#define KV_QK_HEADS 6       /* query heads per decode-attention score step (accumulators: 24 of the 32 registers) */
#define QVT_F32 4

#include "ops_simd.h"

#endif
