/* convert.c — writing model files.
 *
 * 1. llama2.c checkpoints → GGUF (`llama` architecture, llama.cpp tensor names).
 *    llama2.c's export.py stores wq/wk in Meta's original layout (it un-permutes Hugging Face's
 *    weights with permute_reverse) and run.c rotates adjacent pairs (i, i+1). That is exactly the
 *    layout llama.cpp's `llama` architecture expects (GGML_ROPE_TYPE_NORMAL), so the matrices are
 *    copied without any row permutation.
 * 2. Random-weight presets (DESIGN.md §Presets) for tests and benchmarks. */
#include "convert.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "tokenizer.h"

/* ---- a read-only file mapping ----------------------------------------------------------------- */

typedef struct {
    const uint8_t *data;
    uint64_t size;
} Mapped;

static int map_file(const char *path, Mapped *m, BlvError *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return blv_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return blv_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    m->size = (uint64_t)st.st_size;
    if (m->size == 0) {
        close(fd);
        return blv_fail(err, "%s: file is empty", path);
    }
    void *p = mmap(NULL, (size_t)m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return blv_fail(err, "%s: mmap of %llu bytes failed: %s", path, (unsigned long long)m->size, strerror(errno));
    m->data = p;
    return 0;
}

static void unmap_file(Mapped *m) {
    if (m->data) munmap((void *)m->data, (size_t)m->size);
    m->data = NULL;
}

static int32_t read_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- llama2.c tokenizer ------------------------------------------------------------------------- */

typedef struct {
    int32_t n;
    char **pieces;      /* (n) GGUF pieces: spaces as U+2581, <s>/</s> for BOS/EOS */
    float *scores;      /* (n) */
    int32_t *types;     /* (n) TOKEN_TYPE_* */
} Vocab;

static void vocab_free(Vocab *v) {
    if (v->pieces)
        for (int32_t i = 0; i < v->n; i++) free(v->pieces[i]);
    free(v->pieces);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof *v);
}

static int is_byte_piece(const char *s) {
    return strlen(s) == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>';
}

/* llama2.c's tokenizer.py wrote each piece with '▁' replaced by ' ' and BOS/EOS as "\n<s>\n" and
 * "\n</s>\n"; undo both so the GGUF holds SentencePiece's own pieces. */
