/* convert.h — writing model files: llama2.c checkpoints → GGUF, and random-weight presets. */
#ifndef BLUELMV_CONVERT_H
#define BLUELMV_CONVERT_H

#include "util.h"

/* Converts a llama2.c checkpoint (legacy 7-int header, or the "ak42" version-1 export) and a
 * llama2.c tokenizer file into a `llama` GGUF. `type` is TYPE_F32, TYPE_F16, TYPE_Q8_0 or
 * TYPE_Q4_0 for the weight matrices (norm vectors stay F32; a matrix whose rows are not a multiple
 * of 32 falls back to F16 when a quantized type is asked for). Progress goes to stderr when
 * `progress` is set. */
int convert_llama2c(const char *checkpoint, const char *tokenizer, const char *out, int type, int progress,
                    BlvError *err);

/* Language-model shapes for random-weight files (DESIGN.md §Presets). */
typedef struct {
    const char *name;
    const char *label;      /* printed and stored as general.description */
    int64_t dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, context_length;
    float rope_theta, rms_eps;
    int embd_norm;          /* BlueLM embedding LayerNorm */
    int tied;               /* output shares token_embd */
} LlmPreset;

const LlmPreset *llm_preset_find(const char *name);
/* Writes a random-weight `llama` GGUF for a preset (weights ~ N(0, 0.02), norms 1). Its vocabulary
 * is <unk>, <s>, </s>, the 256 byte tokens, then placeholder pieces: it decodes, but it is not a
 * trained tokenizer. */
int generate_llm_preset(const LlmPreset *p, uint64_t seed, int type, const char *out, int progress, BlvError *err);

#endif
