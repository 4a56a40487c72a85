/* ops.h — the elementwise and row operations of the model code, and attention for one head.
 *
 * Naming follows quant.h: a `_ref` function is the scalar reference that defines the numbers;
 * `_avx2`, `_avx512` (AVX-512 F/BW/VL + VNNI) and `_neon` versions have identical signatures. The
 * un-suffixed name dispatches to the best version this CPU supports (checked once at start; x86
 * kernels are compiled with per-function target attributes, NEON is chosen at compile time).
 *
 * Exactness. Every operation here is defined so that the SIMD versions can reproduce the reference
 * BIT FOR BIT, and they do (tests/test_ops.c checks equality on every kernel family the CPU or qemu
 * can run: ref, avx2, avx512 natively; neon with and without dotprod under qemu-aarch64):
 *   - each multiply-add of the definition is a fused fmaf(); no other product feeds a sum;
 *   - float sums over a row use OPS_LANES (32) interleaved partial sums (element i goes to partial
 *     i % 32), combined by the fixed tree  p[k] += p[k + s]  for s = 16, 8, 4, 2, 1 — what two
 *     AVX-512, four AVX2 or eight NEON accumulators give;
 *   - sums over the keys of attention run per query (queries sit in the vector lanes), in key order;
 *   - integer dot products are exact; int → float conversions are exact (|sum| < 2^24);
 *   - rounding to an integer is round-to-nearest-even (nearbyintf in the default rounding mode,
 *     cvtps2dq, vcvtnq) after clamping (so NaN cannot reach a conversion);
 *   - scaling by 2^n is exact, or rounds once into the subnormals (ldexpf = vscalefps = two
 *     power-of-two products whose first is exact).
 * So results do not depend on the kernel family or the machine. No product is ever added unfused (a
 * product only feeds a multiplication, an fmaf's multiplicand, a store or a conversion), so a
 * compiler's own contraction of a·b + c (GCC's -ffp-contract=fast in GNU C mode) cannot change any
 * result either. The reference calls fmaf(), which on an x86 CPU without FMA
 * (before 2013) is a libm emulation: the reference is slow there (GELU ~30 ns an element), not wrong.
 * NaN inputs give NaN or some finite value (not necessarily the same in every family) and no UB.
 *
 * Accuracy (tests/test_ops.c enforces these bounds against double-precision libm on dense sweeps):
 *   ops_exp_f32    e^x within 1 ulp of the correctly rounded value over x in [-87.33, 88.72] (every
 *                  97th float; Cody–Waite reduction by ln 2 with FMA, Cephes expf's degree-5
 *                  polynomial). x > 88.7228394 gives +inf, x < -87.3365479 gives 0 (expf would give
 *                  subnormals there).
 *   ops_gelu_tanh  0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³), evaluated as x / (1 + e^(-2u))
 *                  (no cancellation for negative x, unlike the formula as written). ≤ 3 ulp for
 *                  x ≥ -1; |error| ≤ 2e-7·(1 + x²)·|gelu(x)| + 1e-35 everywhere (the rounding of 2u is
 *                  amplified by |2u| for negative x, where the values are tiny: gelu(-5) ≈ -1.4e-6).
 *   ops_gelu_erf   x·Φ(x), Φ from erfc(z) = t·e^(-z² + P(t)), z = |x|/√2, t = 1/(1 + z/2) (Numerical
 *                  Recipes' erfcc, fractional error < 1.2e-7), -z² = -(x/2)·x exactly inside an FMA:
 *                  ≤ 6 ulp for x ≥ 0; |error| ≤ (5e-7 + 6e-8·x²)·|gelu(x)| + 1e-35 everywhere.
 *   ops_layernorm  float sums (see above), two passes (mean, then the mean of (x - mean)²): within
 *                  2e-6 of the output's row RMS of a double-precision LayerNorm (rows of 8 .. 4321
 *                  elements with mean 3 and std 2: 5e-7 measured).
 *   ops_softmax_row  each p within 1e-6 (absolute, after the division) of double precision.
 *
 * Attention (ops_attn_head_*): softmax(q·kᵀ·scale)·v for the n tokens of one (tile, head), the q, k, v
 * biases added on the way in. Queries go in blocks of 32 held in vector lanes ("queries in lanes"):
 * the max, exp and sum of the softmax are vertical vector operations, no transpose of the scores is
 * needed, and a block's scores (32 × n floats, 93 KB for n = 729) and everything else of one head stay
 * in L2. The products are register-blocked tiles (AVX-512: 12 keys × 32 queries for q·k, 12 head
 * dimensions × 32 queries for p·v) over keys stored in tiles and values in quads of keys.
 *   ops_attn_head_f32 (the path for float files; 1e-13 NMSE against double): s = Σ_d q·k with fmaf in
 *     d order, p = e^(fmaf(s, scale, -max·scale)), sum and o = Σ_j p·v with fmaf in key order,
 *     out = o · (1 / sum).
 *   ops_attn_head_q8 (the path for quantized files): int8 products with int32 sums.
 *     q and k rows: one scale per token and head (amax/127), head_dim padded with zeros only to a
 *       multiple of 4 (72 stays 72: no padding to blocks of 32); s = isum·(dq·dk), dq including
 *       scale·log2(e), so the softmax is in powers of two: p = 2^(s - max) (a degree-5 exp2, relative
 *       error 1.7e-7, ops_internal.h).
 *     p in blocks of OPS_ATTN_KBLOCK (32) keys: quantized to 0..127 as rne(2^(s - cb)) with
 *       cb = (block max) - log2(127) — the block's largest p maps to 127 — and block scale
 *       dp = 2^(block max - max) / 127, per query.
 *     v: -127..127 with one scale per head dimension and block of 32 keys.
 *     o = Σ_blocks fmaf(isum, dp·dv, o) in block order; the softmax denominator is Σ_blocks isum·dp of
 *       the same quantized p, so the output is an exact convex combination of the quantized values.
 *     Against double-precision attention on random data (729 tokens, head_dim 72): NMSE 4-6e-5,
 *     cosine 0.99997; the test bounds every case (peaked, near-uniform, outlier tokens, odd sizes) at
 *     NMSE < 2e-3 and cosine > 0.999. Through the whole ViT the int8 attention adds about as much
 *     error as the Q8_0 attention through matmul it replaces (see vit.h). */
