/* llm.h — the language model: a llama-architecture decoder with grouped-query attention.
 *
 *   x = token_embd[token]                         (BlueLM: x = LayerNorm(x) when token_embd_norm exists)
 *   for each layer:
 *     h = x + Wo · Attention(RoPE(Wq·RMSNorm(x)), RoPE(Wk·RMSNorm(x)), Wv·RMSNorm(x))   causal, GQA
 *     x = h + Wdown · (SiLU(Wgate·RMSNorm(h)) * Wup·RMSNorm(h))
 *   logits = Woutput · RMSNorm(x)                 (Woutput = token_embd when the embedding is tied)
 *
 * Weights are read in place from a GGUF file of llama.cpp's `llama` architecture (anchors.md §b):
 * Q/K rows in llama.cpp's rotary layout, where RoPE rotates adjacent pairs (2i, 2i+1). The
 * half-split layout (pairs (i, i + d/2), Hugging Face's own) is available as an option.
 *
 * Input is processed in chunks of `chunk` tokens (chunked prefill): each chunk's keys and values
 * are appended to the KV cache and its queries attend causally to everything before them. */
#ifndef BLUELMV_LLM_H
#define BLUELMV_LLM_H

#include <stdint.h>
#include "gguf.h"
#include "util.h"

typedef struct {
    int64_t dim;            /* hidden size (llama.embedding_length) */
    int64_t n_layers;       /* llama.block_count */
    int64_t n_heads;        /* llama.attention.head_count */
    int64_t n_kv_heads;     /* llama.attention.head_count_kv (GQA: n_heads is a multiple of it) */
    int64_t head_dim;       /* dim / n_heads */
    int64_t ffn_dim;        /* llama.feed_forward_length */
    int64_t vocab_size;     /* rows of token_embd */
    int64_t context_length; /* llama.context_length (the file's); the KV cache may be smaller */
    int64_t rope_dim;       /* llama.rope.dimension_count (default head_dim): leading dims rotated */
    float rope_theta;       /* llama.rope.freq_base (default 10000) */
    float rms_eps;          /* llama.attention.layer_norm_rms_epsilon (default 1e-5) */
    int rope_neox;          /* 0: adjacent pairs (llama.cpp `llama`), 1: half-split pairs */
    int has_embd_norm;      /* BlueLM "stable embedding": LayerNorm after the embedding lookup */
    int tied_output;        /* no output.weight: logits use token_embd */
} LlmConfig;

/* A weight matrix as stored: `rows` rows of `cols` elements of `type`, row-major. */
typedef struct {
    const void *data;
    int type;               /* quant.h TYPE_*; TYPE_Q4_0X16 once repacked (llm_prepare_weights) */
    int64_t rows, cols;
} Matrix;

typedef struct {
    float *attn_norm;       /* (dim) */
    Matrix wq;              /* (n_heads * head_dim, dim) */
    Matrix wk;              /* (n_kv_heads * head_dim, dim) */
    Matrix wv;              /* (n_kv_heads * head_dim, dim) */
    Matrix wo;              /* (dim, n_heads * head_dim) */
    float *ffn_norm;        /* (dim) */
    Matrix w_gate;          /* (ffn_dim, dim) */
    Matrix w_up;            /* (ffn_dim, dim) */
    Matrix w_down;          /* (dim, ffn_dim) */
} LlmLayer;

typedef struct {
    Matrix token_embd;      /* (vocab_size, dim) */
    float *embd_norm_w;     /* (dim) BlueLM embedding LayerNorm weight, or NULL */
    float *embd_norm_b;     /* (dim) its bias, or NULL */
    LlmLayer *layers;       /* (n_layers) */
    float *output_norm;     /* (dim) */
    Matrix output;          /* (vocab_size, dim); a copy of token_embd when tied */
    void *repacked;         /* one mapping (blv_alloc_large) with every repacked matrix, or NULL */
    int64_t repacked_bytes; /* its size */
} LlmWeights;

typedef struct {
    int64_t n_ctx;          /* KV cache length (0: the file's context_length) */
    int64_t chunk;          /* prefill chunk size (0: 128) */
    int kv_type;            /* TYPE_F32, TYPE_F16 or TYPE_Q8_0 (-1: F16) */
    int n_threads;          /* (0: 1) */
    int rope_neox;          /* -1: from the file (llama: adjacent pairs); 0 or 1 to force */
    int no_repack;          /* 1: compute with Q4_0 weights in the file's layout (see llm_prepare_weights) */
} LlmOptions;

