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

/* Any known type <-> f32 (quantized types use the _ref rounding above). */
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
#if defined(__aarch64__) || defined(__ARM_NEON)
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
 * W is n_out rows of n_in elements of type wtype (row r at byte offset r * type_row_bytes(wtype, n_in)).
 * x is T rows of n_in floats. out is T rows of n_out floats (row stride n_out).
 *
 * For Q4_0/Q8_0 weights the activations are first quantized to Q8_0 (quantize_row_q8_0_ref, so every
 * ISA sees the same int8 activations), then multiplied with integer dots. F16 weights use F16×F32,
 * F32 weights F32×F32; BF16 rows are converted to f32 first. When T > 1 the work is done as a
 * matrix-matrix product (weights loaded once for several tokens), not T separate vector products.
 * Threaded over the pool; `scratch` must hold matmul_scratch_bytes(wtype, n_in, T) bytes. */
int64_t matmul_scratch_bytes(int wtype, int64_t n_in, int64_t T);
void matmul(ThreadPool *pool, float *out, const void *W, int wtype, const float *x,
            int64_t n_in, int64_t n_out, int64_t T, void *scratch);
/* The same product computed with the _ref dot products only, single-threaded: the definition the
 * fast path is tested against. */
void matmul_ref(float *out, const void *W, int wtype, const float *x, int64_t n_in, int64_t n_out,
                int64_t T, void *scratch);

#endif
