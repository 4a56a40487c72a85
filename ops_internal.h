/* ops_internal.h — what ops.c shares with its per-ISA files (ops_x86.c, ops_neon.c): the constants of
 * the approximations, the scalar building blocks, and the attention work layout. Nothing else needs
 * this header. */
#ifndef BLUELMV_OPS_INTERNAL_H
#define BLUELMV_OPS_INTERNAL_H

#include <stdint.h>

#include "ops.h"
#include "quant.h"  /* fp16_to_fp32 */

/* The Q8_0 decode attention's work area (ops_attn_kv_q8_work_bytes): the scores, as the F16 kernel's,
 * then from this byte offset per (head, 32-dimension block) the query's scale (float) and, after
 * all of those, its code-sum correction (int32). */
static inline int64_t ops_kv_q8_query_offset(int64_t n, int64_t group, int64_t hd) {
    return (ops_attn_kv_work_bytes(n, group, hd) + 63) / 64 * 64;
}

/* exp: domain, reduction by ln 2 (ln2 = LN2_HI + LN2_LO, LN2_HI the float nearest ln 2: the FMA makes
 * x - n·LN2_HI exact before rounding), and Cephes expf's polynomial for e^r on [-ln2/2, ln2/2]:
 * e^r ≈ 1 + r + r²·P(r). */
#define OPS_EXP_HI 88.72283935546875f     /* the float nearest ln(FLT_MAX); above: +inf */
#define OPS_EXP_LO (-87.3365478515625f)   /* just below ln(FLT_MIN); below: 0 */
#define OPS_LOG2E 1.44269502162933349609375f
#define OPS_SHIFTER 12582912.0f           /* 1.5·2^23 */
#define OPS_SHIFTER_BITS 0x4B400000u
#define OPS_LN2_HI 0.693147182464599609375f
#define OPS_LN2_LO (-1.904654323148236e-09f)
#define OPS_EXP_P0 1.9875691500e-4f
#define OPS_EXP_P1 1.3981999507e-3f
#define OPS_EXP_P2 8.3334519073e-3f
#define OPS_EXP_P3 4.1665795894e-2f
#define OPS_EXP_P4 1.6666665459e-1f
#define OPS_EXP_P5 5.0000001201e-1f

/* exp2 of the int8 attention's softmax: x = n + r, n = rint(x), |r| ≤ 1/2, 2^r ≈ 1 + r·Q(r) (a
 * degree-5 fit of relative error 1.7e-7 in float evaluation), 2^n applied as an exact scaling with one
 * rounding (ldexpf, vscalefps); x clamped to [-150, 127] (2^-150 rounds to 0). */
#define OPS_LOG2_127 6.98868468677216585f
#define OPS_EXP2_LO (-150.0f)
#define OPS_EXP2_HI 127.0f
#define OPS_EXP2_C1 6.9314700365e-01f
#define OPS_EXP2_C2 2.4022242427e-01f
#define OPS_EXP2_C3 5.5507335812e-02f
#define OPS_EXP2_C4 9.6715129912e-03f
#define OPS_EXP2_C5 1.3264727313e-03f

/* GELU-tanh: -2u = x·(C0 + C1·x²), C0 = -2·√(2/π), C1 = -2·0.044715·√(2/π). */
#define OPS_GELU_C0 (-1.5957691216057308f)
#define OPS_GELU_C1 (-0.07135481627260025f)

/* GELU-erf: Numerical Recipes' erfcc, erfc(z) = t·exp(-z² + P(t)), t = 1/(1 + z/2), z ≥ 0. */
#define OPS_SQRT1_2 0.70710678118654752f
#define OPS_ERFC_P0 (-1.26551223f)
#define OPS_ERFC_P1 1.00002368f
#define OPS_ERFC_P2 0.37409196f
#define OPS_ERFC_P3 0.09678418f
#define OPS_ERFC_P4 (-0.18628806f)
#define OPS_ERFC_P5 0.27886807f
#define OPS_ERFC_P6 (-1.13520398f)
#define OPS_ERFC_P7 1.48851587f
#define OPS_ERFC_P8 (-0.82215223f)
#define OPS_ERFC_P9 0.17087277f

float ops_exp1_ref(float x);
float ops_exp2_ref(float x);
float ops_gelu_tanh1_ref(float x);
float ops_gelu_erf1_ref(float x);
float ops_lanes_sum_ref(float *part);   /* the reduction tree of OPS_LANES partial sums (part is modified) */
int32_t ops_rne_clamp_ref(float x, float lo, float hi);

/* The attention work buffer, carved at 64-byte aligned offsets. The int8 and f32 regions overlap
 * (a call uses one set). Layouts of kq, vq, qp and pp are private to each kernel family. */
typedef struct {
    int64_t hd4;   /* head_dim rounded up to 4 */
    int64_t n4;    /* key quads: ceil(n / 4) */
    int64_t nkb;   /* key blocks of OPS_ATTN_KBLOCK */
    /* int8 */
    int8_t *kq;
    float *dk;
    int32_t *ksum;
    int8_t *vq;
    float *dv;
    uint8_t *qp;
    float *dq;
    float *s;
    uint8_t *pp;
    float *dp;
    float *sum;
    float *ot;
    int8_t *rows;  /* scratch: hd4 rounded up to 16, times 16 floats */
    /* f32 */
    float *kf, *vf, *qt, *sf, *otf, *sumf;
} OpsAttnWork;

int64_t ops_attn_layout(int64_t n, int64_t hd, void *work, OpsAttnWork *w);

#endif