#ifndef BLUELMV_OPS_H
#define BLUELMV_OPS_H

#include <stdint.h>

#define OPS_LANES 32         /* partial sums of a row reduction */
#define OPS_ATTN_QBLOCK 32   /* queries per attention block (in vector lanes) */
#define OPS_ATTN_KBLOCK 32   /* keys per scale block of the int8 attention's p and v (64: 5% faster
                                attention, about 1.3x its error) */

/* ---- elementwise (x and y may be the same array) ------------------------------------------------ */
void ops_exp_f32(float *y, const float *x, int64_t n);          /* y = e^x */
void ops_gelu_tanh(float *y, const float *x, int64_t n);        /* y = gelu_tanh(x) */
void ops_gelu_erf(float *y, const float *x, int64_t n);         /* y = gelu_erf(x) */
void ops_bias_gelu_tanh(float *x, const float *b, int64_t n);   /* x = gelu_tanh(x + b) */
void ops_bias_gelu_erf(float *x, const float *b, int64_t n);    /* x = gelu_erf(x + b) */
void ops_add(float *x, const float *y, int64_t n);              /* x = x + y */
void ops_add_bias(float *x, const float *b, int64_t n);         /* x = x + b */
void ops_add_bias_residual(float *x, const float *y, const float *b, int64_t n);  /* x = x + (y + b) */
/* the LLM's gated MLP, in place on the gate: g = g / (1 + e^(-g)) · u  (SiLU(gate) · up, in that
 * order of float operations, e^x as ops_exp_f32) */
void ops_swiglu(float *g, const float *u, int64_t n);

/* ---- rows -------------------------------------------------------------------------------------- */
/* nn.LayerNorm(n, eps): mean = Σx / n; var = Σ(x - mean)² / n; inv = 1 / sqrtf(var + eps);
 * out = fmaf((x - mean)·inv, w, b). Sums as described above. out may be x. */
