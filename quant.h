/* quant.h — tensor element types, quantization, and the dot products / matrix products built on them.
 *
 * Types and block layouts are bit-compatible with ggml (anchors.md §b):
 *   Q4_0: 32 weights per block, 18 bytes: fp16 scale d, then 16 bytes where element j (0..15) is the
 *         LOW nibble of qs[j] and element j+16 is the HIGH nibble; value = (nibble - 8) * d.
 *   Q8_0: 32 weights per block, 34 bytes: fp16 scale d, then 32 int8; value = q * d.
 *
 * Naming follows ggml: a `_ref` function is the scalar reference that defines the numbers; `_avx2`,
 * `_avx512` (AVX-512 + VNNI) and `_neon` versions have identical signatures and are tested against it.
 * The un-suffixed name dispatches to the best version this CPU supports (checked once at start). */
#ifndef BLUELMV_QUANT_H
#define BLUELMV_QUANT_H

#include <stdint.h>
#include "util.h"

/* ggml_type ids, as stored in GGUF tensor infos. */
enum {
    TYPE_F32 = 0,
    TYPE_F16 = 1,
    TYPE_Q4_0 = 2,
    TYPE_Q8_0 = 8,
    TYPE_BF16 = 30,
    /* Not a ggml type and never in a file: Q4_0 weights rearranged at load for the AVX-512 kernels
     * (Q4_0x16 below). type_is_known() is false for it. */
    TYPE_Q4_0X16 = 1002,
};

#define QK 32  /* elements per quantized block (QK4_0 = QK8_0 = 32) */

typedef struct {
    uint16_t d;       /* fp16 scale */
    uint8_t qs[QK / 2]; /* nibbles: element j low nibble of qs[j], element j+16 high nibble */
} BlockQ4_0;          /* 18 bytes */

typedef struct {
    uint16_t d;       /* fp16 scale */
    int8_t qs[QK];
} BlockQ8_0;          /* 34 bytes */

/* ---- type table ----------------------------------------------------------------------------- */
const char *type_name(int type);           /* "f32", "f16", "bf16", "q8_0", "q4_0"; "type N" otherwise */
int type_is_known(int type);               /* one of the five types above */
int type_from_name(const char *name);      /* -1 if unknown */
int64_t type_block_elems(int type);        /* 1 for float types, 32 for quantized */
int64_t type_block_bytes(int type);        /* 4, 2, 2, 34, 18 */
int64_t type_row_bytes(int type, int64_t n); /* bytes of n elements; -1 if n is not a multiple of the block */

/* ---- scalar conversions --------------------------------------------------------------------- */
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);            /* IEEE round-to-nearest-even, as ggml */
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);            /* round-to-nearest-even; NaN kept quiet, as ggml */

/* ---- quantize / dequantize (reference rounding: files are deterministic) --------------------- */
void quantize_row_q4_0_ref(const float *x, BlockQ4_0 *y, int64_t n);  /* n % 32 == 0 */
void quantize_row_q8_0_ref(const float *x, BlockQ8_0 *y, int64_t n);  /* n % 32 == 0 */
void dequantize_row_q4_0(const BlockQ4_0 *x, float *y, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0 *x, float *y, int64_t n);

/* Any known type <-> f32 (quantized types use the _ref rounding above; Q8_0 through the active
 * kernel family's quantizer, which produces the same bytes). */
void quantize_row(int type, const float *src, void *dst, int64_t n);
void dequantize_row(int type, const void *src, float *dst, int64_t n);

/* ---- dot products ----------------------------------------------------------------------------
 * n elements; for quantized types n % 32 == 0 and the pointers are arrays of n/32 blocks.
 * Q4_0×Q8_0 and Q8_0×Q8_0: integer sums inside each block (exact), then sum += isum * dx * dy
 * in block order for _ref. F16×F32 and F32×F32 accumulate in float (_ref: one sequential sum). */
