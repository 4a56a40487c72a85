/* vit.h — the vision side: SigLIP ViT, VILA's 2×2 token downsampler, and the MLP projector.
 *
 *   tiles (N, 3, S, S), normalized
 *     x = Conv2d(3→D, kernel P, stride P)(tile) + position_embedding     done as a matrix product:
 *                                                   im2col (c, ky, kx) rows · v.patch_embd.weight
 *     for each of the file's block_count SigLIP encoder layers (pre-LN):
 *       x = x + out_proj(MultiHeadAttention(LN1(x)))                    softmax over the tile's tokens
 *       x = x + fc2(GELU_tanh(fc1(LN2(x))))
 *     x = post_layernorm(x)                                             only if bluelmv.vision.post_ln
 *     VILA DownSampleBlock: (grid × grid) tokens, zero-padded to even, each 2×2 group concatenated
 *     y = Linear(H→H)(GELU_erf(Linear(4D→H)(LayerNorm(4D)(merged))))    VILA `mlp_downsample`
 *   embeddings (N, n_merged, H)
 *
 * Tiles are encoded B at a time as one batch (the paper's fixed batch of 4 patches): every matrix
 * product sees B·n_patches rows; attention runs per (tile, head), so tiles never see each other.
 *
 * ---- the mmproj GGUF (llama.cpp's clip names where they exist) ------------------------------------
 * KV: general.architecture "clip"; clip.has_vision_encoder true; clip.projector_type "bluelmv";
 *     clip.vision.image_size S, .patch_size P, .embedding_length D, .feed_forward_length F (the true
 *     MLP width), .block_count (layers stored AND used), .attention.head_count,
 *     .attention.layer_norm_epsilon (default 1e-6), .image_mean / .image_std (f32[3], default 0.5),
 *     .projection_dim H (the LLM's hidden size), .projector.scale_factor (must be 2);
 *     clip.use_gelu (must be true: GELU-tanh in the ViT MLP);
 *     bluelmv.merge.order "vila" (default) | "raster"; bluelmv.vision.post_ln (default false);
 *     bluelmv.projector.layer_norm_epsilon (default 1e-5, PyTorch's LayerNorm default).
 * Tensors (GGUF dims, ne[0] = input features):
 *     v.patch_embd.weight [Kp, D]    the Conv2d weight (D, 3, P, P) flattened in (c, ky, kx) order
 *     v.patch_embd.bias [D]
 *     v.position_embd.weight [D, grid²]
 *     v.blk.N.ln1.weight/.bias [D], v.blk.N.attn_q/attn_k/attn_v/attn_out.weight [D, D] + .bias [D],
 *     v.blk.N.ln2.weight/.bias [D], v.blk.N.ffn_up.weight [D, Fp] + .bias [Fp] (fc1),
 *     v.blk.N.ffn_down.weight [Fp, D] + .bias [D] (fc2)
 *     v.post_ln.weight/.bias [D]     when bluelmv.vision.post_ln is true
 *     mm.input_norm.weight/.bias [4D], mm.0.weight [4D, H] + .bias [H], mm.2.weight [H, H] + .bias [H]
 * Matrices are F32, F16, BF16, Q8_0 or Q4_0; vectors (biases, norms, position embedding) any of them
 * too, converted to f32 at load.
 *
 * Padding rule (DESIGN.md: "zero-padded to the next multiple of 32"). Quantized rows need a
 * multiple of 32 elements, but SigLIP-so400m's patch vector K = 3·14·14 = 588 and MLP width
 * F = 4304 are not. So the file may store
 *     Kp = K rounded up to 32 (608) columns of v.patch_embd.weight, columns K.. all zero, and
 *     Fp = F rounded up to 32 (4320) rows of ffn_up (weight rows and bias entries F.. all zero) and
 *     Fp columns of ffn_down (columns F.. all zero).
 * This is exact: a zero column meets the zero the im2col writes there, GELU(0 + 0) = 0, and a zero
 * column of fc2 adds nothing. Float files may instead keep Kp = K and Fp = F. The loader accepts
 * both and checks that every padding value is zero. vit_write_random always pads.
 *
 * Numbers: matrix products are quant.h's matmul (Q8_0 activations for quantized weights). Everything
 * else is ops.h (vector kernels whose results equal their scalar references bit for bit, so they do
 * not depend on the CPU): LayerNorm (float sums in a fixed order; each sublayer's residual add fused
 * with the LayerNorm that follows it), GELU-tanh and the projector's GELU-erf (within a few ulp),
 * and attention per (tile, head), threaded over the (tile, head) pairs: ops_attn_head_f32 for float
 * files, ops_attn_head_q8 for quantized ones (int8 products on the unpadded head dimension, the
 * softmax's p quantized per 32 keys) — VitOptions.attn_type chooses. Float files match transformers'
 * SiglipVisionModel to NMSE ~1e-13. Quantized files: at vit_out of siglip_a, Q8_0 against F32 is
 * NMSE 3.1e-4 with f32 attention and 3.7e-4 with the int8 one — the same as the Q8_0-through-matmul
 * attention it replaced, at about a fifth of the time. */
