/* ops_simd.h — the vector versions of ops.h, written once over a small vector layer and included by
 * ops_avx512.c (16 lanes), ops_avx2.c (8) and ops_neon.c (4). Not a public header.
 *
 * The including file defines, before including:
 *   FN(name)     the family's name for a function (name ## _avx512, ...)
 *   TGT          the target attribute for the family's functions (empty on NEON)
 *   L            floats per vector (4, 8, 16); 32 % L == 0
 *   VF, VI       the float and int32 vector types
 *   the vector layer, always-inline TGT functions (L lanes; `_n` forms take the first n < L lanes):
 *     floats: vf_zero set1 load store load_n load_n_fill store_n keep_n add sub mul div fma(a·b + c)
 *             max min abs neg select_ge0 div_or_zero (0 where the divisor is ≤ 0) rne_clamp rne hmax
 *             tree_sum (the lanes' part of the OPS_LANES tree) exp (ops_exp1_ref) exp_lo (the same for
 *             x ≤ 88) exp2 (ops_exp2_ref) exp2_le (the same for x ≤ 127) transpose (L × L) from_vi
 *             load_h (L halves converted exactly)
 *     ints:   vi_zero set1 add xor load store store_n bcast4 (4 bytes to every lane) cvt (to float)
 *             hsum pack4 (4 vectors of bytes -127..127 into the 4 bytes of each lane) pack4u (0..127)
 *             store_bytes (the low byte of n lanes) from_vf
 *   dot4_qk(acc, a, b), dot4_pv(acc, a, b): acc (int32 lanes) += the dot product of the 4 bytes of
 *                lane i of a with the 4 bytes broadcast in b. qk: a holds queries (encoded with
 *                QK_XOR), b keys (int8); pv: a holds probabilities (0..127), b values (int8) (the
 *                decode's P·V passes the probabilities broadcast as a and the values in lanes as b:
 *                the instruction does not care which operand is the broadcast one).
 *   dot4_qk_b(acc, a, p): dot4_qk with b the 4 bytes at p broadcast (AVX-512 reads them as the
 *                instruction's embedded-broadcast memory operand, without a broadcast instruction
 *                of its own: 2-4% fewer cycles for the decode's Q8_0 scores, in cache).
 *   QK_XOR       byte XORed into the packed queries (0x80 for VNNI's unsigned operand, else 0)
 *   QK_CORR      multiplier of the key sum that corrects the accumulators for QK_XOR (-128 or 0)
 *   NK_Q8, QVT_Q8  score tile of the int8 attention: keys × query vectors (accumulators NK·QVT)
 *   ND_Q8        value dimensions per P·V tile (with QVT_Q8 query vectors)
 *   NK_F32, ND_F32, QVT_F32   the same for the f32 attention
 *   KV_ND        value vectors per tile of the decode attention (with 4 query heads)
 *   KV_HEADS     query heads per decode-attention P·V tile
 *   KV_QK_HEADS  query heads per decode-attention score step (OPS_KV_CHAINS·KV_QK_HEADS accumulators)
 *
 * Every function repeats its reference in ops.c step for step (ops.h, "Exactness"). */

#define QB OPS_ATTN_QBLOCK
#define QV (QB / L)              /* vectors per query block */
#define NACC (OPS_LANES / L)     /* accumulators of a row sum */

/* Keys are processed in tiles: full tiles of NK keys, then (when NK > 4) tiles of 4, then single keys.
 * The keys of a tile are stored interleaved so that a kernel reads them through one pointer: key j of
 * the tile starting at j0 with nk keys has its element group g at (j0·stride + g·nk + j - j0)·unit. */
static inline void FN(key_tile)(int64_t j, int64_t n, int NK, int64_t *j0, int64_t *nk) {
    int64_t full = n / NK * NK;
    if (j < full) {
        *j0 = j / NK * NK;
        *nk = NK;
        return;
    }
    int64_t four = NK > 4 ? full + (n - full) / 4 * 4 : full;
    if (j < four) {
        *j0 = full + (j - full) / 4 * 4;
        *nk = 4;
        return;
    }
    *j0 = j;
    *nk = 1;
}

/* ---- elementwise -------------------------------------------------------------------------------- */

TGT INLINE VF FN(gelu_tanh_v)(VF x) {
    VF x2 = vf_mul(x, x);
    VF c = vf_fma(x2, vf_set1(OPS_GELU_C1), vf_set1(OPS_GELU_C0));
    VF e = vf_exp(vf_mul(x, c));
    return vf_div(x, vf_add(vf_set1(1.0f), e));
}

TGT INLINE VF FN(gelu_erf_v)(VF x) {
    VF z = vf_mul(vf_abs(x), vf_set1(OPS_SQRT1_2));
    VF t = vf_div(vf_set1(1.0f), vf_fma(vf_set1(0.5f), z, vf_set1(1.0f)));
    VF p = vf_set1(OPS_ERFC_P9);
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P8));
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P7));
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P6));
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P5));
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P4));
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P3));
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P2));
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P1));
    p = vf_fma(p, t, vf_set1(OPS_ERFC_P0));
    VF arg = vf_fma(vf_mul(vf_set1(-0.5f), x), x, p);
    VF erfc = vf_mul(t, vf_exp(arg));
    VF pos = vf_fma(vf_set1(-0.5f), erfc, vf_set1(1.0f)), neg = vf_mul(vf_set1(0.5f), erfc);
    return vf_mul(x, vf_select_ge0(x, pos, neg));
}

TGT void FN(ops_exp_f32)(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) vf_store(y + i, vf_exp(vf_load(x + i)));
    if (i < n) vf_store_n(y + i, vf_exp(vf_load_n(x + i, (int)(n - i))), (int)(n - i));
}

TGT void FN(ops_gelu_tanh)(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) vf_store(y + i, FN(gelu_tanh_v)(vf_load(x + i)));
    if (i < n) vf_store_n(y + i, FN(gelu_tanh_v)(vf_load_n(x + i, (int)(n - i))), (int)(n - i));
}

TGT void FN(ops_gelu_erf)(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) vf_store(y + i, FN(gelu_erf_v)(vf_load(x + i)));
    if (i < n) vf_store_n(y + i, FN(gelu_erf_v)(vf_load_n(x + i, (int)(n - i))), (int)(n - i));
}

TGT void FN(ops_bias_gelu_tanh)(float *x, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) vf_store(x + i, FN(gelu_tanh_v)(vf_add(vf_load(x + i), vf_load(b + i))));
    if (i < n) {
        int c = (int)(n - i);
        vf_store_n(x + i, FN(gelu_tanh_v)(vf_add(vf_load_n(x + i, c), vf_load_n(b + i, c))), c);
    }
}

TGT void FN(ops_bias_gelu_erf)(float *x, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) vf_store(x + i, FN(gelu_erf_v)(vf_add(vf_load(x + i), vf_load(b + i))));
    if (i < n) {
        int c = (int)(n - i);
        vf_store_n(x + i, FN(gelu_erf_v)(vf_add(vf_load_n(x + i, c), vf_load_n(b + i, c))), c);
    }
}

TGT void FN(ops_add)(float *x, const float *y, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) vf_store(x + i, vf_add(vf_load(x + i), vf_load(y + i)));
    if (i < n) vf_store_n(x + i, vf_add(vf_load_n(x + i, (int)(n - i)), vf_load_n(y + i, (int)(n - i))), (int)(n - i));
}

TGT void FN(ops_add_bias)(float *x, const float *b, int64_t n) { FN(ops_add)(x, b, n); }

TGT INLINE VF FN(swiglu_v)(VF g, VF u) { return vf_mul(vf_div(g, vf_add(vf_set1(1.0f), vf_exp(vf_neg(g)))), u); }

TGT void FN(ops_swiglu)(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) vf_store(g + i, FN(swiglu_v)(vf_load(g + i), vf_load(u + i)));
    if (i < n) vf_store_n(g + i, FN(swiglu_v)(vf_load_n(g + i, (int)(n - i)), vf_load_n(u + i, (int)(n - i))), (int)(n - i));
}

