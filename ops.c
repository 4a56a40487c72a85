/* ops.c — the scalar references of ops.h (the definitions of the numbers), the attention work
 * layout shared with the SIMD files, and kernel dispatch.
 *
 * Written so that a vector version can repeat every step exactly (ops.h, "Exactness"): fused
 * multiply-adds are spelled fmaf(), row sums go through OPS_LANES partial sums, and conversions to
 * integers are clamped round-to-nearest-even. */
#include "ops.h"
#include "ops_internal.h"
#include "quant.h"  /* fp16_to_fp32 */

#include <math.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/* ---- scalar building blocks (also the tails' definitions in the vector files) ------------------ */

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* e^x, see ops.h. Every step is an IEEE operation on floats or an operation on unsigned bits, so a
 * vector version repeats it exactly (and NaN cannot reach a float → int conversion). */
float ops_exp1_ref(float x) {
    float xc = x > OPS_EXP_HI ? OPS_EXP_HI : x;
    xc = xc < OPS_EXP_LO ? OPS_EXP_LO : xc;
    /* n = rint(x / ln2) via the 1.5·2^23 shifter: t's low mantissa bits hold n */
    float t = fmaf(xc, OPS_LOG2E, OPS_SHIFTER);
    float n = t - OPS_SHIFTER;
    float r = fmaf(n, -OPS_LN2_HI, xc);
    r = fmaf(n, -OPS_LN2_LO, r);
    float p = OPS_EXP_P0;
    p = fmaf(p, r, OPS_EXP_P1);
    p = fmaf(p, r, OPS_EXP_P2);
    p = fmaf(p, r, OPS_EXP_P3);
    p = fmaf(p, r, OPS_EXP_P4);
    p = fmaf(p, r, OPS_EXP_P5);
    float r2 = r * r;
    float er = fmaf(p, r2, r) + 1.0f;
    /* 2^n for n in [-126, 128] as 2^n1 · 2^n2, n1 = floor((n + 128) / 2) - 64, both in [-63, 64]:
     * two exact scalings (the result is normal, or rounded once into the subnormals) */
    uint32_t nb = f2u(t) - OPS_SHIFTER_BITS + 128u;  /* n + 128 (mod 2^32) */
    uint32_t n1 = nb >> 1, n2 = nb - n1;               /* n1 + n2 = n + 128, each (n_i + 64) */
    float s1 = u2f((n1 + 63u) << 23), s2 = u2f((n2 + 63u) << 23);
    float y = er * s1 * s2;
    if (x > OPS_EXP_HI) y = INFINITY;
    if (x < OPS_EXP_LO) y = 0.0f;
    return y;
}

float ops_exp2_ref(float x) {
    float xc = x > OPS_EXP2_LO ? x : OPS_EXP2_LO;
    xc = xc < OPS_EXP2_HI ? xc : OPS_EXP2_HI;
    float n = (xc + OPS_SHIFTER) - OPS_SHIFTER;  /* rint(xc), exact */
    float r = xc - n;                            /* exact, |r| ≤ 1/2 */
    float p = OPS_EXP2_C5;
    p = fmaf(p, r, OPS_EXP2_C4);
    p = fmaf(p, r, OPS_EXP2_C3);
    p = fmaf(p, r, OPS_EXP2_C2);
    p = fmaf(p, r, OPS_EXP2_C1);
    p = fmaf(p, r, 1.0f);
    return ldexpf(p, (int)n);
}

float ops_gelu_tanh1_ref(float x) {
    /* u = √(2/π)·(x + 0.044715·x³); x·sigmoid(2u) = x / (1 + e^(-2u)), -2u = x·(c0 + c1·x²) */
    float x2 = x * x;
    float c = fmaf(x2, OPS_GELU_C1, OPS_GELU_C0);
    float e = ops_exp1_ref(x * c);
    return x / (1.0f + e);
}