#ifndef BLUELMV_VIT_H
#define BLUELMV_VIT_H

#include <stdint.h>
#include "gguf.h"
#include "util.h"

enum { VIT_MERGE_VILA = 0, VIT_MERGE_RASTER = 1 };

typedef struct {
    int64_t image_size;       /* S: tile side in pixels (384) */
    int64_t patch_size;       /* P (14) */
    int64_t grid;             /* S / P patches per side (27); pixels grid·P.. S-1 are never seen */
    int64_t n_patches;        /* grid² tokens per tile (729) */
    int64_t patch_dim;        /* K = 3·P² (588) */
    int64_t patch_dim_stored; /* Kp: K or K rounded up to 32 (608) */
    int64_t dim;              /* D (1152) */
    int64_t n_layers;         /* clip.vision.block_count (26) */
    int64_t n_heads;          /* (16) */
    int64_t head_dim;         /* D / n_heads (72) */
    int64_t ffn_dim;          /* F (4304) */
    int64_t ffn_dim_stored;   /* Fp: F or F rounded up to 32 (4320) */
    float eps;                /* ViT LayerNorm epsilon (1e-6) */
    int post_ln;              /* apply v.post_ln after the last block */
    float image_mean[3];      /* normalization the tiles must already have (tile.c applies it) */
    float image_std[3];
    int64_t merge_grid;       /* ceil(grid / 2) (14) */
    int64_t n_merged;         /* merge_grid² tokens per tile after the downsampler (196) */
    int64_t merged_dim;       /* 4·D (4608) */
    int64_t proj_dim;         /* H: clip.vision.projection_dim, the LLM hidden size */
    float proj_eps;           /* projector LayerNorm epsilon (1e-5) */
    int merge_order;          /* VIT_MERGE_VILA (token t = j·merge_grid + i, column-major) or
                                 VIT_MERGE_RASTER (t = i·merge_grid + j); i = row pair, j = column pair */
} VitConfig;

/* A weight matrix as stored: `rows` rows of `cols` elements of `type`, row-major, inside the file. */
typedef struct {
    const void *data;
    int type;                 /* quant.h TYPE_* */
    int64_t rows, cols;
} VitMatrix;

typedef struct {
    float *ln1_w, *ln1_b;     /* (D) layer_norm1 */
    VitMatrix wq, wk, wv;     /* (D, D) q_proj, k_proj, v_proj */
    float *bq, *bk, *bv;      /* (D) */
    VitMatrix wo;             /* (D, D) out_proj */
    float *bo;                /* (D) */
    float *ln2_w, *ln2_b;     /* (D) layer_norm2 */
    VitMatrix fc1;            /* (Fp, D) rows F.. zero */
    float *fc1_b;             /* (Fp) entries F.. zero */
    VitMatrix fc2;            /* (D, Fp) columns F.. zero */
    float *fc2_b;             /* (D) */
} VitLayer;

typedef struct {
    VitMatrix patch;          /* (D, Kp) Conv2d weight, (c, ky, kx) order, columns K.. zero */
    float *patch_b;           /* (D) */
    float *pos;               /* (n_patches, D) position embedding */
    VitLayer *layers;         /* (n_layers) */
    float *post_ln_w;         /* (D) or NULL */
    float *post_ln_b;         /* (D) or NULL */
    float *mm_norm_w;         /* (4D) mm.input_norm */
    float *mm_norm_b;         /* (4D) */
    VitMatrix mm0;            /* (H, 4D) */
    float *mm0_b;             /* (H) */
    VitMatrix mm2;            /* (H, H) */
    float *mm2_b;             /* (H) */
} VitWeights;

/* Activations, allocated once for the batch size (llama2.c's RunState). T = batch · n_patches. */
typedef struct {
    float *cols;              /* (T, Kp) im2col of the tiles (vit_patch_embed only) */
    void *pe_scratch;         /* matmul scratch of vit_patch_embed */
    float *x;                 /* (T, D) residual stream used by vit_encode */
    float *xb;                /* (T, D) LayerNorm output, then attention output, then fc2 output */
    float *work;              /* max(3·T·D, T·Fp): q | k | v during attention, fc1 output in the MLP */
    float *merged;            /* (batch · n_merged, 4D) downsampled tokens, LayerNorm'd in place */
    float *proj_h;            /* (batch · n_merged, H) first projector layer */
    void *scratch;            /* matmul scratch of vit_blocks and vit_project */
    uint8_t *attn;            /* per-thread attention buffers (n_threads × attn_stride bytes) */
    int64_t attn_stride;
} VitState;

/* Seconds spent, accumulated over calls (vit_reset_timings zeroes them). */
typedef struct {
    double patch_embed;       /* im2col + matmul + bias + position */
    double qkvo;              /* q, k, v and out_proj matrix products */
    double attention;         /* scores, softmax, P·V */
    double mlp;               /* fc1 and fc2 matrix products */
    double other;             /* LayerNorms, biases, GELU, residual adds in the blocks */
    double project;           /* downsampler + projector */
    int64_t tiles;            /* tiles through vit_blocks */
} VitTimings;

