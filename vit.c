/* vit.c — SigLIP vision tower, VILA 2×2 downsampler and MLP projector (see vit.h).
 *
 * The forward passes mirror Hugging Face's SiglipVisionModel (modeling_siglip.py) and VILA's
 * mlp_downsample projector (llava/model/multimodal_projector/base_projector.py); each step quotes
 * the line it implements. Matrix products are quant.h's matmul; attention, LayerNorm, GELU and the
 * residual adds are ops.h's kernels. Every stage is split across the thread pool. */
#include "vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "quant.h"

static int64_t round_up32(int64_t n) { return (n + 31) / 32 * 32; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- reading the configuration ------------------------------------------------------------- */

/* An integer key; fallback < 0 means required. Values must be positive. */
static int read_int(const GgufFile *f, const char *key, int64_t fallback, int64_t *out, BlvError *err) {
    if (!gguf_find_kv(f, key) && fallback >= 0) {
        *out = fallback;
        return 0;
    }
    if (gguf_get_i64(f, key, out, err) != 0) return -1;
    if (*out <= 0) return blv_fail(err, "%s: %s = %lld must be positive", f->path, key, (long long)*out);
    return 0;
}

static int read_float(const GgufFile *f, const char *key, float fallback, float *out, BlvError *err) {
    if (!gguf_find_kv(f, key)) {
        *out = fallback;
        return 0;
    }
    if (gguf_get_f32(f, key, out, err) != 0) return -1;
    if (!(*out > 0) || !isfinite(*out)) return blv_fail(err, "%s: %s = %g must be a positive number", f->path, key, *out);
    return 0;
}

static int read_bool(const GgufFile *f, const char *key, int fallback, int *out, BlvError *err) {
    if (!gguf_find_kv(f, key) && fallback >= 0) {
        *out = fallback;
        return 0;
    }
    return gguf_get_bool(f, key, out, err);
}

/* Compares a string key with an expected value; `what` explains the expectation in the message. */
static int expect_string(const GgufFile *f, const char *key, const char *expected, const char *what, BlvError *err) {
    char *s = NULL;
    if (gguf_get_string(f, key, &s, err) != 0) return -1;
    int ok = strcmp(s, expected) == 0;
    if (!ok) blv_fail(err, "%s: %s is \"%s\"; %s \"%s\"", f->path, key, s, what, expected);
    free(s);
    return ok ? 0 : -1;
}

static int read_float3(const GgufFile *f, const char *key, float out[3], BlvError *err) {
    if (!gguf_find_kv(f, key)) {
        out[0] = out[1] = out[2] = 0.5f;
        return 0;
    }
    const GgufKV *kv;
    if (gguf_get_array(f, key, GGUF_TYPE_FLOAT32, &kv, err) != 0) return -1;
    if (kv->arr_count != 3)
        return blv_fail(err, "%s: %s has %llu values, expected 3 (one per channel)", f->path, key,
                        (unsigned long long)kv->arr_count);
    for (int i = 0; i < 3; i++) out[i] = (float)gguf_array_f64(kv, (uint64_t)i);
    return 0;
}

static int read_config(const GgufFile *f, VitConfig *c, BlvError *err) {
    memset(c, 0, sizeof *c);
    if (expect_string(f, "general.architecture", "clip", "a vision projector (mmproj) file must be", err) != 0)
        return -1;
    int has_vision = 0;
    if (gguf_get_bool(f, "clip.has_vision_encoder", &has_vision, err) != 0) return -1;
    if (!has_vision) return blv_fail(err, "%s: clip.has_vision_encoder is false: the file has no vision encoder", f->path);
    if (expect_string(f, "clip.projector_type", "bluelmv", "bluelmv reads projector type", err) != 0) return -1;

    int64_t scale = 0;
    if (read_int(f, "clip.vision.image_size", -1, &c->image_size, err) ||
        read_int(f, "clip.vision.patch_size", -1, &c->patch_size, err) ||
        read_int(f, "clip.vision.embedding_length", -1, &c->dim, err) ||
        read_int(f, "clip.vision.feed_forward_length", -1, &c->ffn_dim, err) ||
        read_int(f, "clip.vision.block_count", -1, &c->n_layers, err) ||
        read_int(f, "clip.vision.attention.head_count", -1, &c->n_heads, err) ||
        read_int(f, "clip.vision.projection_dim", -1, &c->proj_dim, err) ||
        read_int(f, "clip.vision.projector.scale_factor", 2, &scale, err))
        return -1;
    if (read_float(f, "clip.vision.attention.layer_norm_epsilon", 1e-6f, &c->eps, err) ||
        read_float(f, "bluelmv.projector.layer_norm_epsilon", 1e-5f, &c->proj_eps, err) ||
        read_float3(f, "clip.vision.image_mean", c->image_mean, err) ||
        read_float3(f, "clip.vision.image_std", c->image_std, err) ||
        read_bool(f, "bluelmv.vision.post_ln", 0, &c->post_ln, err))
        return -1;
    int use_gelu = 1;
    if (read_bool(f, "clip.use_gelu", 1, &use_gelu, err) != 0) return -1;
    if (!use_gelu)
        return blv_fail(err, "%s: clip.use_gelu is false (quick-GELU); SigLIP's MLP uses GELU-tanh and bluelmv "
                        "implements only that", f->path);
    if (scale != 2)
        return blv_fail(err, "%s: clip.vision.projector.scale_factor is %lld; the VILA downsampler merges 2x2 groups "
                        "(scale factor 2)", f->path, (long long)scale);
    c->merge_order = VIT_MERGE_VILA;
    if (gguf_find_kv(f, "bluelmv.merge.order")) {
        char *order = NULL;
        if (gguf_get_string(f, "bluelmv.merge.order", &order, err) != 0) return -1;
        if (strcmp(order, "vila") == 0) c->merge_order = VIT_MERGE_VILA;
        else if (strcmp(order, "raster") == 0) c->merge_order = VIT_MERGE_RASTER;
        else blv_fail(err, "%s: bluelmv.merge.order is \"%s\"; expected \"vila\" or \"raster\"", f->path, order);
        int bad = strcmp(order, "vila") != 0 && strcmp(order, "raster") != 0;
        free(order);
        if (bad) return -1;
    }
    if (c->dim % c->n_heads != 0)
        return blv_fail(err, "%s: clip.vision.embedding_length %lld is not a multiple of the head count %lld", f->path,
                        (long long)c->dim, (long long)c->n_heads);
    if (c->patch_size > c->image_size)
        return blv_fail(err, "%s: patch size %lld is larger than the image size %lld", f->path,
                        (long long)c->patch_size, (long long)c->image_size);
    c->head_dim = c->dim / c->n_heads;
    c->grid = c->image_size / c->patch_size;
    c->n_patches = c->grid * c->grid;
    c->patch_dim = 3 * c->patch_size * c->patch_size;
    c->merge_grid = (c->grid + 1) / 2;
    c->n_merged = c->merge_grid * c->merge_grid;
    c->merged_dim = 4 * c->dim;
    return 0;
}

/* ---- binding tensors ------------------------------------------------------------------------- */

static const GgufTensor *find_known(const GgufFile *f, const char *name, BlvError *err) {
    const GgufTensor *t = gguf_find_tensor(f, name);
    if (!t) {
        blv_fail(err, "%s: tensor %s is missing", f->path, name);
        return NULL;
    }
    if (!type_is_known((int)t->type)) {
        blv_fail(err, "%s: tensor %s has type %s; bluelmv computes with f32, f16, bf16, q8_0 and q4_0", f->path, name,
                 type_name((int)t->type));
        return NULL;
    }
    return t;
}

/* Binds `name` as a (rows, cols) matrix. GGUF dims are reversed: ne[0] = cols, ne[1] = rows. */
static int bind_matrix(const GgufFile *f, const char *name, int64_t rows, int64_t cols, VitMatrix *m, BlvError *err) {
    const GgufTensor *t = find_known(f, name, err);
    if (!t) return -1;
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return blv_fail(err, "%s: tensor %s has shape [%lld, %lld] (GGUF order), expected [%lld, %lld]", f->path, name,
                        (long long)t->ne[0], (long long)(t->n_dims > 1 ? t->ne[1] : 1), (long long)cols, (long long)rows);
    if (type_row_bytes((int)t->type, cols) < 0)
        return blv_fail(err, "%s: tensor %s: rows of %lld elements cannot be stored as %s (blocks of %lld)", f->path,
                        name, (long long)cols, type_name((int)t->type), (long long)type_block_elems((int)t->type));
    m->data = t->data;
    m->type = (int)t->type;
    m->rows = rows;
    m->cols = cols;
    return 0;
}

/* Binds an n-element vector (or a 2-D tensor of `rows` rows of n when rows > 1) and converts it to
 * an owned float array. */
static int bind_floats(const GgufFile *f, const char *name, int64_t rows, int64_t n, float **out, BlvError *err) {
    const GgufTensor *t = find_known(f, name, err);
    if (!t) return -1;
    int ok = rows > 1 ? t->n_dims == 2 && t->ne[0] == n && t->ne[1] == rows : t->n_dims == 1 && t->ne[0] == n;
    if (!ok) {
        if (rows > 1)
            return blv_fail(err, "%s: tensor %s has shape [%lld, %lld] (GGUF order), expected [%lld, %lld]", f->path,
                            name, (long long)t->ne[0], (long long)(t->n_dims > 1 ? t->ne[1] : 1), (long long)n,
                            (long long)rows);
        return blv_fail(err, "%s: tensor %s has %u dims starting [%lld], expected a vector of %lld", f->path, name,
                        t->n_dims, (long long)t->ne[0], (long long)n);
    }
    int64_t row_bytes = type_row_bytes((int)t->type, n);
    if (row_bytes < 0)
        return blv_fail(err, "%s: tensor %s: %lld elements cannot be stored as %s", f->path, name, (long long)n,
                        type_name((int)t->type));
    *out = blv_malloc((size_t)(rows * n) * sizeof(float), name, err);
    if (!*out) return -1;
    for (int64_t r = 0; r < rows; r++)
        dequantize_row((int)t->type, (const uint8_t *)t->data + r * row_bytes, *out + r * n, n);
    return 0;
}

static int bind_vector(const GgufFile *f, const char *name, int64_t n, float **out, BlvError *err) {
    return bind_floats(f, name, 1, n, out, err);
}

/* The padding rule (vit.h): columns [col0, cols) of every row must be zero. Only the blocks that
 * hold those columns are dequantized. */
static int check_zero_columns(const GgufFile *f, const char *name, const VitMatrix *m, int64_t col0, BlvError *err) {
    if (col0 >= m->cols) return 0;
    int64_t be = type_block_elems(m->type), start = col0 / be * be, row_bytes = type_row_bytes(m->type, m->cols);
    float *buf = blv_malloc((size_t)(m->cols - start) * sizeof(float), "padding check", err);
    if (!buf) return -1;
    for (int64_t r = 0; r < m->rows; r++) {
        const uint8_t *row = (const uint8_t *)m->data + r * row_bytes;
        dequantize_row(m->type, row + type_row_bytes(m->type, start), buf, m->cols - start);
        for (int64_t c = col0; c < m->cols; c++) {
            if (buf[c - start] != 0.0f) {
                blv_fail(err, "%s: tensor %s: padding column %lld of row %lld is %g; columns %lld..%lld must be zero "
                         "(the zero-padding rule of vit.h)", f->path, name, (long long)c, (long long)r,
                         (double)buf[c - start], (long long)col0, (long long)m->cols - 1);
                free(buf);
                return -1;
            }
        }
    }
    free(buf);
    return 0;
}

static int check_zero_rows(const GgufFile *f, const char *name, const VitMatrix *m, int64_t row0, BlvError *err) {
    if (row0 >= m->rows) return 0;
    int64_t row_bytes = type_row_bytes(m->type, m->cols);
    float *buf = blv_malloc((size_t)m->cols * sizeof(float), "padding check", err);
    if (!buf) return -1;
    for (int64_t r = row0; r < m->rows; r++) {
        dequantize_row(m->type, (const uint8_t *)m->data + r * row_bytes, buf, m->cols);
        for (int64_t c = 0; c < m->cols; c++) {
            if (buf[c] != 0.0f) {
                blv_fail(err, "%s: tensor %s: padding row %lld (column %lld) is %g; rows %lld..%lld must be zero "
                         "(the zero-padding rule of vit.h)", f->path, name, (long long)r, (long long)c, (double)buf[c],
                         (long long)row0, (long long)m->rows - 1);
                free(buf);
                return -1;
            }
        }
    }
    free(buf);
    return 0;
}

static int check_zero_tail(const GgufFile *f, const char *name, const float *x, int64_t n0, int64_t n, BlvError *err) {
    for (int64_t i = n0; i < n; i++)
        if (x[i] != 0.0f)
            return blv_fail(err, "%s: tensor %s: padding entry %lld is %g; entries %lld..%lld must be zero (the "
                            "zero-padding rule of vit.h)", f->path, name, (long long)i, (double)x[i], (long long)n0,
                            (long long)n - 1);
    return 0;
}

/* The stored width of a padded dimension: the true size, or it rounded up to a multiple of 32. */
static int padded_size(const GgufFile *f, const char *name, const char *what, int64_t stored, int64_t true_size,
                       int64_t *out, BlvError *err) {
    if (stored != true_size && stored != round_up32(true_size))
        return blv_fail(err, "%s: tensor %s stores %lld %s; expected %lld or %lld (zero-padded to a multiple of 32)",
                        f->path, name, (long long)stored, what, (long long)true_size, (long long)round_up32(true_size));
    *out = stored;
    return 0;
}

static int64_t matrix_bytes(const VitMatrix *m) { return m->rows * type_row_bytes(m->type, m->cols); }

static const char *blk_name(char *buf, size_t cap, int64_t layer, const char *suffix) {
    snprintf(buf, cap, "v.blk.%lld.%s", (long long)layer, suffix);
    return buf;
}

static int bind_weights(Vit *v, const GgufFile *f, BlvError *err) {
    VitConfig *c = &v->config;
    VitWeights *w = &v->weights;
    int64_t D = c->dim;

    /* patch embedding: its stored width decides Kp */
    const GgufTensor *pt = find_known(f, "v.patch_embd.weight", err);
    if (!pt) return -1;
    if (padded_size(f, "v.patch_embd.weight", "columns", pt->ne[0], c->patch_dim, &c->patch_dim_stored, err) ||
        bind_matrix(f, "v.patch_embd.weight", D, c->patch_dim_stored, &w->patch, err) ||
        check_zero_columns(f, "v.patch_embd.weight", &w->patch, c->patch_dim, err) ||
        bind_vector(f, "v.patch_embd.bias", D, &w->patch_b, err) ||
        bind_floats(f, "v.position_embd.weight", c->n_patches, D, &w->pos, err))
        return -1;

    /* the MLP's stored width decides Fp (the same for every layer) */
    char n[128];
    const size_t cap = sizeof n;
    const GgufTensor *up = find_known(f, blk_name(n, cap, 0, "ffn_up.weight"), err);
    if (!up) return -1;
    if (padded_size(f, n, "rows", up->n_dims == 2 ? up->ne[1] : up->ne[0], c->ffn_dim, &c->ffn_dim_stored, err))
        return -1;
    int64_t F = c->ffn_dim, Fp = c->ffn_dim_stored;

    w->layers = blv_calloc((size_t)c->n_layers, sizeof(VitLayer), "vision layer table", err);
    if (!w->layers) return -1;
    for (int64_t l = 0; l < c->n_layers; l++) {
        VitLayer *L = &w->layers[l];
        if (bind_vector(f, blk_name(n, cap, l, "ln1.weight"), D, &L->ln1_w, err) ||
            bind_vector(f, blk_name(n, cap, l, "ln1.bias"), D, &L->ln1_b, err) ||
            bind_matrix(f, blk_name(n, cap, l, "attn_q.weight"), D, D, &L->wq, err) ||
            bind_vector(f, blk_name(n, cap, l, "attn_q.bias"), D, &L->bq, err) ||
            bind_matrix(f, blk_name(n, cap, l, "attn_k.weight"), D, D, &L->wk, err) ||
            bind_vector(f, blk_name(n, cap, l, "attn_k.bias"), D, &L->bk, err) ||
            bind_matrix(f, blk_name(n, cap, l, "attn_v.weight"), D, D, &L->wv, err) ||
            bind_vector(f, blk_name(n, cap, l, "attn_v.bias"), D, &L->bv, err) ||
            bind_matrix(f, blk_name(n, cap, l, "attn_out.weight"), D, D, &L->wo, err) ||
            bind_vector(f, blk_name(n, cap, l, "attn_out.bias"), D, &L->bo, err) ||
            bind_vector(f, blk_name(n, cap, l, "ln2.weight"), D, &L->ln2_w, err) ||
            bind_vector(f, blk_name(n, cap, l, "ln2.bias"), D, &L->ln2_b, err))
            return -1;
        if (bind_matrix(f, blk_name(n, cap, l, "ffn_up.weight"), Fp, D, &L->fc1, err) ||
            check_zero_rows(f, n, &L->fc1, F, err) ||
            bind_vector(f, blk_name(n, cap, l, "ffn_up.bias"), Fp, &L->fc1_b, err) ||
            check_zero_tail(f, n, L->fc1_b, F, Fp, err) ||
            bind_matrix(f, blk_name(n, cap, l, "ffn_down.weight"), D, Fp, &L->fc2, err) ||
            check_zero_columns(f, n, &L->fc2, F, err) ||
            bind_vector(f, blk_name(n, cap, l, "ffn_down.bias"), D, &L->fc2_b, err))
            return -1;
        v->weight_bytes += matrix_bytes(&L->wq) + matrix_bytes(&L->wk) + matrix_bytes(&L->wv) + matrix_bytes(&L->wo) +
                           matrix_bytes(&L->fc1) + matrix_bytes(&L->fc2);
    }
    if (c->post_ln && (bind_vector(f, "v.post_ln.weight", D, &w->post_ln_w, err) ||
                       bind_vector(f, "v.post_ln.bias", D, &w->post_ln_b, err)))
        return -1;

    /* projector: mm.0's rows must be clip.vision.projection_dim */
    int64_t M = c->merged_dim, H = c->proj_dim;
    const GgufTensor *mm0 = find_known(f, "mm.0.weight", err);
    if (!mm0) return -1;
    if (mm0->n_dims == 2 && mm0->ne[0] == M && mm0->ne[1] != H)
        return blv_fail(err, "%s: tensor mm.0.weight has %lld output rows, but clip.vision.projection_dim is %lld", f->path,
                        (long long)mm0->ne[1], (long long)H);
    if (bind_vector(f, "mm.input_norm.weight", M, &w->mm_norm_w, err) ||
        bind_vector(f, "mm.input_norm.bias", M, &w->mm_norm_b, err) ||
        bind_matrix(f, "mm.0.weight", H, M, &w->mm0, err) ||
        bind_vector(f, "mm.0.bias", H, &w->mm0_b, err) ||
        bind_matrix(f, "mm.2.weight", H, H, &w->mm2, err) ||
        bind_vector(f, "mm.2.bias", H, &w->mm2_b, err))
        return -1;
    v->weight_bytes += matrix_bytes(&w->patch) + matrix_bytes(&w->mm0) + matrix_bytes(&w->mm2);
    return 0;
}

/* ---- state ------------------------------------------------------------------------------------ */

/* Per-thread attention work buffers (ops_attn_head_*: one (tile, head) at a time). */
static int64_t attn_bytes(const Vit *v) { return ops_attn_work_bytes(v->config.n_patches, v->config.head_dim); }

static int64_t scratch_for(const VitMatrix *m, int64_t T) { return matmul_scratch_bytes(m->type, m->cols, T); }

static int alloc_state(Vit *v, BlvError *err) {
    const VitConfig *c = &v->config;
    VitState *s = &v->state;
    int64_t B = v->batch, T = B * c->n_patches, D = c->dim, Tm = B * c->n_merged;
    int64_t work = max64(3 * T * D, T * c->ffn_dim_stored);
    int64_t scratch = 0;
    for (int64_t l = 0; l < c->n_layers; l++) {
        const VitLayer *L = &v->weights.layers[l];
        const VitMatrix *ms[6] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->fc1, &L->fc2};
        for (int i = 0; i < 6; i++) scratch = max64(scratch, scratch_for(ms[i], T));
    }
    scratch = max64(scratch, scratch_for(&v->weights.mm0, Tm));
    scratch = max64(scratch, scratch_for(&v->weights.mm2, Tm));
    s->attn_stride = (attn_bytes(v) + 63) / 64 * 64;
    int n_threads = threadpool_size(v->pool);
    if (!(s->cols = blv_calloc((size_t)(T * c->patch_dim_stored), sizeof(float), "vision im2col buffer", err)) ||
        !(s->pe_scratch = blv_malloc((size_t)max64(scratch_for(&v->weights.patch, T), 64), "vision patch scratch", err)) ||
        !(s->x = blv_malloc((size_t)(T * D) * sizeof(float), "vision activations", err)) ||
        !(s->xb = blv_malloc((size_t)(T * D) * sizeof(float), "vision activations", err)) ||
        !(s->work = blv_malloc((size_t)work * sizeof(float), "vision activations", err)) ||
        !(s->merged = blv_malloc((size_t)(Tm * c->merged_dim) * sizeof(float), "merged tokens", err)) ||
        !(s->proj_h = blv_malloc((size_t)(Tm * c->proj_dim) * sizeof(float), "projector activations", err)) ||
        !(s->scratch = blv_malloc((size_t)max64(scratch, 64), "vision matmul scratch", err)) ||
        !(s->attn = blv_calloc((size_t)n_threads, (size_t)s->attn_stride, "attention buffers", err)))
        return -1;
    return 0;
}