TGT void FN(ops_add_bias_residual)(float *x, const float *y, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) vf_store(x + i, vf_add(vf_load(x + i), vf_add(vf_load(y + i), vf_load(b + i))));
    if (i < n) {
        int c = (int)(n - i);
        vf_store_n(x + i, vf_add(vf_load_n(x + i, c), vf_add(vf_load_n(y + i, c), vf_load_n(b + i, c))), c);
    }
}

/* ---- row sums: OPS_LANES partials = NACC vectors; element i → vector (i / L) % NACC, lane i % L --- */

TGT INLINE float FN(lanes_sum)(VF *acc) {
    for (int s = NACC / 2; s >= 1; s >>= 1)
        for (int k = 0; k < s; k++) acc[k] = vf_add(acc[k], acc[k + s]);
    return vf_tree_sum(acc[0]);
}

/* Σ x over n elements (n > 0) in the partial-sum order. */
TGT INLINE float FN(row_sum)(const float *x, int64_t n) {
    VF acc[NACC];
    for (int k = 0; k < NACC; k++) acc[k] = vf_zero();
    int64_t i = 0;
    for (; i + OPS_LANES <= n; i += OPS_LANES)
        for (int k = 0; k < NACC; k++) acc[k] = vf_add(acc[k], vf_load(x + i + k * L));
    for (int k = 0; k < NACC; k++) {
        int64_t c = n - i - k * L;
        if (c >= L) acc[k] = vf_add(acc[k], vf_load(x + i + k * L));
        else if (c > 0) acc[k] = vf_add(acc[k], vf_load_n(x + i + k * L, (int)c));
    }
    return FN(lanes_sum)(acc);
}

TGT static void FN(layernorm_from_sum)(float *out, const float *x, float sum, const float *w, const float *b, int64_t n,
                                       float eps) {
    float mean = sum / (float)n;
    VF mv = vf_set1(mean), acc[NACC];
    for (int k = 0; k < NACC; k++) acc[k] = vf_zero();
    int64_t i = 0;
    for (; i + OPS_LANES <= n; i += OPS_LANES)
        for (int k = 0; k < NACC; k++) {
            VF d = vf_sub(vf_load(x + i + k * L), mv);
            acc[k] = vf_fma(d, d, acc[k]);
        }
    for (int k = 0; k < NACC; k++) {
        int64_t c = n - i - k * L;
        if (c >= L) {
            VF d = vf_sub(vf_load(x + i + k * L), mv);
            acc[k] = vf_fma(d, d, acc[k]);
        } else if (c > 0) {
            VF d = vf_keep_n(vf_sub(vf_load_n(x + i + k * L, (int)c), mv), (int)c);
            acc[k] = vf_fma(d, d, acc[k]);
        }
    }
    float var = FN(lanes_sum)(acc) / (float)n;
    float inv = 1.0f / sqrtf(var + eps);
    VF iv = vf_set1(inv);
    for (i = 0; i + L <= n; i += L)
        vf_store(out + i, vf_fma(vf_mul(vf_sub(vf_load(x + i), mv), iv), vf_load(w + i), vf_load(b + i)));
    if (i < n) {
        int c = (int)(n - i);
        vf_store_n(out + i, vf_fma(vf_mul(vf_sub(vf_load_n(x + i, c), mv), iv), vf_load_n(w + i, c), vf_load_n(b + i, c)),
                   c);
    }
}

TGT void FN(ops_layernorm)(float *out, const float *x, const float *w, const float *b, int64_t n, float eps) {
    if (n <= 0) return;
    FN(layernorm_from_sum)(out, x, FN(row_sum)(x, n), w, b, n, eps);
}

TGT void FN(ops_residual_layernorm)(float *x, const float *y, const float *yb, float *out, const float *w, const float *b,
                                    int64_t n, float eps) {
    if (n <= 0) return;
    FN(ops_add_bias_residual)(x, y, yb, n);  /* x is in L1 for the sums that follow */
    FN(layernorm_from_sum)(out, x, FN(row_sum)(x, n), w, b, n, eps);
}

/* ops_softmax_row over n > 0 scores stored L at a time, `stride` floats apart (stride L: a plain row;
 * the decode attention's interleaved work buffer: group·L), from src into dst (dst may be src): the
 * maximum, then each block's exponentials, block b added into partial vector b % NACC — where a plain
 * row adds keys [b·L, b·L + L) (key j into partial j % OPS_LANES), in the same order. */
TGT INLINE float FN(softmax_blocks)(float *dst, const float *src, int64_t n, int64_t stride, float scale) {
    const int64_t full = n / L, tail = n % L;
    VF mx = vf_set1(-INFINITY);
    for (int64_t b = 0; b < full; b++) mx = vf_max(mx, vf_load(src + b * stride));
    if (tail) mx = vf_max(mx, vf_load_n_fill(src + full * stride, (int)tail, -INFINITY));
    float ms = vf_hmax(mx) * scale;
    VF sc = vf_set1(scale), nms = vf_set1(-ms), acc[NACC];
    for (int k = 0; k < NACC; k++) acc[k] = vf_zero();
    int64_t b = 0;
    for (; b + NACC <= full; b += NACC)
        for (int k = 0; k < NACC; k++) {
            VF e = vf_exp(vf_fma(vf_load(src + (b + k) * stride), sc, nms));
            vf_store(dst + (b + k) * stride, e);
            acc[k] = vf_add(acc[k], e);
        }
    for (int k = 0; b + k < full; k++) {
        VF e = vf_exp(vf_fma(vf_load(src + (b + k) * stride), sc, nms));
        vf_store(dst + (b + k) * stride, e);
        acc[k] = vf_add(acc[k], e);
    }
    if (tail) {
        VF e = vf_keep_n(vf_exp(vf_fma(vf_load_n(src + full * stride, (int)tail), sc, nms)), (int)tail);
        vf_store_n(dst + full * stride, e, (int)tail);
        acc[full % NACC] = vf_add(acc[full % NACC], e);
    }
    return FN(lanes_sum)(acc);
}

TGT float FN(ops_softmax_row)(float *p, const float *s, int64_t n, float scale) {
    return n > 0 ? FN(softmax_blocks)(p, s, n, L, scale) : 0.0f;
}

/* ---- attention: f32 ----------------------------------------------------------------------------- */


/* Scores of NK keys (a key tile kf[d][NK]) for QVT query vectors: s[j][lanes] = Σ_d qt[d][lanes]·kf[d][j]. */
TGT INLINE void FN(f32_score_tile)(const float *qt, const float *kf, int64_t hd, float *s, VF *m, const int NK) {
    VF acc[NK_F32][QVT_F32];
#pragma GCC unroll 16
    for (int j = 0; j < NK; j++)
#pragma GCC unroll 8
        for (int v = 0; v < QVT_F32; v++) acc[j][v] = vf_zero();
    for (int64_t d = 0; d < hd; d++) {
        VF a[QVT_F32];
#pragma GCC unroll 8
        for (int v = 0; v < QVT_F32; v++) a[v] = vf_load(qt + d * QB + v * L);
#pragma GCC unroll 16
        for (int j = 0; j < NK; j++) {
            VF b = vf_set1(kf[d * NK + j]);
#pragma GCC unroll 8
            for (int v = 0; v < QVT_F32; v++) acc[j][v] = vf_fma(a[v], b, acc[j][v]);
        }
    }
#pragma GCC unroll 16
    for (int j = 0; j < NK; j++)
#pragma GCC unroll 8
        for (int v = 0; v < QVT_F32; v++) {
            vf_store(s + j * QB + v * L, acc[j][v]);
            m[v] = vf_max(m[v], acc[j][v]);
        }
}