/* Stage outputs for golden dumps (DESIGN.md §Golden dumps). `data` holds n_tiles × rows × cols
 * floats for tiles tile0 .. tile0 + n_tiles - 1. Stages: "patch_embed" (rows n_patches, cols D;
 * HF hidden_states[0]), "vit_block_K" (output of encoder layer K, 0-based; HF hidden_states[K+1]),
 * "vit_out" (after the post-LN if any), "merged" (n_merged, 4D; before the LayerNorm, in the
 * configured token order) and "image_embeds" (n_merged, H). "patch_embed" is reported from the
 * thread that runs vit_patch_embed, which may not be the one running the other stages. */
typedef void (*VitDumpFn)(void *user, const char *stage, int64_t tile0, int64_t n_tiles, int64_t rows,
                          int64_t cols, const float *data);

typedef struct {
    int n_threads;            /* 0: 1 */
    int batch;                /* tiles per batch B (0: 4) */
    int merge_order;          /* -1: the file's; VIT_MERGE_VILA or VIT_MERGE_RASTER to override */
    int attn_type;            /* -1: TYPE_F32 for float files, TYPE_Q8_0 when the block matrices are
                                 quantized; or TYPE_F32 / TYPE_Q8_0 to force */
} VitOptions;

typedef struct {
    VitConfig config;
    VitWeights weights;
    VitState state;
    int64_t batch;
    int attn_type;
    ThreadPool *pool;
    const char *path;         /* the GGUF file, for messages (not owned) */
    int64_t weight_bytes;     /* bytes of all weight matrices */
    VitDumpFn dump;           /* NULL: no dumps */
    void *dump_user;
    VitTimings timings;
} Vit;

/* Reads the config and binds every tensor of an open mmproj GGUF (which must stay open while the
 * Vit is used), validating presence, shape, type and padding; allocates the state. */
int vit_init(Vit *v, const GgufFile *f, const VitOptions *opt, BlvError *err);
void vit_free(Vit *v);

/* Encodes n_tiles tiles (n_tiles × 3 × S × S floats, normalized) into out (n_tiles × n_merged × H),
 * batch tiles at a time (e.g. 9 tiles with B = 4: 4 + 4 + 1). */
int vit_encode(Vit *v, const float *tiles, int64_t n_tiles, float *out, BlvError *err);

/* The stages on their own, for n <= batch tiles (tile0 only labels the dumps):
 *   vit_patch_embed: tiles (n, 3, S, S) → out (n, n_patches, D). Uses only its own buffers (state.cols,
 *     state.pe_scratch) and `pool` (NULL: the calling thread), so it may run on another thread
 *     while vit_blocks / vit_project run on v->pool — pass a pool other than v->pool then.
 *   vit_blocks: x (n, n_patches, D) in place through the encoder layers (and the post-LN).
 *   vit_project: x (n, n_patches, D) → out (n, n_merged, H). Shares buffers with vit_blocks. */
void vit_patch_embed(Vit *v, ThreadPool *pool, const float *tiles, int64_t tile0, int64_t n, float *out);
void vit_blocks(Vit *v, float *x, int64_t tile0, int64_t n);
void vit_project(Vit *v, const float *x, int64_t tile0, int64_t n, float *out);

void vit_reset_timings(Vit *v);

/* Operations (2 per multiply-add) of one image through the encoder blocks: the q, k, v, o and MLP
 * matrices for every token, and attention's q·kᵀ and p·v (so400m at 384², 26 blocks: 640 GOP). */
double vit_block_ops(const VitConfig *c);

/* ---- random-weight files (`bluelmv gen`) ------------------------------------------------------- */
typedef struct {
    const char *name;         /* preset name, written as general.name */
    int64_t image_size, patch_size, dim, n_layers, n_heads, ffn_dim, proj_dim;
    int post_ln;
    int merge_order;
} VitShape;

/* "tiny": tile 60, patch 8 (7×7 grid: the odd-size padding path runs, 16 merged tokens), hidden 64,
 *   2 layers, 4 heads, MLP 172, projector LN(256) → 256→64 → GELU → 64→64.
 * "bluelm-v-3b": the SigLIP-so400m shape (tile 384, patch 14, hidden 1152, 26 layers, 16 heads,
 *   MLP 4304) and projector LN(4608) → 4608→2560 → GELU → 2560→2560. ILLUSTRATIVE: random weights of
 *   the stated size, for speed and memory measurements only.
 * Returns -1 for an unknown name. */
int vit_shape_preset(const char *name, VitShape *shape, BlvError *err);

/* Writes an mmproj with random weights for `shape`: matrices of `type` (F32, F16, BF16, Q8_0 or
 * Q4_0; padded per the rule above), approximately normal with std 0.02; LayerNorm weights 1 and
 * biases 0. Deterministic for a seed. */
int vit_write_random(const char *path, const VitShape *shape, int type, uint64_t seed, BlvError *err);

#endif