static int is_float_type(int type) { return type == TYPE_F32 || type == TYPE_F16 || type == TYPE_BF16; }

int vit_init(Vit *v, const GgufFile *f, const VitOptions *opt, BlvError *err) {
    memset(v, 0, sizeof *v);
    v->path = f->path;
    VitOptions o = {0, 0, -1, -1};
    if (opt) o = *opt;
    if (read_config(f, &v->config, err) != 0) goto fail;
    if (o.merge_order == VIT_MERGE_VILA || o.merge_order == VIT_MERGE_RASTER) v->config.merge_order = o.merge_order;
    else if (o.merge_order != -1) {
        blv_fail(err, "merge order %d is not one of -1 (file), 0 (vila), 1 (raster)", o.merge_order);
        goto fail;
    }
    if (bind_weights(v, f, err) != 0) goto fail;
    v->batch = o.batch > 0 ? o.batch : 4;
    if (o.attn_type == -1) v->attn_type = is_float_type(v->weights.layers[0].wq.type) ? TYPE_F32 : TYPE_Q8_0;
    else if (o.attn_type == TYPE_F32 || o.attn_type == TYPE_Q8_0) v->attn_type = o.attn_type;
    else {
        blv_fail(err, "attention type %s is not supported (use f32 or q8_0)", type_name(o.attn_type));
        goto fail;
    }
    v->pool = threadpool_create(o.n_threads > 0 ? o.n_threads : 1, err);
    if (!v->pool) goto fail;
    if (alloc_state(v, err) != 0) goto fail;
    return 0;
fail:
    vit_free(v);
    return -1;
}

