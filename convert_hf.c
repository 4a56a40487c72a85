/* convert_hf.c — Hugging Face SigLIP vision checkpoint (+ VILA mlp_downsample projector) → mmproj GGUF.
 *
 * The file written (read by vit.c; GGUF dims ne[0] = input features):
 *
 *   KV  general.architecture "clip", clip.has_vision_encoder true, clip.projector_type "bluelmv",
 *       clip.vision.{image_size, patch_size, embedding_length (D), feed_forward_length (F, the true
 *       width), block_count (layers stored), attention.head_count} u32,
 *       clip.vision.attention.layer_norm_epsilon f32, clip.vision.image_mean / image_std f32[3],
 *       clip.vision.projection_dim u32 (H, 0 without a projector), clip.vision.projector.scale_factor
 *       u32 2, clip.use_gelu true, bluelmv.merge.order "vila", bluelmv.vision.post_ln bool,
 *       bluelmv.projector.layer_norm_epsilon f32 1e-5, bluelmv.tiling.{algo "relaxed", max_grid u32 4,
 *       alpha f32 0.1, thumbnail true}
 *   v.patch_embd.weight   [Kp, D]   conv (D, 3, P, P) flattened in (c, ky, kx) order, K = 3·P·P
 *   v.patch_embd.bias     [D]
 *   v.position_embd.weight [D, n_patches]
 *   v.blk.N.{ln1, ln2}.{weight, bias} [D]
 *   v.blk.N.{attn_q, attn_k, attn_v, attn_out}.weight [D, D], .bias [D]
 *   v.blk.N.ffn_up.weight [D, Fp], .bias [Fp]      (mlp.fc1; extra rows zero)
 *   v.blk.N.ffn_down.weight [Fp, D], .bias [D]     (mlp.fc2; extra columns zero)
 *   v.post_ln.{weight, bias} [D]                   (only with post_ln)
 *   mm.input_norm.{weight, bias} [4D]              (VILA layers.1, LayerNorm)
 *   mm.0.weight [4D, H], mm.0.bias [H]             (VILA layers.2, Linear)
 *   mm.2.weight [H, H], mm.2.bias [H]              (VILA layers.4, Linear; layers.3 is the GELU)
 * Kp and Fp are K and F rounded up to a multiple of 32 for quantized types, else K and F.
 *
 * HF tensor names: "embeddings.patch_embedding.weight", "encoder.layers.N.self_attn.q_proj.weight",
 * ... under whatever prefix the checkpoint uses ("" for a transformers 5 SiglipVisionModel,
 * "vision_model." for 4.x and for a full SiglipModel): the prefix is taken from the one tensor named
 * "...embeddings.patch_embedding.weight". */
#include "convert_hf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "json.h"
#include "quant.h"
#include "safetensors.h"

#define MAX_PLAN_NAME 64
#define MAX_DIM (1 << 20)   /* any single model dimension beyond this is a broken config */

/* ---- the vision configuration ----------------------------------------------------------------- */

typedef struct {
    int64_t image_size, patch_size, hidden, ffn, n_layers, n_heads, n_channels;
    double ln_eps;
    char hidden_act[64];
    float mean[3], std[3];
    int have_preprocessor;
} VisionConfig;

