/* bluelmv.h — the public C API.
 *
 *   BlvError err;
 *   BluelmvParams params = bluelmv_default_params();
 *   params.model_path = "stories260K.gguf";
 *   Bluelmv *b = bluelmv_load(&params, &err);            // NULL on failure, message in err.msg
 *   BluelmvSampler s = bluelmv_default_sampler();        // temp 0.8, top-k 40, top-p 0.95
 *   bluelmv_generate(b, "Once upon a time", 64, &s, on_text, user, NULL, &err);
 *   bluelmv_free(b);
 *
 * No function exits or prints on bad input; each returns 0 / -1 (or NULL) with a message naming
 * the file and the problem. */
#ifndef BLUELMV_H
#define BLUELMV_H

#include <stddef.h>
#include <stdint.h>
#include "gguf.h"
#include "llm.h"
#include "tokenizer.h"
#include "util.h"

typedef struct Bluelmv Bluelmv;

typedef struct {
    const char *model_path;   /* language model GGUF (llama architecture) */
    int n_threads;            /* worker threads (default 1) */
    int64_t n_ctx;            /* KV cache length (0: the model's context length) */
    int64_t chunk;            /* prefill chunk (0: 128) */
    int kv_type;              /* TYPE_F32 / TYPE_F16 / TYPE_Q8_0 (-1: F16) */
    int use_mmap;             /* 1: map the file (default), 0: read it into memory */
} BluelmvParams;

typedef struct {
    float temperature;        /* 0: greedy (argmax) */
    int top_k;                /* 0: off */
    float top_p;              /* 1.0 or 0: off */
    uint64_t seed;
} BluelmvSampler;

typedef struct {
    int64_t n_prompt, n_generated;
    double prefill_seconds, decode_seconds;
    int stopped_at_eos, stopped_at_context;
} BluelmvStats;

/* Receives each piece of generated text as soon as it is decoded (bytes, not NUL-terminated). */
typedef void (*BluelmvTextFn)(const char *text, size_t len, void *user);

BluelmvParams bluelmv_default_params(void);
BluelmvSampler bluelmv_default_sampler(void);

Bluelmv *bluelmv_load(const BluelmvParams *params, BlvError *err);
void bluelmv_free(Bluelmv *b);

/* Tokenizes text with the model's vocabulary (BOS first when add_bos and the vocabulary wants it;
 * special-token texts are matched). Returns the number of ids (written up to max_ids), or -1. */
int64_t bluelmv_tokenize(const Bluelmv *b, const char *text, int add_bos, int32_t *ids, int64_t max_ids, BlvError *err);

/* BOS, the prompt, then up to n_predict sampled tokens (stops at EOS or a full context), streamed
 * to on_text. Starts from an empty context. stats may be NULL. */
int bluelmv_generate(Bluelmv *b, const char *prompt, int64_t n_predict, const BluelmvSampler *sampler,
                     BluelmvTextFn on_text, void *user, BluelmvStats *stats, BlvError *err);

/* Lower level: evaluate tokens into the context and read the logits of the last one. */
int bluelmv_eval(Bluelmv *b, const int32_t *tokens, int64_t n, BlvError *err);
const float *bluelmv_logits(const Bluelmv *b);  /* vocab-sized, from the last bluelmv_eval */
int64_t bluelmv_vocab_size(const Bluelmv *b);
int64_t bluelmv_context_used(const Bluelmv *b);
void bluelmv_reset(Bluelmv *b);

/* The sampler on its own: picks a token from logits (modified in place). *rng_state is llama2.c's
 * xorshift state (seeded from the sampler's seed); the algorithm matches llama2.c run.c's sample():
 * temperature, softmax, [top-k], then nucleus (top-p) or multinomial sampling. */
int32_t bluelmv_sample(float *logits, int64_t n, const BluelmvSampler *s, uint64_t *rng_state, void *work);
/* Bytes of `work` bluelmv_sample needs for a vocabulary of n. */
size_t bluelmv_sample_work_bytes(int64_t n);

/* The parts, for the command line, benchmarks and tests. */
Llm *bluelmv_llm(Bluelmv *b);
const Tokenizer *bluelmv_tokenizer(const Bluelmv *b);
const GgufFile *bluelmv_gguf(const Bluelmv *b);

#endif
