/* safetensors.c — reading safetensors checkpoints, single or sharded. See safetensors.h.
 *
 * Nothing from a file is trusted: the header length is checked against the file size before the
 * JSON is parsed, every shape and offset is checked (with overflow-safe 64-bit arithmetic) before a
 * tensor's data pointer is formed, and tensors may not overlap. Messages name the file and, for a
 * tensor, its name: "x/model.safetensors: tensor a.weight: data_offsets [0, 40] hold 40 bytes, but
 * dtype F32 and shape [3, 4] need 48". */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "quant.h"

#define MAX_ELEMENTS (1ll << 60)  /* far above any real tensor; keeps byte counts inside int64 */

/* ---- dtypes ------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int size;
} dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},           [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E8M0] = {"F8_E8M0", 1},
    [ST_I16] = {"I16", 2},         [ST_U16] = {"U16", 2},         [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},       [ST_I32] = {"I32", 4},         [ST_U32] = {"U32", 4},
    [ST_F32] = {"F32", 4},         [ST_F64] = {"F64", 8},         [ST_I64] = {"I64", 8},
    [ST_U64] = {"U64", 8},         [ST_C64] = {"C64", 8},
};

const char *st_dtype_name(StDtype dtype) { return (unsigned)dtype < ST_DTYPE_COUNT ? dtypes[dtype].name : "?"; }
int st_dtype_size(StDtype dtype) { return (unsigned)dtype < ST_DTYPE_COUNT ? dtypes[dtype].size : 0; }

static int dtype_from_name(const char *name) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(dtypes[i].name, name) == 0) return i;
    return -1;
}

void st_format_shape(const int64_t *shape, int n_dims, char *buf, size_t size) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "[");
    for (int i = 0; i < n_dims && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < size) snprintf(buf + n, size - n, "]");
}

/* ---- small helpers ------------------------------------------------------------------------------ */

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static uint64_t read_u64_le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

static void free_tensors(StTensor *t, int64_t n) {
    for (int64_t i = 0; t && i < n; i++) free(t[i].name);
    free(t);
}

void st_close(SafeTensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_shards; i++) {
        if (st->shards[i].map) munmap((void *)st->shards[i].map, (size_t)st->shards[i].size);
        free(st->shards[i].path);
    }
    free(st->shards);
    free_tensors(st->tensors, st->n_tensors);
    free(st->source);
    memset(st, 0, sizeof *st);
}

