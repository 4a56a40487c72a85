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

#endif
