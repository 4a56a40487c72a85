/* quant_x86.c — the AVX2 and AVX-512 (VNNI) kernel families.
 *
 * Every function is compiled for its instruction set with a target attribute, so the default build
 * (no -march) contains them and still runs on any x86-64; quant.c calls them only after checking
 * the CPU (and that the OS saves the vector state). Each kernel computes exactly what the `_ref`
 * function or QuantKernels entry it replaces computes (quant.h); only the order in which float
 * partial sums are added differs. Integer sums inside a block are exact.
 *
 * The int8 trick used throughout: AVX-512 VNNI vpdpbusd multiplies UNSIGNED bytes by signed bytes.
 * Q4_0 weights are used as their unsigned nibbles 0..15 and Q8_0 weights as q + 128 (q ^ 0x80), and
 * the offset is taken back per block: sum((w - o) * a) = sum(w * a) - o * sum(a). AVX2 has only
 * vpmaddubsw (u8 x s8 -> saturating pairs of int16); it uses the sign trick |w| * (a * sign(w)),
 * which cannot saturate for |w| <= 128, |a| <= 127. */
#include "quant.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TARGET_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define INLINE static inline __attribute__((always_inline))

static int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ================================ AVX2 =========================================================== */

TARGET_AVX2 INLINE float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 32 weights of a Q4_0 block as unsigned bytes 0..15 in element order: bytes 0..15 are the low
 * nibbles of qs[0..15], bytes 16..31 the high nibbles. */
TARGET_AVX2 INLINE __m256i q4_0_nibbles_avx2(const uint8_t *qs) {
    __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    __m256i shifted = _mm256_srlv_epi32(q, _mm256_set_epi32(4, 4, 4, 4, 0, 0, 0, 0));
    return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

/* 8 int32 partial sums of x[i] * y[i] over 32 signed bytes (sign trick; exact unless y has -128). */
TARGET_AVX2 INLINE __m256i dot_i8_avx2(__m256i x, __m256i y) {
    __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

/* 8 int32 partial sums of (nibble[i] - 8) * y[i]: nibble*y - 8*y in int16 pairs (|.| <= 3810). */
TARGET_AVX2 INLINE __m256i dot_q4_i8_avx2(__m256i nibbles, __m256i y) {
    __m256i pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(nibbles, y), _mm256_maddubs_epi16(_mm256_set1_epi8(8), y));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

TARGET_AVX2 INLINE float fp16_avx2(uint16_t h) { return _cvtsh_ss(h); }

/* sum over blocks of int_dot(block) * dx * dy, two float accumulators (even and odd blocks). */
TARGET_AVX2 float vec_dot_q4_0_q8_0_avx2(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < n / QK; b++) {
        __m256i isum = dot_q4_i8_avx2(q4_0_nibbles_avx2(x[b].qs), _mm256_loadu_si256((const __m256i *)y[b].qs));
        __m256 d = _mm256_set1_ps(fp16_avx2(x[b].d) * fp16_avx2(y[b].d));
        acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[b & 1]);
    }
    return hsum_avx2(_mm256_add_ps(acc[0], acc[1]));
}

TARGET_AVX2 float vec_dot_q8_0_q8_0_avx2(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < n / QK; b++) {
        __m256i isum = dot_i8_avx2(_mm256_loadu_si256((const __m256i *)x[b].qs),
                                   _mm256_loadu_si256((const __m256i *)y[b].qs));
        __m256 d = _mm256_set1_ps(fp16_avx2(x[b].d) * fp16_avx2(y[b].d));
        acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[b & 1]);
    }
    return hsum_avx2(_mm256_add_ps(acc[0], acc[1]));
}

/* sum x[i] * y[i]: four 8-wide accumulators, then the tail one by one. */
TARGET_AVX2 float vec_dot_f32_f32_avx2(int64_t n, const float *x, const float *y) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * j), _mm256_loadu_ps(y + i + 8 * j), acc[j]);
    for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc[0]);
    float sum = hsum_avx2(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) sum += x[i] * y[i];
    return sum;
}

TARGET_AVX2 INLINE __m256 load_f16x8_avx2(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

TARGET_AVX2 float vec_dot_f16_f32_avx2(int64_t n, const uint16_t *x, const float *y) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_fmadd_ps(load_f16x8_avx2(x + i + 8 * j), _mm256_loadu_ps(y + i + 8 * j), acc[j]);
    for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(load_f16x8_avx2(x + i), _mm256_loadu_ps(y + i), acc[0]);
    float sum = hsum_avx2(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) sum += fp16_avx2(x[i]) * y[i];
    return sum;
}

/* quantize_row_q8_0_ref 8 floats at a time, byte for byte (the same IEEE operations on each
 * element): amax skips NaN like the ref (vmaxps returns its second operand when the first is NaN),
 * d = amax / 127 and id = 1 / d as scalars, v = x * id, round half away from zero as truncation plus
 * two comparisons, fp16 of d by F16C (round to nearest even, as fp32_to_fp16). Also the block sums. */
TARGET_AVX2 static void quantize_q8_0_avx2(const float *x, BlockQ8_0 *y, int32_t *sums, int64_t n) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int64_t b = 0; b < n / QK; b++) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int h = 0; h < 4; h++) {
            v[h] = _mm256_loadu_ps(x + b * QK + 8 * h);
            m = _mm256_max_ps(_mm256_and_ps(v[h], abs_mask), m);
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = _cvtss_sh(d, 0);
        __m256i q[4], total = _mm256_setzero_si256();
        for (int h = 0; h < 4; h++) {
            __m256 p = _mm256_mul_ps(v[h], _mm256_set1_ps(id));
            __m256 in_range = _mm256_and_ps(_mm256_cmp_ps(p, _mm256_set1_ps(-127.5f), _CMP_GT_OQ),
                                            _mm256_cmp_ps(p, _mm256_set1_ps(127.5f), _CMP_LT_OQ));
            __m256 c = _mm256_and_ps(p, in_range);  /* out of range or NaN -> 0 */
            __m256i t = _mm256_cvttps_epi32(c);
            __m256 tf = _mm256_cvtepi32_ps(t);
            __m256 up = _mm256_cmp_ps(c, _mm256_add_ps(tf, _mm256_set1_ps(0.5f)), _CMP_GE_OQ);
            __m256 down = _mm256_cmp_ps(c, _mm256_sub_ps(tf, _mm256_set1_ps(0.5f)), _CMP_LE_OQ);
            q[h] = _mm256_add_epi32(_mm256_sub_epi32(t, _mm256_castps_si256(up)), _mm256_castps_si256(down));
            total = _mm256_add_epi32(total, q[h]);
        }
        /* int32 -> int8 in element order (the packs interleave 128-bit halves; the permute undoes it) */
        __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, bytes);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        sums[b] = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1)));
    }
}

/* The GEMV (T = 1) streams each weight byte once and is limited by memory bandwidth: four rows at
 * a time share each activation load, in the order of gemv_step_rows (quant.h), and weight scales
 * go through the fp16 table (one load instead of a convert). */

/* out[t0 + j][rows[i]] = the sum of acc[i][j]'s lanes, for the rows that exist. (All four rows are
 * summed, so that acc is indexed with constants only and stays in registers.) */
TARGET_AVX2 INLINE void store_gemv_sums(const MatmulJob *job, int64_t t0, const int NT, const int64_t rows[4],
                                        int nrows, __m256 acc[4][QGEMV_MAX_TOKENS]) {
    float sums[QGEMV_MAX_TOKENS][4];
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++)
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) sums[j][i] = hsum_avx2(acc[i][j]);
    for (int j = 0; j < NT; j++)
        for (int i = 0; i < nrows; i++) job->out[(t0 + j) * job->n_out + rows[i]] = sums[j][i];
}

/* The GEMV asks for the weights GEMV_PREFETCH_BYTES ahead of each of its four row streams: the
 * hardware prefetcher alone left the decode GEMV at ~25 GB/s on Zen 4 (2 threads, Q4_0 from DRAM);
 * with 1 KiB ahead it measured 29-30 GB/s, interleaved A/B runs in one process (512 B-2 KiB all help;
 * 4 KiB hurts, crossing pages too early). */
enum { GEMV_PREFETCH_BYTES = 1024 };