void ops_layernorm(float *out, const float *x, const float *w, const float *b, int64_t n, float eps);
/* The residual add of a sublayer fused with the next LayerNorm:
 *   x = x + (y + yb);  out = LayerNorm(x; w, b, eps)   (the same numbers as the two calls)
 * out may be y (y is consumed before out is written) but not x. */
void ops_residual_layernorm(float *x, const float *y, const float *yb, float *out, const float *w, const float *b,
                            int64_t n, float eps);
/* p[j] = e^(fmaf(s[j], scale, -m)) with m = max_j(s[j])·scale (scale > 0); returns Σ p[j] (float,
 * partial sums as above). p may be s. The caller divides by the sum. */
float ops_softmax_row(float *p, const float *s, int64_t n, float scale);

/* ---- attention for one (tile, head) ------------------------------------------------------------- */
typedef struct {
    const float *q, *k, *v;     /* token t's head_dim values at q + t·ld (and k, v likewise) */
    const float *bq, *bk, *bv;  /* the head's biases (head_dim each), added before anything else */
    float *out;                 /* token t's output at out + t·ldo (head_dim values written) */
    int64_t n;                  /* tokens (queries = keys) */
    int64_t hd;                 /* head_dim */
    int64_t ld, ldo;
    float scale;                /* head_dim^-0.5 */
} OpsAttn;

/* Bytes of the work buffer one call needs (the same for both types and every kernel family). */
int64_t ops_attn_work_bytes(int64_t n, int64_t hd);
void ops_attn_head_f32(const OpsAttn *a, void *work);
void ops_attn_head_q8(const OpsAttn *a, void *work);

/* ---- decode attention: the query heads sharing one KV head, over an F16 cache ---------------------
 * The keys are stored in blocks of OPS_KV_KEYS positions, each block dimension-major (key j's
 * dimension d at k[ops_kv_key_index(j, d, hd)]): a vector load then holds one dimension of
 * consecutive keys, so the scores of a block are plain multiply-adds with the query element
 * broadcast, each key in its own lane, and no sum across lanes. The values are rows (v + j·ld).
 * For each query head g < group (rows of hd floats at q + g·hd) and key j < n:
 *   s[g][j] = Σ_d fmaf(q[g][d], k[j][d])      in OPS_KV_CHAINS partial sums (d → partial d % 4),
 *                                             added as (p0 + p1) + (p2 + p3)
 *   p, sum  = ops_softmax_row(s[g], n, scale)  p = e^(s·scale - max·scale)
 *   o[g][d] = Σ_j fmaf(p[g][j], v[j][d])      in key order from 0
 *   out[g][d] = o[g][d] · (1 / sum)
 * Halves convert to float exactly. Each cached key and value is read once for the whole group: one
 * decode step of a GQA model reads each layer's cache once. The key blocks must be allocated whole
 * (n rounded up to OPS_KV_KEYS; the positions past n are read and ignored).
 * work: ops_attn_kv_work_bytes(n, group, hd) bytes. */
#define OPS_KV_KEYS 16      /* positions per block of an F16 key cache */
#define OPS_KV_CHAINS 4     /* partial sums of a decode-attention score */
static inline int64_t ops_kv_key_index(int64_t j, int64_t d, int64_t hd) {
    return (j / OPS_KV_KEYS * hd + d) * OPS_KV_KEYS + j % OPS_KV_KEYS;
}
typedef struct {
    const float *q;             /* (group, hd) */
    const uint16_t *k;          /* (n / OPS_KV_KEYS rounded up, hd, OPS_KV_KEYS) f16: ops_kv_key_index */
    const uint16_t *v;          /* (n, ld) f16: the hd values of position j at j·ld */
    float *out;                 /* (group, hd) */
    int64_t n, hd, ld, group;
    float scale;                /* head_dim^-0.5 */
} OpsAttnKV;
int64_t ops_attn_kv_work_bytes(int64_t n, int64_t group, int64_t hd);
void ops_attn_kv_f16(const OpsAttnKV *a, void *work);