/* Activations, allocated once for the largest chunk (llama2.c's RunState). */
typedef struct {
    float *x;               /* (chunk, dim) residual stream */
    float *xb;              /* (chunk, dim) normed input of a sublayer */
    float *xb2;             /* (chunk, dim) sublayer output before the residual add */
    float *q;               /* (chunk, n_heads * head_dim) */
    float *k;               /* (chunk, n_kv_heads * head_dim) */
    float *v;               /* (chunk, n_kv_heads * head_dim) */
    float *att_out;         /* (chunk, n_heads * head_dim) */
    void *att_scores;       /* n_threads work areas of att_work_bytes: a group's scores (att_group * n_ctx,
                               ops_attn_kv_*_work_bytes), then with a Q8_0 cache the group's query quantized */
    int64_t att_group;      /* n_heads / n_kv_heads: query heads per KV head */
    int64_t att_work_bytes;
    float *hb;              /* (chunk, ffn_dim) gate, then SiLU(gate) * up */
    float *hb2;             /* (chunk, ffn_dim) up */
    float *rope_cos;        /* (n_ctx, rope_dim / 2) */
    float *rope_sin;        /* (n_ctx, rope_dim / 2) */
    void *scratch;          /* quantized activations for matmul */
    int64_t scratch_bytes;
    float *decode_xb;       /* (n_threads, decode_xb_stride) each thread's normed input in the decode task */
    void *decode_input;     /* n_threads areas of decode_input_bytes: each thread's product input, quantized */
    int64_t decode_xb_stride, decode_input_bytes;
    void *key_cache;        /* (n_layers, n_kv_heads, kv_positions, head_dim) of kv_type; F16, Q8_0: keys in blocks (llm_kv_head_row) */
    void *value_cache;      /* (n_layers, n_kv_heads, kv_positions, head_dim) of kv_type */
    int64_t kv_positions;   /* positions per KV head in the caches: n_ctx rounded up to whole key blocks */
    int64_t kv_row_bytes;       /* one position's keys (all KV heads) */
    int64_t kv_head_row_bytes;  /* one position's keys of one KV head */
} LlmState;

/* Stage outputs for golden dumps: "llm_block_K" (the residual stream after layer K, rows
 * pos0 .. pos0 + n_rows - 1 of the context, cols = dim). Called once per chunk and layer. */
typedef void (*LlmDumpFn)(void *user, const char *stage, int64_t pos0, int64_t n_rows, int64_t cols, const float *data);

/* Where a forward pass spends its time, step by step (bench --profile): wall-clock seconds summed
 * over every call made while Llm.profile points at one of these. The steps partition the pass. A
 * decoded token (one task, decode_task) is timed on thread 0: a step then includes its wait at the
 * barrier that ends it, as a dispatched step includes the wait for its slowest thread. */
enum {
    LLM_STEP_NORM,       /* the RMSNorms and residual adds between the products */
    LLM_STEP_QKV,        /* q, k and v projections */
    LLM_STEP_ATTENTION,  /* RoPE, the KV-cache store, attention over the cache */
    LLM_STEP_WO,         /* the attention output projection */
    LLM_STEP_FFN_UP,     /* gate and up projections with SwiGLU */
    LLM_STEP_FFN_DOWN,   /* the down projection */
    LLM_STEP_OUTPUT,     /* the final norm and the output (logits) layer */
    LLM_STEPS
};
extern const char *const llm_step_names[LLM_STEPS];
enum { LLM_PROFILE_THREADS = 16 };  /* threads whose figures are kept (the others' are not) */
typedef struct {
    double seconds[LLM_STEPS];
    /* A decoded token (one task), per thread, each on its own cache line and written by its thread
     * only: the time it spent waiting at the barriers between the steps — how unevenly the threads'
     * shares took (thread 0's waits are also in its steps) — and the rows of the products it
     * computed (its own share and what it took from others; up's rows, gate's again, not counted). */
    struct {
        double wait_seconds;
        int64_t shared_rows;
        double pad[6];
    } threads[LLM_PROFILE_THREADS];
} LlmProfile;

