/* dump.h — golden dumps: .npy files, a directory of per-stage dumps, and `bluelmv compare`.
 *
 * DESIGN.md §Golden dumps: `--dump DIR` writes one .npy file per pipeline stage, float32 (int32 for
 * token ids), C order, shapes as PyTorch would have them:
 *
 *   pixels        (N, 3, S, S)   normalized tiles (thumbnail first, then the tiles in raster order)
 *   patch_embed   (N, P, D)      conv patch embedding + position embedding (HF hidden_states[0])
 *   vit_block_K   (N, P, D)      after ViT encoder layer K = 0, 1, ... (HF hidden_states[K+1])
 *   vit_out       (N, P, D)      the ViT output the projector sees (after the post-LN, if any)
 *   merged        (N, T, 4D)     the 2×2 downsampler's output, before the projector LayerNorm
 *   image_embeds  (N, T, H)      the projector's output: what replaces <image>
 *   tokens        (n,) int32     the whole LLM input sequence, -1 at each image-embedding position
 *   llm_block_K   (n, H)         the residual stream after LLM layer K
 *   logits        (n, V)         logits at every input position (row p predicts token p+1)
 *
 * ---- the .npy format (NumPy's numpy/lib/format.py) --------------------------------------------
 *   "\x93NUMPY", major, minor (1.0: u16 LE header length; 2.0 and 3.0: u32 LE; 3.0 is UTF-8),
 *   then the header, an ASCII Python dict literal
 *       {'descr': '<f4', 'fortran_order': False, 'shape': (5, 49, 64), }
 *   padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes, then
 *   the raw elements. npy_write_* produce files byte-identical to numpy.save (version 1.0). npy_read
 *   accepts versions 1.0, 2.0 and 3.0, dtypes <f2 <f4 <f8 <i4 <i8 (other, big-endian and structured
 *   dtypes are refused), C order (fortran_order True is an error unless ndim <= 1,
 *   where the two orders are the same bytes), at most NPY_MAX_DIMS dimensions, the three keys
 *   exactly once each, and a file size exactly header + data. Anything else fails with a message
 *   that names the file and the problem.
 *
 * ---- comparison (`bluelmv compare A B`) -------------------------------------------------------
 * B is the reference. For every NAME.npy present in both directories (files present in only one
 * are listed; they fail the comparison only with CompareOptions.missing_fails):
 *   shapes must be equal (else the tensor fails);
 *   integer tensors (both files <i4 / <i8, e.g. `tokens`) must be equal element for element;
 *   float tensors, accumulated in double over all n elements, with d = a − b:
 *     max abs   max |d|                                   (and where: the index of the worst element)
 *     max rel   max |d| / max(|b|, rel_eps)               rel_eps = 1e-4 by default: reference
 *                                                         values smaller than that are measured
 *                                                         against it (no division by ~0)
 *     NMSE      Σd² / Σb²                                 (0 if both sums are 0, +inf if only Σb² is)
 *     cosine    Σab / sqrt(Σa² Σb²)                       (1 if both are all zero, 0 if one is)
 *     top-1     for `logits` (any name starting with "logits"): the rows are the last axis; the
 *               fraction of rows whose argmax (first maximum, as numpy.argmax) agrees. For the
 *               rows that disagree the report gives the reference's top-1 − top-2 gap there, to
 *               tell a near-tie from a real error.
 *   A float tensor fails when NMSE > tol_nmse, or any element is NaN/Inf in either file, or (for
 *   logits) top-1 agreement < tol_top1, or max abs > tol_max_abs (off by default).
 * Default tol_nmse = 1e-6 (measured on tests/data/e2e and tests/data/hf_llama): float32
 * implementations that differ only in summation order agree to NMSE ~1e-13 (ViT stages) to ~1e-12
 * (logits); an F16 KV cache gives logits NMSE 2e-7 (e2e) to 2e-6 (hf_llama's 0.3-std model over
 * 87 positions); a wrong token order or layout gives > 1e-1. Some real mistakes are subtler than an
 * F16 cache (tanh instead of erf GELU in the projector: image_embeds NMSE 3e-8, max abs 1e-3 vs 4e-6),
 * so for a strict float32 check pass tol_nmse 1e-9 (with an F32 KV cache), or bound max abs with
 * tol_max_abs. Quantized weights against a float reference need a looser tol_nmse. max_rel is
 * informational only: near-zero reference values dominate it (logits with an F16 cache: ~20).
 * tol_top1 = 1.0 by default.
 * Files are streamed in blocks of rows, so tensors larger than memory compare fine.
 *
 * Report (to the FILE given; NULL: none): a header line with the directories and the tolerances,
 * one row per tensor in pipeline order (pixels, patch_embed, vit_block_0.., vit_out, merged,
 * image_embeds, tokens, llm_block_0.., logits, generated, then the rest by name; numbers compared
 * naturally, so vit_block_2 comes before vit_block_10)
 *   NAME  SHAPE  MAX_ABS  MAX_REL  NMSE  COSINE  TOP1  ok|FAIL [reason]
 * (integer tensors: "exact: K of N differ"), then "only in A: NAME.npy" / "only in B: NAME.npy" lines,
 * then one verdict line: "verdict: PASS (N tensors compared[, unpaired files ignored])",
 * "verdict: FAIL (K of N tensors failed: names...)", or "verdict: FAIL (no tensor in common)". */