static char *gguf_piece_from_llama2c(const uint8_t *bytes, int32_t len) {
    char *out = malloc((size_t)len * 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (int32_t i = 0; i < len; i++) {
        if (bytes[i] == ' ') {
            memcpy(out + o, "\xE2\x96\x81", 3);
            o += 3;
        } else {
            out[o++] = (char)bytes[i];
        }
    }
    out[o] = 0;
    if (strcmp(out, "\n<s>\n") == 0) strcpy(out, "<s>");
    if (strcmp(out, "\n</s>\n") == 0) strcpy(out, "</s>");
    return out;
}

static int load_llama2c_vocab(const char *path, int32_t n_vocab, Vocab *v, BlvError *err) {
    memset(v, 0, sizeof *v);
    char *data;
    size_t size;
    if (blv_read_file(path, &data, &size, err) != 0) return -1;
    const uint8_t *p = (const uint8_t *)data, *end = p + size;
    if (size < 4) {
        free(data);
        return blv_fail(err, "%s: too short for a llama2.c tokenizer (no max_token_length)", path);
    }
    p += 4;  /* max_token_length: not needed */
    v->n = n_vocab;
    v->pieces = calloc((size_t)n_vocab, sizeof(char *));
    v->scores = calloc((size_t)n_vocab, sizeof(float));
    v->types = calloc((size_t)n_vocab, sizeof(int32_t));
    if (!v->pieces || !v->scores || !v->types) {
        free(data);
        vocab_free(v);
        return blv_fail(err, "%s: out of memory", path);
    }
    for (int32_t i = 0; i < n_vocab; i++) {
        if (end - p < 8) {
            free(data);
            vocab_free(v);
            return blv_fail(err, "%s: ends at token %d, but the checkpoint's vocabulary has %d tokens", path, i, n_vocab);
        }
        memcpy(&v->scores[i], p, 4);
        int32_t len = read_i32(p + 4);
        p += 8;
        if (len < 0 || len > end - p) {
            free(data);
            vocab_free(v);
            return blv_fail(err, "%s: token %d has length %d, past the end of the file", path, i, len);
        }
        v->pieces[i] = gguf_piece_from_llama2c(p, len);
        p += len;
        if (!v->pieces[i]) {
            free(data);
            vocab_free(v);
            return blv_fail(err, "%s: out of memory", path);
        }
        v->types[i] = i == 0 ? TOKEN_TYPE_UNKNOWN
                    : (i == 1 || i == 2) ? TOKEN_TYPE_CONTROL
                    : is_byte_piece(v->pieces[i]) ? TOKEN_TYPE_BYTE : TOKEN_TYPE_NORMAL;
    }
    free(data);
    return 0;
}

/* The chat template's markers (DESIGN.md): the last four ids of a generated vocabulary, as
 * user-defined tokens, so a template tokenizes the way it would with BlueLM's vocabulary. */
static const char *template_tokens[4] = {"[|Human|]:", "[|AI|]:", "<im_start>", "<im_end>"};

/* A placeholder vocabulary for random-weight models: <unk>, <s>, </s>, 256 byte tokens, "▁w<N>"
 * pieces, and the four template markers last, so that any text encodes (by bytes) and any id
 * decodes. */
static int synth_vocab(int32_t n_vocab, Vocab *v, BlvError *err) {
    memset(v, 0, sizeof *v);
    if (n_vocab < 263) return blv_fail(err, "a generated vocabulary needs at least 263 tokens, %d asked", n_vocab);
    v->n = n_vocab;
    v->pieces = calloc((size_t)n_vocab, sizeof(char *));
    v->scores = calloc((size_t)n_vocab, sizeof(float));
    v->types = calloc((size_t)n_vocab, sizeof(int32_t));
    if (!v->pieces || !v->scores || !v->types) {
        vocab_free(v);
        return blv_fail(err, "out of memory for a %d-token vocabulary", n_vocab);
    }
    for (int32_t i = 0; i < n_vocab; i++) {
        char buf[32];
        if (i == 0) snprintf(buf, sizeof buf, "<unk>");
        else if (i == 1) snprintf(buf, sizeof buf, "<s>");
        else if (i == 2) snprintf(buf, sizeof buf, "</s>");
        else if (i < 259) snprintf(buf, sizeof buf, "<0x%02X>", i - 3);
        else if (i >= n_vocab - 4) snprintf(buf, sizeof buf, "%s", template_tokens[i - (n_vocab - 4)]);
        else snprintf(buf, sizeof buf, "\xE2\x96\x81w%d", i);
        v->pieces[i] = strdup(buf);
        if (!v->pieces[i]) {
            vocab_free(v);
            return blv_fail(err, "out of memory for a %d-token vocabulary", n_vocab);
        }
        v->types[i] = i == 0 ? TOKEN_TYPE_UNKNOWN : i < 3 ? TOKEN_TYPE_CONTROL : i < 259 ? TOKEN_TYPE_BYTE
                    : i >= n_vocab - 4 ? TOKEN_TYPE_USER_DEFINED : TOKEN_TYPE_NORMAL;
        v->scores[i] = i < 259 ? 0.0f : -(float)i;
    }
    return 0;
}

/* ---- the model description shared by both writers ---------------------------------------------- */

typedef struct {
    int64_t dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, context_length;
    float rope_theta, rms_eps;
    int embd_norm, tied;
    const char *name, *description;
} ModelShape;

/* ggml's general.file_type ("mostly" type) for a weight type. */
static uint32_t file_type_of(int type) {
    switch (type) {
    case TYPE_F32: return 0;
    case TYPE_F16: return 1;
    case TYPE_Q4_0: return 2;
    case TYPE_Q8_0: return 7;
    case TYPE_BF16: return 32;
    default: return 0;
    }
}

static int set_model_keys(GgufWriter *w, const ModelShape *s, int type, const Vocab *v) {
    int rc = 0;
    rc |= gguf_set_string(w, "general.architecture", "llama");
    rc |= gguf_set_string(w, "general.name", s->name);
    if (s->description) rc |= gguf_set_string(w, "general.description", s->description);
    rc |= gguf_set_u32(w, "general.file_type", file_type_of(type));
    if (type == TYPE_Q4_0 || type == TYPE_Q8_0) rc |= gguf_set_u32(w, "general.quantization_version", 2);
    rc |= gguf_set_u32(w, "llama.context_length", (uint32_t)s->context_length);
    rc |= gguf_set_u32(w, "llama.embedding_length", (uint32_t)s->dim);
    rc |= gguf_set_u32(w, "llama.block_count", (uint32_t)s->n_layers);
    rc |= gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)s->ffn_dim);
    rc |= gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)(s->dim / s->n_heads));
    rc |= gguf_set_f32(w, "llama.rope.freq_base", s->rope_theta);
    rc |= gguf_set_u32(w, "llama.attention.head_count", (uint32_t)s->n_heads);
    rc |= gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)s->n_kv_heads);
    rc |= gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", s->rms_eps);
    rc |= gguf_set_u32(w, "llama.vocab_size", (uint32_t)s->vocab_size);

    rc |= gguf_set_string(w, "tokenizer.ggml.model", "llama");
    rc |= gguf_set_string_array(w, "tokenizer.ggml.tokens", (const char *const *)v->pieces, NULL, (uint64_t)v->n);
    rc |= gguf_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, v->scores, (uint64_t)v->n);
    rc |= gguf_set_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->types, (uint64_t)v->n);
    rc |= gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    rc |= gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    rc |= gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    rc |= gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    rc |= gguf_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
    rc |= gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", 1);
    return rc ? -1 : 0;
}

