/* gguf.h — reading and writing GGUF v3 files (ggml docs/gguf.md; anchors.md §b).
 *
 * File layout (little-endian):
 *   u32 magic "GGUF" | u32 version (3; 2 accepted) | u64 tensor_count | u64 kv_count
 *   kv_count × { string key | u32 value_type | value }
 *   tensor_count × { string name | u32 n_dims | u64 dims[n_dims] | u32 ggml_type | u64 offset }
 *   padding to `general.alignment` (default 32) | tensor data (each offset relative to here)
 * A string is u64 length + bytes (no NUL). dims[0] is the innermost (contiguous) dimension.
 *
 * The reader maps the file (mmap, with a read() fallback), validates every field before use and
 * reports the first problem with the file name and the field. All offsets and sizes are 64-bit. */
#ifndef BLUELMV_GGUF_H
#define BLUELMV_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include "util.h"

enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT = 13,
};

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* A string inside the file: not NUL-terminated. */
typedef struct {
    const char *ptr;
    uint64_t len;
} GgufString;

typedef struct {
    GgufString key;
    uint32_t type;          /* GGUF_TYPE_* */
    /* scalar value (valid when type is not STRING or ARRAY) */
    union {
        uint64_t u64;       /* UINT8/16/32/64 and BOOL, zero-extended */
        int64_t i64;        /* INT8/16/32/64, sign-extended */
        double f64;         /* FLOAT32/FLOAT64 */
    } v;
    GgufString str;         /* type == STRING */
    /* type == ARRAY: */
    uint32_t arr_type;      /* element type; nested arrays are validated and skipped, not indexed */
    uint64_t arr_count;
    const uint8_t *arr_data;    /* first element inside the file image (numeric arrays: packed LE) */
    const uint64_t *arr_str_offsets; /* STRING arrays: byte offset of element i from arr_data */
} GgufKV;

typedef struct {
    GgufString name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];  /* ne[0] innermost; unused dims are 1 */
    uint32_t type;              /* ggml type id (quant.h TYPE_*) */
    uint64_t offset;            /* relative to the data section */
    int64_t n_elements;
    int64_t n_bytes;
    const void *data;           /* points into the mapping */
} GgufTensor;

typedef struct {
    char *path;                 /* copy of the path, used in messages */
    uint8_t *base;              /* start of the file image (mapping or malloc'd buffer) */
    uint64_t size;
    int mapped;                 /* 1: base is an mmap; 0: read into memory */
    int borrowed;               /* 1: base belongs to the caller (gguf_open_memory), not freed */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;       /* start of the tensor data section */
    int64_t n_kv;
    GgufKV *kv;
    int64_t n_tensors;
    GgufTensor *tensors;
} GgufFile;

/* Opens and validates `path`. use_mmap = 0 forces the read() path. On failure *f is left closed. */
int gguf_open(GgufFile *f, const char *path, int use_mmap, BlvError *err);
/* Validates an in-memory image (not copied; must outlive f). `name` is used in messages. */
int gguf_open_memory(GgufFile *f, const void *data, uint64_t size, const char *name, BlvError *err);
void gguf_close(GgufFile *f);
/* Unmaps (or frees) the file image; tensor data pointers become invalid, metadata too. */

const GgufKV *gguf_find_kv(const GgufFile *f, const char *key);
const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name);

/* Typed getters. Integers accept any integer type whose value fits; floats accept F32/F64.
 * They fail with "FILE: key KEY is missing" / "...has type T, expected ..." messages. */
int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *out, BlvError *err);
int gguf_get_i64(const GgufFile *f, const char *key, int64_t *out, BlvError *err);
int gguf_get_f32(const GgufFile *f, const char *key, float *out, BlvError *err);
int gguf_get_bool(const GgufFile *f, const char *key, int *out, BlvError *err);
/* Returns a NUL-terminated malloc'd copy. */
int gguf_get_string(const GgufFile *f, const char *key, char **out, BlvError *err);
/* Array access: checks the key is an array of the expected element type and returns it. */
int gguf_get_array(const GgufFile *f, const char *key, uint32_t elem_type, const GgufKV **out, BlvError *err);
GgufString gguf_array_string(const GgufKV *kv, uint64_t i);   /* element i of a STRING array */
/* Reads numeric array element i as double/int64 (any numeric element type). */
double gguf_array_f64(const GgufKV *kv, uint64_t i);
int64_t gguf_array_i64(const GgufKV *kv, uint64_t i);