/* o[d][lanes] = Σ_j p[j][lanes]·vf[j][d] for ND dimensions, QVT query vectors, written times inv. */
TGT INLINE void FN(f32_pv_tile)(const float *p, const float *vf, int64_t n, int64_t hd, const VF *inv, float *ot,
                                const int ND) {
    VF acc[ND_F32][QVT_F32];
#pragma GCC unroll 16
    for (int dd = 0; dd < ND; dd++)
#pragma GCC unroll 8
        for (int v = 0; v < QVT_F32; v++) acc[dd][v] = vf_zero();
    for (int64_t j = 0; j < n; j++) {
        VF a[QVT_F32];
#pragma GCC unroll 8
        for (int v = 0; v < QVT_F32; v++) a[v] = vf_load(p + j * QB + v * L);
#pragma GCC unroll 16
        for (int dd = 0; dd < ND; dd++) {
            VF b = vf_set1(vf[j * hd + dd]);
#pragma GCC unroll 8
            for (int v = 0; v < QVT_F32; v++) acc[dd][v] = vf_fma(a[v], b, acc[dd][v]);
        }
    }
#pragma GCC unroll 16
    for (int dd = 0; dd < ND; dd++)
#pragma GCC unroll 8
        for (int v = 0; v < QVT_F32; v++) vf_store(ot + dd * QB + v * L, vf_mul(acc[dd][v], inv[v]));
}

/* x + bias for n rows of hd (row stride ld) into a dense (n, hd) array. */
TGT static void FN(add_bias_rows)(float *dst, const float *x, const float *bias, int64_t n, int64_t hd, int64_t ld) {
    for (int64_t j = 0; j < n; j++) {
        const float *r = x + j * ld;
        float *o = dst + j * hd;
        int64_t d = 0;
        for (; d + L <= hd; d += L) vf_store(o + d, vf_add(vf_load(r + d), vf_load(bias + d)));
        if (d < hd) vf_store_n(o + d, vf_add(vf_load_n(r + d, (int)(hd - d)), vf_load_n(bias + d, (int)(hd - d))), (int)(hd - d));
    }
}

/* The block's output ot[d][i] (times inv[i] when inv is not NULL, as the reference's o · (1/sum))
 * into the output rows of queries i < nq: L × L transposes. */
TGT static void FN(write_out)(const OpsAttn *a, const float *ot, const float *inv, int64_t i0, int64_t nq) {
    const int64_t hd = a->hd;
    for (int v = 0; v < QV && v * L < nq; v++) {
        int64_t ni = nq - v * L < L ? nq - v * L : L;
        VF sc = inv ? vf_load(inv + v * L) : vf_zero();
        for (int64_t d0 = 0; d0 < hd; d0 += L) {
            int nd = hd - d0 < L ? (int)(hd - d0) : L;
            VF r[L];
            for (int rr = 0; rr < L; rr++) {
                r[rr] = rr < nd ? vf_load(ot + (d0 + rr) * QB + v * L) : vf_zero();
                if (inv) r[rr] = vf_mul(r[rr], sc);
            }
            vf_transpose(r);
            for (int64_t i = 0; i < ni; i++) {
                float *o = a->out + (i0 + v * L + i) * a->ldo + d0;
                if (nd == L) vf_store(o, r[i]);
                else vf_store_n(o, r[i], nd);
            }
        }
    }
}

TGT void FN(ops_attn_head_f32)(const OpsAttn *a, void *work) {
    OpsAttnWork w;
    ops_attn_layout(a->n, a->hd, work, &w);
    const int64_t n = a->n, hd = a->hd;
    FN(add_bias_rows)(w.vf, a->v, a->bv, n, hd, a->ld);
    for (int64_t j = 0; j < n; j++) {  /* keys with their bias, in key tiles [d][nk] */
        int64_t j0, nk;
        FN(key_tile)(j, n, NK_F32, &j0, &nk);
        float *dst = w.kf + j0 * hd + (j - j0);
        for (int64_t d = 0; d < hd; d++) dst[d * nk] = a->k[j * a->ld + d] + a->bk[d];
    }
    for (int64_t i0 = 0; i0 < n; i0 += QB) {
        int64_t nq = n - i0 < QB ? n - i0 : QB;
        for (int64_t d = 0; d < hd; d++)
            for (int64_t i = 0; i < QB; i++) w.qt[d * QB + i] = i < nq ? a->q[(i0 + i) * a->ld + d] + a->bq[d] : 0.0f;
        VF m[QV], inv[QV];
        for (int v = 0; v < QV; v++) m[v] = vf_set1(-INFINITY);
        for (int v0 = 0; v0 < QV; v0 += QVT_F32) {
            int64_t j = 0;
            for (; j + NK_F32 <= n; j += NK_F32)
                FN(f32_score_tile)(w.qt + v0 * L, w.kf + j * hd, hd, w.sf + j * QB + v0 * L, m + v0, NK_F32);
#if NK_F32 > 4
            for (; j + 4 <= n; j += 4)
                FN(f32_score_tile)(w.qt + v0 * L, w.kf + j * hd, hd, w.sf + j * QB + v0 * L, m + v0, 4);
#endif
            for (; j < n; j++) FN(f32_score_tile)(w.qt + v0 * L, w.kf + j * hd, hd, w.sf + j * QB + v0 * L, m + v0, 1);
        }
        VF sc = vf_set1(a->scale);
        for (int v = 0; v < QV; v++) {
            VF nms = vf_neg(vf_mul(m[v], sc)), sum = vf_zero();
            for (int64_t j = 0; j < n; j++) {
                float *sj = w.sf + j * QB + v * L;
                VF e = vf_exp_lo(vf_fma(vf_load(sj), sc, nms));
                vf_store(sj, e);
                sum = vf_add(sum, e);
            }
            inv[v] = vf_div(vf_set1(1.0f), sum);
        }
        for (int v0 = 0; v0 < QV; v0 += QVT_F32) {
            int64_t d = 0;
            for (; d + ND_F32 <= hd; d += ND_F32)
                FN(f32_pv_tile)(w.sf + v0 * L, w.vf + d, n, hd, inv + v0, w.otf + d * QB + v0 * L, ND_F32);
            for (; d < hd; d++) FN(f32_pv_tile)(w.sf + v0 * L, w.vf + d, n, hd, inv + v0, w.otf + d * QB + v0 * L, 1);
        }
        FN(write_out)(a, w.otf, NULL, i0, nq);
    }
}

/* ---- attention: int8 ------------------------------------------------------------------------------ */

/* (x + bias) over hd elements, zero-padded to hd4, quantized with one scale (quantize_row_ref in
 * ops.c): bytes q[0..hd4), *sum = Σ q; returns amax / 127. */
TGT static float FN(quant_row)(const float *x, const float *bias, int64_t hd, int64_t hd4, int8_t *q, int32_t *sum) {
    VF amax = vf_zero();
    int64_t d = 0;
    for (; d + L <= hd; d += L) amax = vf_max(amax, vf_abs(vf_add(vf_load(x + d), vf_load(bias + d))));
    if (d < hd) amax = vf_max(amax, vf_abs(vf_add(vf_load_n(x + d, (int)(hd - d)), vf_load_n(bias + d, (int)(hd - d)))));
    float am = vf_hmax(amax);
    VF id = vf_set1(am > 0.0f ? 127.0f / am : 0.0f);
    VI s = vi_zero();
    for (d = 0; d < hd4; d += L) {
        int64_t cx = hd - d < L ? hd - d : L, cq = hd4 - d < L ? hd4 - d : L;
        VF v = cx == L ? vf_add(vf_load(x + d), vf_load(bias + d))
                       : cx > 0 ? vf_add(vf_load_n(x + d, (int)cx), vf_load_n(bias + d, (int)cx)) : vf_zero();
        VI qi = vf_rne_clamp(vf_mul(v, id), -127.0f, 127.0f);
        s = vi_add(s, qi);
        vi_store_bytes(q + d, qi, (int)cq);
    }
    *sum = vi_hsum(s);
    return am / 127.0f;
}