float ops_gelu_erf1_ref(float x) {
    /* Φ(x) = 1 - erfc(z)/2 (x ≥ 0) or erfc(z)/2 (x < 0), z = |x|/√2, erfc(z) = t·e^(-z² + P(t)),
     * t = 1/(1 + z/2); -z² = -(x/2)·x exactly inside the FMA */
    float z = fabsf(x) * OPS_SQRT1_2;
    float t = 1.0f / fmaf(0.5f, z, 1.0f);
    float p = OPS_ERFC_P9;
    p = fmaf(p, t, OPS_ERFC_P8);
    p = fmaf(p, t, OPS_ERFC_P7);
    p = fmaf(p, t, OPS_ERFC_P6);
    p = fmaf(p, t, OPS_ERFC_P5);
    p = fmaf(p, t, OPS_ERFC_P4);
    p = fmaf(p, t, OPS_ERFC_P3);
    p = fmaf(p, t, OPS_ERFC_P2);
    p = fmaf(p, t, OPS_ERFC_P1);
    p = fmaf(p, t, OPS_ERFC_P0);
    float arg = fmaf(-0.5f * x, x, p);
    float erfc = t * ops_exp1_ref(arg);
    float phi = x >= 0.0f ? fmaf(-0.5f, erfc, 1.0f) : 0.5f * erfc;
    return x * phi;
}

/* The fixed reduction tree of OPS_LANES partial sums. */
float ops_lanes_sum_ref(float *part) {
    for (int s = OPS_LANES / 2; s >= 1; s >>= 1)
        for (int k = 0; k < s; k++) part[k] += part[k + s];
    return part[0];
}

/* Round to nearest even after clamping to [lo, hi] (NaN → lo). */
int32_t ops_rne_clamp_ref(float x, float lo, float hi) {
    x = x > lo ? x : lo;
    x = x < hi ? x : hi;
    return (int32_t)nearbyintf(x);
}

/* ---- elementwise references ---------------------------------------------------------------- */

void ops_exp_f32_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ops_exp1_ref(x[i]);
}

void ops_gelu_tanh_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ops_gelu_tanh1_ref(x[i]);
}

void ops_gelu_erf_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ops_gelu_erf1_ref(x[i]);
}

void ops_bias_gelu_tanh_ref(float *x, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = ops_gelu_tanh1_ref(x[i] + b[i]);
}

void ops_bias_gelu_erf_ref(float *x, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = ops_gelu_erf1_ref(x[i] + b[i]);
}

void ops_add_ref(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void ops_swiglu_ref(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + ops_exp1_ref(-g[i])) * u[i];
}

void ops_add_bias_ref(float *x, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += b[i];
}

void ops_add_bias_residual_ref(float *x, const float *y, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = x[i] + (y[i] + b[i]);
}

/* ---- rows ----------------------------------------------------------------------------------- */

/* LayerNorm of x (n > 0) into out, given Σx (the first pass, which the fused op does while adding). */
static void layernorm_from_sum(float *out, const float *x, float sum, const float *w, const float *b, int64_t n,
                               float eps) {
    float part[OPS_LANES];
    float mean = sum / (float)n;
    for (int k = 0; k < OPS_LANES; k++) part[k] = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float d = x[i] - mean;
        part[i % OPS_LANES] = fmaf(d, d, part[i % OPS_LANES]);
    }
    float var = ops_lanes_sum_ref(part) / (float)n;
    float inv = 1.0f / sqrtf(var + eps);
    for (int64_t i = 0; i < n; i++) out[i] = fmaf((x[i] - mean) * inv, w[i], b[i]);
}

void ops_layernorm_ref(float *out, const float *x, const float *w, const float *b, int64_t n, float eps) {
    if (n <= 0) return;
    float part[OPS_LANES] = {0};
    for (int64_t i = 0; i < n; i++) part[i % OPS_LANES] += x[i];
    layernorm_from_sum(out, x, ops_lanes_sum_ref(part), w, b, n, eps);
}

void ops_residual_layernorm_ref(float *x, const float *y, const float *yb, float *out, const float *w, const float *b,
                                int64_t n, float eps) {
    if (n <= 0) return;
    float part[OPS_LANES] = {0};
    for (int64_t i = 0; i < n; i++) {
        x[i] = x[i] + (y[i] + yb[i]);
        part[i % OPS_LANES] += x[i];
    }
    layernorm_from_sum(out, x, ops_lanes_sum_ref(part), w, b, n, eps);
}