float vec_dot_q4_0_q8_0_ref(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y);
float vec_dot_q8_0_q8_0_ref(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y);
float vec_dot_f16_f32_ref(int64_t n, const uint16_t *x, const float *y);
float vec_dot_f32_f32_ref(int64_t n, const float *x, const float *y);

#if defined(__x86_64__) || defined(__i386__)
float vec_dot_q4_0_q8_0_avx2(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y);
float vec_dot_q8_0_q8_0_avx2(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y);
float vec_dot_f16_f32_avx2(int64_t n, const uint16_t *x, const float *y);
float vec_dot_f32_f32_avx2(int64_t n, const float *x, const float *y);
float vec_dot_q4_0_q8_0_avx512(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y);
float vec_dot_q8_0_q8_0_avx512(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y);
float vec_dot_f16_f32_avx512(int64_t n, const uint16_t *x, const float *y);
float vec_dot_f32_f32_avx512(int64_t n, const float *x, const float *y);
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
float vec_dot_q4_0_q8_0_neon(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y);
float vec_dot_q8_0_q8_0_neon(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y);
float vec_dot_f16_f32_neon(int64_t n, const uint16_t *x, const float *y);
float vec_dot_f32_f32_neon(int64_t n, const float *x, const float *y);
#endif

/* Dispatched versions (best available for this CPU). */
float vec_dot_q4_0_q8_0(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y);
float vec_dot_q8_0_q8_0(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y);
float vec_dot_f16_f32(int64_t n, const uint16_t *x, const float *y);
float vec_dot_f32_f32(int64_t n, const float *x, const float *y);

/* Which kernel family the dispatcher chose ("ref", "avx2", "avx512", "neon-dotprod", "neon"). */
const char *quant_kernel_name(void);
/* Force a kernel family for testing and benchmarking: "ref", "avx2", "avx512", "neon", or NULL for
 * the automatic choice. Returns -1 if the CPU cannot run it. */
int quant_force_kernels(const char *name);

/* ---- matrix products -------------------------------------------------------------------------
 * out[t][r] = sum_k W[r][k] * x[t][k]   for t < T, r < n_out, k < n_in
 * W is n_out rows of n_in elements of type wtype (row r at byte offset r * type_row_bytes(wtype, n_in);
 * n_in a multiple of 32 for Q4_0/Q8_0, any n_in for float types; or TYPE_Q4_0X16, see below, whose
 * W must be 64-byte aligned).
 * x is T rows of n_in floats. out is T rows of n_out floats (row stride n_out).
 *
 * For Q4_0/Q8_0 weights the activations are first quantized to Q8_0 (quantize_row_q8_0_ref, or a
 * vector version tested to give the same bytes, so every ISA sees the same int8 activations), then
 * multiplied with integer dots. F16 and BF16 weights are converted to f32 (exactly) and multiplied
 * with the f32 activations, as F32 weights are. When T > 1 the work is done as matrix-matrix
 * products, not T separate vector products: quantized weights go through a GEMV kernel that takes
 * up to 4 tokens per pass over the weights while T < 7, and a register-blocked GEMM (tiles of
 * 4 rows x 32 tokens on AVX-512) from T = 7 on; float weights through 4 x 4 tiles.
 * Threaded over the pool (output rows split between threads); `scratch` must hold
 * matmul_scratch_bytes(wtype, n_in, T) bytes (0 for F32 and F16 weights: scratch may be NULL). */
int64_t matmul_scratch_bytes(int wtype, int64_t n_in, int64_t T);
void matmul(ThreadPool *pool, float *out, const void *W, int wtype, const float *x,
            int64_t n_in, int64_t n_out, int64_t T, void *scratch);
/* Several products that share one input x (a layer's q, k and v projections): out_i = x W_i^T for
 * each part, identical to calling matmul once per part, but the input is quantized once and the
 * threads are woken once for all of them (decode is a string of small products; each wake-up and
 * barrier is time the memory bus stands idle). At most 3 parts; scratch as for matmul with the
 * largest part. Parts of different or float types fall back to one matmul each. */
