/* llm.c — the llama-architecture GQA transformer: loading from GGUF, KV cache, chunked prefill.
 *
 * The forward pass mirrors Hugging Face's LlamaForCausalLM (modeling_llama.py); each step quotes
 * the line it implements. The numbers are defined by quant.h's matmul (its _ref twin is the
 * definition) and the plain scalar loops below. */
#include "llm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "quant.h"

/* ---- reading the configuration ------------------------------------------------------------- */

/* Reads "<arch>.<name>" as an int64; absent keys take `fallback` when it is >= 0, else fail. */
static int read_int_key(const GgufFile *f, const char *arch, const char *name, int64_t fallback,
                        int64_t *out, BlvError *err) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    if (!gguf_find_kv(f, key) && fallback >= 0) {
        *out = fallback;
        return 0;
    }
    if (gguf_get_i64(f, key, out, err) != 0) return -1;
    if (*out <= 0) return blv_fail(err, "%s: %s = %lld must be positive", f->path, key, (long long)*out);
    return 0;
}

static int read_float_key(const GgufFile *f, const char *arch, const char *name, float fallback,
                          float *out, BlvError *err) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    if (!gguf_find_kv(f, key)) {
        *out = fallback;
        return 0;
    }
    if (gguf_get_f32(f, key, out, err) != 0) return -1;
    if (!(*out > 0) || !isfinite(*out)) return blv_fail(err, "%s: %s = %g must be a positive number", f->path, key, *out);
    return 0;
}