#ifndef BLUELMV_DUMP_H
#define BLUELMV_DUMP_H

#include <stdint.h>
#include <stdio.h>

#include "util.h"

#define NPY_MAX_DIMS 32     /* NumPy's own limit before 2.0 (2.x allows 64) */

typedef enum {
    NPY_F16 = 0,            /* '<f2' */
    NPY_F32 = 1,            /* '<f4' */
    NPY_F64 = 2,            /* '<f8' */
    NPY_I32 = 3,            /* '<i4' */
    NPY_I64 = 4,            /* '<i8' */
} NpyDtype;

const char *npy_dtype_descr(NpyDtype t);   /* "<f4", ... */
int npy_dtype_size(NpyDtype t);            /* bytes per element */
int npy_dtype_is_int(NpyDtype t);

/* ---- writing ----------------------------------------------------------------------------------- */

/* Writes a whole array as NumPy format 1.0, C order, little-endian. ndim 0..NPY_MAX_DIMS (0: a
 * scalar, one element), dims >= 0. On failure no file is left behind. */
int npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape, BlvError *err);
int npy_write_i32(const char *path, const int32_t *data, int ndim, const int64_t *shape, BlvError *err);

/* The same, written in pieces (for stages produced a batch at a time):
 *   npy_writer_open → npy_writer_append_* (elements in C order, any split) → npy_writer_close.
 * close fails (and removes the file) unless exactly the shape's element count was appended;
 * npy_writer_abort closes and removes the file without checking. The appended type must match the
 * dtype given to open (NPY_F32 or NPY_I32). */
typedef struct {
    FILE *f;
    char *path;             /* owned copy, for messages and removal */
    NpyDtype dtype;
    int64_t n_total;
    int64_t n_written;
} NpyWriter;

int npy_writer_open(NpyWriter *w, const char *path, NpyDtype dtype, int ndim, const int64_t *shape, BlvError *err);
int npy_writer_append_f32(NpyWriter *w, const float *data, int64_t n, BlvError *err);
int npy_writer_append_i32(NpyWriter *w, const int32_t *data, int64_t n, BlvError *err);
int npy_writer_close(NpyWriter *w, BlvError *err);
void npy_writer_abort(NpyWriter *w);

/* ---- reading ----------------------------------------------------------------------------------- */

typedef struct {
    NpyDtype file_dtype;    /* as stored */
    NpyDtype dtype;         /* of `data`: NPY_F64 (npy_read), or what npy_read_as asked for */
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    int64_t n;              /* number of elements (product of shape; 1 for ndim 0) */
    union {
        void *data;
        double *f64;
        float *f32;
        int32_t *i32;
    };
} NpyArray;