/* GEMV: out[t][r] = vec_dot(W row r, xq[t]) for r in [r0, r1) and NT (1 or 2: AVX2 has 16
 * registers) tokens t0.. at once, each weight block unpacked once for the NT tokens. */
TARGET_AVX2 INLINE void gemv_rows_avx2(const MatmulJob *job, int64_t t0, const int NT, const int64_t idx[4],
                                       int nrows, const int is_q4) {
    const uint8_t *rows[4];
    for (int i = 0; i < 4; i++) rows[i] = job->W + idx[i] * job->row_bytes;
    __m256 acc[4][QGEMV_MAX_TOKENS];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < job->nb; b++) {
        __m256i a[2];
        __m256 dy[2];
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) {
            const BlockQ8_0 *xb = &job->xq[(t0 + j) * job->nb + b];
            a[j] = _mm256_loadu_si256((const __m256i *)xb->qs);
            dy[j] = _mm256_set1_ps(quant_fp16_table[xb->d]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m256i w;
            uint16_t dx;
            _mm_prefetch((const char *)rows[i] + b * (is_q4 ? 18 : 34) + GEMV_PREFETCH_BYTES, _MM_HINT_T0);
            if (is_q4) {
                const BlockQ4_0 *blk = (const BlockQ4_0 *)rows[i] + b;
                w = q4_0_nibbles_avx2(blk->qs);
                dx = blk->d;
            } else {
                const BlockQ8_0 *blk = (const BlockQ8_0 *)rows[i] + b;
                w = _mm256_loadu_si256((const __m256i *)blk->qs);
                dx = blk->d;
            }
            const float dxf = quant_fp16_table[dx];
#pragma GCC unroll 4
            for (int j = 0; j < NT; j++) {  /* (isum * dy) * dx */
                __m256i isum = is_q4 ? dot_q4_i8_avx2(w, a[j]) : dot_i8_avx2(w, a[j]);
                __m256 scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), dy[j]);
                acc[i][j] = _mm256_fmadd_ps(scaled, _mm256_set1_ps(dxf), acc[i][j]);
            }
        }
    }
    store_gemv_sums(job, t0, NT, idx, nrows, acc);
}

/* The weight stream's own prefetch: as the repacked GEMV loads each 64-byte line of a pair (its
 * scales, then 8 lines of codes), it asks for the line GEMV_PREFETCH_AHEAD bytes further on, into L2
 * (prefetch_weight_line). The hardware prefetchers alone keep too few lines in flight for one core
 * to read at the memory's full speed (and they stop at every 4 KiB page); with two cores each must
 * read half of the whole bandwidth, so what one core leaves unread is lost.
 * Measured on Zen 5 in the decode (2 threads, bluelm-v-3b at 2016 tokens of context, --kv q8_0,
 * token by token in one process, two copies of the baseline in the rotation), the 9 requests of a
 * pair issued from a small loop at its top, against the previous scheme (once per page, the first
 * 4 lines of the page 16 KiB ahead, which gained x0.96 on Zen 4 at ~33 GB/s), memory >= 55 GB/s:
 *   2 KiB ahead x1.010, 3 KiB x0.986, 4 KiB x0.956-0.958, 5 KiB x0.954, 6 KiB x0.924-0.947,
 *   7 KiB x0.950, 8 KiB x0.969-0.984 (the baseline's second copy x0.996-1.003); into L1 instead of
 *   L2 x0.931; with the page seeding kept as well x0.922 (no better).
 * At 42-55 GB/s, 6 KiB: x0.971-0.990 (the second copy x0.986-1.012).
 * One core alone (a 3.7 MB matrix from DRAM, 64 copies cycled): 4 KiB ahead read 35-37 GB/s where
 * the page seeding read 33.5-35.5, against 34.5-37 for the plain read probe.
 * How the requests go out matters as much as the distance: the 9 written back to back at the top
 * of each pair (as a compiler unrolls that loop) ran x1.07-1.21 against the same requests each
 * issued beside the load of its line (as here), no better than the page seeding; the small loop
 * x1.02 against them, and 5 back to back (every other line) x1.20. */
enum { GEMV_PREFETCH_AHEAD = 6 * 1024 };

INLINE void prefetch_weight_line(const void *line) {
    _mm_prefetch((const char *)line + GEMV_PREFETCH_AHEAD, _MM_HINT_T1);
}

/* The activations are read again for every 16-row group, but between two reads of the same line
 * the group's weights (16 rows × K/2 bytes: 62 KB for bluelm-v-3b's `down`) stream through L1 and
 * evict it, so each block's activations would come from L2 while the dot products wait on them.
 * The repacked GEMVs (AVX-512 and AVX2) ask for them GEMV_ACT_AHEAD blocks (two pairs) ahead, into
 * L1. Measured with AVX-512 in the decode
 * (Zen 4, 2 threads, bluelm-v-3b at 2016 tokens of context, token by token against the kernel
 * without it in one process): about 2% per token (x1.014 and x1.025 against a second copy of the
 * baseline in the same rotation; x1.024-1.037 against the first, which runs slower), `down`'s rows
 * 5-14% faster. 2 blocks ahead did nothing; 6, 8 and 16 no better than 4. Reading a precomputed
 * float scale instead of quant_fp16_table added nothing measurable. */
enum { GEMV_ACT_AHEAD = 4 };

/* Both repacked GEMVs at pair p, NT tokens from t0: the activations GEMV_ACT_AHEAD blocks ahead. */
INLINE void prefetch_x16_activations(const MatmulJob *job, int64_t p, int64_t t0, const int NT) {
    if (2 * p + GEMV_ACT_AHEAD < job->nb) {
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++)
            _mm_prefetch((const char *)&job->xq[(t0 + j) * job->nb + 2 * p + GEMV_ACT_AHEAD], _MM_HINT_T0);
    }
}

/* GEMV over repacked Q4_0 (BlockQ4_0x16, quant.h) with AVX2: the 16 rows of group g as two vectors
 * of 8 rows, NT tokens. Per block and 8 rows: the 4 lines' bytes become 8 vectors of unsigned
 * nibbles (as the AVX-512 kernel's); per token each is multiplied by the matching 4 activation bytes
 * broadcast with vpmaddubsw (unsigned × signed bytes into 16-bit pair sums, each at most
 * 2·15·128 = 3840 in magnitude, so the block's 8 of them add in 16 bits: at most 30720), widened
 * once by vpmaddwd with ones, less 8·sum(a): the exact integer dot. Then, as the AVX-512 kernel
 * computes it, acc += float(dot) · (dx · dy), even and odd blocks apart, so both families give the
 * same bits. */
TARGET_AVX2 INLINE void gemv_x16_group_avx2(const MatmulJob *job, int64_t t0, const int NT, int64_t g) {
    const BlockQ4_0x16 *x = (const BlockQ4_0x16 *)job->W + g * job->n_pairs;
    const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[QGEMV_MAX_TOKENS][2][2];  /* [token][rows 0-7, 8-15][even, odd blocks] */
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++)
        for (int v = 0; v < 2; v++) acc[j][v][0] = acc[j][v][1] = _mm256_setzero_ps();
    for (int64_t p = 0; p < job->n_pairs; p++) {
        prefetch_x16_activations(job, p, t0, NT);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const int64_t b = 2 * p + h;
            if (b == job->nb) break;  /* an odd last block: the pad has no activations */
#pragma GCC unroll 2
            for (int v = 0; v < 2; v++) {
                if (h == 0 && v == 0) prefetch_weight_line(x[p].d);
                const __m256 dx = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)&x[p].d[h][8 * v]));
                __m256i w[8];
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    if (v == 0) prefetch_weight_line(x[p].qs[h][k]);
                    const __m256i q = _mm256_load_si256((const __m256i *)x[p].qs[h][k][8 * v]);
                    w[k] = _mm256_and_si256(q, low);
                    w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                }
#pragma GCC unroll 4
                for (int j = 0; j < NT; j++) {
                    const BlockQ8_0 *a = &job->xq[(t0 + j) * job->nb + b];
                    __m256i s = _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(load_i32(a->qs)));