/* One tensor to write: its GGUF name, shape (rows × cols; rows == 0 for a vector), the stored type,
 * and where its float rows come from. */
typedef struct {
    char name[64];
    int64_t rows, cols;     /* rows == 0: a vector of cols elements */
    int type;
    const float *src;       /* llama2.c: rows*cols floats in the checkpoint; NULL: generated */
    float fill;             /* generated vectors: constant value; generated matrices: std-dev */
} TensorPlan;

/* Matrices take the requested type; a row length that quantized blocks cannot hold falls back to
 * F16 (llama.cpp's quantizer also falls back for such tensors). Vectors stay F32. */
static int storage_type(int requested, int64_t rows, int64_t cols) {
    if (rows == 0) return TYPE_F32;
    if (type_row_bytes(requested, cols) < 0) return TYPE_F16;
    return requested;
}

static void plan_add(TensorPlan *plan, int *n, const char *name, int64_t rows, int64_t cols, int type,
                     const float *src, float fill) {
    TensorPlan *t = &plan[(*n)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->type = storage_type(type, rows, cols);
    t->src = src;
    t->fill = fill;
}

static int declare_tensors(GgufWriter *w, const TensorPlan *plan, int n, BlvError *err) {
    for (int i = 0; i < n; i++) {
        int64_t ne[2] = {plan[i].cols, plan[i].rows};
        if (gguf_add_tensor(w, plan[i].name, (uint32_t)plan[i].type, plan[i].rows ? 2 : 1, ne) != 0)
            return blv_fail(err, "%s", gguf_writer_error(w));
    }
    return 0;
}

/* xorshift64* + Box-Muller: fast, deterministic normal samples for random weights. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static float rng_normal(uint64_t *s) {
    double u1 = ((rng_next(s) >> 11) + 1) * (1.0 / 9007199254740993.0);
    double u2 = (rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Produces a tensor's bytes (from the checkpoint or generated), in row blocks, and writes them. */
static int write_tensor(GgufWriter *w, const TensorPlan *t, uint64_t *rng, BlvError *err) {
    int64_t rows = t->rows ? t->rows : 1;
    int64_t row_bytes = type_row_bytes(t->type, t->cols);
    uint8_t *bytes = blv_malloc((size_t)(rows * row_bytes), t->name, err);
    float *tmp = blv_malloc((size_t)t->cols * sizeof(float), t->name, err);
    if (!bytes || !tmp) {
        free(bytes);
        free(tmp);
        return -1;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *row = t->src ? t->src + r * t->cols : tmp;
        if (!t->src) {
            for (int64_t c = 0; c < t->cols; c++) tmp[c] = t->rows ? t->fill * rng_normal(rng) : t->fill;
        }
        quantize_row(t->type, row, bytes + r * row_bytes, t->cols);
    }
    int rc = gguf_writer_put_tensor(w, bytes, (uint64_t)(rows * row_bytes), err);
    free(bytes);
    free(tmp);
    return rc;
}

static int write_all(GgufWriter *w, const char *out, const TensorPlan *plan, int n, uint64_t seed, int progress,
                     BlvError *err) {
    if (declare_tensors(w, plan, n, err) != 0 || gguf_writer_begin(w, out, err) != 0) return -1;
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    if (!rng) rng = 1;
    double t0 = blv_now();
    int tty = isatty(2), last_decile = -1;
    for (int i = 0; i < n; i++) {
        /* on a terminal, one line rewritten per tensor; in a log, a line per 10% */
        int decile = (10 * (i + 1)) / n;
        if (progress && (tty || decile != last_decile)) {
            fprintf(stderr, "%s[%3d/%3d] %-28s %-5s %6.1fs%s", tty ? "\r" : "", i + 1, n, plan[i].name,
                    type_name(plan[i].type), blv_now() - t0, tty ? "" : "\n");
            fflush(stderr);
            last_decile = decile;
        }
        if (write_tensor(w, &plan[i], &rng, err) != 0) return -1;
    }
    if (progress && tty) fprintf(stderr, "\n");
    return gguf_writer_finish(w, err);
}

/* The tensor list of a llama model, in llama.cpp's order. `src` gives the checkpoint arrays
 * (NULL for a generated model). */
typedef struct {
    const float *token_embd, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
} Llama2cArrays;

static TensorPlan *plan_llama(const ModelShape *s, int type, const Llama2cArrays *a, int *n_out, BlvError *err) {
    int max = 4 + (int)s->n_layers * 9 + 2;
    TensorPlan *plan = blv_calloc((size_t)max, sizeof *plan, "tensor plan", err);
    if (!plan) return NULL;
    int n = 0;
    int64_t D = s->dim, H = s->ffn_dim, hs = s->dim / s->n_heads, KV = s->n_kv_heads * hs, L;
    const float std = 0.02f;
    plan_add(plan, &n, "token_embd.weight", s->vocab_size, D, type, a ? a->token_embd : NULL, std);
    if (s->embd_norm) {
        plan_add(plan, &n, "token_embd_norm.weight", 0, D, type, NULL, 1.0f);
        plan_add(plan, &n, "token_embd_norm.bias", 0, D, type, NULL, 0.0f);
    }
    for (L = 0; L < s->n_layers; L++) {
        char name[64];
#define OFF(ptr, size) ((ptr) ? (ptr) + L * (size) : NULL)
        snprintf(name, sizeof name, "blk.%lld.attn_norm.weight", (long long)L);
        plan_add(plan, &n, name, 0, D, type, a ? OFF(a->rms_att, D) : NULL, 1.0f);
        snprintf(name, sizeof name, "blk.%lld.attn_q.weight", (long long)L);
        plan_add(plan, &n, name, D, D, type, a ? OFF(a->wq, D * D) : NULL, std);
        snprintf(name, sizeof name, "blk.%lld.attn_k.weight", (long long)L);
        plan_add(plan, &n, name, KV, D, type, a ? OFF(a->wk, KV * D) : NULL, std);
        snprintf(name, sizeof name, "blk.%lld.attn_v.weight", (long long)L);
        plan_add(plan, &n, name, KV, D, type, a ? OFF(a->wv, KV * D) : NULL, std);
        snprintf(name, sizeof name, "blk.%lld.attn_output.weight", (long long)L);
        plan_add(plan, &n, name, D, D, type, a ? OFF(a->wo, D * D) : NULL, std);
        snprintf(name, sizeof name, "blk.%lld.ffn_norm.weight", (long long)L);
        plan_add(plan, &n, name, 0, D, type, a ? OFF(a->rms_ffn, D) : NULL, 1.0f);
        snprintf(name, sizeof name, "blk.%lld.ffn_gate.weight", (long long)L);
        plan_add(plan, &n, name, H, D, type, a ? OFF(a->w1, H * D) : NULL, std);
        snprintf(name, sizeof name, "blk.%lld.ffn_down.weight", (long long)L);
        plan_add(plan, &n, name, D, H, type, a ? OFF(a->w2, D * H) : NULL, std);
        snprintf(name, sizeof name, "blk.%lld.ffn_up.weight", (long long)L);
        plan_add(plan, &n, name, H, D, type, a ? OFF(a->w3, H * D) : NULL, std);
#undef OFF
    }
    plan_add(plan, &n, "output_norm.weight", 0, D, type, a ? a->rms_final : NULL, 1.0f);
    if (!s->tied) plan_add(plan, &n, "output.weight", s->vocab_size, D, type, a ? a->wcls : NULL, std);
    *n_out = n;
    return plan;
}

/* ---- llama2.c checkpoints --------------------------------------------------------------------- */

/* Reads the header; sets *weights to the first weight and *v1 for the "ak42" export format.
 * Legacy: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), a negative
 * vocab_size meaning a separate classifier. Version 1: u32 magic 0x616b3432, i32 version, the same
 * 7 int32, u8 shared_classifier, padded to 256 bytes. */
static int read_llama2c_header(const char *path, const Mapped *f, ModelShape *s, int *v1, uint64_t *weights,
                               BlvError *err) {
    if (f->size < 28) return blv_fail(err, "%s: too short for a llama2.c checkpoint header", path);
    uint32_t magic;
    memcpy(&magic, f->data, 4);
    int32_t h[7];
    int shared;
    if (magic == 0x616b3432u) {
        int32_t version = read_i32(f->data + 4);
        if (version != 1)
            return blv_fail(err, "%s: llama2.c export version %d is not supported (only the fp32 formats: legacy and "
                            "version 1)", path, version);
        if (f->size < 256) return blv_fail(err, "%s: too short for a llama2.c version-1 header", path);
        for (int i = 0; i < 7; i++) h[i] = read_i32(f->data + 8 + 4 * i);
        shared = f->data[36] != 0;
        *v1 = 1;
        *weights = 256;
    } else {
        for (int i = 0; i < 7; i++) h[i] = read_i32(f->data + 4 * i);
        shared = h[5] > 0;
        if (h[5] < 0) h[5] = -h[5];
        *v1 = 0;
        *weights = 28;
    }
    const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++)
        if (h[i] <= 0 || h[i] > (1 << 24))
            return blv_fail(err, "%s: header field %s = %d is not plausible (is this a llama2.c checkpoint?)", path,
                            names[i], h[i]);
    if (h[0] % h[3] != 0 || h[3] % h[4] != 0)
        return blv_fail(err, "%s: dim %d, n_heads %d, n_kv_heads %d are inconsistent", path, h[0], h[3], h[4]);
    s->dim = h[0];
    s->ffn_dim = h[1];
    s->n_layers = h[2];
    s->n_heads = h[3];
    s->n_kv_heads = h[4];
    s->vocab_size = h[5];
    s->context_length = h[6];
    s->tied = shared;
    s->rope_theta = 10000.0f;
    s->rms_eps = 1e-5f;  /* llama2.c run.c: ss += 1e-5f */
    s->embd_norm = 0;
    return 0;
}

