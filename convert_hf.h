/* convert_hf.h — Hugging Face checkpoints → GGUF: the SigLIP vision tower and VILA's projector.
 *
 * convert_hf_vision reads a `SiglipVisionModel` checkpoint directory (config.json with model_type
 * "siglip_vision_model", or a full "siglip" config with a "vision_config" object; safetensors in F32,
 * F16 or BF16, one file or sharded; optional preprocessor_config.json for image_mean/image_std) and,
 * optionally, VILA's `mlp_downsample` projector (a safetensors file or a directory holding one, with
 * keys layers.1.* = LayerNorm(4D), layers.2.* = Linear(4D→H), layers.4.* = Linear(H→H), bare as VILA
 * saves mm_projector/ or under a "...mm_projector." prefix as in a full-model state dict), and writes
 * the mmproj GGUF that vit.c loads (`general.architecture` "clip", `clip.projector_type` "bluelmv";
 * the keys and tensors are listed at the top of convert_hf.c).
 *
 * `type` is the type of the weight matrices: TYPE_F32, TYPE_F16, TYPE_Q8_0 or TYPE_Q4_0. For the
 * quantized types, the patch-embedding columns (3·P·P) and the MLP width are zero-padded to a
 * multiple of 32 (exact: zero weights add nothing, GELU(0) = 0); a matrix whose input width is still
 * not a multiple of 32 is stored as F16. Biases, norms and the position embedding stay F32. Every
 * expected tensor is checked against config.json (presence, shape, dtype) before the output file is
 * created. Progress goes to stderr when `progress` is set. */
#ifndef BLUELMV_CONVERT_HF_H
#define BLUELMV_CONVERT_HF_H

#include "util.h"

typedef struct {
    int all_layers;  /* store every encoder layer (default: all but the last, VILA's select-layer -2) */
    int post_ln;     /* needs all_layers: store post_layernorm and set bluelmv.vision.post_ln */
} HfVisionOptions;

/* projector may be NULL: then the file holds the ViT only (clip.vision.projection_dim = 0). */
int convert_hf_vision(const char *dir, const char *projector, const char *out, int type, int progress,
                      BlvError *err);
/* The same with options (NULL = the defaults above). */
int convert_hf_vision_ex(const char *dir, const char *projector, const char *out, int type,
                         const HfVisionOptions *opt, int progress, BlvError *err);

/* ---- language models (convert_hf_llm.c) ---------------------------------------------------------
 * convert_hf_llm reads a Hugging Face `LlamaForCausalLM` or `BlueLMForCausalLM` checkpoint directory
 * (config.json; model.safetensors or model.safetensors.index.json + shards, F32/F16/BF16;
 * tokenizer.model, a SentencePiece BPE model; optional tokenizer_config.json, added_tokens.json,
 * tokenizer.json for added tokens and special-token settings) and writes the `llama` GGUF that llm.c
 * and tokenizer.c load: llama.cpp's keys, tensor names and order, Q/K rows permuted into llama.cpp's
 * rotary layout, BlueLM's embedding LayerNorm (use_stable_embedding) as token_embd_norm.{weight,bias}
 * (a file llama.cpp itself does not know), no output.weight when the embeddings are tied.
 *
 * `type` is the type of the weight matrices: TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0 or TYPE_Q4_0
 * (norm vectors stay F32; a matrix whose rows are not a multiple of 32 falls back to F16 for the
 * quantized types, as convert.c does). With `vocab_only` only the tokenizer is written (no tensors; a
 * vocabulary file like llama.cpp's ggml-vocab-*.gguf): config.json is then optional (its hyper-
 * parameters and vocab_size are used when present) and `type` is ignored.
 *
 * Everything is checked before the output file is created: the architecture and the config (RoPE
 * scaling, biases, quantized checkpoints, head_dim and other things this file cannot represent are
 * refused by name), every expected tensor's presence, shape (against config.json) and dtype, and that
 * no tensor would be dropped. Messages name the file, the tensor, the shape found and expected.
 * Progress goes to stderr when `progress` is set. */
int convert_hf_llm(const char *dir, const char *out, int type, int vocab_only, int progress, BlvError *err);

#endif