/* Values: per block of KB keys and dimension d one scale; bytes in quads of keys: vq[(quad·hd + d)·4 + r]
 * = value of key 4·quad + r (0 for keys ≥ n). */
TGT static void FN(prep_values)(const OpsAttn *a, const OpsAttnWork *w) {
    const int64_t n = a->n, hd = a->hd, KB = OPS_ATTN_KBLOCK;
    for (int64_t kb = 0; kb < w->nkb; kb++) {
        int64_t j0 = kb * KB, j1 = j0 + KB < n ? j0 + KB : n;
        for (int64_t d0 = 0; d0 < hd; d0 += L) {
            int c = hd - d0 < L ? (int)(hd - d0) : L;
            VF bv = vf_load_n(a->bv + d0, c), amax = vf_zero();
            for (int64_t j = j0; j < j1; j++) amax = vf_max(amax, vf_abs(vf_add(vf_load_n(a->v + j * a->ld + d0, c), bv)));
            vf_store_n(w->dv + kb * hd + d0, vf_div(amax, vf_set1(127.0f)), c);
            VF iv = vf_div_or_zero(vf_set1(127.0f), amax);
            for (int64_t q = j0 / 4; q < (j1 + 3) / 4; q++) {
                VI r[4];
                for (int rr = 0; rr < 4; rr++) {
                    int64_t j = 4 * q + rr;
                    r[rr] = j < n ? vf_rne_clamp(vf_mul(vf_add(vf_load_n(a->v + j * a->ld + d0, c), bv), iv), -127.0f, 127.0f)
                                  : vi_zero();
                }
                vi_store_n(w->vq + (q * hd + d0) * 4, vi_pack4(r[0], r[1], r[2], r[3]), c);
            }
        }
    }
}

/* Queries i0 .. i0+nq-1 into the packed block qp[k4][QB][4] (bytes XOR QK_XOR; queries past nq zero)
 * and dq[i] = (amax/127)·scale·log2(e), as quantize_row_ref in ops.c. L queries at a time are
 * transposed into tq[d][L] (queries in lanes), so the row maxima are vertical and every 4 dimensions
 * pack straight into one vector of the block. */
TGT static void FN(prep_queries)(const OpsAttn *a, const OpsAttnWork *w, int64_t i0, int64_t nq, float *tq) {
    const int64_t hd = a->hd, hd4 = w->hd4;
    const VF scale2 = vf_set1(a->scale * OPS_LOG2E);
    const VI flip = vi_set1((int32_t)((uint32_t)QK_XOR * 0x01010101u));
    for (int v = 0; v < QV; v++) {
        int64_t nv = nq - v * L;  /* real queries in this vector */
        VF amax = vf_zero();
        for (int64_t d0 = 0; d0 < hd4; d0 += L) {
            int nd = hd - d0 < L ? (int)(hd - d0) : L;
            VF r[L];
            if (nd > 0) {
                VF b = nd == L ? vf_load(a->bq + d0) : vf_load_n(a->bq + d0, nd);
                for (int rr = 0; rr < L; rr++) {
                    const float *x = a->q + (i0 + v * L + rr) * a->ld + d0;
                    r[rr] = rr >= nv ? vf_zero() : vf_add(nd == L ? vf_load(x) : vf_load_n(x, nd), b);
                }
            } else {
                for (int rr = 0; rr < L; rr++) r[rr] = vf_zero();
            }
            vf_transpose(r);
            for (int rr = 0; rr < L && d0 + rr < hd4; rr++) {
                vf_store(tq + (d0 + rr) * L, r[rr]);
                amax = vf_max(amax, vf_abs(r[rr]));
            }
        }
        VF id = vf_div_or_zero(vf_set1(127.0f), amax);
        vf_store(w->dq + v * L, vf_mul(vf_div(amax, vf_set1(127.0f)), scale2));
        for (int64_t k4 = 0; k4 < hd4 / 4; k4++) {
            VI q[4];
            for (int rr = 0; rr < 4; rr++) q[rr] = vf_rne_clamp(vf_mul(vf_load(tq + (4 * k4 + rr) * L), id), -127.0f, 127.0f);
            vi_store(w->qp + (k4 * QB + v * L) * 4, vi_xor(vi_pack4(q[0], q[1], q[2], q[3]), flip));
        }
    }
}

/* Scores of NK keys (a key tile kq[k4][NK][4]) for QVT query vectors: s[j][lanes] = isum·(dq·dk[j]);
 * m = running max. */
TGT INLINE void FN(q8_score_tile)(const uint8_t *qp, const int8_t *kq, int64_t hd4, const int32_t *ksum,
                                  const float *dk, const VF *dq, float *s, VF *m, const int NK) {
    VI acc[NK_Q8][QVT_Q8];
#pragma GCC unroll 16
    for (int j = 0; j < NK; j++) {
        VI c = vi_set1(QK_CORR * ksum[j]);
#pragma GCC unroll 8
        for (int v = 0; v < QVT_Q8; v++) acc[j][v] = c;
    }
    for (int64_t k4 = 0; k4 < hd4 / 4; k4++) {
        VI qa[QVT_Q8];
#pragma GCC unroll 8
        for (int v = 0; v < QVT_Q8; v++) qa[v] = vi_load(qp + (k4 * QB + v * L) * 4);
#pragma GCC unroll 16
        for (int j = 0; j < NK; j++) {
            VI b = vi_bcast4(kq + (k4 * NK + j) * 4);
#pragma GCC unroll 8
            for (int v = 0; v < QVT_Q8; v++) acc[j][v] = dot4_qk(acc[j][v], qa[v], b);
        }
    }
#pragma GCC unroll 16
    for (int j = 0; j < NK; j++) {
        VF dkj = vf_set1(dk[j]);
#pragma GCC unroll 8
        for (int v = 0; v < QVT_Q8; v++) {
            VF sv = vf_mul(vi_cvt(acc[j][v]), vf_mul(dq[v], dkj));
            vf_store(s + j * QB + v * L, sv);
            m[v] = vf_max(m[v], sv);
        }
    }
}

/* One key block's contribution to ND output dimensions for QVT query vectors:
 * ot[dd][lanes] = fmaf(isum, dp[lanes]·dv[dd], ot[dd][lanes]), isum over the quads [q0, q1). */
TGT INLINE void FN(q8_pv_tile)(const uint8_t *pp, const int8_t *vq, int64_t hd, int64_t q0, int64_t q1, const float *dp,
                               const float *dv, float *ot, const int ND) {
    VI acc[ND_Q8][QVT_Q8];
#pragma GCC unroll 16
    for (int dd = 0; dd < ND; dd++)
#pragma GCC unroll 8
        for (int v = 0; v < QVT_Q8; v++) acc[dd][v] = vi_zero();
    for (int64_t q = q0; q < q1; q++) {
        VI pa[QVT_Q8];
#pragma GCC unroll 8
        for (int v = 0; v < QVT_Q8; v++) pa[v] = vi_load(pp + (q * QB + v * L) * 4);
#pragma GCC unroll 16
        for (int dd = 0; dd < ND; dd++) {
            VI b = vi_bcast4(vq + (q * hd + dd) * 4);
#pragma GCC unroll 8
            for (int v = 0; v < QVT_Q8; v++) acc[dd][v] = dot4_pv(acc[dd][v], pa[v], b);
        }
    }
#pragma GCC unroll 16
    for (int dd = 0; dd < ND; dd++) {
        VF dvd = vf_set1(dv[dd]);
#pragma GCC unroll 8
        for (int v = 0; v < QVT_Q8; v++) {
            float *o = ot + dd * QB + v * L;
            vf_store(o, vf_fma(vi_cvt(acc[dd][v]), vf_mul(vf_load(dp + v * L), dvd), vf_load(o)));
        }
    }
}