static int read_config(const GgufFile *f, LlmConfig *c, BlvError *err) {
    char *arch = NULL;
    if (gguf_get_string(f, "general.architecture", &arch, err) != 0) return -1;
    if (strcmp(arch, "llama") != 0) {
        blv_fail(err, "%s: general.architecture is \"%s\"; bluelmv's language model reads \"llama\" files", f->path, arch);
        free(arch);
        return -1;
    }
    free(arch);
    memset(c, 0, sizeof *c);
    if (read_int_key(f, "llama", "embedding_length", -1, &c->dim, err) ||
        read_int_key(f, "llama", "block_count", -1, &c->n_layers, err) ||
        read_int_key(f, "llama", "attention.head_count", -1, &c->n_heads, err) ||
        read_int_key(f, "llama", "attention.head_count_kv", c->n_heads, &c->n_kv_heads, err) ||
        read_int_key(f, "llama", "feed_forward_length", -1, &c->ffn_dim, err) ||
        read_int_key(f, "llama", "context_length", 2048, &c->context_length, err))
        return -1;
    if (c->dim % c->n_heads != 0)
        return blv_fail(err, "%s: embedding_length %lld is not a multiple of head_count %lld", f->path,
                        (long long)c->dim, (long long)c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return blv_fail(err, "%s: head_count %lld is not a multiple of head_count_kv %lld", f->path,
                        (long long)c->n_heads, (long long)c->n_kv_heads);
    c->head_dim = c->dim / c->n_heads;
    if (c->n_heads / c->n_kv_heads > 64)
        return blv_fail(err, "%s: %lld query heads share each KV head; bluelmv supports at most 64", f->path,
                        (long long)(c->n_heads / c->n_kv_heads));
    if (read_int_key(f, "llama", "rope.dimension_count", c->head_dim, &c->rope_dim, err)) return -1;
    if (c->rope_dim > c->head_dim || c->rope_dim % 2 != 0)
        return blv_fail(err, "%s: rope.dimension_count %lld must be even and at most the head size %lld", f->path,
                        (long long)c->rope_dim, (long long)c->head_dim);
    if (read_float_key(f, "llama", "rope.freq_base", 10000.0f, &c->rope_theta, err) ||
        read_float_key(f, "llama", "attention.layer_norm_rms_epsilon", 1e-5f, &c->rms_eps, err))
        return -1;
    if (gguf_find_kv(f, "llama.rope.scaling.type")) {
        char *scaling = NULL;
        if (gguf_get_string(f, "llama.rope.scaling.type", &scaling, err) != 0) return -1;
        int none = strcmp(scaling, "none") == 0;
        if (!none) blv_fail(err, "%s: RoPE scaling \"%s\" is not supported", f->path, scaling);
        free(scaling);
        if (!none) return -1;
    }
    return 0;
}

/* ---- binding tensors -------------------------------------------------------------------------- */

static int check_tensor_type(const GgufFile *f, const GgufTensor *t, BlvError *err) {
    if (type_is_known((int)t->type)) return 0;
    return blv_fail(err,
                    "%s: tensor %.*s has type %s, which bluelmv cannot compute with; "
                    "bluelmv supports f32, f16, bf16, q8_0 and q4_0: requantize with "
                    "`llama-quantize --pure IN.gguf OUT.gguf q4_0` (or q8_0)",
                    f->path, (int)t->name.len, t->name.ptr,
                    gguf_ggml_type_name(t->type) ? gguf_ggml_type_name(t->type) : type_name((int)t->type));
}

/* Binds `name` as a (rows, cols) matrix. GGUF dims are reversed: ne[0] = cols, ne[1] = rows. */
static int bind_matrix(const GgufFile *f, const char *name, int64_t rows, int64_t cols, Matrix *m, BlvError *err) {
    const GgufTensor *t = gguf_find_tensor(f, name);
    if (!t) return blv_fail(err, "%s: tensor %s is missing", f->path, name);
    if (check_tensor_type(f, t, err) != 0) return -1;
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

/* Binds a 1-D tensor of n elements and converts it to an owned float array. */
static int bind_vector(const GgufFile *f, const char *name, int64_t n, float **out, BlvError *err) {
    const GgufTensor *t = gguf_find_tensor(f, name);
    if (!t) return blv_fail(err, "%s: tensor %s is missing", f->path, name);
    if (check_tensor_type(f, t, err) != 0) return -1;
    if (t->n_dims != 1 || t->ne[0] != n)
        return blv_fail(err, "%s: tensor %s has %u dims starting [%lld], expected a vector of %lld", f->path, name,
                        t->n_dims, (long long)t->ne[0], (long long)n);
    if (type_row_bytes((int)t->type, n) < 0)
        return blv_fail(err, "%s: tensor %s: %lld elements cannot be stored as %s", f->path, name, (long long)n,
                        type_name((int)t->type));
    *out = blv_malloc((size_t)n * sizeof(float), name, err);
    if (!*out) return -1;
    dequantize_row((int)t->type, t->data, *out, n);
    return 0;
}

int64_t llm_matrix_bytes(const Matrix *m) { return type_matrix_bytes(m->type, m->rows, m->cols); }

/* A layer's seven product matrices, in the order the forward pass uses them. */
enum { LAYER_MATRICES = 7 };
static void layer_matrices(LlmLayer *L, Matrix *mats[LAYER_MATRICES]) {
    Matrix *all[LAYER_MATRICES] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    memcpy(mats, all, sizeof all);
}

/* Bytes of all weight matrices one decode step reads (the layers' and the output's). */
static int64_t sum_weight_bytes(Llm *m) {
    int64_t total = llm_matrix_bytes(&m->weights.output);
    for (int64_t l = 0; l < m->config.n_layers; l++) {
        Matrix *mats[LAYER_MATRICES];
        layer_matrices(&m->weights.layers[l], mats);
        for (int i = 0; i < LAYER_MATRICES; i++) total += llm_matrix_bytes(mats[i]);
    }
    return total;
}

/* "blk.<l>.<suffix>" */
static const char *block_tensor_name(char *buf, size_t cap, int64_t layer, const char *suffix) {
    snprintf(buf, cap, "blk.%lld.%s", (long long)layer, suffix);
    return buf;
}

static int bind_weights(Llm *m, const GgufFile *f, BlvError *err) {
    LlmConfig *c = &m->config;
    LlmWeights *w = &m->weights;
    const GgufTensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd) return blv_fail(err, "%s: tensor token_embd.weight is missing", f->path);
    c->vocab_size = embd->n_dims == 2 ? embd->ne[1] : 0;
    if (bind_matrix(f, "token_embd.weight", c->vocab_size, c->dim, &w->token_embd, err)) return -1;

    c->has_embd_norm = gguf_find_tensor(f, "token_embd_norm.weight") != NULL;
    if (c->has_embd_norm && (bind_vector(f, "token_embd_norm.weight", c->dim, &w->embd_norm_w, err) ||
                             bind_vector(f, "token_embd_norm.bias", c->dim, &w->embd_norm_b, err)))
        return -1;

    int64_t q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    w->layers = blv_calloc((size_t)c->n_layers, sizeof(LlmLayer), "layer table", err);
    if (!w->layers) return -1;
    for (int64_t l = 0; l < c->n_layers; l++) {
        LlmLayer *L = &w->layers[l];
        char n[128];
        size_t cap = sizeof n;
        if (bind_vector(f, block_tensor_name(n, cap, l, "attn_norm.weight"), c->dim, &L->attn_norm, err) ||
            bind_matrix(f, block_tensor_name(n, cap, l, "attn_q.weight"), q_dim, c->dim, &L->wq, err) ||
            bind_matrix(f, block_tensor_name(n, cap, l, "attn_k.weight"), kv_dim, c->dim, &L->wk, err) ||
            bind_matrix(f, block_tensor_name(n, cap, l, "attn_v.weight"), kv_dim, c->dim, &L->wv, err) ||
            bind_matrix(f, block_tensor_name(n, cap, l, "attn_output.weight"), c->dim, q_dim, &L->wo, err) ||
            bind_vector(f, block_tensor_name(n, cap, l, "ffn_norm.weight"), c->dim, &L->ffn_norm, err) ||
            bind_matrix(f, block_tensor_name(n, cap, l, "ffn_gate.weight"), c->ffn_dim, c->dim, &L->w_gate, err) ||
            bind_matrix(f, block_tensor_name(n, cap, l, "ffn_up.weight"), c->ffn_dim, c->dim, &L->w_up, err) ||
            bind_matrix(f, block_tensor_name(n, cap, l, "ffn_down.weight"), c->dim, c->ffn_dim, &L->w_down, err))
            return -1;
    }
    if (bind_vector(f, "output_norm.weight", c->dim, &w->output_norm, err)) return -1;
    c->tied_output = gguf_find_tensor(f, "output.weight") == NULL;
    if (c->tied_output) w->output = w->token_embd;
    else if (bind_matrix(f, "output.weight", c->vocab_size, c->dim, &w->output, err)) return -1;
    m->weight_bytes = sum_weight_bytes(m);
    return 0;
}

/* ---- state -------------------------------------------------------------------------------------- */

/* One thread's attention work area: the scores of a group (ops_attn_kv_*_work_bytes; the F32 cache's
 * loops use group rows of n_ctx floats, no more than that), and for a Q8_0 cache then the group's
 * query heads quantized (hd / 32 blocks of 34 bytes each). */
static int64_t att_query_offset(int64_t n_ctx, int64_t group, int64_t hd) {  /* the Q8_0 query's place */
    return (ops_attn_kv_q8_work_bytes(n_ctx, group, hd) + 63) / 64 * 64;
}

static int64_t att_work_bytes(int kv_type, int64_t n_ctx, int64_t group, int64_t hd) {
    if (kv_type != TYPE_Q8_0) return (ops_attn_kv_work_bytes(n_ctx, group, hd) + 63) / 64 * 64;
    return att_query_offset(n_ctx, group, hd) + (group * (hd / QK) * (int64_t)sizeof(BlockQ8_0) + 63) / 64 * 64;
}

static int alloc_state(Llm *m, BlvError *err) {
    const LlmConfig *c = &m->config;
    LlmState *s = &m->state;
    int64_t T = m->chunk, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int nth = threadpool_size(m->pool);
    size_t fl = sizeof(float);
    s->att_group = c->n_heads / c->n_kv_heads;
    s->att_work_bytes = att_work_bytes(m->kv_type, m->n_ctx, s->att_group, c->head_dim);
    if (!(s->x = blv_malloc((size_t)(T * c->dim) * fl, "activations", err)) ||
        !(s->xb = blv_malloc((size_t)(T * c->dim) * fl, "activations", err)) ||
        !(s->xb2 = blv_malloc((size_t)(T * c->dim) * fl, "activations", err)) ||
        !(s->q = blv_malloc((size_t)(T * q_dim) * fl, "activations", err)) ||
        !(s->k = blv_malloc((size_t)(T * kv_dim) * fl, "activations", err)) ||
        !(s->v = blv_malloc((size_t)(T * kv_dim) * fl, "activations", err)) ||
        !(s->att_out = blv_malloc((size_t)(T * q_dim) * fl, "activations", err)) ||
        !(s->att_scores = blv_malloc((size_t)(nth * s->att_work_bytes), "attention scores", err)) ||
        !(s->hb = blv_malloc((size_t)(T * c->ffn_dim) * fl, "activations", err)) ||
        !(s->hb2 = blv_malloc((size_t)(T * c->ffn_dim) * fl, "activations", err)) ||
        !(s->rope_cos = blv_malloc((size_t)(m->n_ctx * (c->rope_dim / 2)) * fl, "RoPE table", err)) ||
        !(s->rope_sin = blv_malloc((size_t)(m->n_ctx * (c->rope_dim / 2)) * fl, "RoPE table", err)))
        return -1;

    /* matmul scratch: the largest of all the products in a chunk */
    const LlmLayer *L0 = &m->weights.layers[0];
    const Matrix *all[] = {&L0->wq, &L0->wk, &L0->wv, &L0->wo, &L0->w_gate, &L0->w_up, &L0->w_down, &m->weights.output};
    s->scratch_bytes = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        int64_t b = matmul_scratch_bytes(all[i]->type, all[i]->cols, T);
        if (b > s->scratch_bytes) s->scratch_bytes = b;
    }
    for (int64_t l = 1; l < c->n_layers; l++) {  /* types may differ per layer */
        Matrix *mats[LAYER_MATRICES];
        layer_matrices(&m->weights.layers[l], mats);
        for (int i = 0; i < LAYER_MATRICES; i++) {
            int64_t b = matmul_scratch_bytes(mats[i]->type, mats[i]->cols, T);
            if (b > s->scratch_bytes) s->scratch_bytes = b;
        }
    }
    if (!(s->scratch = blv_malloc((size_t)s->scratch_bytes, "matmul scratch", err))) return -1;

    /* the decode task's per-thread areas, each on its own cache lines */
    int64_t widest = c->dim > q_dim ? c->dim : q_dim;
    if (c->ffn_dim > widest) widest = c->ffn_dim;
    s->decode_xb_stride = (c->dim + 15) / 16 * 16;
    s->decode_input_bytes = (matvec_input_bytes(widest) + 63) / 64 * 64;
    if (!(s->decode_xb = blv_malloc_lines((size_t)(nth * s->decode_xb_stride) * fl, "decode activations", err)) ||
        !(s->decode_input = blv_malloc_lines((size_t)(nth * s->decode_input_bytes), "decode activations", err)))
        return -1;

    s->kv_row_bytes = type_row_bytes(m->kv_type, kv_dim);
    s->kv_head_row_bytes = type_row_bytes(m->kv_type, c->head_dim);
    s->kv_positions = (m->n_ctx + OPS_KV_KEYS - 1) / OPS_KV_KEYS * OPS_KV_KEYS;  /* whole key blocks */
    size_t cache_bytes = (size_t)(c->n_layers * c->n_kv_heads * s->kv_positions * s->kv_head_row_bytes);
    if (!(s->key_cache = blv_calloc(1, cache_bytes, "key cache", err)) ||
        !(s->value_cache = blv_calloc(1, cache_bytes, "value cache", err)))
        return -1;

    /* RoPE angles, computed in float as llama2.c and transformers do:
     *   inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)); freqs = pos * inv_freq */
    int64_t half = c->rope_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->rope_dim);
        for (int64_t pos = 0; pos < m->n_ctx; pos++) {
            float angle = (float)pos * inv_freq;
            s->rope_cos[pos * half + i] = cosf(angle);
            s->rope_sin[pos * half + i] = sinf(angle);
        }
    }
    return 0;
}