#pragma GCC unroll 8
                    for (int k = 1; k < 8; k++) {  /* w[k]: elements 4k.. (k < 4), 16 + 4(k - 4).. */
                        const int8_t *ak = a->qs + (k < 4 ? 4 * k : 16 + 4 * (k - 4));
                        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(load_i32(ak))));
                    }
                    const __m256i isum = _mm256_sub_epi32(_mm256_madd_epi16(s, ones),
                                                          _mm256_set1_epi32(8 * job->xsum[(t0 + j) * job->nb + b]));
                    const __m256 d = _mm256_mul_ps(dx, _mm256_set1_ps(quant_fp16_table[a->d]));
                    acc[j][v][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[j][v][h]);
                }
            }
        }
    }
    const int64_t left = job->n_out - g * 16;
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++)
        for (int v = 0; v < 2; v++) {
            const __m256 sum = _mm256_add_ps(acc[j][v][0], acc[j][v][1]);
            float *o = job->out + (t0 + j) * job->n_out + g * 16 + 8 * v;
            if (left >= 8 * v + 8) _mm256_storeu_ps(o, sum);
            else if (left > 8 * v) {
                float tmp[8];
                _mm256_storeu_ps(tmp, sum);
                memcpy(o, tmp, (size_t)(left - 8 * v) * sizeof(float));
            }
        }
}

/* The groups of rows [r0, r1) (r0 a multiple of 16; r1 too, or n_out). */
TARGET_AVX2 static void gemv_x16_avx2(const MatmulJob *job, int64_t t0, int nt, int64_t r0, int64_t r1) {
    for (int64_t g = r0 / 16; g * 16 < r1; g++) {
        switch (nt) {  /* each case a copy specialized for its token count */
        case 1: gemv_x16_group_avx2(job, t0, 1, g); break;
        case 2: gemv_x16_group_avx2(job, t0, 2, g); break;
        case 3: gemv_x16_group_avx2(job, t0, 3, g); break;
        default: gemv_x16_group_avx2(job, t0, 4, g); break;
        }
    }
}

TARGET_AVX2 static void gemv_q_avx2(const MatmulJob *job, int64_t t0, int nt, int64_t r0, int64_t r1) {
    if (job->wtype == TYPE_Q4_0X16) {
        gemv_x16_avx2(job, t0, nt, r0, r1);
        return;
    }
    for (int64_t t = t0; t < t0 + nt; t += 2) {
        int two = t + 1 < t0 + nt;
        int64_t rows[4];
        for (int64_t s = 0, nrows; (nrows = gemv_step_rows(r0, r1, s, rows)) > 0; s++) {
            if (job->wtype == TYPE_Q4_0) {
                if (two) gemv_rows_avx2(job, t, 2, rows, (int)nrows, 1);
                else gemv_rows_avx2(job, t, 1, rows, (int)nrows, 1);
            } else {
                if (two) gemv_rows_avx2(job, t, 2, rows, (int)nrows, 0);
                else gemv_rows_avx2(job, t, 1, rows, (int)nrows, 0);
            }
        }
    }
}

/* Eight f32 values of a float-typed row (f32, f16 or bf16) from element k on. */
TARGET_AVX2 INLINE __m256 load_row8_avx2(const uint8_t *row, int wtype, int64_t k) {
    if (wtype == TYPE_F32) return _mm256_loadu_ps((const float *)row + k);
    if (wtype == TYPE_F16) return load_f16x8_avx2((const uint16_t *)row + k);
    __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));  /* bf16 -> f32: the top half of the bits */
}

TARGET_AVX2 INLINE float row_elem(const uint8_t *row, int wtype, int64_t k) {
    if (wtype == TYPE_F32) return ((const float *)row)[k];
    uint16_t h;
    memcpy(&h, row + 2 * k, 2);
    if (wtype == TYPE_F16) return fp16_avx2(h);
    return bf16_to_fp32(h);
}

/* The 4 weight rows and 4 activation rows of a float tile; missing ones repeat the first (their
 * results are computed and not used), so that the kernels always run the full 4 x 4 shape. */
static void float_tile_rows(const MatmulJob *job, int64_t t, int ntok, int64_t r, int nrows, const uint8_t *rows[4],
                            const float *xs[4]) {
    for (int i = 0; i < 4; i++) rows[i] = job->W + (r + (i < nrows ? i : 0)) * job->row_bytes;
    for (int j = 0; j < 4; j++) xs[j] = job->x + (t + (j < ntok ? j : 0)) * job->n_in;
}

/* res[j][i] = dot(W row r+i, x[t+j]), 4 rows x 2 tokens per pass (16 ymm registers): each weight
 * vector is loaded (and converted) once for two tokens; the tail one element at a time. */
TARGET_AVX2 INLINE void float_tile_avx2_typed(const MatmulJob *job, int64_t t, int ntok, int64_t r, int nrows,
                                              float res[4][4], const int wtype) {
    const uint8_t *rows[4];
    const float *xs[4];
    float_tile_rows(job, t, ntok, r, nrows, rows, xs);
    const int64_t n = job->n_in, n8 = n / 8 * 8;
    for (int j0 = 0; j0 < ntok; j0 += 2) {
        __m256 acc[4][2];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int64_t k = 0; k < n8; k += 8) {
            __m256 x0 = _mm256_loadu_ps(xs[j0] + k), x1 = _mm256_loadu_ps(xs[j0 + 1] + k);
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                __m256 w = load_row8_avx2(rows[i], wtype, k);
                acc[i][0] = _mm256_fmadd_ps(w, x0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(w, x1, acc[i][1]);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
#pragma GCC unroll 2
            for (int j = 0; j < 2; j++) {
                res[j0 + j][i] = hsum_avx2(acc[i][j]);
                for (int64_t k = n8; k < n; k++) res[j0 + j][i] += row_elem(rows[i], wtype, k) * xs[j0 + j][k];
            }
    }
}

TARGET_AVX2 static void float_tile_avx2(const MatmulJob *job, int64_t t, int ntok, int64_t r, int nrows,
                                        float res[4][4]) {
    if (job->wtype == TYPE_F32) float_tile_avx2_typed(job, t, ntok, r, nrows, res, TYPE_F32);
    else if (job->wtype == TYPE_F16) float_tile_avx2_typed(job, t, ntok, r, nrows, res, TYPE_F16);
    else float_tile_avx2_typed(job, t, ntok, r, nrows, res, TYPE_BF16);
}

/* res[j][i] = by_row[i][j]: the tile kernels hold one row's tokens in a vector; the driver wants
 * the results token by token (out is token-major). */
static void transpose_tile(float by_row[QTILE_ROWS][32], int ntok, float res[32][QTILE_ROWS]) {
    for (int j = 0; j < ntok; j++)
        for (int i = 0; i < QTILE_ROWS; i++) res[j][i] = by_row[i][j];
}

/* GEMM tile for AVX2. The tile holds signed weight bytes (Q4_0: nibble - 8; Q8_0: as stored) at
 * tile[(row * nkb + b) * 32 + k] and their fp32 scales at tile_scales(tile)[b * 4 + row]. */
static float *tile_scales(uint8_t *tile) { return (float *)(tile + QTILE_ROWS * QTILE_MAX_BLOCKS * QK); }
static const float *tile_scales_c(const uint8_t *tile) {
    return (const float *)(tile + QTILE_ROWS * QTILE_MAX_BLOCKS * QK);
}

TARGET_AVX2 static void gemm_unpack_avx2(const MatmulJob *job, int64_t r, int nrows, int64_t kb, int64_t nkb,
                                         uint8_t *tile) {
    float *scales = tile_scales(tile);
    for (int i = 0; i < QTILE_ROWS; i++) {
        const uint8_t *row = job->W + (r + (i < nrows ? i : 0)) * job->row_bytes;
        for (int64_t b = 0; b < nkb; b++) {
            __m256i w = _mm256_setzero_si256();
            uint16_t d = 0;
            if (i < nrows && job->wtype == TYPE_Q4_0X16) {  /* row r + i's block, gathered from its group */
                const BlockQ4_0 blk = q4_0x16_block(job->W, job->n_pairs, r + i, kb + b);
                w = _mm256_sub_epi8(q4_0_nibbles_avx2(blk.qs), _mm256_set1_epi8(8));
                d = blk.d;
            } else if (i < nrows && job->wtype == TYPE_Q4_0) {
                const BlockQ4_0 *blk = (const BlockQ4_0 *)row + kb + b;
                w = _mm256_sub_epi8(q4_0_nibbles_avx2(blk->qs), _mm256_set1_epi8(8));
                d = blk->d;
            } else if (i < nrows) {
                const BlockQ8_0 *blk = (const BlockQ8_0 *)row + kb + b;
                w = _mm256_loadu_si256((const __m256i *)blk->qs);
                d = blk->d;
            }
            _mm256_store_si256((__m256i *)(tile + (i * nkb + b) * QK), w);
            scales[b * QTILE_ROWS + i] = quant_fp16_table[d];
        }
    }
}

/* res[col + j][i] (token j, row i) for 4 rows x 8 tokens (one packed group, G = 8): per block,
 * each 4-byte weight group broadcast against the 8 tokens' matching 4 bytes (sign trick); int32
 * per block, then * dx * dy in float. Lane j = token j. */
TARGET_AVX2 static void tile_4x8_avx2(const uint8_t *tile, const uint8_t *act, int64_t nkb, float res[32][QTILE_ROWS],
                                      int col) {
    const float *dx = tile_scales_c(tile);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 accf[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nkb; b++) {
        const uint8_t *rec = act + b * QPACK_RECORD_BYTES(8);
        __m256i acci[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                           _mm256_setzero_si256()};
#pragma GCC unroll 8
        for (int k4 = 0; k4 < 8; k4++) {
            __m256i a = _mm256_load_si256((const __m256i *)(rec + k4 * 32));
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                __m256i w = _mm256_set1_epi32(load_i32(tile + (i * nkb + b) * QK + k4 * 4));
                __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
                acci[i] = _mm256_add_epi32(acci[i], _mm256_madd_epi16(pairs, ones));
            }
        }
        __m256 dy = _mm256_load_ps((const float *)(rec + 32 * 8));
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m256 d = _mm256_mul_ps(_mm256_set1_ps(dx[b * 4 + i]), dy);
            accf[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acci[i]), d, accf[i]);
        }
    }
    float by_row[QTILE_ROWS][32];
    for (int i = 0; i < 4; i++) _mm256_storeu_ps(by_row[i], accf[i]);
    transpose_tile(by_row, 8, res + col);
}