float ops_softmax_row_ref(float *p, const float *s, int64_t n, float scale) {
    if (n <= 0) return 0.0f;
    float m = s[0];
    for (int64_t j = 1; j < n; j++) m = s[j] > m ? s[j] : m;
    float ms = m * scale;
    float part[OPS_LANES] = {0};
    for (int64_t j = 0; j < n; j++) {
        p[j] = ops_exp1_ref(fmaf(s[j], scale, -ms));
        part[j % OPS_LANES] += p[j];
    }
    return ops_lanes_sum_ref(part);
}

/* ---- attention work layout -------------------------------------------------------------------- */

static int64_t up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

int64_t ops_attn_layout(int64_t n, int64_t hd, void *work, OpsAttnWork *w) {
    const int64_t QB = OPS_ATTN_QBLOCK;
    int64_t hd4 = up(hd, 4), n4 = (n + 3) / 4, nkb = (n + OPS_ATTN_KBLOCK - 1) / OPS_ATTN_KBLOCK;
    int64_t nr = up(n, 16);  /* key rows, rounded up for kernels that group keys by 16 */
    /* int8: keys, values, one query block's packed queries, scores, packed p, scales, output */
    int64_t q8[13] = {
        nr * hd4,                 /* kq: keys as int8 (layout per family), zero-padded */
        nr * 4,                   /* dk: per-key scale */
        nr * 4,                   /* ksum: per-key sum of the int8 values */
        (n4 + 1) * hd * 4,        /* vq: values as int8 (layout per family) */
        nkb * hd * 4,             /* dv */
        hd4 * QB,                 /* qp: packed queries of one block */
        QB * 4 * 2,               /* dq (and the max of each query row) */
        nr * QB * 4,              /* s: scores of one query block, key-major [j][32] */
        (n4 + 1) * QB * 4,        /* pp: packed probabilities [quad][32][4] */
        nkb * QB * 4 * 2,         /* dp and isum per block */
        QB * 4 * 2,               /* sum, inv */
        hd * QB * 4,              /* ot: the block's output, dimension-major [d][32] */
        up(hd4, 16) * 16 * 4,     /* rows: queries transposed, [hd4][up to 16 lanes] floats */
    };
    /* f32: keys and values with their biases, one block's queries transposed, scores, output */
    int64_t f32[6] = {nr * hd * 4, nr * hd * 4, hd * QB * 4, nr * QB * 4, hd * QB * 4, QB * 4 * 4};
    int64_t off_q8[13], off_f32[6], end_q8 = 0, end_f32 = 0;
    for (int i = 0; i < 13; i++) {
        off_q8[i] = end_q8;
        end_q8 += up(q8[i], 64);
    }
    for (int i = 0; i < 6; i++) {
        off_f32[i] = end_f32;
        end_f32 += up(f32[i], 64);
    }
    if (work && w) {
        uint8_t *base = (uint8_t *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
        memset(w, 0, sizeof *w);
        w->hd4 = hd4;
        w->n4 = n4;
        w->nkb = nkb;
        w->kq = (int8_t *)(base + off_q8[0]);
        w->dk = (float *)(base + off_q8[1]);
        w->ksum = (int32_t *)(base + off_q8[2]);
        w->vq = (int8_t *)(base + off_q8[3]);
        w->dv = (float *)(base + off_q8[4]);
        w->qp = (uint8_t *)(base + off_q8[5]);
        w->dq = (float *)(base + off_q8[6]);
        w->s = (float *)(base + off_q8[7]);
        w->pp = (uint8_t *)(base + off_q8[8]);
        w->dp = (float *)(base + off_q8[9]);
        w->sum = (float *)(base + off_q8[10]);
        w->ot = (float *)(base + off_q8[11]);
        w->rows = (int8_t *)(base + off_q8[12]);
        w->kf = (float *)(base + off_f32[0]);
        w->vf = (float *)(base + off_f32[1]);
        w->qt = (float *)(base + off_f32[2]);
        w->sf = (float *)(base + off_f32[3]);
        w->otf = (float *)(base + off_f32[4]);
        w->sumf = (float *)(base + off_f32[5]);
    }
    return (end_q8 > end_f32 ? end_q8 : end_f32) + 64;
}

int64_t ops_attn_work_bytes(int64_t n, int64_t hd) { return ops_attn_layout(n, hd, NULL, NULL); }

/* ---- attention references ------------------------------------------------------------------------ */

void ops_attn_head_f32_ref(const OpsAttn *a, void *work) {
    OpsAttnWork w;
    ops_attn_layout(a->n, a->hd, work, &w);
    const int64_t n = a->n, hd = a->hd;
    float *kf = w.kf, *vf = w.vf, *s = w.sf;  /* s: one query's scores, then probabilities */
    for (int64_t j = 0; j < n; j++)
        for (int64_t d = 0; d < hd; d++) {
            kf[j * hd + d] = a->k[j * a->ld + d] + a->bk[d];
            vf[j * hd + d] = a->v[j * a->ld + d] + a->bv[d];
        }
    float *qf = w.qt;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t d = 0; d < hd; d++) qf[d] = a->q[i * a->ld + d] + a->bq[d];
        float m = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t d = 0; d < hd; d++) acc = fmaf(qf[d], kf[j * hd + d], acc);
            s[j] = acc;
            m = acc > m ? acc : m;
        }
        float ms = m * a->scale, sum = 0.0f;
        for (int64_t j = 0; j < n; j++) {
            s[j] = ops_exp1_ref(fmaf(s[j], a->scale, -ms));
            sum += s[j];
        }
        float inv = 1.0f / sum;
        for (int64_t d = 0; d < hd; d++) {
            float o = 0.0f;
            for (int64_t j = 0; j < n; j++) o = fmaf(s[j], vf[j * hd + d], o);
            a->out[i * a->ldo + d] = o * inv;
        }
    }
}