void vit_free(Vit *v) {
    VitWeights *w = &v->weights;
    if (w->layers) {
        for (int64_t l = 0; l < v->config.n_layers; l++) {
            VitLayer *L = &w->layers[l];
            float *vecs[] = {L->ln1_w, L->ln1_b, L->bq, L->bk, L->bv, L->bo, L->ln2_w, L->ln2_b, L->fc1_b, L->fc2_b};
            for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) free(vecs[i]);
        }
    }
    free(w->layers);
    float *vecs[] = {w->patch_b, w->pos, w->post_ln_w, w->post_ln_b, w->mm_norm_w, w->mm_norm_b, w->mm0_b, w->mm2_b};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) free(vecs[i]);
    VitState *s = &v->state;
    void *bufs[] = {s->cols, s->pe_scratch, s->x, s->xb, s->work, s->merged, s->proj_h, s->scratch, s->attn};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    threadpool_free(v->pool);
    memset(v, 0, sizeof *v);
}

void vit_reset_timings(Vit *v) { memset(&v->timings, 0, sizeof v->timings); }

/* ---- the math ----------------------------------------------------------------------------------- */

/* The elementwise and row operations are ops.h's (vector kernels with a scalar reference; GELU-tanh,
 * GELU-erf and exp approximations and LayerNorm's summation order are defined there). */