TARGET_AVX2 static void gemm_tile_avx2(const uint8_t *tile, const uint8_t *act0, const uint8_t *act1, int64_t nkb,
                                       float res[32][QTILE_ROWS]) {
    tile_4x8_avx2(tile, act0, nkb, res, 0);
    if (act1) tile_4x8_avx2(tile, act1, nkb, res, 8);
}

TARGET_AVX2 static uint64_t probe_read_avx2(const uint8_t *p, int64_t bytes) {
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int64_t i = 0; i < bytes; i += 256)
        for (int j = 0; j < 8; j++)
            acc[j & 3] = _mm256_add_epi64(acc[j & 3], _mm256_load_si256((const __m256i *)(p + i + 32 * j)));
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
    return (uint64_t)_mm256_extract_epi64(s, 0) + (uint64_t)_mm256_extract_epi64(s, 1) +
           (uint64_t)_mm256_extract_epi64(s, 2) + (uint64_t)_mm256_extract_epi64(s, 3);
}

/* vpmaddubsw + vpaddw into 12 independent int16 accumulators: 32 multiply-adds per pair. */
TARGET_AVX2 static int64_t probe_int8_avx2(int64_t iters) {
    volatile char seed = 3;
    const __m256i a = _mm256_set1_epi8(seed), b = _mm256_set1_epi8((char)(seed - 5));
    __m256i acc[12];
    for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_epi16((short)j);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(a, b));
        __asm__ volatile("" : "+x"(acc[0]), "+x"(acc[5]));  /* keep the loop from being folded */
    }
    __m256i s = acc[0];
    for (int j = 1; j < 12; j++) s = _mm256_add_epi16(s, acc[j]);
    volatile int sink = _mm256_extract_epi16(s, 0);
    (void)sink;
    return iters * 12 * 32;
}

const QuantKernels quant_kernels_avx2 = {
    .name = "avx2",
    .dot_q4_0_q8_0 = vec_dot_q4_0_q8_0_avx2,
    .dot_q8_0_q8_0 = vec_dot_q8_0_q8_0_avx2,
    .dot_f16_f32 = vec_dot_f16_f32_avx2,
    .dot_f32_f32 = vec_dot_f32_f32_avx2,
    .quantize_q8_0 = quantize_q8_0_avx2,
    .gemv_q = gemv_q_avx2,
    .float_tile = float_tile_avx2,
    .gemm_group = 8,
    .q4_0_offset = 0,
    .q8_0_offset = 0,
    .gemm_unpack = gemm_unpack_avx2,
    .gemm_tile = gemm_tile_avx2,
    .probe_read = probe_read_avx2,
    .probe_int8 = probe_int8_avx2,
    .q4_0x16 = 1,
};

/* ================================ AVX-512 + VNNI ================================================= */

TARGET_AVX512 INLINE __m256i q4_0_nibbles_avx512(const uint8_t *qs) {
    __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    __m256i shifted = _mm256_srlv_epi32(q, _mm256_set_epi32(4, 4, 4, 4, 0, 0, 0, 0));
    return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

TARGET_AVX512 INLINE float fp16_avx512(uint16_t h) { return _cvtsh_ss(h); }

/* Q4_0 x Q8_0: per block (w - 8)·a = w·a - 8·sum(a), both with vpdpbusd (w, 8 unsigned). */
TARGET_AVX512 float vec_dot_q4_0_q8_0_avx512(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y) {
    const __m256i eights = _mm256_set1_epi8(8), zero = _mm256_setzero_si256();
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < n / QK; b++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)y[b].qs);
        __m256i wa = _mm256_dpbusd_epi32(zero, q4_0_nibbles_avx512(x[b].qs), a);
        __m256i isum = _mm256_sub_epi32(wa, _mm256_dpbusd_epi32(zero, eights, a));
        __m256 d = _mm256_set1_ps(fp16_avx512(x[b].d) * fp16_avx512(y[b].d));
        acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[b & 1]);
    }
    return hsum_avx2(_mm256_add_ps(acc[0], acc[1]));
}

/* Q8_0 x Q8_0: per block x·y = (x + 128)·y - 128·sum(y). */
TARGET_AVX512 float vec_dot_q8_0_q8_0_avx512(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y) {
    const __m256i bias = _mm256_set1_epi8((char)0x80), zero = _mm256_setzero_si256();
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < n / QK; b++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)y[b].qs);
        __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[b].qs), bias);
        __m256i isum = _mm256_sub_epi32(_mm256_dpbusd_epi32(zero, w, a), _mm256_dpbusd_epi32(zero, bias, a));
        __m256 d = _mm256_set1_ps(fp16_avx512(x[b].d) * fp16_avx512(y[b].d));
        acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[b & 1]);
    }
    return hsum_avx2(_mm256_add_ps(acc[0], acc[1]));
}

TARGET_AVX512 INLINE __mmask16 tail_mask16(int64_t rem) { return (__mmask16)((1u << rem) - 1); }

/* sum x[i] * y[i]: four 16-wide accumulators; the tail with a masked load. */
TARGET_AVX512 float vec_dot_f32_f32_avx512(int64_t n, const float *x, const float *y) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int j = 0; j < 4; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16 * j), _mm512_loadu_ps(y + i + 16 * j), acc[j]);
    for (; i + 16 <= n; i += 16) acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), acc[0]);
    if (i < n) {
        __mmask16 m = tail_mask16(n - i);
        acc[1] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), acc[1]);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

TARGET_AVX512 INLINE __m512 load_f16x16_avx512(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

TARGET_AVX512 float vec_dot_f16_f32_avx512(int64_t n, const uint16_t *x, const float *y) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int j = 0; j < 4; j++)
            acc[j] = _mm512_fmadd_ps(load_f16x16_avx512(x + i + 16 * j), _mm512_loadu_ps(y + i + 16 * j), acc[j]);
    for (; i + 16 <= n; i += 16) acc[0] = _mm512_fmadd_ps(load_f16x16_avx512(x + i), _mm512_loadu_ps(y + i), acc[0]);
    if (i < n) {
        __mmask16 m = tail_mask16(n - i);
        __m512 xv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i));
        acc[1] = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, y + i), acc[1]);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

/* quantize_row_q8_0_ref on one block of 32 floats, 16 at a time, byte for byte (as
 * quantize_q8_0_avx2): q[h] = the int32 codes of elements 16h..16h+15, *d the fp16 scale. */