typedef struct {
    float *out;       /* (T, n_out) */
    const void *W;    /* (n_out, n_in) of wtype */
    int wtype;
    int64_t n_out;
} MatmulPart;
void matmul_shared_input(ThreadPool *pool, const MatmulPart *parts, int n_parts, const float *x, int64_t n_in,
                         int64_t T, void *scratch);
/* The feed-forward's first half: gate.out = silu(x W_gate^T) * (x W_up^T), silu(g) = g / (1 + exp(-g)),
 * with the up product left in up.out (gate.n_out must equal up.n_out); each thread applies SwiGLU to
 * its own rows as soon as it has them. Equal to matmul twice and then the elementwise loop, bit for bit. */
void matmul_swiglu(ThreadPool *pool, MatmulPart gate, MatmulPart up, const float *x, int64_t n_in, int64_t T,
                   void *scratch);
/* One token's product in two halves, for a caller that shares out the rows itself (the decode in
 * llm.c runs a whole token in one pool task, each thread quantizing a product's input and computing
 * its own rows, with barriers between the steps). matvec_prepare_input quantizes x as matmul does
 * for weights of wtype into `input` (matvec_input_bytes(n_in) bytes, 64-byte aligned; nothing to do
 * for float weights); matvec_rows computes out[r] = W[r] . x for rows [r0, r1), r0 a multiple of
 * MATVEC_ROW_ALIGN, with matmul's kernels (x is read for float weights, input for quantized ones).
 * With the rows split as matmul splits them (split_range(n_out, ith, nth, MATVEC_ROW_ALIGN, ...)),
 * the results equal matmul's with T = 1 bit for bit. */
enum { MATVEC_ROW_ALIGN = 16 };
int64_t matvec_input_bytes(int64_t n_in);
void matvec_prepare_input(int wtype, const float *x, int64_t n_in, void *input);
void matvec_rows(float *out, const void *W, int wtype, int64_t n_in, int64_t n_out, const float *x, const void *input,
                 int64_t r0, int64_t r1);
/* The same product computed with the _ref dot products only, single-threaded: the definition the
 * fast path is tested against. */
void matmul_ref(float *out, const void *W, int wtype, const float *x, int64_t n_in, int64_t n_out,
                int64_t T, void *scratch);

/* ---- Q4_0 repacked by 16 rows (TYPE_Q4_0X16) --------------------------------------------------
 * The decode GEMV reads each weight once, so it runs at memory speed only if its per-byte work is
 * small. In the file's layout every Q4_0 row is a string of 18-byte blocks and a vector unit must
 * take a block apart row by row (load, shift, mask, one dot per row and block). Repacked, the same
 * bytes are grouped so that one 64-byte load holds 4 bytes of each of 16 rows: one vpdpbusd then
 * computes a 4-element dot for 16 rows at once, with the activation broadcast (as ggml's repacked
 * block_q4_0x8 layouts for its CPU "extra buffer types"). Measured on Zen 4 (2 threads, one 18 MB
 * matrix from L3): 48 GB/s in the file's layout, 100-107 GB/s repacked.
 *
 * Layout: rows in groups of 16 (the last group padded with zero rows), blocks in pairs (an odd last
 * block padded with a zero block). Group g, pair p is one BlockQ4_0x16 at index g * n_pairs + p,
 * n_pairs = (n_in / 32 + 1) / 2. Zero padding has scale 0, so it adds nothing to any product.
 * The bytes are exactly those of the Q4_0 rows: unpack_q4_0x16_row gives any row back. */
typedef struct {
    uint16_t d[2][16];        /* d[h][i]: fp16 scale of row 16g + i, block 2p + h */
    uint8_t qs[2][4][16][4];  /* qs[h][k][i][j] = qs[4k + j] of that row and block: one 64-byte line
                                 holds bytes 4k..4k+3 of 16 rows (low nibbles elements 4k.., high
                                 nibbles elements 16 + 4k..) */
} BlockQ4_0x16;               /* 576 bytes = 9 cache lines */