int llm_init(Llm *m, const GgufFile *f, const LlmOptions *opt, BlvError *err) {
    memset(m, 0, sizeof *m);
    m->path = f->path;
    LlmOptions o = {0};
    if (opt) o = *opt;
    if (read_config(f, &m->config, err) != 0) goto fail;
    if (bind_weights(m, f, err) != 0) goto fail;
    LlmConfig *c = &m->config;
    c->rope_neox = o.rope_neox > 0;
    m->n_ctx = o.n_ctx > 0 ? o.n_ctx : c->context_length;
    if (m->n_ctx > c->context_length) {
        blv_fail(err, "%s: context of %lld tokens requested, but the model was made for at most %lld", f->path,
                 (long long)m->n_ctx, (long long)c->context_length);
        goto fail;
    }
    m->no_repack = o.no_repack;
    m->weights_mapped = f->mapped;
    m->chunk = o.chunk > 0 ? o.chunk : 128;
    if (m->chunk > m->n_ctx) m->chunk = m->n_ctx;
    m->kv_type = o.kv_type >= 0 ? o.kv_type : TYPE_F16;
    if (m->kv_type != TYPE_F32 && m->kv_type != TYPE_F16 && m->kv_type != TYPE_Q8_0) {
        blv_fail(err, "KV cache type %s is not supported (use f32, f16 or q8_0)", type_name(m->kv_type));
        goto fail;
    }
    if (m->kv_type == TYPE_Q8_0 && c->head_dim % QK != 0) {
        blv_fail(err, "%s: a q8_0 KV cache needs a head size that is a multiple of %d; this model's is %lld "
                 "(use --kv f16 or f32)", f->path, QK, (long long)c->head_dim);
        goto fail;
    }
    m->pool = threadpool_create(o.n_threads > 0 ? o.n_threads : 1, err);
    if (!m->pool) goto fail;
    if (alloc_state(m, err) != 0) goto fail;
    return 0;
fail:
    llm_free(m);
    return -1;
}

void llm_free(Llm *m) {
    LlmWeights *w = &m->weights;
    for (int64_t l = 0; w->layers && l < m->config.n_layers; l++) {
        Matrix *mats[LAYER_MATRICES];
        layer_matrices(&w->layers[l], mats);
        free(w->layers[l].attn_norm);
        free(w->layers[l].ffn_norm);
    }
    blv_free_large(w->repacked, (size_t)w->repacked_bytes);
    free(w->layers);
    free(w->embd_norm_w);
    free(w->embd_norm_b);
    free(w->output_norm);
    LlmState *s = &m->state;
    void *bufs[] = {s->x, s->xb, s->xb2, s->q, s->k, s->v, s->att_out, s->att_scores, s->hb, s->hb2,
                    s->rope_cos, s->rope_sin, s->scratch, s->key_cache, s->value_cache, s->decode_xb, s->decode_input};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    threadpool_free(m->pool);
    memset(m, 0, sizeof *m);
}

/* ---- weight layout (llm.h: llm_prepare_weights) ------------------------------------------------ */

/* Replaces a Q4_0 matrix by its Q4_0x16 copy and lets the file's pages of it go, slab by slab of
 * REPACK_SLAB_ROWS rows (a multiple of 16), so that the matrix is not resident twice even for a
 * moment (the output matrix of a 100k vocabulary is 144 MB; measured on the 3B preset: peak RSS
 * 1.541 GB releasing whole matrices, 1.461 GB by slabs, 1.456 GB not repacking). */
enum { REPACK_SLAB_ROWS = 1024 };

/* The bytes a matrix's repacked copy takes in the arena (whole cache lines), 0 if it stays as it is. */
static int64_t repacked_bytes(const Matrix *w) {
    return w->type == TYPE_Q4_0 ? (q4_0x16_bytes(w->rows, w->cols) + 63) / 64 * 64 : 0;
}

/* Repacks w into copy (repacked_bytes(w) bytes) and points w at it. */
static void repack_matrix(Llm *m, Matrix *w, BlockQ4_0x16 *copy) {
    const int64_t row_bytes = type_row_bytes(TYPE_Q4_0, w->cols), n_pairs = (w->cols / QK + 1) / 2;
    for (int64_t r0 = 0; r0 < w->rows; r0 += REPACK_SLAB_ROWS) {
        const int64_t n = w->rows - r0 < REPACK_SLAB_ROWS ? w->rows - r0 : REPACK_SLAB_ROWS;
        const uint8_t *src = (const uint8_t *)w->data + r0 * row_bytes;
        repack_q4_0x16(m->pool, src, n, w->cols, copy + r0 / 16 * n_pairs);
        if (m->weights_mapped) blv_release_mapped_pages(src, n * row_bytes);
    }
    w->data = copy;
    w->type = TYPE_Q4_0X16;
    m->repacked_matrices++;
}

void llm_prepare_weights(Llm *m) {
    if (m->weights_prepared) return;
    m->weights_prepared = 1;
    if (m->no_repack || !quant_has_q4_0x16()) return;
    double t0 = blv_now();
    /* every matrix to repack, in the order the decode reads them (a tied output is token_embd,
     * whose rows are looked up: it stays) */
    LlmWeights *w = &m->weights;
    int64_t n = 0, total = 0;
    Matrix **to_repack = malloc(sizeof *to_repack * (size_t)(m->config.n_layers * LAYER_MATRICES + 1));
    if (!to_repack) return;
    for (int64_t l = 0; l < m->config.n_layers; l++) {
        Matrix *mats[LAYER_MATRICES];
        layer_matrices(&w->layers[l], mats);
        for (int i = 0; i < LAYER_MATRICES; i++) to_repack[n++] = mats[i];
    }
    if (!m->config.tied_output) to_repack[n++] = &w->output;
    for (int64_t i = 0; i < n; i++) total += repacked_bytes(to_repack[i]);
    BlvError ignored;
    w->repacked = total > 0 ? blv_alloc_large((size_t)total, "repacked weights", &ignored) : NULL;
    if (w->repacked) {  /* (without it, not enough memory: the file's layout works too) */
        w->repacked_bytes = total;
        uint8_t *next = w->repacked;
        for (int64_t i = 0; i < n; i++) {
            int64_t bytes = repacked_bytes(to_repack[i]);
            if (bytes > 0) repack_matrix(m, to_repack[i], (BlockQ4_0x16 *)next);
            next += bytes;
        }
    }
    free(to_repack);
    m->weight_bytes = sum_weight_bytes(m);  /* padding to whole 16-row groups can add a little */
    m->repack_seconds = blv_now() - t0;
}

/* ---- the math ----------------------------------------------------------------------------------- */