/* ---- decode attention over a Q8_0 cache (the paper's INT8 KV cache) --------------------------------
 * Keys and values as 8-bit codes with one f16 scale per 32 dimensions (llama.cpp's Q8_0 block), hd a
 * multiple of 32, and both products in integers. The query arrives quantized the same way
 * (quantize_row_q8_0_ref), so that a score is an integer dot product per block, as llama.cpp scores
 * a Q8_0 cache:
 *   s[g][j] = Σ_b ((float)Σ_i kq[j][i]·qq[g][i] · dk[j][b]) · dq[g][b]    blocks b in order from 0:
 *             exactly vec_dot_q8_0_q8_0_ref(hd, key j, query g), the key as its x
 *   p, sum  = ops_softmax_row(s[g], n, scale)
 * P·V in integers too (the INT8 cache's scale scheme is ours to choose: paper-notes [U] 6). For each
 * block of OPS_KV_KEYS positions and 32 dimensions b, the value scales are folded into the
 * probabilities, which are then quantized to 0..127 against the block's largest:
 *   w[j]    = p[g][j] · dv[j][b]                          (0 for the positions past n)
 *   W       = max_j w[j];  c = W > 0 ? 127 / W : 0;  dp = W · OPS_KV_INV127
 *   pq[j]   = rne(w[j] · c)                               (0..127: ops_rne_clamp_ref(.., 0, 127))
 *   o[g][d] = fmaf((float)Σ_j pq[j]·vq[j][d], dp, o[g][d])    key blocks in order from 0, o from 0
 *   out[g][d] = o[g][d] · (1 / sum)
 * Each pq is within half a step (W / 254) of w·(127 / W), so |o - Σ p·v| ≤ Σ_blocks (W / 254)·Σ_j |vq[j][d]|
 * plus float rounding (tests/test_ops.c checks that bound against double precision).
 * Keys and values are stored in blocks of OPS_KV_KEYS positions; a block is hd / 32 sub-blocks of
 * OPS_KV_Q8_SUB bytes (the same bytes as 16 Q8_0 rows), one per 32 dimensions: the 16 positions' f16
 * scales, then the codes.
 *   keys:   4 dimensions of a key together and the keys consecutive (dimensions 4i..4i+3 of key j at
 *           32 + 64·i + 4·j + 0..3): one vector load holds 4 dimensions of L keys, and an int8
 *           dot-product instruction adds them into each key's lane (the scores);
 *   values: 4 consecutive positions together and the dimensions consecutive (dimension d of position
 *           j at 32 + 128·(j % 16 / 4) + 4·d + j % 4): one vector load holds L dimensions of 4
 *           positions, and the dot-product instruction with those 4 positions' pq broadcast adds them
 *           into each dimension's lane (P·V). */
#define OPS_KV_Q8_SUB (OPS_KV_KEYS * 34)  /* bytes of one 32-dimension sub-block of a key or value block */
#define OPS_KV_INV127 (1.0f / 127.0f)    /* the float nearest 1/127 */
static inline int64_t ops_kv_q8_sub_offset(int64_t j, int64_t b, int64_t hd) {  /* block of j, dims 32b.. */
    return (j / OPS_KV_KEYS * (hd / 32) + b) * OPS_KV_Q8_SUB;
}
static inline int64_t ops_kv_q8_scale_offset(int64_t j, int64_t b, int64_t hd) {  /* f16 scale of j, block b */
    return ops_kv_q8_sub_offset(j, b, hd) + j % OPS_KV_KEYS * 2;
}
static inline int64_t ops_kv_q8_code_offset(int64_t j, int64_t d, int64_t hd) {  /* int8 code of key j, dim d */
    return ops_kv_q8_sub_offset(j, d / 32, hd) + 2 * OPS_KV_KEYS + d % 32 / 4 * (4 * OPS_KV_KEYS) + j % OPS_KV_KEYS * 4 + d % 4;
}
static inline int64_t ops_kv_q8_value_offset(int64_t j, int64_t d, int64_t hd) {  /* int8 code of value j, dim d */
    return ops_kv_q8_sub_offset(j, d / 32, hd) + 2 * OPS_KV_KEYS + j % OPS_KV_KEYS / 4 * 128 + d % 32 * 4 + j % 4;
}
typedef struct {
    const uint8_t *q;           /* (group, hd / 32) Q8_0 blocks of 34 bytes: the query heads quantized */
    const uint8_t *k;           /* (n / OPS_KV_KEYS rounded up) key blocks: ops_kv_q8_code_offset */
    const uint8_t *v;           /* (n / OPS_KV_KEYS rounded up) value blocks: ops_kv_q8_value_offset */
    float *out;                 /* (group, hd) */
    int64_t n, hd, group;
    float scale;                /* head_dim^-0.5 */
} OpsAttnKVQ8;
int64_t ops_attn_kv_q8_work_bytes(int64_t n, int64_t group, int64_t hd);
void ops_attn_kv_q8(const OpsAttnKVQ8 *a, void *work);