/* Bytes of a repacked (n_out, n_in) Q4_0 matrix (n_in % 32 == 0). */
int64_t q4_0x16_bytes(int64_t n_out, int64_t n_in);
/* Any matrix's bytes: rows * type_row_bytes for the file types, q4_0x16_bytes for TYPE_Q4_0X16;
 * -1 if the shape does not fit the type. */
int64_t type_matrix_bytes(int type, int64_t rows, int64_t cols);
/* W (n_out rows of Q4_0) -> dst (q4_0x16_bytes, 64-byte aligned), threaded over pool (NULL: this
 * thread only). */
void repack_q4_0x16(ThreadPool *pool, const void *W, int64_t n_out, int64_t n_in, void *dst);
/* Block b of row `row` of a repacked matrix with n_pairs pairs per group, as a Q4_0 block. */
BlockQ4_0 q4_0x16_block(const void *R, int64_t n_pairs, int64_t row, int64_t b);
/* Row `row` of a repacked matrix back as n_in / 32 Q4_0 blocks, byte for byte the original row. */
void unpack_q4_0x16_row(const void *R, int64_t n_in, int64_t row, BlockQ4_0 *dst);
/* Whether the kernel family in use computes TYPE_Q4_0X16 products with its own kernels (AVX-512,
 * AVX2; NEON not yet).
 * matmul accepts TYPE_Q4_0X16 with every family (the others unpack row by row, slowly), so a
 * model loader repacks only when this is true. */
int quant_has_q4_0x16(void);

/* ---- machine probes (the rooflines `bluelmv bench` compares against) -------------------------
 * probe_read_bandwidth: GB/s (1e9 bytes/s) of streaming through a `bytes`-long buffer (e.g. 1 GiB,
 * far larger than the caches) with the widest vector loads of the kernel family in use, every
 * thread of the pool reading its own contiguous share; the median of 5 timed passes after one
 * warm-up pass (`bytes` is rounded up to whole 4 KiB pages, at least one per thread). This is the
 * ceiling for memory-bound work such as the T = 1 matmul (decode). Returns a negative value if the
 * buffer cannot be allocated.
 *
 * probe_int8_peak: GOP/s (1e9 ops/s, one int8 multiply-add = 2 ops) of the int8 dot-product
 * instruction of the kernel family in use (AVX-512 VNNI vpdpbusd, AVX2 vpmaddubsw + vpaddw, NEON
 * vdotq_s32, NEON without dotprod vmlal_s8, plain C for "ref") issued back to back into many
 * independent register accumulators on every thread of the pool; the median of 5 timed runs of
 * about 30 ms each. This is the ceiling for compute-bound work such as the T > 1 matmul (prefill). */
double probe_read_bandwidth(ThreadPool *pool, int64_t bytes);
/* probe_read_spans: the same streaming read over memory the caller already has, e.g. a model's
 * weight matrices and KV cache (then the probe reads exactly the pages a decode step reads, with
 * their page sizes and placement, and adds nothing to the process's memory). Only the whole 4 KiB
 * pages inside each span are read; the result counts those bytes. Negative if there are none. */
typedef struct {
    const void *p;
    int64_t bytes;
} ReadSpan;
double probe_read_spans(ThreadPool *pool, const ReadSpan *spans, int n_spans);
double probe_int8_peak(ThreadPool *pool);
/* probe_int8_block_scaled: GOP/s (counting only the int8 multiply-adds) of the inner pattern of a
 * Q8_0 GEMM, in registers: per block of 32 products and vector of outputs, the dot instructions,
 * then the int32 -> float conversion and the block-scale multiply and accumulate (acc +=
 * float(dot) * (dx * dy)). The scale arithmetic competes with the dot instruction for the same
 * execution ports (on Zen 4 the multiply and the FMA do, the conversion does not), so this is the
 * attainable ceiling of any GEMM with ggml's per-32 block scales: about 80% of probe_int8_peak
 * there. Returns a negative value for kernel families that do not have it (only AVX-512 does). */
double probe_int8_block_scaled(ThreadPool *pool);