/* LlamaRMSNorm: hidden_states * torch.rsqrt(variance + eps) * weight, variance = mean(x^2)
 * (the squares summed in double, in 8 partial sums so that the adds do not wait on each other:
 * 2.5 → 1.25 µs per row of 2560, run once per layer and token on the decode's serial path) */
static void rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps) {
    double part[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) part[j] += (double)x[i + j] * x[i + j];
    double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (i = 0; i < n; i++) out[i] = weight[i] * (x[i] * scale);
}

/* nn.LayerNorm(hidden, eps): (x - mean) / sqrt(var + eps) * weight + bias */
static void layernorm(float *out, const float *x, const float *weight, const float *bias, int64_t n, float eps) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    var /= (double)n;
    float inv = (float)(1.0 / sqrt(var + (double)eps));
    for (int64_t i = 0; i < n; i++) out[i] = (float)((double)x[i] - mean) * inv * weight[i] + bias[i];
}

/* Rotates the first rope_dim dims of each head of one token's q or k, at position pos.
 * Adjacent-pair layout (llama.cpp `llama`, Meta's original): pairs (2i, 2i+1).
 * Half-split layout (transformers' rotate_half): pairs (i, i + rope_dim/2). */
static void rope(float *vec, int64_t n_heads, const LlmConfig *c, const float *cos_row, const float *sin_row) {
    int64_t half = c->rope_dim / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float *v = vec + h * c->head_dim;
        for (int64_t i = 0; i < half; i++) {
            int64_t a = c->rope_neox ? i : 2 * i;
            int64_t b = c->rope_neox ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * cos_row[i] - x1 * sin_row[i];
            v[b] = x0 * sin_row[i] + x1 * cos_row[i];
        }
    }
}

static void matmul_m(Llm *m, float *out, const Matrix *w, const float *x, int64_t T) {
    matmul(m->pool, out, w->data, w->type, x, w->cols, w->rows, T, m->state.scratch);
}

/* ---- KV cache access ------------------------------------------------------------------------- */

/* The cache is laid out (layer, kv_head, position, head_dim): the rows one KV head's attention reads
 * are one contiguous stream (the hardware prefetcher follows it; position-major rows would be
 * head_dim-sized pieces a whole KV row apart). An F16 or Q8_0 key cache holds each head's positions
 * in blocks of OPS_KV_KEYS, dimension-major inside a block (ops.h: ops_kv_key_index, ops_kv_q8_*),
 * so that the decode attention's scores keep one key per vector lane, and a Q8_0 value cache holds
 * them in the same blocks with 4 positions' codes together (ops_kv_q8_value_offset), for its integer
 * P·V; the row of `pos` is then the start of its block when pos is a multiple of OPS_KV_KEYS (the
 * only use made of it). */
uint8_t *llm_kv_head_row(const Llm *m, void *cache, int64_t layer, int64_t kv_head, int64_t pos) {
    return (uint8_t *)cache +
           (size_t)(((layer * m->config.n_kv_heads + kv_head) * m->state.kv_positions + pos) * m->state.kv_head_row_bytes);
}

/* Writes KV head h's key k and value v (head_dim floats each) of position pos into the caches. */
static void kv_store_head(Llm *m, int64_t layer, int64_t pos, int64_t h, const float *k, const float *v) {
    int64_t hd = m->config.head_dim;
    if (m->kv_type == TYPE_F16) {  /* into its block: dimension d of the key at ops_kv_key_index */
        uint16_t *keys = (uint16_t *)llm_kv_head_row(m, m->state.key_cache, layer, h, 0);
        for (int64_t d = 0; d < hd; d++) keys[ops_kv_key_index(pos, d, hd)] = fp32_to_fp16(k[d]);
    } else if (m->kv_type == TYPE_Q8_0) {  /* quantized as rows, each block's scale and codes into place */
        uint8_t *keys = llm_kv_head_row(m, m->state.key_cache, layer, h, 0);
        uint8_t *values = llm_kv_head_row(m, m->state.value_cache, layer, h, 0);
        for (int64_t b = 0; b < hd / QK; b++) {
            BlockQ8_0 kb, vb;
            quantize_row(TYPE_Q8_0, k + b * QK, &kb, QK);
            quantize_row(TYPE_Q8_0, v + b * QK, &vb, QK);
            memcpy(keys + ops_kv_q8_scale_offset(pos, b, hd), &kb.d, sizeof kb.d);
            memcpy(values + ops_kv_q8_scale_offset(pos, b, hd), &vb.d, sizeof vb.d);
            for (int i = 0; i < QK; i++) {
                keys[ops_kv_q8_code_offset(pos, b * QK + i, hd)] = (uint8_t)kb.qs[i];
                values[ops_kv_q8_value_offset(pos, b * QK + i, hd)] = (uint8_t)vb.qs[i];
            }
        }
        return;
    } else {
        quantize_row(m->kv_type, k, llm_kv_head_row(m, m->state.key_cache, layer, h, pos), hd);
    }
    quantize_row(m->kv_type, v, llm_kv_head_row(m, m->state.value_cache, layer, h, pos), hd);
}

/* ---- attention ---------------------------------------------------------------------------------- */

/* Work is shared out in units of (token, KV head): the n_heads / n_kv_heads query heads that read
 * one KV head (repeat_kv) go together, so each cached K and V row is fetched from memory once per
 * token and then served from L1 to the whole group. An F16 cache (the default) and a Q8_0 cache are
 * read as they are stored, by the vector kernels of ops.h (ops_attn_kv_f16, ops_attn_kv_q8: the
 * query heads quantized to Q8_0 first, as llama.cpp scores a Q8_0 cache); an F32 cache goes through
 * the plain loops of attention_group. */
typedef struct {
    Llm *m;
    int64_t layer, T, pos0;
    const void *keys, *values;    /* this layer's cache (llm_kv_head_row of KV head 0, position 0) */
} AttentionTask;

/* KV head kv_head's keys or values in the task's layer (base: a->keys or a->values), from position 0. */
static const void *task_head(const AttentionTask *a, const void *base, int64_t kv_head) {
    return (const uint8_t *)base + (size_t)(kv_head * a->m->state.kv_positions * a->m->state.kv_head_row_bytes);
}

/* The query heads [h0, h0 + group) of token t, all reading KV head kv_head, over positions 0..pos
 * (causal):  attn_weights = softmax(query @ key.T * scaling + causal_mask); attn_output = attn_weights @ value
 * work: this thread's area (att_work_bytes). */