typedef struct {
    LlmConfig config;
    LlmWeights weights;
    LlmState state;
    int64_t n_ctx, chunk;
    int kv_type;
    int64_t n_past;         /* tokens already in the KV cache */
    ThreadPool *pool;
    const char *path;       /* the GGUF file, for messages (not owned) */
    int64_t weight_bytes;   /* bytes of all weight matrices (read once per decoded token) */
    int no_repack;          /* LlmOptions.no_repack */
    int weights_mapped;     /* the weights are a read-only file mapping (their pages can be released) */
    int weights_prepared;   /* llm_prepare_weights has run */
    int64_t repacked_matrices;
    double repack_seconds;  /* what llm_prepare_weights took */
    int split_decode;       /* 1: one token runs as a pool task per step, as a chunk does (tests, A/B);
                               0 (default): all its layers in one task (decode_task in llm.c) */
    int static_decode_rows; /* 1: in that task each thread computes exactly its split_range rows of every
                               product (tests, A/B); 0 (default): a thread that finishes its share
                               early takes rows from the others (threadpool_share_next). Same logits. */
    LlmProfile *profile;    /* NULL: the steps are not timed */
    LlmDumpFn dump;         /* NULL: no dumps */
    void *dump_user;
} Llm;

/* Reads the config and maps the weights of an open `llama` GGUF file (which must stay open while
 * the Llm is used), validates every tensor's presence, shape and type, and allocates the state. */
int llm_init(Llm *m, const GgufFile *f, const LlmOptions *opt, BlvError *err);
void llm_free(Llm *m);

/* Puts the weights in the layout the kernels compute fastest with; the first llm_eval_* call does
 * it if the caller has not. With a kernel family that has Q4_0x16 kernels (quant_has_q4_0x16:
 * AVX-512), every Q4_0 matrix that is only multiplied with (all of a layer's, and an untied
 * output; not token_embd, whose rows are looked up) is repacked into an owned copy, and the file's
 * pages of it are released from the resident set as soon as the copy is made (when they are a file
 * mapping), so the process holds one matrix twice at most. It is not done in llm_init: a pipeline
 * encodes its images first, and the LLM's weights should become resident only after the ViT's are
 * gone. The copies go into one mapping that may use huge pages (blv_alloc_large); if it cannot be
 * allocated, the weights stay as they are. Does nothing with no_repack. */
void llm_prepare_weights(Llm *m);

/* Appends n tokens (or n rows of dim-sized embeddings) at position n_past, in chunks. Writes
 * logits for every input position (logits: n × vocab) if logits_all, else only for the last one
 * (logits: vocab). logits may be NULL to skip the output layer. Fails if the cache would overflow. */
int llm_eval_tokens(Llm *m, const int32_t *tokens, int64_t n, float *logits, int logits_all, BlvError *err);
int llm_eval_embeds(Llm *m, const float *embeds, int64_t n, float *logits, int logits_all, BlvError *err);
/* Forget cached positions from `n_keep` on (0 clears the cache). */
void llm_rewind(Llm *m, int64_t n_keep);

/* Writes the embedding of a token (dequantized row of token_embd, before any embedding norm). */
void llm_token_embedding(const Llm *m, int32_t token, float *out);
/* The input row a text token contributes: its embedding, then BlueLM's embedding LayerNorm when the
 * file has one. llm_eval_tokens(t) equals llm_eval_embeds(llm_input_embedding(t)). Image rows
 * (projector outputs) go to llm_eval_embeds as they are, without that LayerNorm. */
void llm_input_embedding(const Llm *m, int32_t token, float *out);

/* What one decode step's attention over `context` positions costs in arithmetic alone, per token
 * (seconds): the kernel timed with its K and V rows in cache, scaled to every layer and to the KV
 * heads the busiest thread takes. Overwrites the query and attention scratch (between steps only). */
double llm_attention_arithmetic_seconds(Llm *m, int64_t context);
enum { LLM_ATTENTION_PROBE_KEYS = 512 };  /* the positions it times (fewer if the context is shorter) */
/* What one decode step's attention costs alone (seconds per token, median of 5): every layer's, over
 * positions 0..context of the cache (those written so far), on the pool's threads with their
 * decode shares of the KV heads and a barrier per layer, nothing else between. Overwrites the query
 * and attention scratch (between steps only). */
double llm_attention_alone_seconds(Llm *m, int64_t context);

/* Bytes of a weight matrix (what weight_bytes adds up). */
int64_t llm_matrix_bytes(const Matrix *m);
/* Row `pos` of KV head kv_head in layer `layer` of m->state.key_cache or value_cache (cache): the
 * cache is (layer, kv_head, position, head_dim), so positions 0..n of one head are contiguous (an
 * F16 key cache in blocks of OPS_KV_KEYS positions: there pos must start a block). */
uint8_t *llm_kv_head_row(const Llm *m, void *cache, int64_t layer, int64_t kv_head, int64_t pos);

#endif