/* One row of hd floats plus bias, zero-padded to hd4, quantized with one scale: q = rne(x·127/amax),
 * d = amax/127 (0 and all-zero q for an all-zero row). Returns Σ q through *sum. */
static float quantize_row_ref(const float *x, const float *bias, int64_t hd, int64_t hd4, int8_t *q, int32_t *sum) {
    float amax = 0.0f;
    for (int64_t d = 0; d < hd; d++) {
        float v = fabsf(x[d] + bias[d]);
        amax = v > amax ? v : amax;
    }
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int32_t s = 0;
    for (int64_t d = 0; d < hd4; d++) {
        q[d] = d < hd ? (int8_t)ops_rne_clamp_ref((x[d] + bias[d]) * id, -127.0f, 127.0f) : 0;
        s += q[d];
    }
    *sum = s;
    return amax / 127.0f;
}

void ops_attn_head_q8_ref(const OpsAttn *a, void *work) {
    OpsAttnWork w;
    ops_attn_layout(a->n, a->hd, work, &w);
    const int64_t n = a->n, hd = a->hd, hd4 = w.hd4, KB = OPS_ATTN_KBLOCK, nkb = w.nkb;
    /* keys: row-major [j][hd4]; values: row-major [j][hd] with per-(block, d) scales */
    for (int64_t j = 0; j < n; j++) w.dk[j] = quantize_row_ref(a->k + j * a->ld, a->bk, hd, hd4, w.kq + j * hd4, &w.ksum[j]);
    for (int64_t kb = 0; kb < nkb; kb++) {
        int64_t j0 = kb * KB, j1 = j0 + KB < n ? j0 + KB : n;
        for (int64_t d = 0; d < hd; d++) {
            float amax = 0.0f;
            for (int64_t j = j0; j < j1; j++) {
                float v = fabsf(a->v[j * a->ld + d] + a->bv[d]);
                amax = v > amax ? v : amax;
            }
            float iv = amax > 0.0f ? 127.0f / amax : 0.0f;
            w.dv[kb * hd + d] = amax / 127.0f;
            for (int64_t j = j0; j < j1; j++)
                w.vq[j * hd + d] = (int8_t)ops_rne_clamp_ref((a->v[j * a->ld + d] + a->bv[d]) * iv, -127.0f, 127.0f);
        }
    }
    const float scale2 = a->scale * OPS_LOG2E;  /* scores in log2 units: p = 2^(s - max) */
    int8_t *qq = (int8_t *)w.qp;  /* one query */
    float *s = w.s;               /* its scores */
    uint8_t *pq = w.pp;           /* its quantized probabilities */
    float *dp = w.dp;             /* per block */
    for (int64_t i = 0; i < n; i++) {
        int32_t unused;
        float dq = quantize_row_ref(a->q + i * a->ld, a->bq, hd, hd4, qq, &unused) * scale2;
        float m = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            int32_t isum = 0;
            for (int64_t d = 0; d < hd4; d++) isum += (int32_t)qq[d] * (int32_t)w.kq[j * hd4 + d];
            s[j] = (float)isum * (dq * w.dk[j]);
            m = s[j] > m ? s[j] : m;
        }
        float sum = 0.0f;
        for (int64_t kb = 0; kb < nkb; kb++) {
            int64_t j0 = kb * KB, j1 = j0 + KB < n ? j0 + KB : n;
            float bm = -INFINITY;
            for (int64_t j = j0; j < j1; j++) bm = s[j] > bm ? s[j] : bm;
            /* the block's largest p is eb = 2^(bm - m); p / eb · 127 = 2^(s - cb), cb = bm - log2(127) */
            float eb = ops_exp2_ref(bm - m), cb = bm - OPS_LOG2_127;
            dp[kb] = eb / 127.0f;
            int32_t isum = 0;
            for (int64_t j = j0; j < j1; j++) {
                pq[j] = (uint8_t)ops_rne_clamp_ref(ops_exp2_ref(s[j] - cb), 0.0f, 127.0f);
                isum += pq[j];
            }
            sum = fmaf((float)isum, dp[kb], sum);
        }
        float inv = 1.0f / sum;
        for (int64_t d = 0; d < hd; d++) {
            float o = 0.0f;
            for (int64_t kb = 0; kb < nkb; kb++) {
                int64_t j0 = kb * KB, j1 = j0 + KB < n ? j0 + KB : n;
                int32_t isum = 0;
                for (int64_t j = j0; j < j1; j++) isum += (int32_t)pq[j] * (int32_t)w.vq[j * hd + d];
                o = fmaf((float)isum, dp[kb] * w.dv[kb * hd + d], o);
            }
            a->out[i * a->ldo + d] = o * inv;
        }
    }
}