static void attention_group(const AttentionTask *a, int64_t t, int64_t kv_head, void *work) {
    Llm *m = a->m;
    const LlmConfig *c = &m->config;
    int64_t hd = c->head_dim, group = c->n_heads / c->n_kv_heads, pos = a->pos0 + t, h0 = kv_head * group;
    const float *q = m->state.q + (t * c->n_heads + h0) * hd;
    float *out = m->state.att_out + (t * c->n_heads + h0) * hd;
    float scale = 1.0f / sqrtf((float)hd);
    const uint8_t *keys = task_head(a, a->keys, kv_head), *values = task_head(a, a->values, kv_head);
    if (m->kv_type == TYPE_F16) {  /* the vector kernel of ops.h (the same steps, with fused multiply-adds) */
        OpsAttnKV kv = {q, (const uint16_t *)keys, (const uint16_t *)values, out, pos + 1, hd, hd, group, scale};
        ops_attn_kv_f16(&kv, work);
        return;
    }
    if (m->kv_type == TYPE_Q8_0) {  /* the query heads quantized after the scores' area */
        BlockQ8_0 *qq = (BlockQ8_0 *)((uint8_t *)work + att_query_offset(m->n_ctx, group, hd));
        for (int64_t g = 0; g < group; g++) quantize_row(TYPE_Q8_0, q + g * hd, qq + g * (hd / QK), hd);
        OpsAttnKVQ8 kv = {(const uint8_t *)qq, keys, values, out, pos + 1, hd, group, scale};
        ops_attn_kv_q8(&kv, work);
        return;
    }
    float *scores = work;  /* group rows of n_ctx */
    const float *kf = (const float *)keys, *vf = (const float *)values;
    for (int64_t s = 0; s <= pos; s++) {
        const float *k = kf + s * hd;
        for (int64_t g = 0; g < group; g++) scores[g * m->n_ctx + s] = vec_dot_f32_f32(hd, k, q + g * hd) * scale;
    }
    float sums[64];  /* group <= 64: checked at load */
    for (int64_t g = 0; g < group; g++) {
        float *sc = scores + g * m->n_ctx, max = -INFINITY, sum = 0.0f;
        for (int64_t s = 0; s <= pos; s++)
            if (sc[s] > max) max = sc[s];
        for (int64_t s = 0; s <= pos; s++) {
            sc[s] = expf(sc[s] - max);
            sum += sc[s];
        }
        sums[g] = sum;
    }
    memset(out, 0, (size_t)(group * hd) * sizeof(float));
    for (int64_t s = 0; s <= pos; s++) {
        const float *v = vf + s * hd;
        for (int64_t g = 0; g < group; g++) {
            float w = scores[g * m->n_ctx + s] / sums[g];
            float *o = out + g * hd;
            for (int64_t i = 0; i < hd; i++) o[i] += w * v[i];
        }
    }
}

/* query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
 * key_states, value_states = past_key_value.update(key_states, value_states, layer_idx)
 * for token t and KV head kv_head: its query heads and its key rotated, then its key and value
 * stored at position pos0 + t. */
static void rope_store_head(const AttentionTask *a, int64_t t, int64_t kv_head) {
    Llm *m = a->m;
    const LlmConfig *c = &m->config;
    LlmState *s = &m->state;
    int64_t hd = c->head_dim, group = c->n_heads / c->n_kv_heads, half = c->rope_dim / 2, pos = a->pos0 + t;
    const float *cr = s->rope_cos + pos * half, *sr = s->rope_sin + pos * half;
    float *q = s->q + (t * c->n_heads + kv_head * group) * hd;
    float *k = s->k + (t * c->n_kv_heads + kv_head) * hd, *v = s->v + (t * c->n_kv_heads + kv_head) * hd;
    rope(q, group, c, cr, sr);
    rope(k, 1, c, cr, sr);
    kv_store_head(m, a->layer, pos, kv_head, k, v);
}

/* The units (token, KV head) are shared out in the same way for the RoPE and store step and for the
 * attention. With one token the thread that stores a head's key and value is the one that reads
 * them next, so both steps run in one task (no wait between: the step is ~6 µs per layer, serial
 * before). With several, token t's attention reads the keys of tokens < t, which another thread may
 * store: all the stores finish first (rope_store_task, then attention_task). */
static void rope_store_task(void *ctx, int ith, int nth) {
    AttentionTask *a = ctx;
    int64_t n_kv_heads = a->m->config.n_kv_heads, start, end;
    split_range(a->T * n_kv_heads, ith, nth, 1, &start, &end);
    for (int64_t u = start; u < end; u++) rope_store_head(a, u / n_kv_heads, u % n_kv_heads);
}

/* The attention of this thread's split_range share of the units (token, KV head), in its own work area. */
static void attend_share(const AttentionTask *a, int ith, int nth) {
    Llm *m = a->m;
    int64_t n_kv_heads = m->config.n_kv_heads, start, end;
    split_range(a->T * n_kv_heads, ith, nth, 1, &start, &end);
    void *work = (uint8_t *)m->state.att_scores + (size_t)ith * (size_t)m->state.att_work_bytes;
    for (int64_t u = start; u < end; u++) attention_group(a, u / n_kv_heads, u % n_kv_heads, work);
}

static void attention_task(void *ctx, int ith, int nth) {
    AttentionTask *a = ctx;
    if (a->T == 1) rope_store_task(ctx, ith, nth);
    attend_share(a, ith, nth);
}

/* RoPE, the cache store and the attention of T tokens at positions pos0.. (state.q, k, v in). */
static void attention(Llm *m, int64_t layer, int64_t T, int64_t pos0) {
    AttentionTask task = {m, layer, T, pos0, llm_kv_head_row(m, m->state.key_cache, layer, 0, 0),
                          llm_kv_head_row(m, m->state.value_cache, layer, 0, 0)};
    if (T > 1) threadpool_run(m->pool, rope_store_task, &task);
    threadpool_run(m->pool, attention_task, &task);
}

/* ---- the attention's arithmetic alone (bench --profile) -------------------------------------------
 * A decode step's attention reads every cached K and V row once, like a product reads its weights,
 * but it does `group` float multiply-adds per element read (16 per vector instruction, where the
 * products' int8 dot products do 64), so it can take longer than its bytes: its arithmetic alone
 * says how much of its time memory can explain. The kernel is timed on the first
 * LLM_ATTENTION_PROBE_KEYS positions of layer 0's KV head 0 (rows that fit in L2 and stay there over
 * repeated calls) on the calling thread, best of ATT_PROBE_TRIES, and scaled to `context`
 * positions, every layer, and the KV heads the busiest thread takes. */
enum { ATT_PROBE_CALLS = 20, ATT_PROBE_TRIES = 5 };

/* The first n query values set to small numbers, so that the timed attention's scores are finite. */
static void set_probe_query(Llm *m, int64_t n) {
    for (int64_t i = 0; i < n; i++) m->state.q[i] = 0.01f * (float)(i % 7);
}

double llm_attention_arithmetic_seconds(Llm *m, int64_t context) {
    const LlmConfig *c = &m->config;
    int64_t n = context < LLM_ATTENTION_PROBE_KEYS ? context : LLM_ATTENTION_PROBE_KEYS;
    if (n > m->n_ctx) n = m->n_ctx;
    if (n < 1) return 0.0;
    AttentionTask task = {m, 0, 1, n - 1, llm_kv_head_row(m, m->state.key_cache, 0, 0, 0),
                          llm_kv_head_row(m, m->state.value_cache, 0, 0, 0)};
    int64_t group = c->n_heads / c->n_kv_heads;
    set_probe_query(m, group * c->head_dim);
    double best = 0.0;
    for (int try = 0; try < ATT_PROBE_TRIES; try++) {
        attention_group(&task, 0, 0, m->state.att_scores);  /* the rows into cache */
        double t0 = blv_now();
        for (int i = 0; i < ATT_PROBE_CALLS; i++) attention_group(&task, 0, 0, m->state.att_scores);
        double t = (blv_now() - t0) / ATT_PROBE_CALLS;
        if (try == 0 || t < best) best = t;
    }
    int nth = threadpool_size(m->pool);
    int64_t heads_per_thread = (c->n_kv_heads + nth - 1) / nth;
    return best / (double)n * (double)context * (double)c->n_layers * (double)heads_per_thread;
}

/* ---- the attention alone over the cache (bench --profile) -------------------------------------------
 * A decode step's attention in every layer over the cache as it stands, each thread taking its
 * split_range share of the KV heads as the decode does, a barrier after each layer, and nothing else
 * in between. Inside the decode the same attention follows a product on each thread, and the
 * difference between the two times is what the products around it cost it; against its
 * arithmetic alone (above) this time says how far its stream and its arithmetic overlap. When the
 * cache is larger than the last-level cache (bluelm-v-3b at 2016 positions: 70 MB with Q8_0, 140 MB
 * with F16) every pass reads it from memory; a smaller one is partly served from cache. */