/* Row-wise operations, threaded over rows (each thread a contiguous range of rows). */
typedef enum {
    ROW_LAYERNORM,            /* out = LayerNorm(in; w, b, eps)   (out may be in) */
    ROW_ADD_BIAS,             /* out += b */
    ROW_ADD_BIAS_RESIDUAL,    /* out = out + (in + b)   (residual stream out, sublayer output in) */
    ROW_RESIDUAL_LAYERNORM,   /* x = x + (in + b); out2 = LayerNorm(x; w2, b2, eps)   (out2 may be in) */
    ROW_BIAS_GELU_TANH,       /* out = gelu_tanh(out + b) */
    ROW_BIAS_GELU_ERF,        /* out = gelu_erf(out + b) */
    ROW_ADD_BIAS_POS,         /* out = (out + b) + w[row % pos_rows]   (conv bias, then position embedding) */
} RowOp;

typedef struct {
    RowOp op;
    float *out;
    const float *in;
    const float *w, *b;
    int64_t rows, cols;
    float eps;
    float *out2;              /* ROW_RESIDUAL_LAYERNORM: the LayerNorm output */
    const float *w2, *b2;     /* its weight and bias */
    int64_t pos_rows;         /* ROW_ADD_BIAS_POS */
} RowTask;

static void row_task(void *ctx, int ith, int nth) {
    const RowTask *t = ctx;
    int64_t r0, r1, n = t->cols;
    split_range(t->rows, ith, nth, 1, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *o = t->out + r * n;
        const float *in = t->in ? t->in + r * n : NULL;
        switch (t->op) {
        case ROW_LAYERNORM: ops_layernorm(o, in, t->w, t->b, n, t->eps); break;
        case ROW_ADD_BIAS: ops_add_bias(o, t->b, n); break;
        case ROW_ADD_BIAS_RESIDUAL: ops_add_bias_residual(o, in, t->b, n); break;
        case ROW_RESIDUAL_LAYERNORM: ops_residual_layernorm(o, in, t->b, t->out2 + r * n, t->w2, t->b2, n, t->eps); break;
        case ROW_BIAS_GELU_TANH: ops_bias_gelu_tanh(o, t->b, n); break;
        case ROW_BIAS_GELU_ERF: ops_bias_gelu_erf(o, t->b, n); break;
        case ROW_ADD_BIAS_POS:
            ops_add_bias(o, t->b, n);
            ops_add(o, t->w + (r % t->pos_rows) * n, n);
            break;
        }
    }
}