/* Reads a whole .npy file, every value converted to double (exact for <f2 <f4 <f8 <i4, and for
 * <i8 up to 2^53). out is zeroed on failure. */
int npy_read(const char *path, NpyArray *out, BlvError *err);

/* The same, converted to `as`: NPY_F64, NPY_F32 (f64 values rounded, i64/i32 converted) or NPY_I32
 * (only from <i4 / <i8, each value range-checked). */
int npy_read_as(const char *path, NpyDtype as, NpyArray *out, BlvError *err);

void npy_free(NpyArray *a);

/* Shape as "5x49x64" ("scalar" for ndim 0) into buf; returns buf. */
char *npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

/* ---- a directory of stage dumps ----------------------------------------------------------------- */

typedef struct {
    char *dir;              /* owned copy */
    int n_written;          /* files written so far */
} DumpDir;

/* Creates dir if it is missing (one level: the parent must exist) and remembers it. */
int dump_open(DumpDir *d, const char *dir, BlvError *err);
void dump_close(DumpDir *d);

/* Writes DIR/NAME.npy (float32). NAME: letters, digits, '_', '-', '.', not starting with '.',
 * at most 200 bytes. */
int dump_tensor(DumpDir *d, const char *name, const float *data, int ndim, const int64_t *shape, BlvError *err);
int dump_tensor_i32(DumpDir *d, const char *name, const int32_t *data, int ndim, const int64_t *shape,
                    BlvError *err);
/* Opens DIR/NAME.npy for writing in pieces (see NpyWriter); dtype NPY_F32 or NPY_I32. */
int dump_begin(DumpDir *d, const char *name, NpyDtype dtype, int ndim, const int64_t *shape, NpyWriter *w,
               BlvError *err);

/* ---- comparison ----------------------------------------------------------------------------------- */

typedef struct {
    double tol_nmse;        /* fail when NMSE > tol_nmse (default 1e-6) */
    double tol_top1;        /* logits: fail when top-1 agreement < tol_top1 (default 1.0) */
    double rel_eps;         /* floor of the max-rel denominator (default 1e-4) */
    double tol_max_abs;     /* also fail when max abs > tol_max_abs (default INFINITY: off) */
    int missing_fails;      /* a file present in only one directory counts as a failure (default 0) */
} CompareOptions;

void compare_options_default(CompareOptions *o);

typedef struct {
    int ndim_a, ndim_b;
    int64_t shape_a[NPY_MAX_DIMS], shape_b[NPY_MAX_DIMS];
    int shape_ok;
    int is_int;             /* both integer: exact comparison */
    int64_t n;              /* elements compared */
    int64_t n_mismatch;     /* integer tensors: elements that differ */
    int64_t first_mismatch; /* integer tensors: flat index of the first, or -1 */
    int64_t n_nonfinite;    /* float tensors: elements NaN or Inf in a or b */
    double max_abs, max_rel, nmse, cosine;
    int64_t max_abs_index;  /* flat index of the largest |a - b| (-1 if none) */
    int has_top1;           /* logits */
    int64_t top1_rows, top1_agree;
    double top1;            /* top1_agree / top1_rows (1 with no rows) */
    double top1_min_gap;    /* smallest reference top-1 − top-2 gap among the rows that disagree (or -1) */
    int failed;
    char reason[160];       /* why it failed ("" if it passed) */
} CompareResult;

/* Compares two .npy files (b is the reference) as described above. The name decides whether
 * top-1 is computed. Returns -1 (err set) only when a file cannot be read or is malformed. */
int dump_compare_files(const char *path_a, const char *path_b, const char *name, const CompareOptions *o,
                       CompareResult *r, BlvError *err);

/* Compares every .npy present in both directories and writes the report. *n_failed = tensors
 * that failed (+ unpaired files with missing_fails; + 1 if the directories have no tensor in
 * common). A file that cannot be read counts as a failed tensor (its error is printed in its row).
 * Returns -1 only if a directory cannot be listed (or o is invalid). */
int dump_compare_dirs(const char *dir_a, const char *dir_b, const CompareOptions *o, FILE *report, int *n_failed,
                      BlvError *err);

#endif
