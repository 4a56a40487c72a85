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
#include "vit.h"
#include "util.h"

typedef struct Bluelmv Bluelmv;

typedef struct {
    const char *model_path;   /* language model GGUF (llama architecture); may be NULL for a
                                 vision-only handle (encode) when mmproj_path is set */
    const char *mmproj_path;  /* vision GGUF (clip architecture, projector "bluelmv"), or NULL */
    int n_threads;            /* worker threads (default 1) */
    int64_t n_ctx;            /* KV cache length (0: the model's context length) */
    int64_t chunk;            /* prefill chunk (0: 128) */
    int kv_type;              /* TYPE_F32 / TYPE_F16 / TYPE_Q8_0 (-1: F16) */
    int use_mmap;             /* 1: map the file (default), 0: read it into memory */
    int vit_batch;            /* tiles per ViT batch (0: 4; a 2:4 image runs 4 + 4 + 1) */
    int pipeline;             /* 1 (default): the next batch's patch embedding runs on its own thread
                                 while the transformer blocks process the current batch */
    int keep_vit;             /* 0 (default): release (unmap) the ViT once all images are encoded */
    int no_repack;            /* 1: keep Q4_0 weights in the file's layout (llm_prepare_weights) */
} BluelmvParams;

typedef struct {
    float temperature;        /* 0: greedy (argmax) */
    int top_k;                /* 0: off */
    float top_p;              /* 1.0 or 0: off */
    uint64_t seed;
} BluelmvSampler;

typedef struct {
    int64_t n_prompt, n_generated;
    int64_t n_image_tokens;   /* of n_prompt */
    double prefill_seconds, decode_seconds;
    double first_token_seconds; /* from the call to the first sampled token */
    int stopped_at_eos, stopped_at_context;
} BluelmvStats;

/* An encoded image: its slicing plan and the embeddings the LLM consumes (thumbnail first, then
 * the tiles in raster order; each tile's tokens in the downsampler's order). */
typedef struct {
    char *path;
    int width, height;        /* decoded size */
    int grid_w, grid_h;       /* m:n, m the width multiplier */
    int n_tiles, has_thumbnail;
    int64_t n_images;         /* ViT inputs: tiles + thumbnail */
    int64_t n_tokens;         /* n_images × tokens per tile */
    int64_t dim;              /* LLM hidden size */
    float *embeds;            /* (n_tokens, dim) */
    /* timings (seconds) */
    double decode_s, preprocess_s, encode_s;   /* file → RGB, RGB → tiles, tiles → embeddings */
    double conv_s, blocks_s, project_s;         /* encode_s split by stage (conv summed over batches) */
    double conv_hidden_s;     /* patch-embedding time that ran while the blocks were busy */
    double conv_first_s;      /* the first batch's patch embedding (nothing to hide it behind) */
    int n_batches;
    double finished_at;       /* blv_now() when this image's embeddings were ready */
} BluelmvImage;

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

/* ---- images (needs params.mmproj_path) ------------------------------------------------------------
 * Encoding decodes the file, plans and renders the tiles (tile.h) and runs the ViT (vit.h). */
int bluelmv_has_vision(const Bluelmv *b);
BluelmvImage *bluelmv_encode_image(Bluelmv *b, const char *path, BlvError *err);
void bluelmv_image_free(BluelmvImage *img);

/* Decoupled encoding: starts encoding the images on a background thread and returns at once, so
 * the caller can read the instruction meanwhile. finish waits and hands over the images (an array
 * of n pointers, caller frees each and the array). Unless params.keep_vit, the ViT weights are
 * released (unmapped) when the last image is done, before the LLM runs; a later encode reloads them. */
typedef struct BluelmvEncodeJob BluelmvEncodeJob;
BluelmvEncodeJob *bluelmv_encode_start(Bluelmv *b, const char *const *paths, int n, BlvError *err);
int bluelmv_encode_finish(BluelmvEncodeJob *job, BluelmvImage ***images, BlvError *err);
/* Whether the ViT weights are currently mapped. */
int bluelmv_vision_loaded(const Bluelmv *b);
void bluelmv_release_vision(Bluelmv *b);

/* One chat turn: the chat template (`bluelmv.chat_template` in the model or mmproj, default
 * "[|Human|]:<im_start><image><im_end>{query}\n[|AI|]:") with the images' embeddings at <image>
 * (several images concatenate; with none, "<im_start><image><im_end>" is left out), appended to
 * the conversation so far (the KV cache is kept between turns), then the answer, streamed.
 * The first turn starts with BOS. bluelmv_chat_reset starts a new conversation. */
int bluelmv_chat(Bluelmv *b, const char *query, BluelmvImage *const *images, int n_images, int64_t n_predict,
                 const BluelmvSampler *sampler, BluelmvTextFn on_text, void *user, BluelmvStats *stats, BlvError *err);
void bluelmv_chat_reset(Bluelmv *b);
const char *bluelmv_chat_template(const Bluelmv *b);

/* Golden dumps (DESIGN.md §Golden dumps): the next encode/chat/generate writes every stage into DIR
 * as .npy: pixels, patch_embed, vit_block_K, vit_out, merged, image_embeds (one run's images),
 * tokens (-1 at image rows), llm_block_K and logits (every input position). */
int bluelmv_set_dump_dir(Bluelmv *b, const char *dir, BlvError *err);
/* Closes the dump files after an encode-only run (a chat or generate call closes them itself). */
int bluelmv_finish_dump(Bluelmv *b, BlvError *err);

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
Vit *bluelmv_vit(Bluelmv *b);   /* NULL when released or absent */
Llm *bluelmv_llm(Bluelmv *b);
const Tokenizer *bluelmv_tokenizer(const Bluelmv *b);
const GgufFile *bluelmv_gguf(const Bluelmv *b);

#endif