enum { ATT_ALONE_REPS = 5 };

typedef struct {
    Llm *m;
    int64_t n;  /* positions attended: 0..n - 1 */
} AttentionAloneTask;

static void attention_alone_task(void *ctx, int ith, int nth) {
    const AttentionAloneTask *t = ctx;
    Llm *m = t->m;
    for (int64_t l = 0; l < m->config.n_layers; l++) {  /* attention_task without the RoPE and cache store */
        AttentionTask a = {m, l, 1, t->n - 1, llm_kv_head_row(m, m->state.key_cache, l, 0, 0),
                           llm_kv_head_row(m, m->state.value_cache, l, 0, 0)};
        attend_share(&a, ith, nth);
        threadpool_barrier(m->pool);
    }
}

double llm_attention_alone_seconds(Llm *m, int64_t context) {
    const LlmConfig *c = &m->config;
    int64_t n = context + 1 < m->n_past ? context + 1 : m->n_past;  /* positions written so far only */
    if (n < 1) return 0.0;
    set_probe_query(m, c->n_heads * c->head_dim);
    AttentionAloneTask task = {m, n};
    threadpool_run(m->pool, attention_alone_task, &task);  /* warm-up */
    double t[ATT_ALONE_REPS];
    for (int r = 0; r < ATT_ALONE_REPS; r++) {
        double t0 = blv_now();
        threadpool_run(m->pool, attention_alone_task, &task);
        t[r] = blv_now() - t0;
    }
    return blv_median(t, ATT_ALONE_REPS);
}

/* ---- the per-token steps between the products --------------------------------------------------- */

/* state.xb = rmsnorm(state.x) row by row, first adding state.xb2 into state.x when add_residual:
 *   hidden_states = residual + hidden_states; hidden_states = self.post_attention_layernorm(hidden_states)
 * Rows are shared out among the threads (serial, these steps with RoPE and the cache store took 6%
 * of a 1024-token prefill on bluelm-v-3b); one row runs on the calling thread. */
typedef struct {
    Llm *m;
    const float *weight;  /* (dim) */
    int64_t T;
    int add_residual;
} NormTask;

static void norm_task(void *ctx, int ith, int nth) {
    const NormTask *n = ctx;
    LlmState *s = &n->m->state;
    int64_t dim = n->m->config.dim, start, end;
    split_range(n->T, ith, nth, 1, &start, &end);
    for (int64_t t = start; t < end; t++) {
        float *x = s->x + t * dim;
        if (n->add_residual)
            for (int64_t i = 0; i < dim; i++) x[i] += s->xb2[t * dim + i];
        rmsnorm(s->xb + t * dim, x, n->weight, dim, n->m->config.rms_eps);
    }
}

static void norm_rows(Llm *m, const float *weight, int64_t T, int add_residual) {
    NormTask task = {m, weight, T, add_residual};
    if (T == 1) norm_task(&task, 0, 1);
    else threadpool_run(m->pool, norm_task, &task);
}

/* ---- forward ------------------------------------------------------------------------------------- */

const char *const llm_step_names[LLM_STEPS] = {"norms", "q,k,v", "attention", "wo", "gate,up", "down", "output"};

/* Adds the time since *t to `step` when the steps are timed (Llm.profile), and restarts *t. */
static void step_done(Llm *m, int step, double *t) {
    if (!m->profile) return;
    double now = blv_now();
    m->profile->seconds[step] += now - *t;
    *t = now;
}

/* Runs T tokens whose input embeddings are already in state.x, at positions pos0..pos0+T-1.
 * Writes logits for rows [first_out, T) into logits (row stride vocab) when logits != NULL. */
static void forward_chunk(Llm *m, int64_t T, int64_t pos0, float *logits, int64_t first_out) {
    const LlmConfig *c = &m->config;
    LlmState *s = &m->state;
    int64_t dim = c->dim;
    double t = m->profile ? blv_now() : 0.0;

    for (int64_t l = 0; l < c->n_layers; l++) {
        const LlmLayer *L = &m->weights.layers[l];
        /* hidden_states = self.input_layernorm(hidden_states) */
        norm_rows(m, L->attn_norm, T, 0);
        step_done(m, LLM_STEP_NORM, &t);
        /* query_states = self.q_proj(hidden_states); key_states = ...; value_states = ... */
        MatmulPart qkv[3] = {{s->q, L->wq.data, L->wq.type, L->wq.rows},
                             {s->k, L->wk.data, L->wk.type, L->wk.rows},
                             {s->v, L->wv.data, L->wv.type, L->wv.rows}};
        matmul_shared_input(m->pool, qkv, 3, s->xb, dim, T, s->scratch);
        step_done(m, LLM_STEP_QKV, &t);
        /* RoPE, the KV cache update, then attn_output = attn_weights @ value_states (rope_store_head) */
        attention(m, l, T, pos0);
        step_done(m, LLM_STEP_ATTENTION, &t);
        /* attn_output = self.o_proj(attn_output) */
        matmul_m(m, s->xb2, &L->wo, s->att_out, T);
        step_done(m, LLM_STEP_WO, &t);

        /* hidden_states = residual + hidden_states; hidden_states = self.post_attention_layernorm(hidden_states) */
        norm_rows(m, L->ffn_norm, T, 1);
        step_done(m, LLM_STEP_NORM, &t);
        /* down_proj(act_fn(gate_proj(x)) * up_proj(x)) */
        /* (the products and SiLU(g) * up = g / (1 + exp(-g)) * up, each thread on its own rows) */
        MatmulPart gate = {s->hb, L->w_gate.data, L->w_gate.type, L->w_gate.rows};
        MatmulPart up = {s->hb2, L->w_up.data, L->w_up.type, L->w_up.rows};
        matmul_swiglu(m->pool, gate, up, s->xb, dim, T, s->scratch);
        step_done(m, LLM_STEP_FFN_UP, &t);
        matmul_m(m, s->xb2, &L->w_down, s->hb, T);
        step_done(m, LLM_STEP_FFN_DOWN, &t);
        for (int64_t i = 0; i < T * dim; i++) s->x[i] += s->xb2[i];
        if (m->dump) {
            char stage[32];
            snprintf(stage, sizeof stage, "llm_block_%lld", (long long)l);
            m->dump(m->dump_user, stage, pos0, T, dim, s->x);
        }
        step_done(m, LLM_STEP_NORM, &t);
    }
    if (!logits) return;
    /* hidden_states = self.norm(hidden_states); logits = self.lm_head(hidden_states) */
    int64_t n_out = T - first_out;
    for (int64_t i = 0; i < n_out; i++)
        rmsnorm(s->xb + i * dim, s->x + (first_out + i) * dim, m->weights.output_norm, dim, c->rms_eps);
    /* The output matrix may hold more rows than a chunk's scratch was sized for only in T, never
     * in cols, so the same scratch serves. */
    matmul_m(m, logits, &m->weights.output, s->xb, n_out);
    step_done(m, LLM_STEP_OUTPUT, &t);
}

/* ---- decode: one token's layers in one task ---------------------------------------------------
 * forward_chunk with one token dispatches five tasks per layer, and before four of them the calling
 * thread quantizes the product's input alone while the others wait. When the VM's two cores sit far
 * apart (bench's `thread hand-off`, ~330 ns round trip) each of those hand-offs costs microseconds
 * of idle memory bus. Here the whole token is one task: every thread quantizes each product's input
 * into its own area and computes its rows, and the threads meet at a barrier only where a step
 * needs what the others wrote (four or five per layer). Each thread attends its split_range share
 * of the KV heads; when those split evenly it also computes their q, k and v rows itself
 * (own_heads_qkv), and the rows of every other product are shared out as they run (shared_rows). Each row is
 * computed as forward_chunk computes it with T = 1, operation for operation, whichever thread does
 * it, so the logits are the same bit for bit. */