/* ---- internal: the interface between quant.c and the per-ISA files ---------------------------
 * Nothing outside quant*.c needs this section. quant.c owns the scalar reference, the type table,
 * dispatch, threading and the loops of the matrix products; quant_x86.c and quant_neon.c each
 * provide a QuantKernels table of the inner kernels for one instruction-set family. */

/* One matrix product, as the threads see it. */
typedef struct {
    const uint8_t *W;        /* n_out rows of row_bytes bytes */
    int wtype;
    int64_t row_bytes;
    int64_t n_in, n_out, T;
    int64_t nb;              /* n_in / 32 (quantized weights) */
    int64_t n_pairs;         /* TYPE_Q4_0X16: BlockQ4_0x16 per 16-row group, (nb + 1) / 2 (row_bytes is 0) */
    const float *x;          /* T rows of n_in floats */
    BlockQ8_0 *xq;           /* T rows of nb blocks: x quantized (the bytes of quantize_row_q8_0_ref) */
    int32_t *xsum;           /* T rows of nb sums of the 32 int8 values of each xq block */
    uint8_t *packed;         /* activations rearranged for the GEMM tile kernel (QPACK_* below) */
    float *out;              /* T rows of n_out floats */
} MatmulJob;

/* Packed activations for the GEMM tile kernels. Tokens go in groups of G (the kernel family's
 * gemm_group: 16 for AVX-512, 8 for AVX2, 4 for NEON; the last group is padded with zero tokens).
 * For group g and block b there is one record of QPACK_RECORD_BYTES(G) bytes at
 * packed + (g * nb + b) * QPACK_RECORD_BYTES(G):
 *     int8_t  q[8][G][4]   q[k4][t][i] = activation element 4*k4+i of token g*G+t in block b
 *     float   d[G]         fp32 of that token's Q8_0 block scale (0 for padding)
 *     int32_t corr[G]      -offset * (sum of the token's 32 int8 values), where offset is the value
 *                          the family adds to weights to make them unsigned (0 if it does not)
 * so that one 4-byte weight group broadcast against one q[k4] row gives G dot products at once. */
#define QPACK_RECORD_BYTES(G) (40 * (G))
#define QTILE_ROWS 4           /* weight rows per GEMM tile */
#define QTILE_MAX_BLOCKS 256   /* blocks per row in one unpacked tile (a K chunk of up to 8192) */
#define QTILE_BYTES (QTILE_ROWS * QTILE_MAX_BLOCKS * (QK + 4))
#define QGEMV_MAX_TOKENS 4     /* tokens per pass of the GEMV kernel */