/* The block's largest magnitude (NaN skipped: vmaxps returns its second operand when the first is NaN). */
TARGET_AVX512 INLINE float block_amax_avx512(const float *x) {
    __m512 m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x)), _mm512_setzero_ps());
    m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + 16)), m);
    return _mm512_reduce_max_ps(m);
}

/* The codes of a block whose scale's inverse id is known (see quantize_block_avx512). */
TARGET_AVX512 INLINE void quantize_block_codes_avx512(const float *x, float id, __m512i q[2]) {
    __m512 v[2] = {_mm512_loadu_ps(x), _mm512_loadu_ps(x + 16)};
    for (int h = 0; h < 2; h++) {
        __m512 p = _mm512_mul_ps(v[h], _mm512_set1_ps(id));
        __mmask16 in_range = _mm512_cmp_ps_mask(p, _mm512_set1_ps(-127.5f), _CMP_GT_OQ) &
                             _mm512_cmp_ps_mask(p, _mm512_set1_ps(127.5f), _CMP_LT_OQ);
        __m512 c = _mm512_maskz_mov_ps(in_range, p);  /* out of range or NaN -> 0 */
        __m512i t = _mm512_cvttps_epi32(c);
        __m512 tf = _mm512_cvtepi32_ps(t);
        __mmask16 up = _mm512_cmp_ps_mask(c, _mm512_add_ps(tf, _mm512_set1_ps(0.5f)), _CMP_GE_OQ);
        __mmask16 down = _mm512_cmp_ps_mask(c, _mm512_sub_ps(tf, _mm512_set1_ps(0.5f)), _CMP_LE_OQ);
        t = _mm512_mask_add_epi32(t, up, t, _mm512_set1_epi32(1));
        q[h] = _mm512_mask_sub_epi32(t, down, t, _mm512_set1_epi32(1));
    }
}

TARGET_AVX512 INLINE void quantize_block_avx512(const float *x, __m512i q[2], uint16_t *d16) {
    const float d = block_amax_avx512(x) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    *d16 = _cvtss_sh(d, 0);
    quantize_block_codes_avx512(x, id, q);
}

TARGET_AVX512 INLINE void store_block_avx512(BlockQ8_0 *y, int32_t *sum, const __m512i q[2]) {
    _mm_storeu_si128((__m128i *)y->qs, _mm512_cvtepi32_epi8(q[0]));
    _mm_storeu_si128((__m128i *)(y->qs + 16), _mm512_cvtepi32_epi8(q[1]));
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
}

/* 16 blocks at a time in two passes: their 16 largest magnitudes, then the scales d = amax / 127,
 * id = 1 / d and the fp16 of d as vectors (the same IEEE operations as the scalar ones), then the
 * codes. One block at a time, each block's chain of reduction, two divisions and conversion held
 * the next block back (50 cycles per block with the data in L1; 2.95 us for the 6912 inputs of
 * bluelm-v-3b's down projection). */
TARGET_AVX512 static void quantize_q8_0_avx512(const float *x, BlockQ8_0 *y, int32_t *sums, int64_t n) {
    const int64_t nb = n / QK;
    int64_t b = 0;
    for (; b + 16 <= nb; b += 16) {
        _Alignas(64) float amax[16], id[16];
        _Alignas(32) uint16_t d16[16];
        for (int j = 0; j < 16; j++) amax[j] = block_amax_avx512(x + (b + j) * QK);
        const __m512 d = _mm512_div_ps(_mm512_load_ps(amax), _mm512_set1_ps(127.0f));
        const __mmask16 nonzero = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_store_ps(id, _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0f), d));
        _mm256_store_si256((__m256i *)d16, _mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
        for (int j = 0; j < 16; j++) {
            __m512i q[2];
            y[b + j].d = d16[j];
            quantize_block_codes_avx512(x + (b + j) * QK, id[j], q);
            store_block_avx512(&y[b + j], &sums[b + j], q);
        }
    }
    for (; b < nb; b++) {
        __m512i q[2];
        quantize_block_avx512(x + b * QK, q, &y[b].d);
        store_block_avx512(&y[b], &sums[b], q);
    }
}

/* GEMV, NT tokens, 4 rows at a time (in gemv_step_rows order). Per block: a = the token's 32
 * int8, corr = -o * sum(a) in lane 0 (o = 8 for Q4_0 nibbles, 128 for Q8_0 + 128); for each row
 * vpdpbusd(corr, w, a) leaves 8 lanes that add up to the exact int dot, then
 * acc += float(lanes) * dx * dy. */
TARGET_AVX512 INLINE __m256i gemv_weights_avx512(const uint8_t *row, int is_q4, int64_t b, uint16_t *d) {
    if (is_q4) {
        const BlockQ4_0 *w = (const BlockQ4_0 *)row + b;
        *d = w->d;
        return q4_0_nibbles_avx512(w->qs);
    }
    const BlockQ8_0 *w = (const BlockQ8_0 *)row + b;
    *d = w->d;
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w->qs), _mm256_set1_epi8((char)0x80));
}

TARGET_AVX512 INLINE void gemv_rows_avx512(const MatmulJob *job, int64_t t0, const int NT, const int64_t idx[4],
                                           int nrows, const int is_q4) {
    const int offset = is_q4 ? 8 : 128;
    const uint8_t *rows[4];
    for (int i = 0; i < 4; i++) rows[i] = job->W + idx[i] * job->row_bytes;
    __m256 acc[4][QGEMV_MAX_TOKENS];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < job->nb; b++) {
        __m256i a[QGEMV_MAX_TOKENS], corr[QGEMV_MAX_TOKENS];
        __m256 dy[QGEMV_MAX_TOKENS];
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) {
            const BlockQ8_0 *xb = &job->xq[(t0 + j) * job->nb + b];
            a[j] = _mm256_loadu_si256((const __m256i *)xb->qs);
            corr[j] = _mm256_zextsi128_si256(_mm_cvtsi32_si128(-offset * job->xsum[(t0 + j) * job->nb + b]));
            dy[j] = _mm256_set1_ps(quant_fp16_table[xb->d]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            uint16_t dx;
            _mm_prefetch((const char *)rows[i] + b * (is_q4 ? 18 : 34) + GEMV_PREFETCH_BYTES, _MM_HINT_T0);
            __m256i w = gemv_weights_avx512(rows[i], is_q4, b, &dx);
            const float dxf = quant_fp16_table[dx];
#pragma GCC unroll 4
            for (int j = 0; j < NT; j++) {  /* (isum * dy) * dx: dx a broadcast memory operand of the fma */
                __m256 isum = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(corr[j], w, a[j]));
                acc[i][j] = _mm256_fmadd_ps(_mm256_mul_ps(isum, dy[j]), _mm256_set1_ps(dxf), acc[i][j]);
            }
        }
    }
    store_gemv_sums(job, t0, NT, idx, nrows, acc);
}

/* acc + the 4-byte dot products of w's unsigned bytes with the signed bytes p[0..3] in every lane:
 * vpdpbusd with p as its broadcast memory operand ({1to16}; compilers do not fold a broadcast
 * load into vpdpbusd themselves, and a separate vpbroadcastd per instruction costs ~10%). */
TARGET_AVX512 INLINE __m512i dpbusd_bcast(__m512i acc, __m512i w, const int8_t *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)(const void *)p));
    return acc;
}

/* GEMV over repacked Q4_0 (BlockQ4_0x16, quant.h): the 16 rows of group g in the 16 lanes, NT
 * tokens. Per block: the 4 lines of 16 rows' bytes become 8 vectors of unsigned nibbles (w[k] the
 * elements 4k.., w[k + 4] the elements 16 + 4k..); per token, starting from -8 * sum(a) in every
 * lane, 8 vpdpbusd with the matching 4 activation bytes broadcast leave the 16 exact integer dots
 * (in two chains, low and high nibbles, so that the adds do not wait on each other), then
 * acc += float(dot) * (dx * dy) with the 16 rows' scales dx. Even and odd blocks accumulate apart. */