static void rows_op(ThreadPool *pool, RowOp op, float *out, const float *in, const float *w, const float *b,
                    int64_t rows, int64_t cols, float eps) {
    RowTask t = {op, out, in, w, b, rows, cols, eps, NULL, NULL, NULL, 1};
    threadpool_run(pool, row_task, &t);
}

/* x = x + (y + yb); out = LayerNorm(x; w, b, eps), one pass over each row. */
static void residual_layernorm(ThreadPool *pool, float *x, const float *y, const float *yb, float *out, const float *w,
                               const float *b, int64_t rows, int64_t cols, float eps) {
    RowTask t = {ROW_RESIDUAL_LAYERNORM, x, y, NULL, yb, rows, cols, eps, out, w, b, 1};
    threadpool_run(pool, row_task, &t);
}

static void matmul_w(ThreadPool *pool, float *out, const VitMatrix *w, const float *x, int64_t T, void *scratch) {
    matmul(pool, out, w->data, w->type, x, w->cols, w->rows, T, scratch);
}

static void dump(Vit *v, const char *stage, int64_t tile0, int64_t n, int64_t rows, int64_t cols, const float *data) {
    if (v->dump) v->dump(v->dump_user, stage, tile0, n, rows, cols, data);
}

/* ---- patch embedding ---------------------------------------------------------------------------- */

typedef struct {
    const Vit *v;
    const float *tiles;
    int64_t n;
} Im2colTask;

/* Row (tile, py, px) of the im2col matrix holds the patch's pixels in (c, ky, kx) order, the order of
 * the flattened conv weight; columns K..Kp stay zero (calloc'd, never written). Rows split by thread. */
static void im2col_task(void *ctx, int ith, int nth) {
    const Im2colTask *t = ctx;
    const VitConfig *c = &t->v->config;
    const int64_t S = c->image_size, P = c->patch_size, G = c->grid, Kp = c->patch_dim_stored;
    int64_t r0, r1;
    split_range(t->n * G * G, ith, nth, 1, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / (G * G), py = r / G % G, px = r % G;
        const float *tile = t->tiles + b * 3 * S * S;
        float *row = t->v->state.cols + r * Kp;
        for (int64_t ch = 0; ch < 3; ch++)
            for (int64_t ky = 0; ky < P; ky++)
                memcpy(row + (ch * P + ky) * P, tile + (ch * S + py * P + ky) * S + px * P, (size_t)P * sizeof(float));
    }
}

void vit_patch_embed(Vit *v, ThreadPool *pool, const float *tiles, int64_t tile0, int64_t n, float *out) {
    const VitConfig *c = &v->config;
    const int64_t D = c->dim, T = n * c->n_patches;
    double t0 = blv_now();
    /* patch_embeds = self.patch_embedding(pixel_values): Conv2d(3, D, kernel P, stride P, "valid")
     * as im2col · Wᵀ */
    Im2colTask ic = {v, tiles, n};
    threadpool_run(pool, im2col_task, &ic);
    matmul_w(pool, out, &v->weights.patch, v->state.cols, T, v->state.pe_scratch);
    /* embeddings = patch_embeds.flatten(2).transpose(1, 2) + self.position_embedding(self.position_ids)
     * (the conv's bias first, as the conv adds it) */
    RowTask bp = {ROW_ADD_BIAS_POS, out, NULL, v->weights.pos, v->weights.patch_b, T, D, 0, NULL, NULL, NULL, c->n_patches};
    threadpool_run(pool, row_task, &bp);
    v->timings.patch_embed += blv_now() - t0;
    dump(v, "patch_embed", tile0, n, c->n_patches, D, out);
}

/* ---- attention ---------------------------------------------------------------------------------- */

typedef struct {
    Vit *v;
    const VitLayer *L;
    int64_t n_tiles;
    const float *q, *k, *val;  /* (T, D) each, before their biases */
    float *out;                /* (T, D) */
} AttentionTask;

/* The (tile, head) pairs split between the threads; each runs ops_attn_head_* on its own work buffer:
 *   queries = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)   (the biases added there)
 *   attn_weights = softmax(torch.matmul(query, key.transpose(2, 3)) * scaling, dim=-1, dtype=float32)
 *   attn_output = torch.matmul(attn_weights, value).transpose(1, 2).reshape(*input_shape, -1) */
static void attention_task(void *ctx, int ith, int nth) {
    const AttentionTask *a = ctx;
    const Vit *v = a->v;
    const VitConfig *c = &v->config;
    const int64_t n = c->n_patches, hd = c->head_dim, D = c->dim, H = c->n_heads;
    void *work = v->state.attn + (size_t)ith * (size_t)v->state.attn_stride;
    int64_t u0, u1;
    split_range(a->n_tiles * H, ith, nth, 1, &u0, &u1);
    for (int64_t u = u0; u < u1; u++) {
        int64_t b = u / H, h = u % H, base = b * n * D + h * hd;
        OpsAttn oa = {a->q + base, a->k + base, a->val + base, a->L->bq + h * hd, a->L->bk + h * hd, a->L->bv + h * hd,
                      a->out + base, n, hd, D, D, 1.0f / sqrtf((float)hd)};
        if (v->attn_type == TYPE_Q8_0) ops_attn_head_q8(&oa, work);
        else ops_attn_head_f32(&oa, work);
    }
}

/* ---- encoder layers ------------------------------------------------------------------------------ */