/* Lays the weight arrays over the checkpoint, checking that every array lies inside the file. */
static int locate_llama2c_arrays(const char *path, const Mapped *f, const ModelShape *s, int v1, uint64_t start,
                                 Llama2cArrays *a, BlvError *err) {
    uint64_t D = (uint64_t)s->dim, H = (uint64_t)s->ffn_dim, L = (uint64_t)s->n_layers, V = (uint64_t)s->vocab_size;
    uint64_t hs = D / (uint64_t)s->n_heads, KV = (uint64_t)s->n_kv_heads * hs, S = (uint64_t)s->context_length;
    const float *base = (const float *)(const void *)(f->data + start);
    uint64_t avail = (f->size - start) / 4, pos = 0;
    uint64_t need;
#define TAKE(field, count) (a->field = base + pos, pos += (count))
    if (v1) {
        /* export.py version1_export: norms first, then the embedding, then the matrices by kind */
        TAKE(rms_att, L * D);
        TAKE(rms_ffn, L * D);
        TAKE(rms_final, D);
        TAKE(token_embd, V * D);
        TAKE(wq, L * D * D);
        TAKE(wk, L * KV * D);
        TAKE(wv, L * KV * D);
        TAKE(wo, L * D * D);
        TAKE(w1, L * H * D);
        TAKE(w2, L * D * H);
        TAKE(w3, L * H * D);
    } else {
        /* run.c memory_map_weights */
        TAKE(token_embd, V * D);
        TAKE(rms_att, L * D);
        TAKE(wq, L * D * D);
        TAKE(wk, L * KV * D);
        TAKE(wv, L * KV * D);
        TAKE(wo, L * D * D);
        TAKE(rms_ffn, L * D);
        TAKE(w1, L * H * D);
        TAKE(w2, L * D * H);
        TAKE(w3, L * H * D);
        TAKE(rms_final, D);
        pos += S * hs;  /* freq_cis_real and freq_cis_imag: recomputed, not stored in GGUF */
    }
    if (s->tied) a->wcls = a->token_embd;
    else TAKE(wcls, V * D);
#undef TAKE
    need = pos;
    if (need > avail)
        return blv_fail(err, "%s: the header describes %llu floats of weights but the file holds only %llu", path,
                        (unsigned long long)need, (unsigned long long)avail);
    return 0;
}