/* ---- kernel families ---------------------------------------------------------------------------- */
void ops_exp_f32_ref(float *y, const float *x, int64_t n);
void ops_gelu_tanh_ref(float *y, const float *x, int64_t n);
void ops_gelu_erf_ref(float *y, const float *x, int64_t n);
void ops_bias_gelu_tanh_ref(float *x, const float *b, int64_t n);
void ops_bias_gelu_erf_ref(float *x, const float *b, int64_t n);
void ops_add_ref(float *x, const float *y, int64_t n);
void ops_swiglu_ref(float *g, const float *u, int64_t n);
void ops_add_bias_ref(float *x, const float *b, int64_t n);
void ops_add_bias_residual_ref(float *x, const float *y, const float *b, int64_t n);
void ops_layernorm_ref(float *out, const float *x, const float *w, const float *b, int64_t n, float eps);
void ops_residual_layernorm_ref(float *x, const float *y, const float *yb, float *out, const float *w, const float *b,
                                int64_t n, float eps);
float ops_softmax_row_ref(float *p, const float *s, int64_t n, float scale);
void ops_attn_head_f32_ref(const OpsAttn *a, void *work);
void ops_attn_head_q8_ref(const OpsAttn *a, void *work);
void ops_attn_kv_f16_ref(const OpsAttnKV *a, void *work);
void ops_attn_kv_q8_ref(const OpsAttnKVQ8 *a, void *work);

/* The table of one kernel family (the _avx2 / _avx512 / _neon functions are reached through it). */
typedef struct {
    const char *name;
    void (*exp_f32)(float *y, const float *x, int64_t n);
    void (*gelu_tanh)(float *y, const float *x, int64_t n);
    void (*gelu_erf)(float *y, const float *x, int64_t n);
    void (*bias_gelu_tanh)(float *x, const float *b, int64_t n);
    void (*bias_gelu_erf)(float *x, const float *b, int64_t n);
    void (*add)(float *x, const float *y, int64_t n);
    void (*swiglu)(float *g, const float *u, int64_t n);
    void (*add_bias)(float *x, const float *b, int64_t n);
    void (*add_bias_residual)(float *x, const float *y, const float *b, int64_t n);
    void (*layernorm)(float *out, const float *x, const float *w, const float *b, int64_t n, float eps);
    void (*residual_layernorm)(float *x, const float *y, const float *yb, float *out, const float *w, const float *b,
                               int64_t n, float eps);
    float (*softmax_row)(float *p, const float *s, int64_t n, float scale);
    void (*attn_head_f32)(const OpsAttn *a, void *work);
    void (*attn_head_q8)(const OpsAttn *a, void *work);
    void (*attn_kv_f16)(const OpsAttnKV *a, void *work);
    void (*attn_kv_q8)(const OpsAttnKVQ8 *a, void *work);
} OpsKernels;

extern const OpsKernels ops_kernels_ref;
#if defined(__x86_64__) || defined(__i386__)
extern const OpsKernels ops_kernels_avx2;
extern const OpsKernels ops_kernels_avx512;
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
extern const OpsKernels ops_kernels_neon;
#endif

/* Which family the dispatcher chose ("ref", "avx2", "avx512", "neon"). */
const char *ops_kernel_name(void);
/* Force a family for tests and benchmarks ("ref", "avx2", "avx512", "neon"; NULL: automatic).
 * Returns -1 if the CPU cannot run it. Not to be called while another thread is inside an op. */
int ops_force_kernels(const char *name);

#endif