typedef struct {
    Llm *m;
    int64_t pos;
    float *logits;          /* (vocab) or NULL */
} DecodeTask;

/* A thread's product input: x, prepared (quantized) for the weight type of the last product. */
typedef struct {
    void *area;             /* decode_input_bytes */
    const float *x;
    int64_t n;
    int prepared_type;      /* -1: not yet */
} ThreadInput;

static void set_input(ThreadInput *in, const float *x, int64_t n) {
    in->x = x;
    in->n = n;
    in->prepared_type = -1;
}

/* The input ready for a product with weights of w's type (matmul quantizes with each type's kernels). */
static void prepare_input(ThreadInput *in, const Matrix *w) {
    if (in->prepared_type != w->type) {
        matvec_prepare_input(w->type, in->x, in->n, in->area);
        in->prepared_type = w->type;
    }
}

/* out[r] = W[r] . x for rows [r0, r1), x prepared in `in` for W's type */
static void product_rows(const ThreadInput *in, const Matrix *w, float *out, int64_t r0, int64_t r1) {
    matvec_rows(out, w->data, w->type, w->cols, w->rows, in->x, in->area, r0, r1);
}

/* hidden_states = residual + hidden_states, on rows [r0, r1) */
static void add_rows(float *x, const float *y, int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) x[i] += y[i];
}

/* The decode's products are shared out while they run (threadpool_share_next): a thread that
 * finishes its own rows takes rows from a slower one, in groups of MATVEC_ROW_ALIGN rows, each claim
 * half of what the thread has left down to SHARE_CHUNK_GROUPS (32 rows: 45-125 KB of Q4_0 weights,
 * one or two microseconds, the most a thread waits for the other at the barrier that follows).
 * Against claims of a fixed 4 groups, 2 groups as the smallest claim measured x0.963 per token when
 * the memory read fast, and 4 groups x0.967 (util.c: claim_own). */
enum { SHARE_CHUNK_GROUPS = 2, MAX_SHARED_RANGES = 32 };

/* The row ranges one thread computed of a shared product, so that a second product (up after
 * gate) runs on exactly the same rows and SwiGLU can follow on the same thread. */
typedef struct {
    int n;
    int64_t r0[MAX_SHARED_RANGES], r1[MAX_SHARED_RANGES];
} RowRanges;

static void record_range(RowRanges *done, int64_t r0, int64_t r1) {
    if (done->n > 0 && done->r1[done->n - 1] == r0) done->r1[done->n - 1] = r1;  /* the next chunk of its own */
    else {
        done->r0[done->n] = r0;
        done->r1[done->n] = r1;
        done->n++;
    }
}

/* This thread's claimed rows of out = W x; resid[r] += out[r] on them when resid is not NULL; the
 * ranges kept in `done` when it is not NULL. */
static void shared_rows(Llm *m, ThreadInput *in, const Matrix *w, float *out, float *resid, RowRanges *done, int ith) {
    prepare_input(in, w);
    int64_t groups = (w->rows + MATVEC_ROW_ALIGN - 1) / MATVEC_ROW_ALIGN, g0, g1, rows = 0;
    ShareClaim claim;
    threadpool_share_begin(m->pool, ith, groups, SHARE_CHUNK_GROUPS, !m->static_decode_rows, &claim);
    if (done) done->n = 0;
    while (threadpool_share_next(&claim, &g0, &g1)) {
        int64_t r0 = g0 * MATVEC_ROW_ALIGN, r1 = g1 * MATVEC_ROW_ALIGN < w->rows ? g1 * MATVEC_ROW_ALIGN : w->rows;
        product_rows(in, w, out, r0, r1);
        if (resid) add_rows(resid, out, r0, r1);
        if (done) {
            record_range(done, r0, r1);
            if (done->n == MAX_SHARED_RANGES - 1) claim.balance = 0;  /* room for its own rows only */
        }
        rows += r1 - r0;
    }
    if (m->profile && ith < LLM_PROFILE_THREADS) m->profile->threads[ith].shared_rows += rows;
}

/* query_states, key_states, value_states of this thread's KV heads only (the split_range share that
 * attention_task gives it, every query head that reads them): with the KV heads split evenly among
 * the threads, each thread can go on to its attention without waiting for the others, so the
 * barrier between the two steps goes. The rows are computed as shared_rows computes them, so the
 * logits are the same bit for bit. Measured token by token in one process against the shared q, k,
 * v products and their barrier, with two copies of that in the rotation (depth 2016, 2 threads,
 * bluelm-v-3b): --kv q8_0 x0.976 when the memory read 42-55 GB/s and x0.998 at 55-70 against the
 * first copy, whose twin read x0.995 / x1.008 (90 rounds); F16 x1.003 / x1.003 against x1.008 /
 * x1.014, no gain to speak of (40 rounds). */
static void own_heads_qkv(Llm *m, ThreadInput *in, const LlmLayer *L, int ith, int nth) {
    const LlmConfig *c = &m->config;
    LlmState *s = &m->state;
    int64_t h0, h1, hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    split_range(c->n_kv_heads, ith, nth, 1, &h0, &h1);
    prepare_input(in, &L->wq);
    product_rows(in, &L->wq, s->q, h0 * group * hd, h1 * group * hd);
    prepare_input(in, &L->wk);
    product_rows(in, &L->wk, s->k, h0 * hd, h1 * hd);
    prepare_input(in, &L->wv);
    product_rows(in, &L->wv, s->v, h0 * hd, h1 * hd);
    if (m->profile && ith < LLM_PROFILE_THREADS) m->profile->threads[ith].shared_rows += (h1 - h0) * (group + 2) * hd;
}

/* threadpool_barrier, the wait timed into the profile when the steps are timed. */
static void barrier(Llm *m, int ith) {
    if (!m->profile || ith >= LLM_PROFILE_THREADS) {
        threadpool_barrier(m->pool);
        return;
    }
    double t0 = blv_now();
    threadpool_barrier(m->pool);
    m->profile->threads[ith].wait_seconds += blv_now() - t0;
}

/* step_done on the thread that reports (thread 0); its waits at the barriers count in the step. */
static void lead_step_done(Llm *m, int ith, int step, double *t) {
    if (ith == 0) step_done(m, step, t);
}