TARGET_AVX512 INLINE void gemv_x16_group(const MatmulJob *job, int64_t t0, const int NT, int64_t g) {
    const BlockQ4_0x16 *x = (const BlockQ4_0x16 *)job->W + g * job->n_pairs;
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512 acc[QGEMV_MAX_TOKENS][2];
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    for (int64_t p = 0; p < job->n_pairs; p++) {
        prefetch_x16_activations(job, p, t0, NT);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const int64_t b = 2 * p + h;
            if (b == job->nb) break;  /* an odd last block: the pad has no activations */
            if (h == 0) prefetch_weight_line(x[p].d);
            const __m512 dx = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)x[p].d[h]));
            __m512i w[8];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                prefetch_weight_line(x[p].qs[h][k]);
                const __m512i v = _mm512_load_si512(x[p].qs[h][k]);
                w[k] = _mm512_and_si512(v, low);
                w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            }
#pragma GCC unroll 4
            for (int j = 0; j < NT; j++) {
                const BlockQ8_0 *a = &job->xq[(t0 + j) * job->nb + b];
                __m512i lo = _mm512_set1_epi32(-8 * job->xsum[(t0 + j) * job->nb + b]), hi = _mm512_setzero_si512();
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    lo = dpbusd_bcast(lo, w[k], a->qs + 4 * k);
                    hi = dpbusd_bcast(hi, w[k + 4], a->qs + 16 + 4 * k);
                }
                const __m512 d = _mm512_mul_ps(dx, _mm512_set1_ps(quant_fp16_table[a->d]));
                acc[j][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi)), d, acc[j][h]);
            }
        }
    }
    const int64_t left = job->n_out - g * 16;
    const __mmask16 rows = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
#pragma GCC unroll 4
    for (int j = 0; j < NT; j++)
        _mm512_mask_storeu_ps(job->out + (t0 + j) * job->n_out + g * 16, rows, _mm512_add_ps(acc[j][0], acc[j][1]));
}

/* The groups of rows [r0, r1) (r0 a multiple of 16; r1 too, or n_out). */
TARGET_AVX512 static void gemv_x16_avx512(const MatmulJob *job, int64_t t0, int nt, int64_t r0, int64_t r1) {
    for (int64_t g = r0 / 16; g * 16 < r1; g++) {
        switch (nt) {  /* each case a copy specialized for its token count */
        case 1: gemv_x16_group(job, t0, 1, g); break;
        case 2: gemv_x16_group(job, t0, 2, g); break;
        case 3: gemv_x16_group(job, t0, 3, g); break;
        default: gemv_x16_group(job, t0, 4, g); break;
        }
    }
}

TARGET_AVX512 static void gemv_q_avx512(const MatmulJob *job, int64_t t0, int nt, int64_t r0, int64_t r1) {
    if (job->wtype == TYPE_Q4_0X16) {
        gemv_x16_avx512(job, t0, nt, r0, r1);
        return;
    }
    const int q4 = job->wtype == TYPE_Q4_0;
    int64_t rows[4];
    for (int64_t s = 0, n; (n = gemv_step_rows(r0, r1, s, rows)) > 0; s++) {
        const int k = (int)n;
        switch (nt) {  /* each case a copy specialized for its token count */
        case 1: q4 ? gemv_rows_avx512(job, t0, 1, rows, k, 1) : gemv_rows_avx512(job, t0, 1, rows, k, 0); break;
        case 2: q4 ? gemv_rows_avx512(job, t0, 2, rows, k, 1) : gemv_rows_avx512(job, t0, 2, rows, k, 0); break;
        case 3: q4 ? gemv_rows_avx512(job, t0, 3, rows, k, 1) : gemv_rows_avx512(job, t0, 3, rows, k, 0); break;
        default: q4 ? gemv_rows_avx512(job, t0, 4, rows, k, 1) : gemv_rows_avx512(job, t0, 4, rows, k, 0); break;
        }
    }
}

/* 16 elements of a float row from element k on, the ones at or past n read as 0 (masked load). */
TARGET_AVX512 INLINE __m512 load_row16_masked(const uint8_t *row, int wtype, int64_t k, __mmask16 m) {
    if (wtype == TYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + k);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + k);
    if (wtype == TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* res[j][i] = dot(W row r+i, x[t+j]), 4 rows x NT tokens (NT = 4, or 1 for a single token) in
 * zmm accumulators: each weight vector is loaded (and converted) once for NT tokens; the tail with
 * masked loads. */
TARGET_AVX512 INLINE void float_tile_avx512_typed(const MatmulJob *job, int64_t t, int ntok, int64_t r, int nrows,
                                                  float res[4][4], const int wtype, const int NT) {
    const uint8_t *rows[4];
    const float *xs[4];
    float_tile_rows(job, t, ntok, r, nrows, rows, xs);
    const int64_t n = job->n_in;
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) acc[i][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < n; k += 16) {
        __mmask16 m = n - k >= 16 ? (__mmask16)0xFFFF : tail_mask16(n - k);
        __m512 x[4];
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) x[j] = _mm512_maskz_loadu_ps(m, xs[j] + k);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m512 w = load_row16_masked(rows[i], wtype, k, m);
#pragma GCC unroll 4
            for (int j = 0; j < NT; j++) acc[i][j] = _mm512_fmadd_ps(w, x[j], acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NT; j++) res[j][i] = _mm512_reduce_add_ps(acc[i][j]);
}

TARGET_AVX512 static void float_tile_avx512(const MatmulJob *job, int64_t t, int ntok, int64_t r, int nrows,
                                            float res[4][4]) {
    const int one = ntok == 1;
    if (job->wtype == TYPE_F32) one ? float_tile_avx512_typed(job, t, ntok, r, nrows, res, TYPE_F32, 1)
                                    : float_tile_avx512_typed(job, t, ntok, r, nrows, res, TYPE_F32, 4);
    else if (job->wtype == TYPE_F16) one ? float_tile_avx512_typed(job, t, ntok, r, nrows, res, TYPE_F16, 1)
                                         : float_tile_avx512_typed(job, t, ntok, r, nrows, res, TYPE_F16, 4);
    else one ? float_tile_avx512_typed(job, t, ntok, r, nrows, res, TYPE_BF16, 1)
             : float_tile_avx512_typed(job, t, ntok, r, nrows, res, TYPE_BF16, 4);
}

/* ---- The AVX-512 GEMM: 16 weight rows in the lanes -------------------------------------------
 *
 * gemm_prepare_avx512 quantizes the activations exactly as quantize_row_q8_0_ref and stores them
 * token by token with their fp32 block scales and offset corrections beside:
 *     int8_t  act[T][nb][32]    at job->packed
 *     float   act_d[T][nb]      after act
 *     int32_t act_corr[T][nb]   after act_d: -o * (the sum of the block's 32 int8 values)
 * where o is what makes the weights unsigned (128 for Q8_0 stored as q ^ 0x80, 8 for Q4_0's
 * nibbles): sum((w + o) * a) - o * sum(a) = sum(w * a), and the correction starts the int32
 * accumulator. gemm_rows_avx512 unpacks 16 weight rows x a K chunk at a time into a tile where the
 * lanes are the rows, so one vpdpbusd with the 4 activation bytes of one token as its broadcast
 * memory operand does 16 rows x 4 products:
 *     uint32_t w[nkb][8][16]   w[b][k4][i] = the 4 unsigned weight bytes 4k4.. of row i, block b
 *     float    d[nkb][16]      the weight block scales
 * Per block the exact int32 dot of 16 rows x one token is then scaled in float:
 * acc += float(dot) * (dx[row] * dy[token]). Each output vector is 16 consecutive outputs of one
 * token, stored (or, for later K chunks, added) in place. */
enum {
    G5_ROWS = 16,
    G5_MAX_TOKENS = 12,        /* tokens per register block: 12 int32 + 12 float accumulators */
    G5_TOKEN_BLOCK = 256,      /* tokens whose activations stay in L2 while the thread's rows go by */
    G5_CHUNK_BLOCKS = 48,      /* K chunk (blocks): a token block's activations ~490 KB of L2 */
};

typedef struct {
    uint32_t w[G5_CHUNK_BLOCKS][8][G5_ROWS];
    float d[G5_CHUNK_BLOCKS][G5_ROWS];
} G5Tile;

typedef struct {
    const int8_t *q;      /* [T][nb][32] */
    const float *d;       /* [T][nb] */
    const int32_t *corr;  /* [T][nb] */
} G5Act;

static G5Act g5_act(const MatmulJob *job) {
    const int64_t n = job->T * job->nb;
    G5Act a = {(const int8_t *)job->packed, (const float *)(job->packed + n * QK),
               (const int32_t *)(job->packed + n * (QK + 4))};
    return a;
}