void vit_blocks(Vit *v, float *x, int64_t tile0, int64_t n) {
    const VitConfig *c = &v->config;
    VitState *s = &v->state;
    ThreadPool *pool = v->pool;
    const int64_t D = c->dim, Fp = c->ffn_dim_stored, T = n * c->n_patches;
    float *q = s->work, *k = s->work + T * D, *val = s->work + 2 * T * D, *hb = s->work;
    char stage[64];
    double t0;

    /* residual = hidden_states; hidden_states = self.layer_norm1(hidden_states)   (layer 0; the later
     * layers' layer_norm1 is fused with the residual add that ends the layer before) */
    t0 = blv_now();
    if (c->n_layers > 0) rows_op(pool, ROW_LAYERNORM, s->xb, x, v->weights.layers[0].ln1_w, v->weights.layers[0].ln1_b, T, D, c->eps);
    v->timings.other += blv_now() - t0;
    for (int64_t l = 0; l < c->n_layers; l++) {
        const VitLayer *L = &v->weights.layers[l];
        /* queries = self.q_proj(hidden_states); keys = self.k_proj(...); values = self.v_proj(...) */
        t0 = blv_now();
        matmul_w(pool, q, &L->wq, s->xb, T, s->scratch);
        matmul_w(pool, k, &L->wk, s->xb, T, s->scratch);
        matmul_w(pool, val, &L->wv, s->xb, T, s->scratch);
        v->timings.qkvo += blv_now() - t0;

        /* attn_output, attn_weights = eager_attention_forward(...)   per tile and head (ops_attn_head_*) */
        t0 = blv_now();
        AttentionTask task = {v, L, n, q, k, val, s->xb};
        threadpool_run(pool, attention_task, &task);
        v->timings.attention += blv_now() - t0;

        /* attn_output = self.out_proj(attn_output)   (into q's space, free now) */
        t0 = blv_now();
        matmul_w(pool, q, &L->wo, s->xb, T, s->scratch);
        v->timings.qkvo += blv_now() - t0;
        /* hidden_states = residual + hidden_states; residual = hidden_states;
         * hidden_states = self.layer_norm2(hidden_states) */
        t0 = blv_now();
        residual_layernorm(pool, x, q, L->bo, s->xb, L->ln2_w, L->ln2_b, T, D, c->eps);
        v->timings.other += blv_now() - t0;

        /* hidden_states = self.fc1(hidden_states) */
        t0 = blv_now();
        matmul_w(pool, hb, &L->fc1, s->xb, T, s->scratch);
        v->timings.mlp += blv_now() - t0;
        /* hidden_states = self.activation_fn(hidden_states)   gelu_pytorch_tanh */
        t0 = blv_now();
        rows_op(pool, ROW_BIAS_GELU_TANH, hb, NULL, NULL, L->fc1_b, T, Fp, 0);
        v->timings.other += blv_now() - t0;
        /* hidden_states = self.fc2(hidden_states) */
        t0 = blv_now();
        matmul_w(pool, s->xb, &L->fc2, hb, T, s->scratch);
        v->timings.mlp += blv_now() - t0;
        /* hidden_states = residual + hidden_states   (and the next layer's layer_norm1, into xb) */
        t0 = blv_now();
        if (l + 1 < c->n_layers) {
            const VitLayer *N = &v->weights.layers[l + 1];
            residual_layernorm(pool, x, s->xb, L->fc2_b, s->xb, N->ln1_w, N->ln1_b, T, D, c->eps);
        } else {
            rows_op(pool, ROW_ADD_BIAS_RESIDUAL, x, s->xb, NULL, L->fc2_b, T, D, 0);
        }
        v->timings.other += blv_now() - t0;

        snprintf(stage, sizeof stage, "vit_block_%lld", (long long)l);
        dump(v, stage, tile0, n, c->n_patches, D, x);
    }
    if (c->post_ln) {
        /* last_hidden_state = self.post_layernorm(last_hidden_state) */
        t0 = blv_now();
        rows_op(pool, ROW_LAYERNORM, x, x, v->weights.post_ln_w, v->weights.post_ln_b, T, D, c->eps);
        v->timings.other += blv_now() - t0;
    }
    v->timings.tiles += n;
    dump(v, "vit_out", tile0, n, c->n_patches, D, x);
}

/* ---- downsampler and projector ------------------------------------------------------------------ */

typedef struct {
    const Vit *v;
    const float *x;
    int64_t n;
} MergeTask;

/* The downsampler's copies (vit_project explains the layout), merged tokens split by thread. */
static void merge_task(void *ctx, int ith, int nth) {
    const MergeTask *m = ctx;
    const VitConfig *c = &m->v->config;
    const int64_t D = c->dim, G = c->grid, G2 = c->merge_grid, M = c->merged_dim;
    int64_t u0, u1;
    split_range(m->n * G2 * G2, ith, nth, 1, &u0, &u1);
    for (int64_t u = u0; u < u1; u++) {
        int64_t b = u / (G2 * G2), i = u / G2 % G2, j = u % G2;
        int64_t t = c->merge_order == VIT_MERGE_VILA ? j * G2 + i : i * G2 + j;
        float *dst = m->v->state.merged + (b * c->n_merged + t) * M;
        for (int64_t part = 0; part < 4; part++) {
            int64_t row = 2 * i + part / 2, col = 2 * j + part % 2;
            if (row < G && col < G)
                memcpy(dst + part * D, m->x + (b * c->n_patches + row * G + col) * D, (size_t)D * sizeof(float));
            else
                memset(dst + part * D, 0, (size_t)D * sizeof(float));
        }
    }
}

void vit_project(Vit *v, const float *x, int64_t tile0, int64_t n, float *out) {
    const VitConfig *c = &v->config;
    VitState *s = &v->state;
    const VitWeights *w = &v->weights;
    const int64_t M = c->merged_dim, Tm = n * c->n_merged;
    double t0 = blv_now();
    /* VILA DownSampleBlock: vit_embeds.reshape(n, h, w, -1); flat_square pads an odd side with a zero
     * row (bottom) / column (right), then view(n, w, h/2, 2c) → permute(0, 2, 1, 3) → view(n, h/2,
     * w/2, 4c). Merged token (i, j) (row pair i, column pair j) is the concatenation
     * [x(2i,2j), x(2i,2j+1), x(2i+1,2j), x(2i+1,2j+1)] ((row, col), zero outside the grid) and lands
     * at t = j·G2 + i: VILA's output is column-major. "raster" puts it at t = i·G2 + j instead. */
    MergeTask mt = {v, x, n};
    threadpool_run(v->pool, merge_task, &mt);
    dump(v, "merged", tile0, n, c->n_merged, M, s->merged);
    /* nn.LayerNorm(mm_hidden_size * 4) */
    rows_op(v->pool, ROW_LAYERNORM, s->merged, s->merged, w->mm_norm_w, w->mm_norm_b, Tm, M, c->proj_eps);
    /* nn.Linear(mm_hidden_size * 4, hidden_size), nn.GELU() */
    matmul_w(v->pool, s->proj_h, &w->mm0, s->merged, Tm, s->scratch);
    rows_op(v->pool, ROW_BIAS_GELU_ERF, s->proj_h, NULL, NULL, w->mm0_b, Tm, c->proj_dim, 0);
    /* nn.Linear(hidden_size, hidden_size) */
    matmul_w(v->pool, out, &w->mm2, s->proj_h, Tm, s->scratch);
    rows_op(v->pool, ROW_ADD_BIAS, out, NULL, NULL, w->mm2_b, Tm, c->proj_dim, 0);
    v->timings.project += blv_now() - t0;
    dump(v, "image_embeds", tile0, n, c->n_merged, c->proj_dim, out);
}