TGT void FN(ops_attn_head_q8)(const OpsAttn *a, void *work) {
    OpsAttnWork w;
    ops_attn_layout(a->n, a->hd, work, &w);
    const int64_t n = a->n, hd = a->hd, hd4 = w.hd4, KB = OPS_ATTN_KBLOCK, nkb = w.nkb;
    int8_t *row = w.rows;
    for (int64_t j = 0; j < n; j++) {  /* keys, in key tiles [k4][nk][4] */
        int64_t j0, nk;
        FN(key_tile)(j, n, NK_Q8, &j0, &nk);
        w.dk[j] = FN(quant_row)(a->k + j * a->ld, a->bk, hd, hd4, row, &w.ksum[j]);
        int8_t *dst = w.kq + j0 * hd4 + (j - j0) * 4;
        for (int64_t k4 = 0; k4 < hd4 / 4; k4++) memcpy(dst + k4 * nk * 4, row + 4 * k4, 4);
    }
    FN(prep_values)(a, &w);
    for (int64_t i0 = 0; i0 < n; i0 += QB) {
        int64_t nq = n - i0 < QB ? n - i0 : QB;
        FN(prep_queries)(a, &w, i0, nq, (float *)w.rows);
        VF m[QV], dq[QV];
        for (int v = 0; v < QV; v++) {
            m[v] = vf_set1(-INFINITY);
            dq[v] = vf_load(w.dq + v * L);
        }
        /* scores s[j][QB] and each query's max */
        for (int v0 = 0; v0 < QV; v0 += QVT_Q8) {
            const uint8_t *qp = w.qp + v0 * L * 4;
            int64_t j = 0;
            for (; j + NK_Q8 <= n; j += NK_Q8)
                FN(q8_score_tile)(qp, w.kq + j * hd4, hd4, w.ksum + j, w.dk + j, dq + v0, w.s + j * QB + v0 * L, m + v0, NK_Q8);
#if NK_Q8 > 4
            for (; j + 4 <= n; j += 4)
                FN(q8_score_tile)(qp, w.kq + j * hd4, hd4, w.ksum + j, w.dk + j, dq + v0, w.s + j * QB + v0 * L, m + v0, 4);
#endif
            for (; j < n; j++)
                FN(q8_score_tile)(qp, w.kq + j * hd4, hd4, w.ksum + j, w.dk + j, dq + v0, w.s + j * QB + v0 * L, m + v0, 1);
        }
        /* p = 2^(s - max) quantized per block of KB keys into pp[quad][QB][4] as 2^(s - cb), cb = the
         * block's max - log2(127); sum of the quantized p. 2^(s - cb) ≤ 2^log2(127) lies in [0, 127.5),
         * so the reference's clamp to [0, 127] never acts and is left out here, and so is exp2's upper
         * clamp (vf_exp2_le: x ≤ 127) */
        for (int v = 0; v < QV; v++) {
            VF sum = vf_zero();
            for (int64_t kb = 0; kb < nkb; kb++) {
                int64_t j0 = kb * KB, j1 = j0 + KB < n ? j0 + KB : n;
                VF bm = vf_set1(-INFINITY);
                for (int64_t j = j0; j < j1; j++) bm = vf_max(bm, vf_load(w.s + j * QB + v * L));
                VF eb = vf_exp2(vf_sub(bm, m[v])), cb = vf_sub(bm, vf_set1(OPS_LOG2_127));
                VF dp = vf_div(eb, vf_set1(127.0f));
                vf_store(w.dp + kb * QB + v * L, dp);
                VI isum = vi_zero();
                const float *sv = w.s + v * L;
                uint8_t *pv = w.pp + v * L * 4;
                int64_t q = j0 / 4;
                for (; 4 * q + 4 <= j1; q++) {  /* whole quads */
                    VI r[4];
#pragma GCC unroll 4
                    for (int rr = 0; rr < 4; rr++)
                        r[rr] = vf_rne(vf_exp2_le(vf_sub(vf_load(sv + (4 * q + rr) * QB), cb)));
                    isum = vi_add(isum, vi_add(vi_add(r[0], r[1]), vi_add(r[2], r[3])));
                    vi_store(pv + q * QB * 4, vi_pack4u(r[0], r[1], r[2], r[3]));
                }
                if (4 * q < j1) {  /* the last keys: p = 0 past n */
                    VI r[4];
                    for (int rr = 0; rr < 4; rr++)
                        r[rr] = 4 * q + rr < j1 ? vf_rne(vf_exp2_le(vf_sub(vf_load(sv + (4 * q + rr) * QB), cb)))
                                                : vi_zero();
                    isum = vi_add(isum, vi_add(vi_add(r[0], r[1]), vi_add(r[2], r[3])));
                    vi_store(pv + q * QB * 4, vi_pack4u(r[0], r[1], r[2], r[3]));
                }
                sum = vf_fma(vi_cvt(isum), dp, sum);
            }
            vf_store(w.sum + v * L, vf_div(vf_set1(1.0f), sum));
        }
        /* o = Σ_blocks isum·(dp·dv) */
        memset(w.ot, 0, (size_t)(hd * QB) * sizeof(float));
        for (int64_t kb = 0; kb < nkb; kb++) {
            int64_t q0 = kb * KB / 4, q1 = ((kb * KB + KB < n ? kb * KB + KB : n) + 3) / 4;
            for (int v0 = 0; v0 < QV; v0 += QVT_Q8) {
                const uint8_t *pp = w.pp + v0 * L * 4;
                const float *dp = w.dp + kb * QB + v0 * L;
                int64_t d = 0;
                for (; d + ND_Q8 <= hd; d += ND_Q8)
                    FN(q8_pv_tile)(pp, w.vq + d * 4, hd, q0, q1, dp, w.dv + kb * hd + d, w.ot + d * QB + v0 * L, ND_Q8);
#if ND_Q8 > 4
                for (; d + 4 <= hd; d += 4)
                    FN(q8_pv_tile)(pp, w.vq + d * 4, hd, q0, q1, dp, w.dv + kb * hd + d, w.ot + d * QB + v0 * L, 4);
#endif
                for (; d < hd; d++)
                    FN(q8_pv_tile)(pp, w.vq + d * 4, hd, q0, q1, dp, w.dv + kb * hd + d, w.ot + d * QB + v0 * L, 1);
            }
        }
        FN(write_out)(a, w.ot, w.sum, i0, nq);
    }
}

/* ---- decode attention over an F16 cache (ops_attn_kv_f16_ref step for step) -------------------- */

/* The first n < L halves at p, the rest of the vector 0. */
TGT INLINE VF FN(load_h_n)(const uint16_t *p, int n) {
    uint16_t t[L];
    memset(t, 0, sizeof t);
    memcpy(t, p, (size_t)n * sizeof(uint16_t));
    return vf_load_h(t);
}

/* Both passes ask for the row KV_PREFETCH keys ahead, into L2 (locality 2: prefetcht1 on x86). The
 * hardware prefetcher alone leaves each pass waiting on memory and computing in turn; measured on
 * Zen 4 with a 2048-key cache from DRAM, 2 threads: 6.86 → 6.05 ms per token together with the
 * interleaved scores below; 32 keys ahead beat 8 and 16, 64 was no better; into L1 (locality 3)
 * helped less. With the rows in L3 the prefetch was measured 1.9x faster than none. */
#define KV_PREFETCH 32
TGT INLINE void FN(prefetch_row)(const uint16_t *p, int64_t n, int in_range) {
    if (!in_range) return;
    for (int64_t b = 0; b < n * (int64_t)sizeof(uint16_t); b += 64) __builtin_prefetch((const char *)p + b, 0, 2);
}

/* The work buffer holds the scores (then the probabilities) interleaved by blocks of L keys: key j of
 * head g at kv_score_index(j, g). One pass then writes, and the next reads, a single ascending stream
 * instead of `group` streams n floats apart, which kept the cache rows' stream from memory from
 * overlapping the arithmetic (the scores pass alone, 2048 keys from DRAM: 4.00 → 3.18 ms per token). */