TARGET_AVX512 static void gemm_prepare_avx512(const MatmulJob *job, int64_t t0, int64_t t1) {
    G5Act a = g5_act(job);
    const int offset = job->wtype == TYPE_Q8_0 ? 128 : 8;  /* Q4_0 and its repacked form: nibbles */
    for (int64_t t = t0; t < t1; t++)
        for (int64_t b = 0; b < job->nb; b++) {
            const int64_t i = t * job->nb + b;
            __m512i q[2];
            uint16_t d;
            quantize_block_avx512(job->x + t * job->n_in + b * QK, q, &d);
            _mm_storeu_si128((__m128i *)(a.q + i * QK), _mm512_cvtepi32_epi8(q[0]));
            _mm_storeu_si128((__m128i *)(a.q + i * QK + 16), _mm512_cvtepi32_epi8(q[1]));
            ((float *)a.d)[i] = quant_fp16_table[d];
            ((int32_t *)a.corr)[i] = -offset * _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
        }
}

/* 16 rows' 8 dwords each (rows i and i+8 in the halves of z[i]) -> w[k] = dword k of rows 0..15:
 * the 8x8 transpose of each half (unpack 32, unpack 64), then the 128-bit lanes put in row order. */
TARGET_AVX512 INLINE void transpose_16x8_avx512(__m512i z[8], uint32_t w[8][G5_ROWS]) {
    __m512i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {  /* u[i + k] lanes: rows i..i+3 (and +8) dword k, then k + 4 */
        u[i + 0] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    for (int k = 0; k < 4; k++) {
        _mm512_store_si512(w[k], _mm512_permutex2var_epi64(u[k], lo, u[k + 4]));
        _mm512_store_si512(w[k + 4], _mm512_permutex2var_epi64(u[k], hi, u[k + 4]));
    }
}

/* 16 rows' 4 dwords each (row 4L+i in lane L of z[i]) -> w[k] = dword k of rows 0..15. */
TARGET_AVX512 INLINE void transpose_16x4_avx512(__m512i z[4], __m512i w[4]) {
    __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    w[0] = _mm512_unpacklo_epi64(t0, t2);
    w[1] = _mm512_unpackhi_epi64(t0, t2);
    w[2] = _mm512_unpacklo_epi64(t1, t3);
    w[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* The same tile from repacked Q4_0 (r a multiple of 16): each block's lines already hold the 16 rows'
 * bytes side by side; only the nibbles are separated. Padding rows have scale 0. */
TARGET_AVX512 static void g5_unpack_x16(const MatmulJob *job, int64_t r, int64_t kb, int64_t nkb, G5Tile *tile) {
    const BlockQ4_0x16 *x = (const BlockQ4_0x16 *)job->W + r / 16 * job->n_pairs;
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < nkb; b++) {
        const BlockQ4_0x16 *xp = &x[(kb + b) / 2];
        const int h = (int)((kb + b) % 2);
        for (int k4 = 0; k4 < 4; k4++) {
            const __m512i v = _mm512_load_si512(xp->qs[h][k4]);
            _mm512_store_si512(tile->w[b][k4], _mm512_and_si512(v, low));
            _mm512_store_si512(tile->w[b][k4 + 4], _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
        }
        _mm512_store_ps(tile->d[b], _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)xp->d[h])));
    }
}

/* Rows [r, r + 16) (those < n_out; the others read as row r and their scales zeroed, so that they
 * contribute nothing) x blocks [kb, kb + nkb) into the tile: each row's 32 (Q4_0: 16) bytes loaded,
 * then transposed in registers; the 16 fp16 scales with one gather. */
TARGET_AVX512 static void g5_unpack(const MatmulJob *job, int64_t r, int64_t kb, int64_t nkb, G5Tile *tile) {
    if (job->wtype == TYPE_Q4_0X16) {
        g5_unpack_x16(job, r, kb, nkb, tile);
        return;
    }
    const int64_t left = job->n_out - r;
    const __mmask16 rows = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    const __m512i row_off = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32((int)job->row_bytes));
    const uint8_t *row[G5_ROWS];
    for (int i = 0; i < G5_ROWS; i++) row[i] = job->W + (r + (i < left ? i : 0)) * job->row_bytes;
    const int q4 = job->wtype == TYPE_Q4_0;
    const int64_t bb = q4 ? (int64_t)sizeof(BlockQ4_0) : (int64_t)sizeof(BlockQ8_0);
    for (int64_t b = 0; b < nkb; b++) {
        const int64_t off = (kb + b) * bb;
        if (q4) {
            __m512i z[4], w[4];
            for (int i = 0; i < 4; i++) {
                __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(row[i] + off + 2)));
                v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(row[i + 4] + off + 2)), 1);
                v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(row[i + 8] + off + 2)), 2);
                z[i] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(row[i + 12] + off + 2)), 3);
            }
            transpose_16x4_avx512(z, w);
            for (int k4 = 0; k4 < 4; k4++) {  /* qs dword k4: elements 4k4.. (low) and 16+4k4.. (high) */
                _mm512_store_si512(tile->w[b][k4], _mm512_and_si512(w[k4], _mm512_set1_epi8(0x0F)));
                _mm512_store_si512(tile->w[b][k4 + 4], _mm512_and_si512(_mm512_srli_epi16(w[k4], 4), _mm512_set1_epi8(0x0F)));
            }
        } else {
            __m512i z[8];
            for (int i = 0; i < 8; i++) {
                __m512i v = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(row[i] + off + 2)));
                v = _mm512_inserti64x4(v, _mm256_loadu_si256((const __m256i *)(row[i + 8] + off + 2)), 1);
                z[i] = _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
            }
            transpose_16x8_avx512(z, tile->w[b]);
        }
        /* the fp16 scale is the low half of the gathered dword; rows past n_out get 0 */
        __m512i hd = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, row_off, job->W + r * job->row_bytes + off, 1);
        _mm512_store_ps(tile->d[b], _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd)));
    }
}

TARGET_AVX512 INLINE void g5_tokens(const MatmulJob *job, const G5Tile *tile, int64_t r, int64_t kb, int64_t nkb,
                                    int64_t t0, const int NT, int first) {
    const int64_t nb = job->nb, left = job->n_out - r;
    const __mmask16 rows = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    const G5Act a = g5_act(job);
    const int8_t *q = a.q + (t0 * nb + kb) * QK;
    const float *dy = a.d + t0 * nb + kb;
    const int32_t *corr = a.corr + t0 * nb + kb;
    __m512 accf[G5_MAX_TOKENS];
#pragma GCC unroll 12
    for (int j = 0; j < NT; j++) accf[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nkb; b++) {
        __m512i acc[G5_MAX_TOKENS];
#pragma GCC unroll 12
        for (int j = 0; j < NT; j++) acc[j] = _mm512_set1_epi32(corr[j * nb + b]);
#pragma GCC unroll 8
        for (int k4 = 0; k4 < 8; k4++) {
            const __m512i w = _mm512_load_si512(tile->w[b][k4]);
#pragma GCC unroll 12
            for (int j = 0; j < NT; j++)  /* the activation bytes: vpdpbusd's broadcast memory operand */
                acc[j] = dpbusd_bcast(acc[j], w, q + (j * nb + b) * QK + 4 * k4);
        }
        const __m512 dx = _mm512_load_ps(tile->d[b]);
#pragma GCC unroll 12
        for (int j = 0; j < NT; j++)
            accf[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[j]), _mm512_mul_ps(dx, _mm512_set1_ps(dy[j * nb + b])), accf[j]);
    }
#pragma GCC unroll 12
    for (int j = 0; j < NT; j++) {
        float *o = job->out + (t0 + j) * job->n_out + r;
        __m512 v = first ? accf[j] : _mm512_add_ps(_mm512_maskz_loadu_ps(rows, o), accf[j]);
        _mm512_mask_storeu_ps(o, rows, v);
    }
}