/* ---- decode attention over an F16 cache ----------------------------------------------------------- */

int64_t ops_attn_kv_work_bytes(int64_t n, int64_t group, int64_t hd) {
    (void)hd;  /* the scores of the group; the vector kernels store them in blocks of up to OPS_LANES keys */
    return group * ((n + OPS_LANES - 1) / OPS_LANES * OPS_LANES) * (int64_t)sizeof(float);
}

_Static_assert(OPS_KV_CHAINS == 4, "the decode-attention score adds its chains as (p0 + p1) + (p2 + p3)");

void ops_attn_kv_f16_ref(const OpsAttnKV *a, void *work) {
    float *s = work;
    const int64_t n = a->n, hd = a->hd;
    for (int64_t g = 0; g < a->group; g++) {
        const float *q = a->q + g * hd;
        for (int64_t j = 0; j < n; j++) {
            float part[OPS_KV_CHAINS] = {0};
            for (int64_t d = 0; d < hd; d++)
                part[d % OPS_KV_CHAINS] = fmaf(q[d], fp16_to_fp32(a->k[ops_kv_key_index(j, d, hd)]), part[d % OPS_KV_CHAINS]);
            s[g * n + j] = (part[0] + part[1]) + (part[2] + part[3]);
        }
    }
    for (int64_t g = 0; g < a->group; g++) {
        float *p = s + g * n;
        float inv = 1.0f / ops_softmax_row_ref(p, p, n, a->scale);
        for (int64_t d = 0; d < hd; d++) {
            float o = 0.0f;
            for (int64_t j = 0; j < n; j++) o = fmaf(p[j], fp16_to_fp32(a->v[j * a->ld + d]), o);
            a->out[g * hd + d] = o * inv;
        }
    }
}

/* ---- decode attention over a Q8_0 cache ----------------------------------------------------------- */

/* ops_kv_q8_query_offset (ops_internal.h): the vector kernels' prologue puts the query's scales and
 * code sums after the scores (the sums correct an unsigned-operand dot product, ops_simd.h). */
int64_t ops_attn_kv_q8_work_bytes(int64_t n, int64_t group, int64_t hd) {
    return ops_kv_q8_query_offset(n, group, hd) + group * (hd / 32) * (int64_t)(sizeof(float) + sizeof(int32_t));
}

