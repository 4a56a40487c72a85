/* safetensors.h — reading Hugging Face safetensors checkpoints, single files or sharded.
 *
 * File layout (huggingface/safetensors, docs "Format"):
 *   u64 little-endian N | N bytes of UTF-8 JSON | the data buffer
 * The JSON object maps each tensor name to {"dtype": "F32", "shape": [d0, d1, ...],
 * "data_offsets": [begin, end]} (byte offsets relative to the start of the data buffer), plus an
 * optional "__metadata__" object of strings. shape[0] is the outermost dimension (PyTorch order),
 * the data is C-contiguous and little-endian.
 *
 * A sharded checkpoint is a `model.safetensors.index.json` {"metadata": {...}, "weight_map":
 * {tensor name: shard file name}} next to its shard files.
 *
 * Files are mapped read-only and checked before anything is used: header length within the file and
 * at most ST_MAX_HEADER_BYTES, well-formed JSON (messages with line:column), a known dtype, a byte
 * range that matches prod(shape) x dtype size, lies inside the data buffer and overlaps no other
 * tensor. All sizes are 64-bit with overflow checks. Tensors of any known dtype can be listed; only
 * F32, F16 and BF16 can be read as floats. */
#ifndef BLUELMV_SAFETENSORS_H
#define BLUELMV_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER_BYTES (100ull * 1000 * 1000)  /* the limit the safetensors library applies */

/* dtypes as the format names them. */
typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_F8_E8M0, ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64, ST_C64, ST_DTYPE_COUNT
} StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];  /* shape[0] outermost (PyTorch order); unused entries are 0 */
    int64_t n_elements;
    uint64_t n_bytes;
    const uint8_t *data;         /* inside the shard's mapping; no alignment is guaranteed */
    int shard;                   /* index into SafeTensors.shards */
} StTensor;

typedef struct {
    char *path;
    const uint8_t *map;
    uint64_t size;
} StShard;

typedef struct {
    char *source;                /* what was opened: the .safetensors file or the index file */
    int n_shards;
    StShard *shards;
    int64_t n_tensors;
    StTensor *tensors;           /* sorted by name (strcmp order) */
} SafeTensors;

/* Opens `path`: a directory (its model.safetensors, else its model.safetensors.index.json, as
 * transformers' from_pretrained looks), an index file (*.json), or a single .safetensors file.
 * On failure *st is left closed. */
int st_open(SafeTensors *st, const char *path, BlvError *err);
void st_close(SafeTensors *st);

const StTensor *st_find(const SafeTensors *st, const char *name);   /* NULL if absent */
const char *st_tensor_file(const SafeTensors *st, const StTensor *t); /* the shard that holds it */

const char *st_dtype_name(StDtype dtype);  /* "F32", "BF16", ... */
int st_dtype_size(StDtype dtype);          /* bytes per element */

/* "[172, 64]" */
void st_format_shape(const int64_t *shape, int n_dims, char *buf, size_t size);

/* Converts rows [row0, row0 + n_rows) of a F32/F16/BF16 tensor to float32. A row is everything
 * below the outermost dimension (n_elements / shape[0] values; a 0-d tensor is one row of one value).
 * Other dtypes fail: "FILE: tensor NAME has dtype I64, which is not a weight type bluelmv converts". */
int st_read_rows_f32(const SafeTensors *st, const StTensor *t, int64_t row0, int64_t n_rows, float *dst,
                     BlvError *err);
/* The whole tensor (n_elements floats). */
int st_read_f32(const SafeTensors *st, const StTensor *t, float *dst, BlvError *err);

#endif