int convert_llama2c(const char *checkpoint, const char *tokenizer, const char *out, int type, int progress,
                    BlvError *err) {
    if (type != TYPE_F32 && type != TYPE_F16 && type != TYPE_Q8_0 && type != TYPE_Q4_0 && type != TYPE_BF16)
        return blv_fail(err, "unsupported output type %s (use f32, f16, bf16, q8_0 or q4_0)", type_name(type));
    Mapped f;
    if (map_file(checkpoint, &f, err) != 0) return -1;
    ModelShape s = {0};
    int v1 = 0, rc = -1;
    uint64_t start = 0;
    Llama2cArrays a = {0};
    Vocab vocab = {0};
    TensorPlan *plan = NULL;
    GgufWriter *w = NULL;
    int n_plan = 0;
    const char *slash = strrchr(checkpoint, '/');
    s.name = slash ? slash + 1 : checkpoint;
    s.description = "converted from a llama2.c checkpoint by bluelmv";
    if (read_llama2c_header(checkpoint, &f, &s, &v1, &start, err) != 0) goto done;
    if (locate_llama2c_arrays(checkpoint, &f, &s, v1, start, &a, err) != 0) goto done;
    if (load_llama2c_vocab(tokenizer, (int32_t)s.vocab_size, &vocab, err) != 0) goto done;
    if (progress)
        fprintf(stderr, "%s: llama2.c %s checkpoint: dim %lld, %lld layers, %lld heads (%lld kv), ffn %lld, vocab %lld, "
                "context %lld, %s classifier\n", checkpoint, v1 ? "version-1" : "legacy", (long long)s.dim,
                (long long)s.n_layers, (long long)s.n_heads, (long long)s.n_kv_heads, (long long)s.ffn_dim,
                (long long)s.vocab_size, (long long)s.context_length, s.tied ? "shared" : "separate");
    if (!(plan = plan_llama(&s, type, &a, &n_plan, err))) goto done;
    if (!(w = gguf_writer_new(err))) goto done;
    if (set_model_keys(w, &s, type, &vocab) != 0) {
        blv_fail(err, "%s: %s", out, gguf_writer_error(w));
        goto done;
    }
    rc = write_all(w, out, plan, n_plan, 0, progress, err);
done:
    gguf_writer_free(w);
    free(plan);
    vocab_free(&vocab);
    unmap_file(&f);
    return rc;
}