static float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return fp16_to_fp32(h);
}

void ops_attn_kv_q8_ref(const OpsAttnKVQ8 *a, void *work) {
    float *s = work;
    const int64_t n = a->n, hd = a->hd, nb = hd / 32;
    for (int64_t g = 0; g < a->group; g++) {
        const uint8_t *q = a->q + g * nb * 34;  /* Q8_0 blocks: f16 scale, 32 codes */
        for (int64_t j = 0; j < n; j++) {
            float sum = 0.0f;  /* vec_dot_q8_0_q8_0_ref with x = the key, y = the query */
            for (int64_t b = 0; b < nb; b++) {
                int32_t isum = 0;
                for (int64_t i = 0; i < 32; i++)
                    isum += (int8_t)a->k[ops_kv_q8_code_offset(j, b * 32 + i, hd)] * (int8_t)q[b * 34 + 2 + i];
                sum += (float)isum * f16_at(a->k + ops_kv_q8_scale_offset(j, b, hd)) * f16_at(q + b * 34);
            }
            s[g * n + j] = sum;
        }
    }
    for (int64_t g = 0; g < a->group; g++) {
        float *p = s + g * n, *o = a->out + g * hd;
        float inv = 1.0f / ops_softmax_row_ref(p, p, n, a->scale);
        for (int64_t d = 0; d < hd; d++) o[d] = 0.0f;
        for (int64_t j0 = 0; j0 < n; j0 += OPS_KV_KEYS) {  /* P·V: key blocks in order */
            const int64_t nk = n - j0 < OPS_KV_KEYS ? n - j0 : OPS_KV_KEYS;
            for (int64_t b = 0; b < nb; b++) {
                float w[OPS_KV_KEYS], wmax = 0.0f;  /* the value scales folded into the probabilities */
                for (int64_t jj = 0; jj < nk; jj++) {
                    w[jj] = p[j0 + jj] * f16_at(a->v + ops_kv_q8_scale_offset(j0 + jj, b, hd));
                    wmax = fmaxf(wmax, w[jj]);
                }
                const float c = wmax > 0.0f ? 127.0f / wmax : 0.0f, dp = wmax * OPS_KV_INV127;
                int32_t pq[OPS_KV_KEYS];
                for (int64_t jj = 0; jj < nk; jj++) pq[jj] = ops_rne_clamp_ref(w[jj] * c, 0.0f, 127.0f);
                for (int64_t d = b * 32; d < b * 32 + 32; d++) {
                    int32_t isum = 0;
                    for (int64_t jj = 0; jj < nk; jj++) isum += pq[jj] * (int8_t)a->v[ops_kv_q8_value_offset(j0 + jj, d, hd)];
                    o[d] = fmaf((float)isum, dp, o[d]);
                }
            }
        }
        for (int64_t d = 0; d < hd; d++) o[d] *= inv;
    }
}

/* ---- dispatch ---------------------------------------------------------------------------------- */

const OpsKernels ops_kernels_ref = {
    .name = "ref",
    .exp_f32 = ops_exp_f32_ref,
    .gelu_tanh = ops_gelu_tanh_ref,
    .gelu_erf = ops_gelu_erf_ref,
    .bias_gelu_tanh = ops_bias_gelu_tanh_ref,
    .bias_gelu_erf = ops_bias_gelu_erf_ref,
    .add = ops_add_ref,
    .swiglu = ops_swiglu_ref,
    .add_bias = ops_add_bias_ref,
    .add_bias_residual = ops_add_bias_residual_ref,
    .layernorm = ops_layernorm_ref,
    .residual_layernorm = ops_residual_layernorm_ref,
    .softmax_row = ops_softmax_row_ref,
    .attn_head_f32 = ops_attn_head_f32_ref,
    .attn_head_q8 = ops_attn_head_q8_ref,
    .attn_kv_f16 = ops_attn_kv_f16_ref,
    .attn_kv_q8 = ops_attn_kv_q8_ref,
};