int vit_encode(Vit *v, const float *tiles, int64_t n_tiles, float *out, BlvError *err) {
    const VitConfig *c = &v->config;
    if (n_tiles < 0) return blv_fail(err, "negative tile count %lld", (long long)n_tiles);
    const int64_t tile_floats = 3 * c->image_size * c->image_size;
    for (int64_t t0 = 0; t0 < n_tiles; t0 += v->batch) {
        int64_t nb = n_tiles - t0 < v->batch ? n_tiles - t0 : v->batch;
        vit_patch_embed(v, v->pool, tiles + t0 * tile_floats, t0, nb, v->state.x);
        vit_blocks(v, v->state.x, t0, nb);
        vit_project(v, v->state.x, t0, nb, out + t0 * c->n_merged * c->proj_dim);
    }
    return 0;
}

/* ---- random-weight files ------------------------------------------------------------------------ */

int vit_shape_preset(const char *name, VitShape *shape, BlvError *err) {
    memset(shape, 0, sizeof *shape);
    if (strcmp(name, "tiny") == 0) {
        *shape = (VitShape){"tiny", 60, 8, 64, 2, 4, 172, 64, 0, VIT_MERGE_VILA};
        return 0;
    }
    if (strcmp(name, "bluelm-v-3b") == 0) {
        *shape = (VitShape){"bluelm-v-3b", 384, 14, 1152, 26, 16, 4304, 2560, 0, VIT_MERGE_VILA};
        return 0;
    }
    return blv_fail(err, "unknown vision preset \"%s\" (known: tiny, bluelm-v-3b)", name);
}

/* One tensor of a random file: (rows, cols) as stored; values outside (real_rows, real_cols) are
 * padding zeros. std > 0: approximately normal values; otherwise every value is `fill`. */
typedef struct {
    char name[64];
    int n_dims;
    int64_t rows, cols;
    int64_t real_rows, real_cols;
    int type;
    float std, fill;
} RandTensor;

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* Irwin–Hall: the sum of four 16-bit uniforms, centred and scaled to unit variance. */
static float approx_normal(uint64_t *state) {
    uint64_t r = splitmix64(state);
    float sum = (float)(r & 0xFFFF) + (float)((r >> 16) & 0xFFFF) + (float)((r >> 32) & 0xFFFF) + (float)(r >> 48);
    return (sum / 65536.0f - 2.0f) * 1.7320508f;
}