static int map_shard(StShard *sh, const char *path, BlvError *err) {
    memset(sh, 0, sizeof *sh);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return blv_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat s;
    if (fstat(fd, &s) != 0) {
        close(fd);
        return blv_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(s.st_mode)) {
        close(fd);
        return blv_fail(err, "%s: not a regular file", path);
    }
    if (s.st_size < 8) {
        close(fd);
        return blv_fail(err, "%s: %lld bytes is too short for a safetensors file (the header length alone is 8)", path,
                        (long long)s.st_size);
    }
    void *p = mmap(NULL, (size_t)s.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return blv_fail(err, "%s: mmap of %lld bytes failed: %s", path, (long long)s.st_size, strerror(errno));
    sh->path = strdup(path);
    if (!sh->path) {
        munmap(p, (size_t)s.st_size);
        return blv_fail(err, "%s: out of memory", path);
    }
    sh->map = p;
    sh->size = (uint64_t)s.st_size;
    return 0;
}

/* ---- one file's header -------------------------------------------------------------------------- */

/* Reads one tensor entry of the header into *t (name already set). `buffer_size` is the size of the
 * data buffer that follows the header. */
static int read_entry(const char *path, const JsonDoc *doc, const JsonMember *m, const uint8_t *buffer,
                      uint64_t buffer_size, StTensor *t, uint64_t *begin_out, BlvError *err) {
    const JsonValue *v = &m->value;
    const char *name = m->key;
    char what[320];
    if (v->type != JSON_OBJECT)
        return blv_fail(err, "%s: tensor %s: header entry must be an object, got %s", path, name,
                        json_type_name(v->type));
    const JsonValue *dv = json_get(v, "dtype");
    if (!dv || dv->type != JSON_STRING) return blv_fail(err, "%s: tensor %s: \"dtype\" must be a string", path, name);
    int dtype = dtype_from_name(dv->str);
    if (dtype < 0)
        return blv_fail(err, "%s: tensor %s has dtype \"%.40s\", which this reader does not know", path, name, dv->str);
    t->dtype = (StDtype)dtype;

    const JsonValue *shape = json_get(v, "shape");
    if (!shape || shape->type != JSON_ARRAY)
        return blv_fail(err, "%s: tensor %s: \"shape\" must be an array of integers", path, name);
    if (shape->count > ST_MAX_DIMS)
        return blv_fail(err, "%s: tensor %s has %zu dimensions (at most %d are supported)", path, name, shape->count,
                        ST_MAX_DIMS);
    t->n_dims = (int)shape->count;
    t->n_elements = 1;
    for (int i = 0; i < t->n_dims; i++) {
        snprintf(what, sizeof what, "tensor %.200s shape[%d]", name, i);
        if (json_as_int(doc, &shape->items[i], what, &t->shape[i], err) != 0) return -1;
        if (t->shape[i] < 0)
            return blv_fail(err, "%s: tensor %s: shape[%d] = %lld is negative", path, name, i, (long long)t->shape[i]);
        if (t->shape[i] > 0 && t->n_elements > MAX_ELEMENTS / t->shape[i])
            return blv_fail(err, "%s: tensor %s: the shape's element count overflows", path, name);
        t->n_elements *= t->shape[i];
    }

    const JsonValue *offs = json_get(v, "data_offsets");
    if (!offs || offs->type != JSON_ARRAY || offs->count != 2)
        return blv_fail(err, "%s: tensor %s: \"data_offsets\" must be an array [begin, end]", path, name);
    int64_t begin, end;
    snprintf(what, sizeof what, "tensor %.200s data_offsets[0]", name);
    if (json_as_int(doc, &offs->items[0], what, &begin, err) != 0) return -1;
    snprintf(what, sizeof what, "tensor %.200s data_offsets[1]", name);
    if (json_as_int(doc, &offs->items[1], what, &end, err) != 0) return -1;
    if (begin < 0 || end < begin)
        return blv_fail(err, "%s: tensor %s: data_offsets [%lld, %lld] are not a valid range", path, name,
                        (long long)begin, (long long)end);
    if ((uint64_t)end > buffer_size)
        return blv_fail(err,
                        "%s: tensor %s: data_offsets [%lld, %lld] run past the end of the data buffer (%llu bytes)",
                        path, name, (long long)begin, (long long)end, (unsigned long long)buffer_size);
    t->n_bytes = (uint64_t)t->n_elements * (uint64_t)dtypes[dtype].size;  /* < 2^63: MAX_ELEMENTS * 8 */
    if ((uint64_t)(end - begin) != t->n_bytes) {
        char s[200];
        st_format_shape(t->shape, t->n_dims, s, sizeof s);
        return blv_fail(err,
                        "%s: tensor %s: data_offsets [%lld, %lld] hold %lld bytes, but dtype %s and shape %s need %llu",
                        path, name, (long long)begin, (long long)end, (long long)(end - begin), dtypes[dtype].name, s,
                        (unsigned long long)t->n_bytes);
    }
    t->data = buffer + begin;
    *begin_out = (uint64_t)begin;
    return 0;
}

typedef struct {
    uint64_t begin, end;
    const char *name;
} Range;

static int compare_ranges(const void *a, const void *b) {
    const Range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Tensors may not share bytes (empty tensors occupy nothing and are skipped). */
static int check_overlaps(const char *path, Range *r, int64_t n, BlvError *err) {
    qsort(r, (size_t)n, sizeof *r, compare_ranges);
    const Range *prev = NULL;
    for (int64_t i = 0; i < n; i++) {
        if (r[i].begin == r[i].end) continue;
        if (prev && r[i].begin < prev->end)
            return blv_fail(err, "%s: tensors %s [%llu, %llu) and %s [%llu, %llu) overlap", path, prev->name,
                            (unsigned long long)prev->begin, (unsigned long long)prev->end, r[i].name,
                            (unsigned long long)r[i].begin, (unsigned long long)r[i].end);
        prev = &r[i];
    }
    return 0;
}

/* Parses the header of a mapped file into a tensor list (shard index `shard_index`). */
static int read_header(const StShard *sh, int shard_index, StTensor **out, int64_t *n_out, BlvError *err) {
    *out = NULL;
    *n_out = 0;
    uint64_t n = read_u64_le(sh->map);
    if (n > ST_MAX_HEADER_BYTES)
        return blv_fail(err, "%s: header length %llu exceeds the %llu-byte limit (is this a safetensors file?)",
                        sh->path, (unsigned long long)n, (unsigned long long)ST_MAX_HEADER_BYTES);
    if (n > sh->size - 8)
        return blv_fail(err,
                        "%s: header length %llu runs past the end of the file (%llu bytes): the file is truncated or "
                        "not safetensors",
                        sh->path, (unsigned long long)n, (unsigned long long)sh->size);
    char label[4200];
    snprintf(label, sizeof label, "%s (JSON header)", sh->path);
    JsonDoc doc;
    if (json_parse(&doc, label, (const char *)sh->map + 8, (size_t)n, err) != 0) return -1;
    int rc = -1;
    StTensor *t = NULL;
    Range *ranges = NULL;
    int64_t count = 0;
    const JsonValue *root = &doc.root;
    if (root->type != JSON_OBJECT) {
        blv_fail(err, "%s: the header must be a JSON object, got %s", sh->path, json_type_name(root->type));
        goto done;
    }
    t = calloc(root->count ? root->count : 1, sizeof *t);
    ranges = calloc(root->count ? root->count : 1, sizeof *ranges);
    if (!t || !ranges) {
        blv_fail(err, "%s: out of memory for %zu tensors", sh->path, root->count);
        goto done;
    }
    const uint8_t *buffer = sh->map + 8 + n;
    uint64_t buffer_size = sh->size - 8 - n;
    for (size_t i = 0; i < root->count; i++) {
        const JsonMember *m = &root->members[i];
        if (strcmp(m->key, "__metadata__") == 0) {
            if (m->value.type != JSON_OBJECT) {
                blv_fail(err, "%s: __metadata__ must be an object, got %s", sh->path, json_type_name(m->value.type));
                goto done;
            }
            continue;
        }
        if (strlen(m->key) != m->key_len || m->key_len == 0) {
            blv_fail(err, "%s: header entry %zu has an empty name or one with a NUL byte", sh->path, i);
            goto done;
        }
        StTensor *ti = &t[count];
        ti->shard = shard_index;
        uint64_t begin = 0;
        if (read_entry(sh->path, &doc, m, buffer, buffer_size, ti, &begin, err) != 0) goto done;
        if (!(ti->name = strdup(m->key))) {
            blv_fail(err, "%s: out of memory", sh->path);
            goto done;
        }
        ranges[count] = (Range){begin, begin + ti->n_bytes, ti->name};
        count++;
    }
    if (check_overlaps(sh->path, ranges, count, err) != 0) goto done;
    rc = 0;
done:
    free(ranges);
    json_free(&doc);
    if (rc != 0) {
        free_tensors(t, count);
        return -1;
    }
    *out = t;
    *n_out = count;
    return 0;
}

/* ---- opening ------------------------------------------------------------------------------------ */

static int open_single(SafeTensors *st, const char *path, BlvError *err) {
    st->shards = calloc(1, sizeof *st->shards);
    st->source = strdup(path);
    if (!st->shards || !st->source) return blv_fail(err, "%s: out of memory", path);
    if (map_shard(&st->shards[0], path, err) != 0) return -1;
    st->n_shards = 1;
    if (read_header(&st->shards[0], 0, &st->tensors, &st->n_tensors, err) != 0) return -1;
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, compare_names);
    return 0;
}

/* The distinct shard names of a weight_map, in order of first appearance. */
static int collect_shards(const char *index, const JsonDoc *doc, const JsonValue *map, const char ***names, int *n,
                          BlvError *err) {
    *names = calloc(map->count ? map->count : 1, sizeof **names);
    *n = 0;
    if (!*names) return blv_fail(err, "%s: out of memory", index);
    for (size_t i = 0; i < map->count; i++) {
        const char *file;
        char what[300];
        snprintf(what, sizeof what, "weight_map entry \"%.200s\"", map->members[i].key);
        if (json_as_string(doc, &map->members[i].value, what, &file, err) != 0) return -1;
        if (file[0] == 0 || strchr(file, '/') || strcmp(file, "..") == 0 || strlen(file) != map->members[i].value.len)
            return blv_fail(
                err,
                "%s: weight_map entry \"%s\" names shard \"%s\", which is not a plain file name in the same "
                "directory",
                index, map->members[i].key, file);
        int seen = 0;
        for (int k = 0; k < *n && !seen; k++) seen = strcmp((*names)[k], file) == 0;
        if (!seen) (*names)[(*n)++] = file;
    }
    return 0;
}

/* Checks that each weight_map entry is in the shard it names. */
static int check_weight_map(const SafeTensors *st, const char *index, const JsonValue *map, BlvError *err) {
    for (size_t i = 0; i < map->count; i++) {
        const char *name = map->members[i].key, *file = map->members[i].value.str;
        const StTensor *t = st_find(st, name);
        const char *slash = t ? strrchr(st->shards[t->shard].path, '/') : NULL;
        const char *base = t ? (slash ? slash + 1 : st->shards[t->shard].path) : NULL;
        if (!t || strcmp(base, file) != 0)
            return blv_fail(err, "%s: weight_map puts tensor %s in %s, but %s has no tensor of that name", index, name,
                            file, file);
    }
    return 0;
}

static int open_index(SafeTensors *st, const char *index, BlvError *err) {
    JsonDoc doc;
    if (json_parse_file(&doc, index, err) != 0) return -1;
    const char **names = NULL;
    int n_names = 0, rc = -1;
    char *dir = strdup(index);
    if (!dir || !(st->source = strdup(index))) {
        blv_fail(err, "%s: out of memory", index);
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else strcpy(dir, ".");
    const JsonValue *map = json_get(&doc.root, "weight_map");
    if (!map || map->type != JSON_OBJECT) {
        blv_fail(err, "%s: \"weight_map\" must be an object mapping tensor names to shard files", index);
        goto done;
    }
    if (collect_shards(index, &doc, map, &names, &n_names, err) != 0) goto done;
    if (n_names == 0) {
        blv_fail(err, "%s: weight_map is empty", index);
        goto done;
    }
    st->shards = calloc((size_t)n_names, sizeof *st->shards);
    if (!st->shards) {
        blv_fail(err, "%s: out of memory", index);
        goto done;
    }
    for (int s = 0; s < n_names; s++) {
        char *path = join_path(dir, names[s]);
        if (!path) {
            blv_fail(err, "%s: out of memory", index);
            goto done;
        }
        int mapped = map_shard(&st->shards[s], path, err);
        free(path);
        if (mapped != 0) {
            blv_fail_prefix(err, "%s: shard %s", index, names[s]);
            goto done;
        }
        st->n_shards = s + 1;
        StTensor *t;
        int64_t n;
        if (read_header(&st->shards[s], s, &t, &n, err) != 0) goto done;
        StTensor *all = realloc(st->tensors, (size_t)(st->n_tensors + n) * sizeof *all);
        if (!all) {
            free_tensors(t, n);
            blv_fail(err, "%s: out of memory", index);
            goto done;
        }
        memcpy(all + st->n_tensors, t, (size_t)n * sizeof *t);
        free(t);
        st->tensors = all;
        st->n_tensors += n;
    }
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, compare_names);
    for (int64_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            blv_fail(err, "%s: tensor %s is in both %s and %s", index, st->tensors[i].name,
                     st->shards[st->tensors[i - 1].shard].path, st->shards[st->tensors[i].shard].path);
            goto done;
        }
    rc = check_weight_map(st, index, map, err);
done:
    free(names);
    free(dir);
    json_free(&doc);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int file_exists(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

int st_open(SafeTensors *st, const char *path, BlvError *err) {
    memset(st, 0, sizeof *st);
    struct stat s;
    if (stat(path, &s) != 0) return blv_fail(err, "%s: cannot open: %s", path, strerror(errno));
    int rc;
    if (S_ISDIR(s.st_mode)) {
        /* transformers' order: the single file wins over an index */
        char *single = join_path(path, "model.safetensors");
        char *index = join_path(path, "model.safetensors.index.json");
        if (!single || !index) rc = blv_fail(err, "%s: out of memory", path);
        else if (file_exists(single)) rc = open_single(st, single, err);
        else if (file_exists(index)) rc = open_index(st, index, err);
        else rc = blv_fail(err, "%s: no model.safetensors or model.safetensors.index.json in this directory", path);
        free(single);
        free(index);
    } else if (ends_with(path, ".json")) {
        rc = open_index(st, path, err);
    } else {
        rc = open_single(st, path, err);
    }
    if (rc != 0) st_close(st);
    return rc;
}

/* ---- lookup and reading ------------------------------------------------------------------------- */

const StTensor *st_find(const SafeTensors *st, const char *name) {
    int64_t lo = 0, hi = st->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char *st_tensor_file(const SafeTensors *st, const StTensor *t) { return st->shards[t->shard].path; }

int st_read_rows_f32(const SafeTensors *st, const StTensor *t, int64_t row0, int64_t n_rows, float *dst,
                     BlvError *err) {
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return blv_fail(err, "%s: tensor %s has dtype %s, which is not a weight type bluelmv converts (F32, F16, BF16)",
                        st_tensor_file(st, t), t->name, st_dtype_name(t->dtype));
    int64_t rows = t->n_dims == 0 ? 1 : t->shape[0];
    int64_t row_len = rows ? t->n_elements / rows : 0;
    if (row0 < 0 || n_rows < 0 || row0 > rows || n_rows > rows - row0)
        return blv_fail(err, "%s: tensor %s: rows [%lld, %lld) asked, it has %lld", st_tensor_file(st, t), t->name,
                        (long long)row0, (long long)(row0 + n_rows), (long long)rows);
    int64_t first = row0 * row_len, n = n_rows * row_len;
    const uint8_t *p = t->data;
    /* Bytes are assembled explicitly: the data has no alignment guarantee and is little-endian. */
    if (t->dtype == ST_F32) {
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *b = p + 4 * (first + i);
            uint32_t bits = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            memcpy(&dst[i], &bits, 4);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *b = p + 2 * (first + i);
            uint16_t h = (uint16_t)(b[0] | b[1] << 8);
            dst[i] = t->dtype == ST_F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
        }
    }
    return 0;
}

int st_read_f32(const SafeTensors *st, const StTensor *t, float *dst, BlvError *err) {
    int64_t rows = t->n_dims == 0 ? 1 : t->shape[0];
    return st_read_rows_f32(st, t, 0, rows, dst, err);
}