#if defined(__x86_64__) || defined(__i386__)
/* CPUID and XCR0, as quant.c: the ISA extensions and whether the OS saves the vector state. */
static int x86_has(int want_avx512) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c & bit_FMA) != 0, f16c = (c & bit_F16C) != 0, os_ymm = 0, os_zmm = 0;
    if (c & bit_OSXSAVE) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        os_ymm = (lo & 0x6) == 0x6;
        os_zmm = (lo & 0xE6) == 0xE6;
    }
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int avx2 = (b & (1u << 5)) != 0, f = (b & (1u << 16)) != 0, bw = (b & (1u << 30)) != 0;
    int vl = (b & (1u << 31)) != 0, vnni = (c & (1u << 11)) != 0;
    int ok2 = os_ymm && avx2 && fma && f16c;
    return want_avx512 ? ok2 && os_zmm && f && bw && vl && vnni : ok2;
}
#endif

static const OpsKernels *best_ops(void) {
#if defined(__x86_64__) || defined(__i386__)
    if (x86_has(1)) return &ops_kernels_avx512;
    if (x86_has(0)) return &ops_kernels_avx2;
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
    return &ops_kernels_neon;
#endif
    return &ops_kernels_ref;
}

static const OpsKernels *active_ops;
static pthread_once_t ops_once = PTHREAD_ONCE_INIT;

static void choose_ops(void) { active_ops = best_ops(); }

static const OpsKernels *K(void) {
    pthread_once(&ops_once, choose_ops);
    return active_ops;
}

const char *ops_kernel_name(void) { return K()->name; }

int ops_force_kernels(const char *name) {
    pthread_once(&ops_once, choose_ops);
    const OpsKernels *k = NULL;
    if (!name) k = best_ops();
    else if (strcmp(name, "ref") == 0) k = &ops_kernels_ref;
#if defined(__x86_64__) || defined(__i386__)
    else if (strcmp(name, "avx2") == 0 && x86_has(0)) k = &ops_kernels_avx2;
    else if (strcmp(name, "avx512") == 0 && x86_has(1)) k = &ops_kernels_avx512;
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
    else if (strcmp(name, "neon") == 0) k = &ops_kernels_neon;
#endif
    if (!k) return -1;
    active_ops = k;
    return 0;
}

void ops_exp_f32(float *y, const float *x, int64_t n) { K()->exp_f32(y, x, n); }
void ops_gelu_tanh(float *y, const float *x, int64_t n) { K()->gelu_tanh(y, x, n); }
void ops_gelu_erf(float *y, const float *x, int64_t n) { K()->gelu_erf(y, x, n); }
void ops_bias_gelu_tanh(float *x, const float *b, int64_t n) { K()->bias_gelu_tanh(x, b, n); }
void ops_bias_gelu_erf(float *x, const float *b, int64_t n) { K()->bias_gelu_erf(x, b, n); }
void ops_add(float *x, const float *y, int64_t n) { K()->add(x, y, n); }
void ops_swiglu(float *g, const float *u, int64_t n) { K()->swiglu(g, u, n); }
void ops_add_bias(float *x, const float *b, int64_t n) { K()->add_bias(x, b, n); }
void ops_add_bias_residual(float *x, const float *y, const float *b, int64_t n) { K()->add_bias_residual(x, y, b, n); }
void ops_layernorm(float *out, const float *x, const float *w, const float *b, int64_t n, float eps) {
    K()->layernorm(out, x, w, b, n, eps);
}
void ops_residual_layernorm(float *x, const float *y, const float *yb, float *out, const float *w, const float *b,
                            int64_t n, float eps) {
    K()->residual_layernorm(x, y, yb, out, w, b, n, eps);
}
float ops_softmax_row(float *p, const float *s, int64_t n, float scale) { return K()->softmax_row(p, s, n, scale); }
void ops_attn_head_f32(const OpsAttn *a, void *work) { K()->attn_head_f32(a, work); }
void ops_attn_head_q8(const OpsAttn *a, void *work) { K()->attn_head_q8(a, work); }
void ops_attn_kv_f16(const OpsAttnKV *a, void *work) {
    if (a->n > 0 && a->group > 0) K()->attn_kv_f16(a, work);
}

void ops_attn_kv_q8(const OpsAttnKVQ8 *a, void *work) {
    if (a->n > 0 && a->group > 0) K()->attn_kv_q8(a, work);
}