static char *path_in(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int is_file(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

static int is_dir(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

/* Reads one positive integer field of the vision config, with SiglipVisionConfig's default when
 * absent (save_pretrained may leave out fields equal to their defaults). */
static int config_dim(const JsonDoc *doc, const JsonValue *obj, const char *key, int64_t def, int64_t *out,
                      BlvError *err) {
    if (json_get_int_or(doc, obj, key, def, out, err) != 0) return -1;
    if (*out <= 0 || *out > MAX_DIM)
        return blv_fail(err, "%s: \"%s\" = %lld is out of range", doc->name, key, (long long)*out);
    return 0;
}

static int read_vision_config(const char *dir, VisionConfig *c, BlvError *err) {
    char *path = path_in(dir, "config.json");
    if (!path) return blv_fail(err, "%s: out of memory", dir);
    JsonDoc doc;
    int rc = json_parse_file(&doc, path, err);
    free(path);
    if (rc != 0) return -1;
    rc = -1;
    const JsonValue *v = &doc.root;
    const char *model_type, *act;
    if (json_get_string(&doc, v, "model_type", &model_type, err) != 0) goto done;
    if (strcmp(model_type, "siglip") == 0) {
        v = json_get(&doc.root, "vision_config");
        if (!v || v->type != JSON_OBJECT) {
            blv_fail(err, "%s: model_type \"siglip\" needs a \"vision_config\" object", doc.name);
            goto done;
        }
    } else if (strcmp(model_type, "siglip_vision_model") != 0) {
        blv_fail(err, "%s: model_type \"%s\" is not a SigLIP vision model (expected \"siglip_vision_model\", or "
                 "\"siglip\" with a vision_config)", doc.name, model_type);
        goto done;
    }
    /* defaults: transformers' SiglipVisionConfig */
    if (config_dim(&doc, v, "hidden_size", 768, &c->hidden, err) != 0 ||
        config_dim(&doc, v, "intermediate_size", 3072, &c->ffn, err) != 0 ||
        config_dim(&doc, v, "num_hidden_layers", 12, &c->n_layers, err) != 0 ||
        config_dim(&doc, v, "num_attention_heads", 12, &c->n_heads, err) != 0 ||
        config_dim(&doc, v, "num_channels", 3, &c->n_channels, err) != 0 ||
        config_dim(&doc, v, "image_size", 224, &c->image_size, err) != 0 ||
        config_dim(&doc, v, "patch_size", 16, &c->patch_size, err) != 0 ||
        json_get_number_or(&doc, v, "layer_norm_eps", 1e-6, &c->ln_eps, err) != 0 ||
        json_get_string_or(&doc, v, "hidden_act", "gelu_pytorch_tanh", &act, err) != 0)
        goto done;
    snprintf(c->hidden_act, sizeof c->hidden_act, "%s", act);
    if (c->n_channels != 3) {
        blv_fail(err, "%s: num_channels = %lld; only RGB (3) vision towers are supported", doc.name,
                 (long long)c->n_channels);
        goto done;
    }
    if (c->hidden % c->n_heads != 0) {
        blv_fail(err, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", doc.name,
                 (long long)c->hidden, (long long)c->n_heads);
        goto done;
    }
    if (c->patch_size > c->image_size) {
        blv_fail(err, "%s: patch_size %lld is larger than image_size %lld", doc.name, (long long)c->patch_size,
                 (long long)c->image_size);
        goto done;
    }
    if (!(c->ln_eps > 0 && c->ln_eps < 1)) {
        blv_fail(err, "%s: layer_norm_eps = %g is not a plausible epsilon", doc.name, c->ln_eps);
        goto done;
    }
    /* The file says "GELU" (clip.use_gelu); the tanh approximation is what SigLIP uses. */
    if (strcmp(act, "gelu_pytorch_tanh") != 0 && strcmp(act, "gelu_new") != 0) {
        blv_fail(err, "%s: hidden_act \"%s\" is not supported (the vision tower runs tanh-approximated GELU: "
                 "gelu_pytorch_tanh or gelu_new)", doc.name, act);
        goto done;
    }
    rc = 0;
done:
    json_free(&doc);
    return rc;
}

/* image_mean / image_std: an array of 3 numbers (or one number for all channels). */
static int read_channel_triple(const JsonDoc *doc, const char *key, float out[3], BlvError *err) {
    const JsonValue *v = json_get(&doc->root, key);
    if (!v) return 0;
    double d;
    if (v->type == JSON_NUMBER) {
        out[0] = out[1] = out[2] = (float)v->number;
        return 0;
    }
    if (v->type != JSON_ARRAY || v->count != 3)
        return blv_fail(err, "%s:%d:%d: \"%s\" must be an array of 3 numbers", doc->name, v->line, v->col, key);
    for (int i = 0; i < 3; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s[%d]", key, i);
        if (json_as_number(doc, &v->items[i], what, &d, err) != 0) return -1;
        out[i] = (float)d;
    }
    return 0;
}

static int read_preprocessor(const char *dir, VisionConfig *c, BlvError *err) {
    for (int i = 0; i < 3; i++) c->mean[i] = c->std[i] = 0.5f;  /* SiglipImageProcessor's defaults */
    char *path = path_in(dir, "preprocessor_config.json");
    if (!path) return blv_fail(err, "%s: out of memory", dir);
    int rc = 0;
    if (is_file(path)) {
        JsonDoc doc;
        rc = json_parse_file(&doc, path, err);
        if (rc == 0) {
            rc = read_channel_triple(&doc, "image_mean", c->mean, err);
            if (rc == 0) rc = read_channel_triple(&doc, "image_std", c->std, err);
            for (int i = 0; i < 3 && rc == 0; i++)
                if (!(c->std[i] > 0)) rc = blv_fail(err, "%s: image_std[%d] = %g must be positive", path, i, c->std[i]);
            json_free(&doc);
        }
        c->have_preprocessor = 1;
    }
    free(path);
    return rc;
}

/* ---- the tensor plan ---------------------------------------------------------------------------- */

/* One GGUF tensor: the checkpoint tensor `src` (src_rows × src_cols, a vector when n_dims == 1)
 * zero-padded on the right and bottom to rows × cols. */
typedef struct {
    char name[MAX_PLAN_NAME];
    int type;
    int n_dims;                   /* 1: a vector of cols; 2: rows × cols */
    int64_t rows, cols;           /* stored: ne[1], ne[0] */
    int64_t src_rows, src_cols;
    const SafeTensors *st;
    const StTensor *src;
} Plan;

typedef struct {
    const SafeTensors *st;        /* the vision checkpoint */
    const char *prefix;           /* of the HF names */
    int type;                     /* requested matrix type */
    Plan *plan;
    int n_plan, cap_plan;
    int n_fallback;               /* matrices stored as F16 because their width is not a multiple of 32 */
} Planner;

static int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
static int is_quantized(int type) { return type == TYPE_Q8_0 || type == TYPE_Q4_0; }

/* Finds `name` and checks dtype and shape (want[0] outermost, as PyTorch). */
static int check_tensor(const SafeTensors *st, const char *name, const char *config_name, const int64_t *want,
                        int n_want, const StTensor **out, BlvError *err) {
    const StTensor *t = st_find(st, name);
    if (!t) return blv_fail(err, "%s: tensor %s is missing", st->source, name);
    int same = t->n_dims == n_want;
    for (int i = 0; same && i < n_want; i++) same = t->shape[i] == want[i];
    if (!same) {
        char got[160], exp[160];
        st_format_shape(t->shape, t->n_dims, got, sizeof got);
        st_format_shape(want, n_want, exp, sizeof exp);
        return blv_fail(err, "%s: tensor %s has shape %s, %s says %s", st_tensor_file(st, t), name, got, config_name,
                        exp);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return blv_fail(err, "%s: tensor %s has dtype %s, which is not a weight type bluelmv converts (F32, F16, BF16)",
                        st_tensor_file(st, t), name, st_dtype_name(t->dtype));
    *out = t;
    return 0;
}

static Plan *plan_new(Planner *p, const char *gguf_name, BlvError *err) {
    if (p->n_plan == p->cap_plan) {
        int cap = p->cap_plan ? p->cap_plan * 2 : 64;
        Plan *bigger = realloc(p->plan, (size_t)cap * sizeof *bigger);
        if (!bigger) {
            blv_fail(err, "out of memory planning tensors");
            return NULL;
        }
        p->plan = bigger;
        p->cap_plan = cap;
    }
    Plan *t = &p->plan[p->n_plan++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", gguf_name);
    return t;
}

/* A vector of n values from `hf_name` (under `prefix`), stored F32, padded to n_stored. */
static int plan_vector(Planner *p, const SafeTensors *st, const char *prefix, const char *hf_name,
                       const char *config_name, const char *gguf_name, int64_t n, int64_t n_stored, BlvError *err) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", prefix, hf_name);
    const StTensor *src;
    if (check_tensor(st, full, config_name, &n, 1, &src, err) != 0) return -1;
    Plan *t = plan_new(p, gguf_name, err);
    if (!t) return -1;
    t->type = TYPE_F32;
    t->n_dims = 1;
    t->rows = t->src_rows = 1;
    t->cols = n_stored;
    t->src_cols = n;
    t->st = st;
    t->src = src;
    return 0;
}

/* A matrix. `shape` is the checkpoint's (PyTorch) shape, whose first dimension is the row count
 * and whose remaining dimensions are flattened into rows of `cols` values (the conv weight's
 * (D, 3, P, P) becomes D rows of 3·P·P). Stored as rows_stored × cols_stored in the requested
 * type, or F32 when `keep_f32` is set. */
static int plan_matrix(Planner *p, const SafeTensors *st, const char *prefix, const char *hf_name,
                       const char *config_name, const char *gguf_name, const int64_t *shape, int n_dims,
                       int64_t rows_stored, int64_t cols_stored, int keep_f32, BlvError *err) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", prefix, hf_name);
    const StTensor *src;
    if (check_tensor(st, full, config_name, shape, n_dims, &src, err) != 0) return -1;
    Plan *t = plan_new(p, gguf_name, err);
    if (!t) return -1;
    t->n_dims = 2;
    t->src_rows = shape[0];
    t->src_cols = src->n_elements / shape[0];
    t->rows = rows_stored;
    t->cols = cols_stored;
    t->st = st;
    t->src = src;
    t->type = keep_f32 ? TYPE_F32 : p->type;
    if (type_row_bytes(t->type, t->cols) < 0) {
        t->type = TYPE_F16;  /* rows that quantized blocks cannot hold, as convert.c does */
        p->n_fallback++;
    }
    return 0;
}

/* Shorthands for the common cases: a Linear weight (out, in) and its bias. */
static int plan_linear(Planner *p, const char *hf, const char *gguf, int64_t n_out, int64_t n_in, int64_t out_stored,
                       int64_t in_stored, BlvError *err) {
    char hf_name[256], gguf_name[MAX_PLAN_NAME];
    int64_t shape[2] = {n_out, n_in};
    snprintf(hf_name, sizeof hf_name, "%s.weight", hf);
    snprintf(gguf_name, sizeof gguf_name, "%s.weight", gguf);
    int rc = plan_matrix(p, p->st, p->prefix, hf_name, "config.json", gguf_name, shape, 2, out_stored, in_stored, 0, err);
    if (rc != 0) return -1;
    snprintf(hf_name, sizeof hf_name, "%s.bias", hf);
    snprintf(gguf_name, sizeof gguf_name, "%s.bias", gguf);
    return plan_vector(p, p->st, p->prefix, hf_name, "config.json", gguf_name, n_out, out_stored, err);
}

static int plan_norm(Planner *p, const char *hf, const char *gguf, int64_t n, BlvError *err) {
    char hf_name[256], gguf_name[MAX_PLAN_NAME];
    snprintf(hf_name, sizeof hf_name, "%s.weight", hf);
    snprintf(gguf_name, sizeof gguf_name, "%s.weight", gguf);
    if (plan_vector(p, p->st, p->prefix, hf_name, "config.json", gguf_name, n, n, err) != 0) return -1;
    snprintf(hf_name, sizeof hf_name, "%s.bias", hf);
    snprintf(gguf_name, sizeof gguf_name, "%s.bias", gguf);
    return plan_vector(p, p->st, p->prefix, hf_name, "config.json", gguf_name, n, n, err);
}

static int plan_vision(Planner *p, const VisionConfig *c, int64_t n_stored_layers, int post_ln, BlvError *err) {
    int64_t D = c->hidden, P = c->patch_size, F = c->ffn;
    int64_t K = c->n_channels * P * P, grid = c->image_size / P;
    int64_t Kp = is_quantized(p->type) ? round_up(K, QK) : K;
    int64_t Fp = is_quantized(p->type) ? round_up(F, QK) : F;
    int64_t conv[4] = {D, c->n_channels, P, P}, pos[2] = {grid * grid, D};
    if (plan_matrix(p, p->st, p->prefix, "embeddings.patch_embedding.weight", "config.json", "v.patch_embd.weight",
                    conv, 4, D, Kp, 0, err) != 0 ||
        plan_vector(p, p->st, p->prefix, "embeddings.patch_embedding.bias", "config.json", "v.patch_embd.bias", D, D,
                    err) != 0 ||
        plan_matrix(p, p->st, p->prefix, "embeddings.position_embedding.weight", "config.json",
                    "v.position_embd.weight", pos, 2, grid * grid, D, 1, err) != 0)
        return -1;
    for (int64_t L = 0; L < n_stored_layers; L++) {
        char hf[128], g[MAX_PLAN_NAME];
        static const struct { const char *hf, *gguf; } attn[] = {
            {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"},
            {"self_attn.v_proj", "attn_v"}, {"self_attn.out_proj", "attn_out"}};
        snprintf(hf, sizeof hf, "encoder.layers.%lld.layer_norm1", (long long)L);
        snprintf(g, sizeof g, "v.blk.%lld.ln1", (long long)L);
        if (plan_norm(p, hf, g, D, err) != 0) return -1;
        for (int i = 0; i < 4; i++) {
            snprintf(hf, sizeof hf, "encoder.layers.%lld.%s", (long long)L, attn[i].hf);
            snprintf(g, sizeof g, "v.blk.%lld.%s", (long long)L, attn[i].gguf);
            if (plan_linear(p, hf, g, D, D, D, D, err) != 0) return -1;
        }
        snprintf(hf, sizeof hf, "encoder.layers.%lld.layer_norm2", (long long)L);
        snprintf(g, sizeof g, "v.blk.%lld.ln2", (long long)L);
        if (plan_norm(p, hf, g, D, err) != 0) return -1;
        /* fc1 gains zero rows (and zero biases: GELU(0) = 0), fc2 zero columns to match */
        snprintf(hf, sizeof hf, "encoder.layers.%lld.mlp.fc1", (long long)L);
        snprintf(g, sizeof g, "v.blk.%lld.ffn_up", (long long)L);
        if (plan_linear(p, hf, g, F, D, Fp, D, err) != 0) return -1;
        snprintf(hf, sizeof hf, "encoder.layers.%lld.mlp.fc2", (long long)L);
        snprintf(g, sizeof g, "v.blk.%lld.ffn_down", (long long)L);
        if (plan_linear(p, hf, g, D, F, D, Fp, err) != 0) return -1;
    }
    if (post_ln && plan_norm(p, "post_layernorm", "v.post_ln", D, err) != 0) return -1;
    return 0;
}

/* The prefix of the vision tower's names: whatever precedes the one "embeddings.patch_embedding.weight". */
static int find_vision_prefix(const SafeTensors *st, char *prefix, size_t size, BlvError *err) {
    const char *suffix = "embeddings.patch_embedding.weight";
    size_t ns = strlen(suffix);
    const char *found = NULL;
    for (int64_t i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        size_t n = strlen(name);
        if (n < ns || strcmp(name + n - ns, suffix) != 0 || (n > ns && name[n - ns - 1] != '.')) continue;
        if (found)
            return blv_fail(err, "%s: two vision towers (%s and %s); convert one at a time", st->source, found, name);
        found = name;
    }
    if (!found)
        return blv_fail(err, "%s: no tensor named ...%s: this is not a SigLIP vision checkpoint", st->source, suffix);
    size_t n = strlen(found) - ns;
    if (n >= size) return blv_fail(err, "%s: tensor name prefix of %s is too long", st->source, found);
    memcpy(prefix, found, n);
    prefix[n] = 0;
    return 0;
}

/* ---- the projector ------------------------------------------------------------------------------ */

/* VILA's MultimodalProjector saves its nn.Sequential as "layers.N.*" (mm_projector/ directory); a
 * full-model state dict has "mm_projector.layers.N.*" or "model.mm_projector.layers.N.*". */
static int find_projector_prefix(const SafeTensors *st, char *prefix, size_t size, BlvError *err) {
    const char *suffix = "layers.1.weight";
    size_t ns = strlen(suffix);
    const char *found = NULL;
    for (int64_t i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        size_t n = strlen(name);
        if (n < ns || strcmp(name + n - ns, suffix) != 0) continue;
        int bare = n == ns;
        int prefixed = n >= ns + 13 && memcmp(name + n - ns - 13, "mm_projector.", 13) == 0;
        if (!bare && !prefixed) continue;
        if (found) return blv_fail(err, "%s: two projectors (%s and %s)", st->source, found, name);
        found = name;
    }
    if (!found)
        return blv_fail(err, "%s: no tensor layers.1.weight (VILA mlp_downsample's LayerNorm), with or without an "
                        "mm_projector. prefix: is this a VILA projector?", st->source);
    size_t n = strlen(found) - ns;
    if (n >= size) return blv_fail(err, "%s: tensor name prefix of %s is too long", st->source, found);
    memcpy(prefix, found, n);
    prefix[n] = 0;
    /* mlp_downsample has parameters at 1, 2 and 4 only; anything at 0 or 3 is another projector
     * type (e.g. mlp2x_gelu: Linear at 0 and 2). */
    for (int i = 0; i <= 3; i += 3) {
        char name[600];
        snprintf(name, sizeof name, "%slayers.%d.weight", prefix, i);
        if (st_find(st, name))
            return blv_fail(err,
                            "%s: has %s, so it is not VILA's mlp_downsample projector (DownSampleBlock, LayerNorm, "
                            "Linear, GELU, Linear: parameters at layers.1, .2 and .4)",
                            st->source, name);
    }
    return 0;
}

/* A projector directory from VILA has a config.json naming its type: check it when present. */
static int check_projector_config(const char *dir, BlvError *err) {
    char *path = path_in(dir, "config.json");
    if (!path) return blv_fail(err, "%s: out of memory", dir);
    int rc = 0;
    if (is_file(path)) {
        JsonDoc doc;
        const char *type;
        rc = json_parse_file(&doc, path, err);
        if (rc == 0) rc = json_get_string_or(&doc, &doc.root, "mm_projector_type", "mlp_downsample", &type, err);
        if (rc == 0 && strcmp(type, "mlp_downsample") != 0)
            rc = blv_fail(err, "%s: mm_projector_type is \"%s\"; bluelmv converts VILA's \"mlp_downsample\"", path,
                          type);
        json_free(&doc);
    }
    free(path);
    return rc;
}

static int plan_projector(Planner *p, const SafeTensors *pst, int64_t D, int64_t *H_out, BlvError *err) {
    char prefix[256], name[512];
    if (find_projector_prefix(pst, prefix, sizeof prefix, err) != 0) return -1;
    snprintf(name, sizeof name, "%slayers.2.weight", prefix);
    const StTensor *l2 = st_find(pst, name);
    if (!l2) return blv_fail(err, "%s: tensor %s is missing", pst->source, name);
    if (l2->n_dims != 2 || l2->shape[0] <= 0 || l2->shape[0] > MAX_DIM)
        return blv_fail(err, "%s: tensor %s must be a Linear weight [H, %lld]", st_tensor_file(pst, l2), name,
                        (long long)(4 * D));
    int64_t H = l2->shape[0], D4 = 4 * D;
    int64_t w2[2] = {H, D4}, w4[2] = {H, H};
    const char *what = "the vision tower's hidden size";
    if (plan_vector(p, pst, prefix, "layers.1.weight", what, "mm.input_norm.weight", D4, D4, err) != 0 ||
        plan_vector(p, pst, prefix, "layers.1.bias", what, "mm.input_norm.bias", D4, D4, err) != 0 ||
        plan_matrix(p, pst, prefix, "layers.2.weight", what, "mm.0.weight", w2, 2, H, D4, 0, err) != 0 ||
        plan_vector(p, pst, prefix, "layers.2.bias", "layers.2.weight", "mm.0.bias", H, H, err) != 0 ||
        plan_matrix(p, pst, prefix, "layers.4.weight", "layers.2.weight", "mm.2.weight", w4, 2, H, H, 0, err) != 0 ||
        plan_vector(p, pst, prefix, "layers.4.bias", "layers.2.weight", "mm.2.bias", H, H, err) != 0)
        return -1;
    *H_out = H;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------------ */

static uint32_t file_type_of(int type) {
    switch (type) {
    case TYPE_F16: return 1;
    case TYPE_Q4_0: return 2;
    case TYPE_Q8_0: return 7;
    default: return 0;
    }
}

static int set_keys(GgufWriter *w, const char *dir, const VisionConfig *c, int64_t n_stored, int post_ln, int64_t H,
                    int type) {
    const char *slash = strrchr(dir, '/');
    const char *name = slash && slash[1] ? slash + 1 : dir;
    int rc = 0;
    rc |= gguf_set_string(w, "general.architecture", "clip");
    rc |= gguf_set_string(w, "general.name", name);
    rc |= gguf_set_string(w, "general.description",
                          H ? "SigLIP vision tower and VILA mlp_downsample projector, converted from Hugging Face "
                              "checkpoints by bluelmv"
                            : "SigLIP vision tower (no projector), converted from a Hugging Face checkpoint by bluelmv");
    rc |= gguf_set_u32(w, "general.file_type", file_type_of(type));
    if (is_quantized(type)) rc |= gguf_set_u32(w, "general.quantization_version", 2);
    rc |= gguf_set_bool(w, "clip.has_vision_encoder", 1);
    rc |= gguf_set_string(w, "clip.projector_type", "bluelmv");
    rc |= gguf_set_u32(w, "clip.vision.image_size", (uint32_t)c->image_size);
    rc |= gguf_set_u32(w, "clip.vision.patch_size", (uint32_t)c->patch_size);
    rc |= gguf_set_u32(w, "clip.vision.embedding_length", (uint32_t)c->hidden);
    rc |= gguf_set_u32(w, "clip.vision.feed_forward_length", (uint32_t)c->ffn);
    rc |= gguf_set_u32(w, "clip.vision.block_count", (uint32_t)n_stored);
    rc |= gguf_set_u32(w, "clip.vision.attention.head_count", (uint32_t)c->n_heads);
    rc |= gguf_set_f32(w, "clip.vision.attention.layer_norm_epsilon", (float)c->ln_eps);
    rc |= gguf_set_array(w, "clip.vision.image_mean", GGUF_TYPE_FLOAT32, c->mean, 3);
    rc |= gguf_set_array(w, "clip.vision.image_std", GGUF_TYPE_FLOAT32, c->std, 3);
    rc |= gguf_set_u32(w, "clip.vision.projection_dim", (uint32_t)H);
    rc |= gguf_set_u32(w, "clip.vision.projector.scale_factor", 2);
    rc |= gguf_set_bool(w, "clip.use_gelu", 1);
    rc |= gguf_set_string(w, "bluelmv.merge.order", "vila");
    rc |= gguf_set_bool(w, "bluelmv.vision.post_ln", post_ln);
    rc |= gguf_set_f32(w, "bluelmv.projector.layer_norm_epsilon", 1e-5f);  /* nn.LayerNorm's default in VILA */
    rc |= gguf_set_string(w, "bluelmv.tiling.algo", "relaxed");
    rc |= gguf_set_u32(w, "bluelmv.tiling.max_grid", 4);
    rc |= gguf_set_f32(w, "bluelmv.tiling.alpha", 0.1f);
    rc |= gguf_set_bool(w, "bluelmv.tiling.thumbnail", 1);
    return rc ? -1 : 0;
}

/* Reads the source rows, zero-pads them to the stored shape, converts to the stored type, writes. */
static int write_tensor(GgufWriter *w, const Plan *t, BlvError *err) {
    int64_t row_bytes = type_row_bytes(t->type, t->cols);
    float *rows = blv_calloc((size_t)(t->rows * t->cols), sizeof(float), t->name, err);
    float *src = blv_malloc((size_t)t->src_cols * sizeof(float), t->name, err);
    uint8_t *bytes = blv_malloc((size_t)(t->rows * row_bytes), t->name, err);
    int rc = -1;
    if (!rows || !src || !bytes) goto done;
    if (t->n_dims == 1) {
        if (st_read_f32(t->st, t->src, rows, err) != 0) goto done;
    } else {
        for (int64_t r = 0; r < t->src_rows; r++) {
            if (st_read_rows_f32(t->st, t->src, r, 1, src, err) != 0) goto done;
            memcpy(rows + r * t->cols, src, (size_t)t->src_cols * sizeof(float));
        }
    }
    for (int64_t r = 0; r < t->rows; r++) quantize_row(t->type, rows + r * t->cols, bytes + r * row_bytes, t->cols);
    rc = gguf_writer_put_tensor(w, bytes, (uint64_t)(t->rows * row_bytes), err);
done:
    free(rows);
    free(src);
    free(bytes);
    return rc;
}

static int write_file(const char *out, GgufWriter *w, const Plan *plan, int n, int progress, BlvError *err) {
    for (int i = 0; i < n; i++) {
        int64_t ne[2] = {plan[i].cols, plan[i].rows};
        if (gguf_add_tensor(w, plan[i].name, (uint32_t)plan[i].type, (uint32_t)plan[i].n_dims, ne) != 0)
            return blv_fail(err, "%s: %s", out, gguf_writer_error(w));
    }
    if (gguf_writer_begin(w, out, err) != 0) return -1;
    double t0 = blv_now();
    int tty = isatty(2);
    for (int i = 0; i < n; i++) {
        if (progress) {
            fprintf(stderr, "%s[%3d/%3d] %-28s %-5s %6.1fs%s", tty ? "\r" : "", i + 1, n, plan[i].name,
                    type_name(plan[i].type), blv_now() - t0, tty ? "" : "\n");
            fflush(stderr);
        }
        if (write_tensor(w, &plan[i], err) != 0) {
            unlink(out);  /* no half-written model left behind */
            return -1;
        }
    }
    if (progress && tty) fprintf(stderr, "\n");
    if (gguf_writer_finish(w, err) != 0) {
        unlink(out);
        return -1;
    }
    return 0;
}

static int open_projector(const char *path, SafeTensors *pst, BlvError *err) {
    if (is_dir(path) && check_projector_config(path, err) != 0) return -1;
    return st_open(pst, path, err);
}

int convert_hf_vision_ex(const char *dir, const char *projector, const char *out, int type,
                         const HfVisionOptions *opt, int progress, BlvError *err) {
    HfVisionOptions defaults = {0, 0};
    if (!opt) opt = &defaults;
    if (type != TYPE_F32 && type != TYPE_F16 && type != TYPE_Q8_0 && type != TYPE_Q4_0)
        return blv_fail(err, "%s is not an output type for the vision model (use f32, f16, q8_0 or q4_0)",
                        type_name(type));
    if (opt->post_ln && !opt->all_layers)
        return blv_fail(err, "--post-ln needs --all-layers: SigLIP's post-LayerNorm follows the last layer, which is "
                        "dropped by default");
    VisionConfig c;
    memset(&c, 0, sizeof c);
    SafeTensors st, pst;
    memset(&st, 0, sizeof st);
    memset(&pst, 0, sizeof pst);
    Planner p;
    memset(&p, 0, sizeof p);
    GgufWriter *w = NULL;
    char prefix[256];
    int64_t H = 0;
    int rc = -1;
    if (read_vision_config(dir, &c, err) != 0 || read_preprocessor(dir, &c, err) != 0) goto done;
    int64_t n_stored = opt->all_layers ? c.n_layers : c.n_layers - 1;
    if (n_stored < 1) {
        blv_fail(err, "%s/config.json: num_hidden_layers = %lld leaves no layer once the last is dropped (use "
                 "--all-layers)", dir, (long long)c.n_layers);
        goto done;
    }
    if (st_open(&st, dir, err) != 0) goto done;
    if (find_vision_prefix(&st, prefix, sizeof prefix, err) != 0) goto done;
    p.st = &st;
    p.prefix = prefix;
    p.type = type;
    if (plan_vision(&p, &c, n_stored, opt->post_ln, err) != 0) goto done;
    if (projector) {
        if (open_projector(projector, &pst, err) != 0) goto done;
        if (plan_projector(&p, &pst, c.hidden, &H, err) != 0) goto done;
    }
    if (progress) {
        fprintf(stderr,
                "%s: SigLIP vision tower: image %lld, patch %lld, hidden %lld, %lld layers (storing %lld%s), "
                "%lld heads, MLP %lld, eps %g, mean %g %g %g, std %g %g %g%s\n",
                dir, (long long)c.image_size, (long long)c.patch_size, (long long)c.hidden, (long long)c.n_layers,
                (long long)n_stored, opt->post_ln ? " + post-LN" : "", (long long)c.n_heads, (long long)c.ffn, c.ln_eps,
                c.mean[0], c.mean[1], c.mean[2], c.std[0], c.std[1], c.std[2],
                c.have_preprocessor ? "" : " (defaults: no preprocessor_config.json)");
        if (projector)
            fprintf(
                stderr,
                "%s: VILA mlp_downsample: LayerNorm(%lld) -> Linear(%lld -> %lld) -> GELU -> Linear(%lld -> %lld)\n",
                projector, (long long)(4 * c.hidden), (long long)(4 * c.hidden), (long long)H, (long long)H,
                (long long)H);
        else
            fprintf(stderr, "no projector given: writing the vision tower only (projection_dim 0)\n");
        if (p.n_fallback)
            fprintf(stderr, "%d matrices have rows that are not a multiple of 32 and are stored as f16\n",
                    p.n_fallback);
    }
    if (!(w = gguf_writer_new(err))) goto done;
    if (set_keys(w, dir, &c, n_stored, opt->post_ln, H, type) != 0) {
        blv_fail(err, "%s: %s", out, gguf_writer_error(w));
        goto done;
    }
    rc = write_file(out, w, p.plan, p.n_plan, progress, err);
done:
    gguf_writer_free(w);
    free(p.plan);
    st_close(&pst);
    st_close(&st);
    return rc;
}

int convert_hf_vision(const char *dir, const char *projector, const char *out, int type, int progress,
                      BlvError *err) {
    return convert_hf_vision_ex(dir, projector, out, type, NULL, progress, err);
}