TARGET_AVX512 static void g5_token_range(const MatmulJob *job, const G5Tile *tile, int64_t r, int64_t kb, int64_t nkb,
                                         int64_t t0, int64_t t1, int first) {
    int64_t t = t0;
    for (; t + G5_MAX_TOKENS <= t1; t += G5_MAX_TOKENS) g5_tokens(job, tile, r, kb, nkb, t, G5_MAX_TOKENS, first);
    switch (t1 - t) {  /* the tail, each count its own specialized copy */
    case 0: break;
    case 1: g5_tokens(job, tile, r, kb, nkb, t, 1, first); break;
    case 2: g5_tokens(job, tile, r, kb, nkb, t, 2, first); break;
    case 3: g5_tokens(job, tile, r, kb, nkb, t, 3, first); break;
    case 4: g5_tokens(job, tile, r, kb, nkb, t, 4, first); break;
    case 5: g5_tokens(job, tile, r, kb, nkb, t, 5, first); break;
    case 6: g5_tokens(job, tile, r, kb, nkb, t, 6, first); break;
    case 7: g5_tokens(job, tile, r, kb, nkb, t, 7, first); break;
    case 8: g5_tokens(job, tile, r, kb, nkb, t, 8, first); break;
    case 9: g5_tokens(job, tile, r, kb, nkb, t, 9, first); break;
    case 10: g5_tokens(job, tile, r, kb, nkb, t, 10, first); break;
    default: g5_tokens(job, tile, r, kb, nkb, t, 11, first); break;
    }
}

/* One thread's rows [r0, r1):
 *   for each block of G5_TOKEN_BLOCK tokens      (their activations stay in L2)
 *     for each K chunk of up to G5_CHUNK_BLOCKS blocks
 *       for each 16 rows                         (unpacked once into the tile)
 *         for each 12 tokens                     (the register block)
 * The weights of the next 16 rows are asked for (into L2) in one go before the current ones are
 * used. Measured, pp128 of the 3B preset in interleaved runs: 54.1% of the int8 peak with this
 * burst, 50-52% without it, and 52.0-52.4% with quant.c's spread-out prefetch_next_tile instead. */
TARGET_AVX512 static void gemm_rows_avx512(const MatmulJob *job, int64_t r0, int64_t r1) {
    static _Thread_local G5Tile tile __attribute__((aligned(64)));
    const int64_t n_chunks = (job->nb + G5_CHUNK_BLOCKS - 1) / G5_CHUNK_BLOCKS;
    const int64_t chunk = (job->nb + n_chunks - 1) / n_chunks;
    const int64_t block_bytes = job->wtype == TYPE_Q4_0 ? (int64_t)sizeof(BlockQ4_0) : (int64_t)sizeof(BlockQ8_0);
    for (int64_t tb = 0; tb < job->T; tb += G5_TOKEN_BLOCK) {
        const int64_t tb_end = job->T < tb + G5_TOKEN_BLOCK ? job->T : tb + G5_TOKEN_BLOCK;
        for (int64_t kb = 0; kb < job->nb; kb += chunk) {
            const int64_t nkb = job->nb - kb < chunk ? job->nb - kb : chunk;
            for (int64_t r = r0; r < r1; r += G5_ROWS) {
                g5_unpack(job, r, kb, nkb, &tile);
                /* the next rows' weights for this chunk (or the first rows of the next chunk) */
                const int64_t nr = r + G5_ROWS < r1 ? r + G5_ROWS : r0;
                const int64_t nkb0 = r + G5_ROWS < r1 ? kb : kb + chunk;
                if (nkb0 < job->nb && job->wtype == TYPE_Q4_0X16) {  /* the group's pairs, one stretch */
                    const BlockQ4_0x16 *x = (const BlockQ4_0x16 *)job->W + nr / 16 * job->n_pairs;
                    const int64_t kend = nkb0 + nkb < job->nb ? nkb0 + nkb : job->nb;
                    const uint8_t *p = (const uint8_t *)&x[nkb0 / 2], *e = (const uint8_t *)&x[(kend + 1) / 2];
                    for (; p < e; p += 64) _mm_prefetch((const char *)p, _MM_HINT_T1);
                } else if (nkb0 < job->nb)
                    for (int64_t i = nr; i < nr + G5_ROWS && i < r1; i++) {
                        const uint8_t *p = job->W + i * job->row_bytes + nkb0 * block_bytes;
                        for (int64_t off = 0; off < nkb * block_bytes; off += 64) _mm_prefetch((const char *)p + off, _MM_HINT_T1);
                    }
                g5_token_range(job, &tile, r, kb, nkb, tb, tb_end, kb == 0);
            }
        }
    }
}

TARGET_AVX512 static uint64_t probe_read_avx512(const uint8_t *p, int64_t bytes) {
    __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int64_t i = 0; i < bytes; i += 256)
        for (int j = 0; j < 4; j++) acc[j] = _mm512_add_epi64(acc[j], _mm512_load_si512(p + i + 64 * j));
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3]));
    uint64_t lanes[8], sum = 0;  /* unsigned: the checksum wraps by design (the intrinsic's signed sum is UB) */
    _mm512_storeu_si512(lanes, s);
    for (int i = 0; i < 8; i++) sum += lanes[i];
    return sum;
}

/* vpdpbusd zmm into 16 independent accumulators: 64 multiply-adds each. */
TARGET_AVX512 static int64_t probe_int8_avx512(int64_t iters) {
    volatile char seed = 3;
    const __m512i a = _mm512_set1_epi8(seed), b = _mm512_set1_epi8((char)(seed - 5));
    __m512i acc[16];
    for (int j = 0; j < 16; j++) acc[j] = _mm512_set1_epi32(j);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
    }
    __m512i s = acc[0];
    for (int j = 1; j < 16; j++) s = _mm512_add_epi32(s, acc[j]);
    /* keep the result alive without a scalar reduction: the sums wrap by design, and signed
     * overflow in C arithmetic would be undefined */
    volatile int sink = _mm_cvtsi128_si32(_mm512_castsi512_si128(s));
    (void)sink;
    return iters * 16 * 64;
}

/* The inner pattern of gemm_rows_avx512 in registers: 12 outputs vectors, each per block 8
 * vpdpbusd from its correction, then acc += float(dot) * (dx * dy). */
TARGET_AVX512 static int64_t probe_int8_scaled_avx512(int64_t iters) {
    volatile char seed = 3;
    const __m512i a = _mm512_set1_epi8(seed), w = _mm512_set1_epi8((char)(seed - 5));
    volatile float scale = 1e-6f;
    const __m512 dx = _mm512_set1_ps(scale);
    __m512 acc[12];
    for (int j = 0; j < 12; j++) acc[j] = _mm512_setzero_ps();
    __m512i av = a;
    for (int64_t it = 0; it < iters; it++) {
        __asm__ volatile("" : "+v"(av));  /* the dots are not loop-invariant */
        __m512i dot[12];
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) dot[j] = _mm512_set1_epi32(j);
#pragma GCC unroll 8
        for (int k4 = 0; k4 < 8; k4++)
#pragma GCC unroll 12
            for (int j = 0; j < 12; j++) dot[j] = _mm512_dpbusd_epi32(dot[j], w, av);
        const __m512 dy = _mm512_set1_ps((float)(it & 7) + 1.0f);  /* a different product each block */
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[j]), _mm512_mul_ps(dx, _mm512_add_ps(dy, acc[11 - j])), acc[j]);
    }
    __m512 s = acc[0];
    for (int j = 1; j < 12; j++) s = _mm512_add_ps(s, acc[j]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return iters * 12 * 8 * 64;
}

const QuantKernels quant_kernels_avx512 = {
    .name = "avx512",
    .dot_q4_0_q8_0 = vec_dot_q4_0_q8_0_avx512,
    .dot_q8_0_q8_0 = vec_dot_q8_0_q8_0_avx512,
    .dot_f16_f32 = vec_dot_f16_f32_avx512,
    .dot_f32_f32 = vec_dot_f32_f32_avx512,
    .quantize_q8_0 = quantize_q8_0_avx512,
    .gemv_q = gemv_q_avx512,
    .float_tile = float_tile_avx512,
    .gemm_group = 16,  /* the GEMM is gemm_rows (no QPACK tiles); 16 = tokens per share in prepare */
    .gemm_prepare = gemm_prepare_avx512,
    .gemm_rows = gemm_rows_avx512,
    .probe_read = probe_read_avx512,
    .probe_int8 = probe_int8_avx512,
    .probe_int8_scaled = probe_int8_scaled_avx512,
    .q4_0x16 = 1,
};

#endif /* x86 */