static void decode_task(void *ctx, int ith, int nth) {
    const DecodeTask *d = ctx;
    Llm *m = d->m;
    const LlmConfig *c = &m->config;
    LlmState *s = &m->state;
    int64_t dim = c->dim;
    float *xb = s->decode_xb + ith * s->decode_xb_stride;
    ThreadInput in = {(uint8_t *)s->decode_input + ith * s->decode_input_bytes, NULL, 0, -1};
    double t = m->profile && ith == 0 ? blv_now() : 0.0;
    /* each thread the q, k, v rows of its own KV heads when they split evenly (own_heads_qkv) and
     * every row's dimension is a whole number of row groups (hd: a multiple of MATVEC_ROW_ALIGN) */
    const int own_heads = c->n_kv_heads % nth == 0 && c->head_dim % MATVEC_ROW_ALIGN == 0;

    for (int64_t l = 0; l < c->n_layers; l++) {
        const LlmLayer *L = &m->weights.layers[l];
        /* hidden_states = self.input_layernorm(hidden_states)   (every thread the whole row) */
        rmsnorm(xb, s->x, L->attn_norm, dim, c->rms_eps);
        lead_step_done(m, ith, LLM_STEP_NORM, &t);
        /* query_states = self.q_proj(hidden_states); key_states = ...; value_states = ... */
        set_input(&in, xb, dim);
        if (own_heads) own_heads_qkv(m, &in, L, ith, nth);
        else {
            shared_rows(m, &in, &L->wq, s->q, NULL, NULL, ith);
            shared_rows(m, &in, &L->wk, s->k, NULL, NULL, ith);
            shared_rows(m, &in, &L->wv, s->v, NULL, NULL, ith);
            barrier(m, ith);  /* every head's q, k and v */
        }
        lead_step_done(m, ith, LLM_STEP_QKV, &t);
        /* RoPE, the KV cache update and the attention of this thread's KV heads (attention_task) */
        AttentionTask att = {m, l, 1, d->pos, llm_kv_head_row(m, s->key_cache, l, 0, 0),
                             llm_kv_head_row(m, s->value_cache, l, 0, 0)};
        attention_task(&att, ith, nth);
        barrier(m, ith);  /* every head's output in att_out */
        lead_step_done(m, ith, LLM_STEP_ATTENTION, &t);
        /* attn_output = self.o_proj(attn_output); hidden_states = residual + hidden_states */
        set_input(&in, s->att_out, c->n_heads * c->head_dim);
        shared_rows(m, &in, &L->wo, s->xb2, s->x, NULL, ith);
        barrier(m, ith);  /* the whole residual row updated */
        lead_step_done(m, ith, LLM_STEP_WO, &t);
        /* hidden_states = self.post_attention_layernorm(hidden_states) */
        rmsnorm(xb, s->x, L->ffn_norm, dim, c->rms_eps);
        lead_step_done(m, ith, LLM_STEP_NORM, &t);
        /* down_proj(act_fn(gate_proj(x)) * up_proj(x)): this thread's gate rows (its share and what it
         * took), up on the same rows, then SwiGLU on them */
        set_input(&in, xb, dim);
        RowRanges done;
        shared_rows(m, &in, &L->w_gate, s->hb, NULL, &done, ith);
        prepare_input(&in, &L->w_up);
        for (int i = 0; i < done.n; i++) {
            product_rows(&in, &L->w_up, s->hb2, done.r0[i], done.r1[i]);
            ops_swiglu(s->hb + done.r0[i], s->hb2 + done.r0[i], done.r1[i] - done.r0[i]);
        }
        barrier(m, ith);  /* all of SiLU(gate) * up in hb */
        lead_step_done(m, ith, LLM_STEP_FFN_UP, &t);
        set_input(&in, s->hb, c->ffn_dim);
        shared_rows(m, &in, &L->w_down, s->xb2, s->x, NULL, ith);
        barrier(m, ith);  /* the layer's output in x */
        lead_step_done(m, ith, LLM_STEP_FFN_DOWN, &t);
        /* (the others only read x until the next barrier) */
        if (m->dump && ith == 0) {
            char stage[32];
            snprintf(stage, sizeof stage, "llm_block_%lld", (long long)l);
            m->dump(m->dump_user, stage, d->pos, 1, dim, s->x);
        }
        lead_step_done(m, ith, LLM_STEP_NORM, &t);
    }
    if (!d->logits) return;
    /* hidden_states = self.norm(hidden_states); logits = self.lm_head(hidden_states) */
    rmsnorm(xb, s->x, m->weights.output_norm, dim, c->rms_eps);
    set_input(&in, xb, dim);
    shared_rows(m, &in, &m->weights.output, d->logits, NULL, NULL, ith);
    lead_step_done(m, ith, LLM_STEP_OUTPUT, &t);
}

/* One token (its input embedding in state.x) at position pos; logits (vocab) when not NULL. */
static void decode_token(Llm *m, int64_t pos, float *logits) {
    DecodeTask task = {m, pos, logits};
    threadpool_run(m->pool, decode_task, &task);
}

void llm_token_embedding(const Llm *m, int32_t token, float *out) {
    const Matrix *e = &m->weights.token_embd;
    const uint8_t *row = (const uint8_t *)e->data + (size_t)token * (size_t)type_row_bytes(e->type, e->cols);
    dequantize_row(e->type, row, out, e->cols);
}

static int check_room(const Llm *m, int64_t n, BlvError *err) {
    if (n < 0) return blv_fail(err, "negative token count");
    if (m->n_past + n > m->n_ctx)
        return blv_fail(err, "%lld tokens do not fit in the context: %lld already used of %lld", (long long)n,
                        (long long)m->n_past, (long long)m->n_ctx);
    return 0;
}

/* Shared driver: `fill` writes the input embeddings of tokens [i0, i0+T) into state.x. */
typedef void (*FillFn)(Llm *m, const void *src, int64_t i0, int64_t T);

static int eval_chunks(Llm *m, const void *src, int64_t n, FillFn fill, float *logits, int logits_all, BlvError *err) {
    if (check_room(m, n, err) != 0) return -1;
    llm_prepare_weights(m);
    int64_t vocab = m->config.vocab_size;
    for (int64_t i0 = 0; i0 < n; i0 += m->chunk) {
        int64_t T = n - i0 < m->chunk ? n - i0 : m->chunk;
        fill(m, src, i0, T);
        int last_chunk = i0 + T == n;
        if (T == 1 && !m->split_decode) {
            float *out = logits && logits_all ? logits + i0 * vocab : logits && last_chunk ? logits : NULL;
            decode_token(m, m->n_past, out);
        } else if (logits && logits_all) forward_chunk(m, T, m->n_past, logits + i0 * vocab, 0);
        else if (logits && last_chunk) forward_chunk(m, T, m->n_past, logits, T - 1);
        else forward_chunk(m, T, m->n_past, NULL, T);
        m->n_past += T;
    }
    return 0;
}

void llm_input_embedding(const Llm *m, int32_t token, float *out) {
    const LlmConfig *c = &m->config;
    llm_token_embedding(m, token, out);
    /* BlueLM: inputs_embeds = self.embed_layer_norm(inputs_embeds) when use_stable_embedding */
    if (c->has_embd_norm) layernorm(out, out, m->weights.embd_norm_w, m->weights.embd_norm_b, c->dim, c->rms_eps);
}

static void fill_tokens(Llm *m, const void *src, int64_t i0, int64_t T) {
    const int32_t *tokens = (const int32_t *)src + i0;
    for (int64_t t = 0; t < T; t++) llm_input_embedding(m, tokens[t], m->state.x + t * m->config.dim);
}

static void fill_embeds(Llm *m, const void *src, int64_t i0, int64_t T) {
    int64_t dim = m->config.dim;
    memcpy(m->state.x, (const float *)src + i0 * dim, (size_t)(T * dim) * sizeof(float));
}

int llm_eval_tokens(Llm *m, const int32_t *tokens, int64_t n, float *logits, int logits_all, BlvError *err) {
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->config.vocab_size)
            return blv_fail(err, "token id %d at input position %lld is outside the vocabulary (0..%lld)", tokens[i],
                            (long long)i, (long long)m->config.vocab_size - 1);
    return eval_chunks(m, tokens, n, fill_tokens, logits, logits_all, err);
}

int llm_eval_embeds(Llm *m, const float *embeds, int64_t n, float *logits, int logits_all, BlvError *err) {
    return eval_chunks(m, embeds, n, fill_embeds, logits, logits_all, err);
}

void llm_rewind(Llm *m, int64_t n_keep) {
    if (n_keep < m->n_past) m->n_past = n_keep < 0 ? 0 : n_keep;
}