TGT INLINE int64_t FN(kv_score_index)(int64_t group, int64_t j, int64_t g) {
    return j / L * L * group + g * L + j % L;
}

/* The scores of the L keys [j0, j0 + L) (j0 a multiple of L: one block of OPS_KV_KEYS holds
 * OPS_KV_KEYS / L such groups) for the heads [g0, g0 + nh), those below n stored: for each dimension d
 * the block's vector of that dimension of the L keys, multiplied into chain d % OPS_KV_CHAINS of every
 * head with q[h][d] broadcast — the reference's chains, each key in its own lane — then the chains
 * added as the reference adds them. Keys past n (inside the last block) are computed and not stored.
 * `prefetch`: ask for the block KV_PREFETCH keys ahead, OPS_KV_CHAINS dimensions at a time, spread
 * over the dimension loop so that the requests do not come in one burst. */
TGT INLINE void FN(kv_scores_keys)(const OpsAttnKV *a, float *s, int64_t j0, int64_t g0, const int nh, int prefetch) {
    const int64_t hd = a->hd;
    const uint16_t *k = a->k + ops_kv_key_index(j0, 0, hd);  /* dimension d of the L keys: k + d·OPS_KV_KEYS */
    const uint16_t *ahead = prefetch ? a->k + ops_kv_key_index(j0 + KV_PREFETCH, 0, hd) : k;
    const float *q = a->q + g0 * hd;
    VF acc[6][OPS_KV_CHAINS];  /* nh <= KV_QK_HEADS <= 6 */
    _Pragma("GCC unroll 8")
    for (int h = 0; h < nh; h++)
        _Pragma("GCC unroll 8")
        for (int c = 0; c < OPS_KV_CHAINS; c++) acc[h][c] = vf_zero();
    int64_t d = 0;
    for (; d + OPS_KV_CHAINS <= hd; d += OPS_KV_CHAINS) {
        FN(prefetch_row)(ahead + d * OPS_KV_KEYS, OPS_KV_CHAINS * OPS_KV_KEYS, prefetch);  /* these dimensions' 128 bytes */
        _Pragma("GCC unroll 8")
        for (int c = 0; c < OPS_KV_CHAINS; c++) {
            VF kv = vf_load_h(k + (d + c) * OPS_KV_KEYS);
            _Pragma("GCC unroll 8")
            for (int h = 0; h < nh; h++) acc[h][c] = vf_fma(vf_set1(q[h * hd + d + c]), kv, acc[h][c]);
        }
    }
    /* hd % OPS_KV_CHAINS dimensions left: chains 0.. A loop unrolled over the chain index, so that
     * acc is only ever indexed by constants: with the index a variable (c++ per dimension left) the
     * compiler kept acc in memory for that loop and stored and reloaded all the accumulators around
     * it for every L keys even when no dimension was left (Zen 4, hd 128, in cache: the score
     * pass ~45.5 -> ~43.5 cycles per key). */
    _Pragma("GCC unroll 8")
    for (int c = 0; c < OPS_KV_CHAINS - 1; c++) {
        if (d + c >= hd) break;
        VF kv = vf_load_h(k + (d + c) * OPS_KV_KEYS);
        _Pragma("GCC unroll 8")
        for (int h = 0; h < nh; h++) acc[h][c] = vf_fma(vf_set1(q[h * hd + d + c]), kv, acc[h][c]);
    }
    const int nk = a->n - j0 < L ? (int)(a->n - j0) : L;
    _Pragma("GCC unroll 8")
    for (int h = 0; h < nh; h++) {
        VF t = vf_add(vf_add(acc[h][0], acc[h][1]), vf_add(acc[h][2], acc[h][3]));
        float *dst = s + FN(kv_score_index)(a->group, j0, g0 + h);
        if (nk == L) vf_store(dst, t);
        else vf_store_n(dst, t, nk);
    }
}

/* The scores of keys [j0, j0 + L) for every head, KV_QK_HEADS heads at a time. */
TGT INLINE void FN(kv_scores)(const OpsAttnKV *a, float *s, int64_t j0) {
    const int prefetch = j0 % OPS_KV_KEYS == 0 && j0 + KV_PREFETCH < a->n;  /* once per block */
    for (int64_t g0 = 0; g0 < a->group; g0 += KV_QK_HEADS) {
        const int pf = prefetch && g0 == 0;
        switch (a->group - g0 < KV_QK_HEADS ? a->group - g0 : KV_QK_HEADS) {  /* KV_QK_HEADS <= 6 */
        case 1: FN(kv_scores_keys)(a, s, j0, g0, 1, pf); break;
        case 2: FN(kv_scores_keys)(a, s, j0, g0, 2, pf); break;
        case 3: FN(kv_scores_keys)(a, s, j0, g0, 3, pf); break;
        case 4: FN(kv_scores_keys)(a, s, j0, g0, 4, pf); break;
        case 5: FN(kv_scores_keys)(a, s, j0, g0, 5, pf); break;
        default: FN(kv_scores_keys)(a, s, j0, g0, 6, pf); break;
        }
    }
}

/* o[h][d0 + e] += Σ_{j in [j0, j0 + nj)} p[h][j]·v[j][d0 + e] for the heads [g0, g0 + nh) (nh <=
 * KV_HEADS) and KV_ND vectors of dimensions from d0 (nd valid; FULL: all KV_ND·L), o kept in `out`
 * between key blocks (first: start from 0). Each key's values are converted once for all the heads;
 * the accumulators stay in registers over the block. */
TGT INLINE void FN(kv_pv_tile)(const OpsAttnKV *a, const float *p, int64_t g0, const int nh, int64_t d0, int64_t nd,
                                const int FULL, int64_t j0, int64_t nj, int first, int prefetch) {
    VF acc[6][KV_ND];  /* nh <= KV_HEADS <= 6 */
    _Pragma("GCC unroll 8")
    for (int h = 0; h < nh; h++)
        _Pragma("GCC unroll 8")
        for (int e = 0; e < KV_ND; e++) {
            int64_t left = nd - e * L;
            const float *o = a->out + (g0 + h) * a->hd + d0 + e * L;
            acc[h][e] = first || (!FULL && left <= 0) ? vf_zero() : FULL || left >= L ? vf_load(o) : vf_load_n(o, (int)left);
        }
    const int64_t prefetch_end = prefetch ? a->n - KV_PREFETCH : 0;  /* rows with a row KV_PREFETCH ahead */
    for (int64_t jb = j0; jb < j0 + nj; jb += L) {  /* j0 is a multiple of L */
        const float *pb = p + FN(kv_score_index)(a->group, jb, g0);  /* head g0 + h, key jb + jj: pb[h·L + jj] */
        const int64_t nb = j0 + nj - jb < L ? j0 + nj - jb : L;
        for (int64_t jj = 0; jj < nb; jj++) {
            const uint16_t *v = a->v + (jb + jj) * a->ld + d0;
            if (jb + jj < prefetch_end) FN(prefetch_row)(v + KV_PREFETCH * a->ld, nd, 1);
            VF vv[KV_ND];
            _Pragma("GCC unroll 8")
            for (int e = 0; e < KV_ND; e++) {
                int64_t left = nd - e * L;
                vv[e] = FULL || left >= L ? vf_load_h(v + e * L) : left > 0 ? FN(load_h_n)(v + e * L, (int)left) : vf_zero();
            }
            _Pragma("GCC unroll 8")
            for (int h = 0; h < nh; h++) {
                VF pj = vf_set1(pb[h * L + jj]);
                _Pragma("GCC unroll 8")
                for (int e = 0; e < KV_ND; e++)  /* (a partial tile's vectors past nd: nothing to add) */
                    if (FULL || e * L < nd) acc[h][e] = vf_fma(pj, vv[e], acc[h][e]);
            }
        }
    }
    _Pragma("GCC unroll 8")
    for (int h = 0; h < nh; h++)
        _Pragma("GCC unroll 8")
        for (int e = 0; e < KV_ND; e++) {
            int64_t left = nd - e * L;
            float *o = a->out + (g0 + h) * a->hd + d0 + e * L;
            if (FULL || left >= L) vf_store(o, acc[h][e]);
            else if (left > 0) vf_store_n(o, acc[h][e], (int)left);
        }
}