static int add_rand(RandTensor *list, int *count, const char *name, int n_dims, int64_t rows, int64_t cols,
                    int64_t real_rows, int64_t real_cols, int type, float std, float fill) {
    RandTensor *t = &list[(*count)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->rows = rows;
    t->cols = cols;
    t->real_rows = real_rows;
    t->real_cols = real_cols;
    t->type = type;
    t->std = std;
    t->fill = fill;
    return 0;
}

static int plan_random(const VitShape *sh, int type, RandTensor *list) {
    const float std = 0.02f;
    int n = 0;
    int64_t D = sh->dim, K = 3 * sh->patch_size * sh->patch_size, Kp = round_up32(K);
    int64_t F = sh->ffn_dim, Fp = round_up32(F), G = sh->image_size / sh->patch_size, H = sh->proj_dim;
    add_rand(list, &n, "v.patch_embd.weight", 2, D, Kp, D, K, type, std, 0);
    add_rand(list, &n, "v.patch_embd.bias", 1, 1, D, 1, D, TYPE_F32, std, 0);
    add_rand(list, &n, "v.position_embd.weight", 2, G * G, D, G * G, D, TYPE_F32, std, 0);
    for (int64_t l = 0; l < sh->n_layers; l++) {
        char nm[64];
        const size_t cap = sizeof nm;
        add_rand(list, &n, blk_name(nm, cap, l, "ln1.weight"), 1, 1, D, 1, D, TYPE_F32, 0, 1.0f);
        add_rand(list, &n, blk_name(nm, cap, l, "ln1.bias"), 1, 1, D, 1, D, TYPE_F32, 0, 0.0f);
        const char *weights[4] = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_out.weight"};
        const char *biases[4] = {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_out.bias"};
        for (int p = 0; p < 4; p++) {
            add_rand(list, &n, blk_name(nm, cap, l, weights[p]), 2, D, D, D, D, type, std, 0);
            add_rand(list, &n, blk_name(nm, cap, l, biases[p]), 1, 1, D, 1, D, TYPE_F32, std, 0);
        }
        add_rand(list, &n, blk_name(nm, cap, l, "ln2.weight"), 1, 1, D, 1, D, TYPE_F32, 0, 1.0f);
        add_rand(list, &n, blk_name(nm, cap, l, "ln2.bias"), 1, 1, D, 1, D, TYPE_F32, 0, 0.0f);
        add_rand(list, &n, blk_name(nm, cap, l, "ffn_up.weight"), 2, Fp, D, F, D, type, std, 0);
        add_rand(list, &n, blk_name(nm, cap, l, "ffn_up.bias"), 1, 1, Fp, 1, F, TYPE_F32, std, 0);
        add_rand(list, &n, blk_name(nm, cap, l, "ffn_down.weight"), 2, D, Fp, D, F, type, std, 0);
        add_rand(list, &n, blk_name(nm, cap, l, "ffn_down.bias"), 1, 1, D, 1, D, TYPE_F32, std, 0);
    }
    if (sh->post_ln) {
        add_rand(list, &n, "v.post_ln.weight", 1, 1, D, 1, D, TYPE_F32, 0, 1.0f);
        add_rand(list, &n, "v.post_ln.bias", 1, 1, D, 1, D, TYPE_F32, 0, 0.0f);
    }
    add_rand(list, &n, "mm.input_norm.weight", 1, 1, 4 * D, 1, 4 * D, TYPE_F32, 0, 1.0f);
    add_rand(list, &n, "mm.input_norm.bias", 1, 1, 4 * D, 1, 4 * D, TYPE_F32, 0, 0.0f);
    add_rand(list, &n, "mm.0.weight", 2, H, 4 * D, H, 4 * D, type, std, 0);
    add_rand(list, &n, "mm.0.bias", 1, 1, H, 1, H, TYPE_F32, std, 0);
    add_rand(list, &n, "mm.2.weight", 2, H, H, H, H, type, std, 0);
    add_rand(list, &n, "mm.2.bias", 1, 1, H, 1, H, TYPE_F32, std, 0);
    return n;
}

/* Fills and converts one tensor; returns its bytes (malloc'd) or NULL. */
static void *make_random(const RandTensor *t, uint64_t seed, int64_t *n_bytes, BlvError *err) {
    int64_t row_bytes = type_row_bytes(t->type, t->cols);
    float *row = blv_malloc((size_t)t->cols * sizeof(float), t->name, err);
    uint8_t *bytes = row ? blv_malloc((size_t)(t->rows * row_bytes), t->name, err) : NULL;
    if (!bytes) {
        free(row);
        return NULL;
    }
    uint64_t state = seed ^ fnv1a64(t->name);
    for (int64_t r = 0; r < t->rows; r++) {
        for (int64_t c = 0; c < t->cols; c++) {
            int real = r < t->real_rows && c < t->real_cols;
            row[c] = !real ? 0.0f : t->std > 0 ? t->std * approx_normal(&state) : t->fill;
        }
        quantize_row(t->type, row, bytes + r * row_bytes, t->cols);
    }
    free(row);
    *n_bytes = t->rows * row_bytes;
    return bytes;
}

int vit_write_random(const char *path, const VitShape *sh, int type, uint64_t seed, BlvError *err) {
    if (!type_is_known(type)) return blv_fail(err, "%s: unknown tensor type %d", path, type);
    if (sh->dim % sh->n_heads != 0 || sh->patch_size > sh->image_size)
        return blv_fail(err, "%s: inconsistent vision shape (hidden %lld, heads %lld, tile %lld, patch %lld)", path,
                        (long long)sh->dim, (long long)sh->n_heads, (long long)sh->image_size, (long long)sh->patch_size);
    if (type_block_elems(type) > 1 && (sh->dim % QK != 0 || sh->proj_dim % QK != 0))
        return blv_fail(err, "%s: %s matrices need a hidden size and projection size that are multiples of %d", path,
                        type_name(type), QK);
    int max_tensors = 3 + 16 * (int)sh->n_layers + 2 + 6;
    RandTensor *plan = blv_calloc((size_t)max_tensors, sizeof(RandTensor), "tensor plan", err);
    if (!plan) return -1;
    int n = plan_random(sh, type, plan);
    GgufWriter *w = gguf_writer_new(err);
    int rc = w ? 0 : -1;
    if (rc == 0) {
        char desc[256];
        snprintf(desc, sizeof desc, "ILLUSTRATIVE random weights (seed %llu) of the %s vision shape: for speed and "
                 "memory measurements only", (unsigned long long)seed, sh->name ? sh->name : "custom");
        const float mean[3] = {0.5f, 0.5f, 0.5f}, stdv[3] = {0.5f, 0.5f, 0.5f};
        rc |= gguf_set_string(w, "general.architecture", "clip");
        rc |= gguf_set_string(w, "general.name", sh->name ? sh->name : "custom");
        rc |= gguf_set_string(w, "general.description", desc);
        rc |= gguf_set_bool(w, "clip.has_vision_encoder", 1);
        rc |= gguf_set_string(w, "clip.projector_type", "bluelmv");
        rc |= gguf_set_u32(w, "clip.vision.image_size", (uint32_t)sh->image_size);
        rc |= gguf_set_u32(w, "clip.vision.patch_size", (uint32_t)sh->patch_size);
        rc |= gguf_set_u32(w, "clip.vision.embedding_length", (uint32_t)sh->dim);
        rc |= gguf_set_u32(w, "clip.vision.feed_forward_length", (uint32_t)sh->ffn_dim);
        rc |= gguf_set_u32(w, "clip.vision.block_count", (uint32_t)sh->n_layers);
        rc |= gguf_set_u32(w, "clip.vision.attention.head_count", (uint32_t)sh->n_heads);
        rc |= gguf_set_f32(w, "clip.vision.attention.layer_norm_epsilon", 1e-6f);
        rc |= gguf_set_array(w, "clip.vision.image_mean", GGUF_TYPE_FLOAT32, mean, 3);
        rc |= gguf_set_array(w, "clip.vision.image_std", GGUF_TYPE_FLOAT32, stdv, 3);
        rc |= gguf_set_u32(w, "clip.vision.projection_dim", (uint32_t)sh->proj_dim);
        rc |= gguf_set_u32(w, "clip.vision.projector.scale_factor", 2);
        rc |= gguf_set_bool(w, "clip.use_gelu", 1);
        rc |= gguf_set_string(w, "bluelmv.merge.order", sh->merge_order == VIT_MERGE_RASTER ? "raster" : "vila");
        rc |= gguf_set_bool(w, "bluelmv.vision.post_ln", sh->post_ln);
        rc |= gguf_set_f32(w, "bluelmv.projector.layer_norm_epsilon", 1e-5f);
        for (int i = 0; rc == 0 && i < n; i++) {
            int64_t ne[2] = {plan[i].cols, plan[i].rows};
            rc |= gguf_add_tensor(w, plan[i].name, (uint32_t)plan[i].type, (uint32_t)plan[i].n_dims, ne);
        }
        if (rc != 0) blv_fail(err, "%s: %s", path, gguf_writer_error(w));
    }
    if (rc == 0) rc = gguf_writer_begin(w, path, err);
    for (int i = 0; rc == 0 && i < n; i++) {
        int64_t n_bytes = 0;
        void *bytes = make_random(&plan[i], seed, &n_bytes, err);
        rc = bytes ? gguf_writer_put_tensor(w, bytes, (uint64_t)n_bytes, err) : -1;
        free(bytes);
    }
    if (rc == 0) rc = gguf_writer_finish(w, err);
    gguf_writer_free(w);
    free(plan);
    return rc;
}

double vit_block_ops(const VitConfig *c) {
    const double T = (double)c->n_patches, D = (double)c->dim, F = (double)c->ffn_dim;
    const double matrices = T * (4.0 * D * D + 2.0 * D * F);
    const double attention = 2.0 * (double)c->n_heads * T * T * (double)c->head_dim;  /* q·kᵀ and p·v */
    return 2.0 * (double)c->n_layers * (matrices + attention);
}