const char *gguf_type_name(uint32_t type); /* "u8", ..., "array" */

/* ggml tensor types as ggml sizes them (all of ggml's, not only those quant.h computes with), so
 * that a file with other types still opens and a later layer can refuse a tensor by type name.
 * gguf_ggml_type_info returns 0 and the block geometry for a known id, -1 for an unknown one. */
const char *gguf_ggml_type_name(uint32_t type); /* "f32", "q4_K", ...; NULL if unknown */
int gguf_ggml_type_info(uint32_t type, int64_t *block_elems, int64_t *block_bytes);

/* ---- writer ----------------------------------------------------------------------------------
 * Two phases so that large models stream to disk: declare every KV and tensor (shape and type only),
 * then gguf_writer_begin() writes the header, and gguf_writer_put_tensor() is called once per
 * tensor in declaration order with exactly its bytes; gguf_writer_finish() closes the file.
 * Alignment is general.alignment if set (u32), else 32; tensor data is zero-padded to it. */
typedef struct GgufWriter GgufWriter;

GgufWriter *gguf_writer_new(BlvError *err);
void gguf_writer_free(GgufWriter *w);
/* Scalars. Each key may be set once; setting it again replaces the value. */
int gguf_set_u8(GgufWriter *w, const char *key, uint8_t v);
int gguf_set_i8(GgufWriter *w, const char *key, int8_t v);
int gguf_set_u16(GgufWriter *w, const char *key, uint16_t v);
int gguf_set_i16(GgufWriter *w, const char *key, int16_t v);
int gguf_set_u32(GgufWriter *w, const char *key, uint32_t v);
int gguf_set_i32(GgufWriter *w, const char *key, int32_t v);
int gguf_set_u64(GgufWriter *w, const char *key, uint64_t v);
int gguf_set_i64(GgufWriter *w, const char *key, int64_t v);
int gguf_set_f32(GgufWriter *w, const char *key, float v);
int gguf_set_f64(GgufWriter *w, const char *key, double v);
int gguf_set_bool(GgufWriter *w, const char *key, int v);
int gguf_set_string(GgufWriter *w, const char *key, const char *v);
/* Numeric array: `count` packed little-endian elements of elem_type (copied). */
int gguf_set_array(GgufWriter *w, const char *key, uint32_t elem_type, const void *data, uint64_t count);
/* String array: strs[i] with lengths lens[i] (lens may be NULL for NUL-terminated strings; copied). */
int gguf_set_string_array(GgufWriter *w, const char *key, const char *const *strs, const uint64_t *lens, uint64_t count);
/* A value given as its serialized bytes (what follows the u32 type in a file: e.g. for ARRAY the
 * u32 element type, u64 count and elements). Validated like the reader does; the one way to write
 * nested arrays. */
int gguf_set_raw(GgufWriter *w, const char *key, uint32_t type, const void *value, uint64_t n_bytes);
/* Copies one KV (any type, nested arrays included) of an open file, e.g. tokenizer metadata. */
int gguf_copy_kv(GgufWriter *w, const GgufFile *src, const GgufKV *kv);
/* Tensor declaration: ne[0] innermost. Returns -1 on bad name/dims/type (message in the writer). */
int gguf_add_tensor(GgufWriter *w, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne);
int gguf_writer_begin(GgufWriter *w, const char *path, BlvError *err);
int gguf_writer_put_tensor(GgufWriter *w, const void *data, uint64_t n_bytes, BlvError *err);
int gguf_writer_finish(GgufWriter *w, BlvError *err);
/* The writer's own message for a failed gguf_set_* / gguf_add_tensor call. */
const char *gguf_writer_error(const GgufWriter *w);

#endif