/* One key block for heads [g0, g0 + nh), the head count fixed at compile time. */
TGT INLINE void FN(kv_pv_block)(const OpsAttnKV *a, const float *p, int64_t g0, const int nh, int64_t j0, int64_t nj) {
    const int64_t w = KV_ND * L;
    int64_t d0 = 0;
    for (; d0 + w <= a->hd; d0 += w) FN(kv_pv_tile)(a, p, g0, nh, d0, w, 1, j0, nj, j0 == 0, g0 == 0);
    if (d0 < a->hd) FN(kv_pv_tile)(a, p, g0, nh, d0, a->hd - d0, 0, j0, nj, j0 == 0, g0 == 0);
}

/* Each head's scores (interleaved, kv_score_index) turned into probabilities in place; inv[g] = 1 / sum. */
TGT INLINE void FN(kv_softmax)(float *s, int64_t n, int64_t group, float scale, float *inv) {
    for (int64_t g = 0; g < group; g++) inv[g] = 1.0f / FN(softmax_blocks)(s + g * L, s + g * L, n, group * L, scale);
}

/* out = o · (1 / sum), per head. */
TGT INLINE void FN(kv_normalize)(float *out, int64_t group, int64_t hd, const float *inv) {
    for (int64_t g = 0; g < group; g++) {
        float *o = out + g * hd;
        VF iv = vf_set1(inv[g]);
        int64_t d = 0;
        for (; d + L <= hd; d += L) vf_store(o + d, vf_mul(vf_load(o + d), iv));
        if (d < hd) vf_store_n(o + d, vf_mul(vf_load_n(o + d, (int)(hd - d)), iv), (int)(hd - d));
    }
}

TGT void FN(ops_attn_kv_f16)(const OpsAttnKV *a, void *work) {
    const int64_t n = a->n, hd = a->hd;
    float *s = work;
    for (int64_t j0 = 0; j0 < n; j0 += L) FN(kv_scores)(a, s, j0);  /* scores: L keys at a time */
    float inv[64];
    FN(kv_softmax)(s, n, a->group, a->scale, inv);
    /* P·V in blocks of KV_KBLOCK keys, whose value rows stay in L1 while every head and dimension tile
     * goes over them (the rows are ld apart: without blocking, the passes evict each other through
     * the cache sets that the stride maps them to) */
    for (int64_t j0 = 0; j0 < n; j0 += KV_KBLOCK) {
        int64_t nj = n - j0 < KV_KBLOCK ? n - j0 : KV_KBLOCK;
        for (int64_t g0 = 0; g0 < a->group; g0 += KV_HEADS) {
            int64_t nh = a->group - g0 < KV_HEADS ? a->group - g0 : KV_HEADS;
            switch (nh) {  /* KV_HEADS <= 6 */
            case 1: FN(kv_pv_block)(a, s, g0, 1, j0, nj); break;
            case 2: FN(kv_pv_block)(a, s, g0, 2, j0, nj); break;
            case 3: FN(kv_pv_block)(a, s, g0, 3, j0, nj); break;
            case 4: FN(kv_pv_block)(a, s, g0, 4, j0, nj); break;
            case 5: FN(kv_pv_block)(a, s, g0, 5, j0, nj); break;
            default: FN(kv_pv_block)(a, s, g0, 6, j0, nj); break;
            }
        }
    }
    FN(kv_normalize)(a->out, a->group, hd, inv);
}

/* ---- decode attention over a Q8_0 cache (ops.h: OpsAttnKVQ8) ----------------------------------------
 * The same passes as above: scores L keys at a time (here integer dot products per 32 dimensions),
 * the softmax in place, P·V in key blocks (here each value converted from its code and scale). */

/* Per (head, 32-dimension block) of the query: its scale, and the start of the block's integer
 * accumulator, QK_CORR times the codes' sum: dot4_qk reads the keys XORed with QK_XOR, and on VNNI
 * (unsigned first operand) k ^ 0x80 is k + 128, so Σ (k + 128)·q = Σ k·q + 128·Σ q is corrected
 * before the first product. */
TGT INLINE void FN(kvq8_query)(const OpsAttnKVQ8 *a, float *dq, int32_t *corr) {
    const int64_t nb = a->hd / 32;
    for (int64_t u = 0; u < a->group * nb; u++) {  /* u = g·nb + b */
        const uint8_t *blk = a->q + u * 34;
        uint16_t h;
        memcpy(&h, blk, sizeof h);
        dq[u] = fp16_to_fp32(h);
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) sum += (int8_t)blk[2 + i];
        corr[u] = QK_CORR * sum;
    }
}

/* The scores of the L keys [j0, j0 + L) for the heads [g0, g0 + nh): per 32-dimension block, 8 vector
 * loads of 4 dimensions of the L keys, each dot4_qk'ed with those 4 query codes of every head into the
 * head's integer accumulator (one key per lane), then the reference's float step
 * sum + (isum·dk)·dq with the L keys' scales. `prefetch`: the key block KV_PREFETCH keys ahead. */
TGT INLINE void FN(kvq8_scores_keys)(const OpsAttnKVQ8 *a, const float *dq, const int32_t *corr, float *s, int64_t j0,
                                     int64_t g0, const int nh, int prefetch) {
    const int64_t hd = a->hd, nb = hd / 32, jl = j0 % OPS_KV_KEYS;
    const VI flip = vi_set1((int32_t)(QK_XOR * 0x01010101u));
    const uint8_t *q = a->q + g0 * nb * 34;
    VF sum[6];  /* nh <= KV_QK_HEADS <= 6 */
    _Pragma("GCC unroll 8")
    for (int h = 0; h < nh; h++) sum[h] = vf_zero();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *sub = a->k + ops_kv_q8_sub_offset(j0, b, hd);
        if (prefetch)
            FN(prefetch_row)((const uint16_t *)(sub + KV_PREFETCH / OPS_KV_KEYS * nb * OPS_KV_Q8_SUB), OPS_KV_Q8_SUB / 2, 1);
        VI acc[6];
        _Pragma("GCC unroll 8")
        for (int h = 0; h < nh; h++) acc[h] = vi_set1(corr[(g0 + h) * nb + b]);
        const uint8_t *codes = sub + 2 * OPS_KV_KEYS + jl * 4;  /* dims 4i.. of the L keys: + i·4·OPS_KV_KEYS */
        _Pragma("GCC unroll 8")
        for (int i = 0; i < 8; i++) {
            VI kv = vi_load(codes + i * 4 * OPS_KV_KEYS);
            if (QK_XOR) kv = vi_xor(kv, flip);
            _Pragma("GCC unroll 8")
            for (int h = 0; h < nh; h++) acc[h] = dot4_qk_b(acc[h], kv, q + (h * nb + b) * 34 + 2 + i * 4);
        }
        VF dk = vf_load_h((const uint16_t *)(sub + jl * 2));
        _Pragma("GCC unroll 8")
        for (int h = 0; h < nh; h++)
            sum[h] = vf_add(sum[h], vf_mul(vf_mul(vi_cvt(acc[h]), dk), vf_set1(dq[(g0 + h) * nb + b])));
    }
    const int nk = a->n - j0 < L ? (int)(a->n - j0) : L;
    _Pragma("GCC unroll 8")
    for (int h = 0; h < nh; h++) {
        float *dst = s + FN(kv_score_index)(a->group, j0, g0 + h);
        if (nk == L) vf_store(dst, sum[h]);
        else vf_store_n(dst, sum[h], nk);
    }
}