/* ---- random-weight presets ------------------------------------------------------------------- */

static const LlmPreset presets[] = {
    {"tiny", "tiny: random weights, untrained (for tests)", 64, 2, 4, 2, 172, 512, 2048, 10000.0f, 1e-5f, 0, 0},
    {"bluelm-v-3b",
     "bluelm-v-3b: ILLUSTRATIVE shape of the stated 2.7B size with RANDOM weights (BlueLM-3B's real configuration "
     "is unpublished); for speed and memory measurements only",
     2560, 32, 20, 4, 6912, 100096, 4096, 10000.0f, 1e-6f, 1, 0},
};

const LlmPreset *llm_preset_find(const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].name, name) == 0) return &presets[i];
    return NULL;
}

int generate_llm_preset(const LlmPreset *p, uint64_t seed, int type, const char *out, int progress, BlvError *err) {
    ModelShape s = {p->dim, p->n_layers, p->n_heads, p->n_kv_heads, p->ffn_dim, p->vocab_size, p->context_length,
                    p->rope_theta, p->rms_eps, p->embd_norm, p->tied, p->name, p->label};
    Vocab vocab;
    if (synth_vocab((int32_t)p->vocab_size, &vocab, err) != 0) return -1;
    int n_plan = 0, rc = -1;
    TensorPlan *plan = plan_llama(&s, type, NULL, &n_plan, err);
    GgufWriter *w = plan ? gguf_writer_new(err) : NULL;
    if (w) {
        if (set_model_keys(w, &s, type, &vocab) != 0) blv_fail(err, "%s: %s", out, gguf_writer_error(w));
        else rc = write_all(w, out, plan, n_plan, seed, progress, err);
    }
    gguf_writer_free(w);
    free(plan);
    vocab_free(&vocab);
    return rc;
}