typedef struct {
    const char *name;
    float (*dot_q4_0_q8_0)(int64_t n, const BlockQ4_0 *x, const BlockQ8_0 *y);
    float (*dot_q8_0_q8_0)(int64_t n, const BlockQ8_0 *x, const BlockQ8_0 *y);
    float (*dot_f16_f32)(int64_t n, const uint16_t *x, const float *y);
    float (*dot_f32_f32)(int64_t n, const float *x, const float *y);
    /* quantize_row_q8_0_ref, byte for byte (vector code, tested to be identical), plus sums[b] =
     * the sum of block b's 32 int8 values: how matmul quantizes activations. */
    void (*quantize_q8_0)(const float *x, BlockQ8_0 *y, int32_t *sums, int64_t n);
    /* out[t][r] for r in [r0, r1) and tokens t in [t0, t0 + nt), nt <= QGEMV_MAX_TOKENS, quantized
     * weights: the decode GEMV (nt = 1), also used for a few tokens (each weight block is loaded
     * once for the nt tokens). */
    void (*gemv_q)(const MatmulJob *job, int64_t t0, int nt, int64_t r0, int64_t r1);
    /* Float weights (f32, f16, bf16): res[j][i] = dot(W row r+i, x[t+j]) for i < nrows <= 4 and
     * j < ntok <= 4 (a 4x4 register-blocked tile: each weight load serves four tokens). */
    void (*float_tile)(const MatmulJob *job, int64_t t, int ntok, int64_t r, int nrows, float res[4][4]);
    /* GEMM for quantized weights: tokens per packed group, weight offsets (see QPACK above), and
     * a tile = QTILE_ROWS rows x (1 or 2 groups) tokens over nkb blocks:
     * gemm_unpack writes rows [r, r+nrows) x blocks [kb, kb+nkb) into `tile` (QTILE_BYTES, rows past
     * nrows zero); gemm_tile computes res[j][i] = sum over the nkb blocks for tile row i and token j
     * of the groups whose records for the first block are act0 and act1 (act1 NULL: one group). */
    int gemm_group;
    int q4_0_offset, q8_0_offset;
    void (*gemm_unpack)(const MatmulJob *job, int64_t r, int nrows, int64_t kb, int64_t nkb, uint8_t *tile);
    void (*gemm_tile)(const uint8_t *tile, const uint8_t *act0, const uint8_t *act1, int64_t nkb,
                      float res[32][QTILE_ROWS]);
    /* Optional: a family's own GEMM (AVX-512). When gemm_rows is set, a GEMM (T >= 7 tokens)
     * calls gemm_prepare for each thread's share of the tokens [t0, t1) instead of quantize_q8_0 +
     * the QPACK packing, then gemm_rows for each thread's output rows [r0, r1) instead of the
     * gemm_unpack / gemm_tile loop. The family owns the layout of job->packed (at most QPACK's
     * size: T rounded up to 16 tokens x nb blocks x 40 bytes); the activations are quantized
     * exactly as quantize_row_q8_0_ref quantizes them. */
    void (*gemm_prepare)(const MatmulJob *job, int64_t t0, int64_t t1);
    void (*gemm_rows)(const MatmulJob *job, int64_t r0, int64_t r1);
    /* Probes: a checksum of `bytes` (multiple of 256) read from p; and `iters` rounds of the int8
     * dot instruction into independent accumulators, returning the multiply-adds done. */
    uint64_t (*probe_read)(const uint8_t *p, int64_t bytes);
    int64_t (*probe_int8)(int64_t iters);
    int64_t (*probe_int8_scaled)(int64_t iters);  /* optional: probe_int8_block_scaled's pattern */
    /* Whether gemv_q and gemm_rows also take TYPE_Q4_0X16 weights (the rows a thread is given then
     * start at a multiple of 16, as split_range's alignment guarantees). */
    int q4_0x16;
} QuantKernels;

/* The GEMV's row order. [r0, r1) is cut into four quarters of q = (r1 - r0) / 4 rows, and step
 * s < q takes row s of each quarter: the four rows worked on together (sharing each activation
 * load) then come from four long sequential streams, which the hardware prefetcher follows at
 * full memory bandwidth; four adjacent rows would be four 1-2 KB streams that it follows poorly
 * (measured ~20% slower from DRAM on Zen 4, even with software prefetch). The (r1 - r0) % 4 rows
 * left make one last step. Returns the number of rows of step s (0 past the end); rows[] gets
 * their indexes, unused entries repeating the first. */
static inline int gemv_step_rows(int64_t r0, int64_t r1, int64_t s, int64_t rows[4]) {
    const int64_t q = (r1 - r0) / 4, left = (r1 - r0) % 4;
    int n = s < q ? 4 : s == q ? (int)left : 0;
    for (int i = 0; i < 4; i++) rows[i] = s < q ? r0 + i * q + s : r0 + 4 * q + (i < n ? i : 0);
    return n;
}

/* fp16_to_fp32 of every half (256 KiB), so that a kernel converts a weight scale with one load,
 * as ggml's ggml_table_f32_f16. Filled when the kernel family is first chosen (before any matmul). */
extern float quant_fp16_table[65536];

extern const QuantKernels quant_kernels_ref;
#if defined(__x86_64__) || defined(__i386__)
extern const QuantKernels quant_kernels_avx2;
extern const QuantKernels quant_kernels_avx512;
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
extern const QuantKernels quant_kernels_neon;
#endif

#endif