/* The scores of keys [j0, j0 + L) for every head, KV_QK_HEADS heads at a time. */
TGT INLINE void FN(kvq8_scores)(const OpsAttnKVQ8 *a, const float *dq, const int32_t *corr, float *s, int64_t j0) {
    const int prefetch = j0 % OPS_KV_KEYS == 0 && j0 + KV_PREFETCH < a->n;  /* once per block */
    for (int64_t g0 = 0; g0 < a->group; g0 += KV_QK_HEADS) {
        const int pf = prefetch && g0 == 0;
        switch (a->group - g0 < KV_QK_HEADS ? a->group - g0 : KV_QK_HEADS) {  /* KV_QK_HEADS <= 6 */
        case 1: FN(kvq8_scores_keys)(a, dq, corr, s, j0, g0, 1, pf); break;
        case 2: FN(kvq8_scores_keys)(a, dq, corr, s, j0, g0, 2, pf); break;
        case 3: FN(kvq8_scores_keys)(a, dq, corr, s, j0, g0, 3, pf); break;
        case 4: FN(kvq8_scores_keys)(a, dq, corr, s, j0, g0, 4, pf); break;
        case 5: FN(kvq8_scores_keys)(a, dq, corr, s, j0, g0, 5, pf); break;
        default: FN(kvq8_scores_keys)(a, dq, corr, s, j0, g0, 6, pf); break;
        }
    }
}

/* P·V of one key block [j0, j0 + OPS_KV_KEYS) (nk of its positions below n) and one 32-dimension
 * block b, for every head, as the reference: w = p·dv (the positions past n zeroed), its largest W, the
 * codes pq = rne(w·127 / W) stored as bytes (4 positions per 32-bit word, as the value codes pair
 * them), then per L dimensions the 4 position quads' value vectors each dot4_pv'ed with the head's
 * quad of pq broadcast, and o += isum·dp in the out rows. */
TGT INLINE void FN(kvq8_pv_sub)(const OpsAttnKVQ8 *a, const float *p, int64_t j0, int nk, int64_t b, int8_t *pq, float *dp) {
    enum { U = OPS_KV_KEYS / L };  /* vectors of positions per key block */
    const int64_t hd = a->hd;
    const uint8_t *sub = a->v + ops_kv_q8_sub_offset(j0, b, hd);
    VF dv[U];
    _Pragma("GCC unroll 8")
    for (int u = 0; u < U; u++) dv[u] = vf_load_h((const uint16_t *)(sub + u * L * 2));
    for (int64_t g = 0; g < a->group; g++) {
        VF w[U], m = vf_zero();
        _Pragma("GCC unroll 8")
        for (int u = 0; u < U; u++) {
            w[u] = vf_mul(vf_load(p + FN(kv_score_index)(a->group, j0 + u * L, g)), dv[u]);
            if (nk < OPS_KV_KEYS) w[u] = vf_keep_n(w[u], nk - u * L < 0 ? 0 : nk - u * L > L ? L : nk - u * L);
            m = vf_max(m, w[u]);
        }
        const float wmax = vf_hmax(m);
        const VF c = vf_set1(wmax > 0.0f ? 127.0f / wmax : 0.0f);
        dp[g] = wmax * OPS_KV_INV127;
        _Pragma("GCC unroll 8")
        for (int u = 0; u < U; u++) vi_store_bytes(pq + g * OPS_KV_KEYS + u * L, vf_rne_clamp(vf_mul(w[u], c), 0.0f, 127.0f), L);
    }
    const uint8_t *codes = sub + 2 * OPS_KV_KEYS;  /* quad i, dimension d: codes + 128·i + 4·d */
    _Pragma("GCC unroll 8")
    for (int e = 0; e < 32 / L; e++) {
        VI vq[OPS_KV_KEYS / 4];
        _Pragma("GCC unroll 8")
        for (int i = 0; i < OPS_KV_KEYS / 4; i++) vq[i] = vi_load(codes + 128 * i + 4 * L * e);
        for (int64_t g = 0; g < a->group; g++) {
            VI acc = vi_zero();
            _Pragma("GCC unroll 8")
            for (int i = 0; i < OPS_KV_KEYS / 4; i++) acc = dot4_pv(acc, vi_bcast4(pq + g * OPS_KV_KEYS + 4 * i), vq[i]);
            float *o = a->out + g * hd + b * 32 + e * L;
            vf_store(o, vf_fma(vi_cvt(acc), vf_set1(dp[g]), vf_load(o)));
        }
    }
}

TGT void FN(ops_attn_kv_q8)(const OpsAttnKVQ8 *a, void *work) {
    const int64_t n = a->n, nb = a->hd / 32;
    float *s = work;  /* then dq and corr: ops_attn_kv_q8_work_bytes */
    float *dq = (float *)((uint8_t *)work + ops_kv_q8_query_offset(n, a->group, a->hd));
    int32_t *corr = (int32_t *)(dq + a->group * nb);
    FN(kvq8_query)(a, dq, corr);
    for (int64_t j0 = 0; j0 < n; j0 += L) FN(kvq8_scores)(a, dq, corr, s, j0);
    float inv[64];
    FN(kv_softmax)(s, n, a->group, a->scale, inv);
    int8_t pq[64 * OPS_KV_KEYS];  /* group <= 64 */
    float dp[64];
    for (int64_t i = 0; i < a->group * a->hd; i++) a->out[i] = 0.0f;
    /* Each 32-dimension sub-block asks for the one KV_PREFETCH positions ahead before it runs, as the
     * scores do, spreading the requests over the block: one request for the whole value block ahead
     * (2 KiB at head_dim 128) left this pass waiting on memory more. Measured on Zen 5 over
     * bluelm-v-3b's whole Q8_0 cache at depth 2016 from DRAM (the decode's attention alone, 2 threads,
     * 2 KV heads each, medians of 40): 2.00 -> 1.78 and 2.07 -> 1.92 ms per token at 45 GB/s
     * alternating in one process, 1.97 -> 1.83 and 1.92 -> 1.91 in separate ones; in the whole decode,
     * token by token, x0.995 against an A/A copy's x0.994 (no gain seen there). */
    for (int64_t j0 = 0; j0 < n; j0 += OPS_KV_KEYS) {
        const int nk = n - j0 < OPS_KV_KEYS ? (int)(n - j0) : OPS_KV_KEYS;
        for (int64_t b = 0; b < nb; b++) {
            if (j0 + KV_PREFETCH < n)
                FN(prefetch_row)((const uint16_t *)(a->v + ops_kv_q8_sub_offset(j0 + KV_PREFETCH, b, a->hd)), OPS_KV_Q8_SUB / 2, 1);
            FN(kvq8_pv_sub)(a, s, j0, nk, b, pq, dp);
        }
    }
    FN(kv_normalize)(a->out, a->group, a->hd, inv);
}
#undef KV_PREFETCH

const OpsKernels FN(ops_kernels) = {
    .name = FAMILY_NAME,
    .exp_f32 = FN(ops_exp_f32),
    .gelu_tanh = FN(ops_gelu_tanh),
    .gelu_erf = FN(ops_gelu_erf),
    .bias_gelu_tanh = FN(ops_bias_gelu_tanh),
    .bias_gelu_erf = FN(ops_bias_gelu_erf),
    .add = FN(ops_add),
    .swiglu = FN(ops_swiglu),
    .add_bias = FN(ops_add_bias),
    .add_bias_residual = FN(ops_add_bias_residual),
    .layernorm = FN(ops_layernorm),
    .residual_layernorm = FN(ops_residual_layernorm),
    .softmax_row = FN(ops_softmax_row),
    .attn_head_f32 = FN(ops_attn_head_f32),
    .attn_head_q8 = FN(ops_attn_head_q8),
    .attn_kv_f16 = FN(ops_attn_kv_f16),
    .attn_kv_q8 = FN(ops_attn_kv_q8),
};

#undef QB
#undef QV
#undef NACC
