/* convert_hf_llm.c — Hugging Face LLaMA-family / BlueLM language models → `llama` GGUF (see convert_hf.h).
 *
 * Input (a checkpoint directory, as save_pretrained writes it):
 *   config.json            architectures ["LlamaForCausalLM"] or ["BlueLMForCausalLM"] (or model_type
 *                          "llama" / "BlueLM"), hidden_size, num_hidden_layers, num_attention_heads,
 *                          num_key_value_heads, intermediate_size, rms_norm_eps, rope_theta (transformers
 *                          4.x) or rope_parameters.rope_theta (5.x), tie_word_embeddings,
 *                          max_position_embeddings, vocab_size; BlueLM: use_stable_embedding.
 *   model.safetensors or model.safetensors.index.json + shards; F32, F16 or BF16 tensors.
 *   tokenizer.model        SentencePiece (BPE) — spm.c.
 *   optional: tokenizer_config.json (added_tokens_decoder, bos/eos/unk/pad_token, add_bos_token,
 *             add_eos_token, add_prefix_space), added_tokens.json, tokenizer.json (added_tokens).
 *
 * Output: the file convert.c writes for llama2.c checkpoints (llama.cpp's keys and tensor names, in
 * llama.cpp's order), so that llama.cpp loads it too unless it has BlueLM's embedding LayerNorm:
 *
 *   HF name                                          GGUF name                      GGUF ne (inner first)
 *   model.embed_tokens.weight        [V, D]          token_embd.weight              [D, V]
 *   model.embed_layer_norm.{weight,bias} [D] (BlueLM) token_embd_norm.{weight,bias} [D]
 *   model.layers.N.input_layernorm.weight            blk.N.attn_norm.weight         [D]
 *   model.layers.N.self_attn.q_proj.weight [H·hd, D] blk.N.attn_q.weight            [D, H·hd]   rows permuted
 *   model.layers.N.self_attn.k_proj.weight [K·hd, D] blk.N.attn_k.weight            [D, K·hd]   rows permuted
 *   model.layers.N.self_attn.v_proj.weight           blk.N.attn_v.weight            [D, K·hd]
 *   model.layers.N.self_attn.o_proj.weight           blk.N.attn_output.weight       [H·hd, D]
 *   model.layers.N.post_attention_layernorm.weight   blk.N.ffn_norm.weight          [D]
 *   model.layers.N.mlp.gate_proj.weight  [F, D]      blk.N.ffn_gate.weight          [D, F]
 *   model.layers.N.mlp.down_proj.weight  [D, F]      blk.N.ffn_down.weight          [F, D]
 *   model.layers.N.mlp.up_proj.weight    [F, D]      blk.N.ffn_up.weight            [D, F]
 *   model.norm.weight                                output_norm.weight             [D]
 *   lm_head.weight                       [V, D]      output.weight (absent when tied) [D, V]
 *
 * BlueLM's name for its "stable embedding" LayerNorm: the vLLM port in vivo-ai-lab/BlueLM
 * (example/vllm/vllm/model_executor/models/bluelm.py) builds BlueLMModel with
 * `self.embed_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.rms_norm_eps)` when
 * config.use_stable_embedding, under BlueLMForCausalLM's `self.model`, and its load_weights looks every
 * checkpoint name up in that module's state_dict unchanged: so the checkpoint calls it
 * model.embed_layer_norm.weight / .bias.
 *
 * Q/K rows: Hugging Face's LlamaAttention rotates the pairs (i, i + hd/2) of each head (rotate_half);
 * llama.cpp's `llama` architecture rotates adjacent pairs (2i, 2i + 1). llama.cpp's converter
 * (LlamaModel.permute) reorders the rows so both compute the same thing:
 *     w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
 * with n_head = num_attention_heads for Q and num_key_value_heads for K: row h·hd + 2i + j of the output
 * is row h·hd + j·hd/2 + i of the input (i < hd/2, j ∈ {0, 1}).
 *
 * The vocabulary (as llama.cpp's _create_vocab_sentencepiece, with the differences noted there):
 * tokenizer.model's pieces, scores and types (SentencePiece's type numbers are GGUF's), padded to
 * config.json's vocab_size with "[PAD<id>]" UNUSED pieces of score -10000; then added tokens
 * (score -1000): added_tokens.json as USER_DEFINED; tokenizer_config.json's added_tokens_decoder
 * (or, when it has none, tokenizer.json's added_tokens) as CONTROL when "special" is true or the
 * text looks special (llama.cpp's does_token_look_special: <|...|>, <｜...｜>, <unused...>, <pad>,
 * <mask>, <2mass>, [@BOS@]), else USER_DEFINED with "▁" written as " ". */
#include "convert_hf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "json.h"
#include "quant.h"
#include "safetensors.h"
#include "spm.h"
#include "tokenizer.h"

#define MAX_DIM (1 << 24)          /* any model dimension beyond this is a broken config */
#define PAD_SCORE (-10000.0f)      /* llama.cpp's score for the [PAD<id>] slots */
#define ADDED_SCORE (-1000.0f)     /* llama.cpp's score for added tokens */

/* ---- small helpers ---------------------------------------------------------------------------- */

static char *path_in(const char *dir, const char *name) {
    size_t d = strlen(dir);
    while (d > 1 && dir[d - 1] == '/') d--;  /* "dir/" + "x" is "dir/x" */
    size_t n = d + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%.*s/%s", (int)d, dir, name);
    return p;
}

static int is_file(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

/* The directory's last path component, for general.name. */
static void dir_basename(const char *dir, char *out, size_t cap) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && dir[start - 1] != '/') start--;
    size_t len = n - start;
    if (len == 0) {
        snprintf(out, cap, "model");
        return;
    }
    if (len >= cap) len = cap - 1;
    memcpy(out, dir + start, len);
    out[len] = 0;
}

/* A member that is absent or JSON null. */
static int absent(const JsonValue *obj, const char *key) {
    const JsonValue *v = json_get(obj, key);
    return !v || v->type == JSON_NULL;
}

/* A positive integer field with a default for absent/null, within (0, MAX_DIM]. */
static int cfg_dim(const JsonDoc *doc, const JsonValue *obj, const char *key, int64_t def, int64_t *out,
                   BlvError *err) {
    if (absent(obj, key)) {
        *out = def;
        return 0;
    }
    if (json_get_int(doc, obj, key, out, err) != 0) return -1;
    if (*out <= 0 || *out > MAX_DIM) {
        const JsonValue *v = json_get(obj, key);
        return blv_fail(err, "%s:%d:%d: \"%s\" = %lld is out of range", doc->name, v->line, v->col, key,
                        (long long)*out);
    }
    return 0;
}

static int cfg_bool(const JsonDoc *doc, const JsonValue *obj, const char *key, int def, int *out, BlvError *err) {
    if (absent(obj, key)) {
        *out = def;
        return 0;
    }
    return json_get_bool_or(doc, obj, key, def, out, err);
}

/* ---- config.json -------------------------------------------------------------------------------- */

typedef struct {
    int bluelm;                 /* BlueLMForCausalLM */
    char arch[64];
    int64_t dim, n_layers, n_heads, n_kv_heads, head_dim, ffn, vocab, ctx;
    double rms_eps, rope_theta;
    int tied, embd_norm;
    int64_t bos_id, eos_id, pad_id, unk_id; /* *_token_id, -1 when absent or not a single integer */
} HfLlmConfig;

/* Describes a rope_scaling / rope_parameters object for a message: its "type"/"rope_type" if any. */
static const char *rope_kind(const JsonValue *v) {
    const JsonValue *t = json_get(v, "rope_type");
    if (!t || t->type != JSON_STRING) t = json_get(v, "type");
    return t && t->type == JSON_STRING ? t->str : NULL;
}

static int special_id(const JsonValue *root, const char *key) {
    const JsonValue *v = json_get(root, key);
    return v && v->type == JSON_NUMBER && v->is_int && v->integer >= 0 && v->integer < INT32_MAX ? (int)v->integer
                                                                                                 : -1;
}

static int read_config_doc(const JsonDoc *doc, HfLlmConfig *c, BlvError *err) {
    const JsonValue *root = &doc->root;
    if (root->type != JSON_OBJECT) return blv_fail(err, "%s: must hold a JSON object", doc->name);
    /* the architecture: architectures[0], else model_type */
    const JsonValue *archs = json_get(root, "architectures");
    const char *arch = NULL;
    if (archs && archs->type == JSON_ARRAY && archs->count > 0) {
        if (json_as_string(doc, &archs->items[0], "architectures[0]", &arch, err) != 0) return -1;
    } else if (archs && archs->type != JSON_NULL && archs->type != JSON_ARRAY) {
        return blv_fail(err, "%s:%d:%d: \"architectures\" must be an array of strings", doc->name, archs->line,
                        archs->col);
    } else {
        const char *mt;
        if (json_get_string_or(doc, root, "model_type", "", &mt, err) != 0) return -1;
        arch = strcmp(mt, "llama") == 0 ? "LlamaForCausalLM"
             : (strcmp(mt, "BlueLM") == 0 || strcmp(mt, "bluelm") == 0) ? "BlueLMForCausalLM" : NULL;
        if (!arch)
            return blv_fail(err, "%s: no \"architectures\" and model_type \"%s\": not a LlamaForCausalLM or "
                            "BlueLMForCausalLM checkpoint", doc->name, mt);
    }
    if (strcmp(arch, "LlamaForCausalLM") != 0 && strcmp(arch, "BlueLMForCausalLM") != 0)
        return blv_fail(err, "%s: architecture \"%.64s\" is not supported: bluelmv converts LlamaForCausalLM and "
                        "BlueLMForCausalLM language models", doc->name, arch);
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    c->bluelm = strcmp(arch, "BlueLMForCausalLM") == 0;

    /* defaults: transformers' LlamaConfig and BlueLM's BlueLMConfig (configuration_bluelm.py) */
    if (cfg_dim(doc, root, "hidden_size", 4096, &c->dim, err) != 0 ||
        cfg_dim(doc, root, "num_hidden_layers", 32, &c->n_layers, err) != 0 ||
        cfg_dim(doc, root, "num_attention_heads", 32, &c->n_heads, err) != 0 ||
        cfg_dim(doc, root, "num_key_value_heads", c->n_heads, &c->n_kv_heads, err) != 0 ||
        cfg_dim(doc, root, "intermediate_size", 11008, &c->ffn, err) != 0 ||
        cfg_dim(doc, root, "vocab_size", c->bluelm ? 100096 : 32000, &c->vocab, err) != 0 ||
        cfg_dim(doc, root, "max_position_embeddings", 2048, &c->ctx, err) != 0 ||
        json_get_number_or(doc, root, "rms_norm_eps", 1e-6, &c->rms_eps, err) != 0 ||
        cfg_bool(doc, root, "tie_word_embeddings", 0, &c->tied, err) != 0 ||
        cfg_bool(doc, root, "use_stable_embedding", 1, &c->embd_norm, err) != 0)
        return -1;
    if (!c->bluelm) c->embd_norm = 0;  /* LlamaForCausalLM has no embedding LayerNorm */
    if (!(c->rms_eps > 0 && c->rms_eps < 1))
        return blv_fail(err, "%s: rms_norm_eps = %g is not a plausible epsilon", doc->name, c->rms_eps);
    if (c->dim % c->n_heads != 0)
        return blv_fail(err, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", doc->name,
                        (long long)c->dim, (long long)c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return blv_fail(err, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld", doc->name,
                        (long long)c->n_heads, (long long)c->n_kv_heads);
    c->head_dim = c->dim / c->n_heads;
    if (c->head_dim % 2 != 0)
        return blv_fail(err, "%s: the head size %lld (hidden_size / num_attention_heads) is odd: RoPE needs pairs",
                        doc->name, (long long)c->head_dim);
    if (!absent(root, "head_dim")) {
        int64_t hd;
        if (json_get_int(doc, root, "head_dim", &hd, err) != 0) return -1;
        if (hd != c->head_dim)
            return blv_fail(err, "%s: head_dim %lld differs from hidden_size / num_attention_heads = %lld, which "
                            "bluelmv's llama model assumes", doc->name, (long long)hd, (long long)c->head_dim);
    }

    /* what this converter cannot represent: refuse rather than write a file that computes something else */
    const char *act;
    if (json_get_string_or(doc, root, "hidden_act", "silu", &act, err) != 0) return -1;
    if (strcmp(act, "silu") != 0)
        return blv_fail(err, "%s: hidden_act \"%.32s\" is not supported (the llama MLP is SiLU-gated: \"silu\")",
                        doc->name, act);
    int bias;
    if (cfg_bool(doc, root, "attention_bias", 0, &bias, err) != 0) return -1;
    if (bias) return blv_fail(err, "%s: attention_bias is true: attention projections with biases are not supported",
                              doc->name);
    if (cfg_bool(doc, root, "mlp_bias", 0, &bias, err) != 0) return -1;
    if (bias) return blv_fail(err, "%s: mlp_bias is true: MLP projections with biases are not supported", doc->name);
    if (!absent(root, "quantization_config")) {
        const JsonValue *q = json_get(root, "quantization_config");
        const JsonValue *m = json_get(q, "quant_method");
        return blv_fail(err, "%s: the checkpoint is quantized (quantization_config%s%s%s): bluelmv converts F32, F16 "
                        "and BF16 weights; convert the unquantized model", doc->name, m && m->type == JSON_STRING ?
                        ", quant_method \"" : "", m && m->type == JSON_STRING ? m->str : "",
                        m && m->type == JSON_STRING ? "\"" : "");
    }
    /* RoPE: plain, with theta from rope_theta (4.x) or rope_parameters (5.x) */
    if (!absent(root, "rope_scaling")) {
        const JsonValue *v = json_get(root, "rope_scaling");
        const char *kind = rope_kind(v);
        return blv_fail(err, "%s:%d:%d: rope_scaling%s%s%s is set: RoPE scaling is not supported (bluelmv applies plain "
                        "RoPE with base rope_theta); convert a checkpoint whose config has \"rope_scaling\": null",
                        doc->name, v->line, v->col, kind ? " (type \"" : "", kind ? kind : "", kind ? "\")" : "");
    }
    c->rope_theta = 10000.0;
    const JsonValue *rp = json_get(root, "rope_parameters");
    if (rp && rp->type == JSON_OBJECT) {
        const char *kind = rope_kind(rp);
        if (kind && strcmp(kind, "default") != 0)
            return blv_fail(err, "%s:%d:%d: rope_parameters has rope_type \"%.32s\": RoPE scaling is not supported "
                            "(bluelmv applies plain RoPE, rope_type \"default\")", doc->name, rp->line, rp->col, kind);
        if (json_get_number_or(doc, rp, "rope_theta", c->rope_theta, &c->rope_theta, err) != 0) return -1;
    } else if (rp && rp->type != JSON_NULL) {
        return blv_fail(err, "%s:%d:%d: \"rope_parameters\" must be an object", doc->name, rp->line, rp->col);
    }
    if (!absent(root, "rope_theta") && json_get_number(doc, root, "rope_theta", &c->rope_theta, err) != 0) return -1;
    if (!(c->rope_theta > 1)) return blv_fail(err, "%s: rope_theta = %g is not plausible", doc->name, c->rope_theta);

    c->bos_id = special_id(root, "bos_token_id");
    c->eos_id = special_id(root, "eos_token_id");
    c->pad_id = special_id(root, "pad_token_id");
    c->unk_id = special_id(root, "unk_token_id");
    return 0;
}

/* ---- the vocabulary ------------------------------------------------------------------------------ */

typedef struct {
    int32_t n;
    char **pieces;            /* (n) owned, NUL-terminated */
    float *scores;
    int32_t *types;
    int32_t n_model;          /* pieces that come from tokenizer.model */
    int32_t n_added;          /* slots set from added-token lists */
    int32_t n_padding;        /* [PAD<id>] slots left */
    int32_t bos, eos, unk, pad;
    int add_bos, add_eos, add_space_prefix;
    char notes[4][256];       /* warnings for the progress output */
    int n_notes;
} Vocab;

static void vocab_free(Vocab *v) {
    if (v->pieces)
        for (int32_t i = 0; i < v->n; i++) free(v->pieces[i]);
    free(v->pieces);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof *v);
}

static void vocab_note(Vocab *v, const char *fmt, const char *a, const char *b) {
    if (v->n_notes < 4) snprintf(v->notes[v->n_notes++], sizeof v->notes[0], fmt, a, b);
}

static int vocab_set(Vocab *v, int32_t id, const char *text, float score, int32_t type, const char *what,
                     BlvError *err) {
    char *copy = strdup(text);
    if (!copy) return blv_fail(err, "%s: out of memory", what);
    free(v->pieces[id]);
    v->pieces[id] = copy;
    v->scores[id] = score;
    v->types[id] = type;
    return 0;
}

/* llama.cpp's ModelBase.does_token_look_special. */
static int looks_special(const char *t) {
    size_t n = strlen(t);
    if (!strcmp(t, "<pad>") || !strcmp(t, "<mask>") || !strcmp(t, "<2mass>") || !strcmp(t, "[@BOS@]")) return 1;
    if (n >= 4 && !strncmp(t, "<|", 2) && !strcmp(t + n - 2, "|>")) return 1;
    /* "<｜" and "｜>" with U+FF5C FULLWIDTH VERTICAL LINE (EF BD 9C) */
    if (n >= 8 && !strncmp(t, "<\xEF\xBD\x9C", 4) && !strcmp(t + n - 4, "\xEF\xBD\x9C>")) return 1;
    if (n >= 8 && !strncmp(t, "<unused", 7) && t[n - 1] == '>') return 1;
    return 0;
}

/* "▁" → " " (llama.cpp pre-normalizes the spaces of user-defined tokens). */
static char *unescape_spaces(const char *s) {
    char *out = malloc(strlen(s) + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; s[i];) {
        if ((unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 && (unsigned char)s[i + 2] == 0x81) {
            out[o++] = ' ';
            i += 3;
        } else {
            out[o++] = s[i++];
        }
    }
    out[o] = 0;
    return out;
}

/* One added token from a JSON list: id, content, special. */
static int add_token(Vocab *v, int64_t id, const char *content, size_t content_len, int special, int json_user_defined,
                     const char *file, int line, int col, int64_t *n_ignored, BlvError *err) {
    if (id < 0) return blv_fail(err, "%s:%d:%d: added token id %lld is negative", file, line, col, (long long)id);
    if (id >= v->n) {
        (*n_ignored)++;  /* llama.cpp: "ignore token N: id is out of range" */
        return 0;
    }
    if (content_len == 0 || strlen(content) != content_len)
        return blv_fail(err, "%s:%d:%d: added token %lld has an empty text or one with a NUL byte", file, line, col,
                        (long long)id);
    int type;
    char *text;
    if (json_user_defined) {
        type = TOKEN_TYPE_USER_DEFINED;
        text = strdup(content);
    } else if (special || looks_special(content)) {
        type = TOKEN_TYPE_CONTROL;
        text = strdup(content);
    } else {
        type = TOKEN_TYPE_USER_DEFINED;
        text = unescape_spaces(content);
    }
    if (!text) return blv_fail(err, "%s: out of memory", file);
    if (id < v->n_model && strcmp(text, v->pieces[id]) == 0) {
        /* the model's own piece listed again (e.g. "<unk>", "<s>", "</s>" in added_tokens_decoder): keep what
         * tokenizer.model says about it (llama.cpp would retype <unk> as CONTROL and rescore it -1000) */
        free(text);
        return 0;
    }
    int rc = vocab_set(v, (int32_t)id, text, ADDED_SCORE, type, file, err);
    free(text);
    if (rc == 0) v->n_added++;
    return rc;
}

/* added_tokens.json: {"text": id, ...} (all USER_DEFINED, as llama.cpp). */
static int read_added_tokens_json(Vocab *v, const char *dir, int64_t *n_ignored, BlvError *err) {
    char *path = path_in(dir, "added_tokens.json");
    if (!path) return blv_fail(err, "%s: out of memory", dir);
    int rc = 0;
    if (is_file(path)) {
        JsonDoc doc;
        rc = json_parse_file(&doc, path, err);
        if (rc == 0 && doc.root.type != JSON_OBJECT) rc = blv_fail(err, "%s: must hold a JSON object", path);
        for (size_t i = 0; rc == 0 && i < doc.root.count; i++) {
            const JsonMember *m = &doc.root.members[i];
            int64_t id;
            rc = json_as_int(&doc, &m->value, m->key, &id, err);
            if (rc == 0)
                rc = add_token(v, id, m->key, m->key_len, 0, 1, path, m->line, m->col, n_ignored, err);
        }
        json_free(&doc);
    }
    free(path);
    return rc;
}

/* tokenizer_config.json's added_tokens_decoder {"id": {"content": ..., "special": ...}}, or else
 * tokenizer.json's added_tokens [{"id": ..., "content": ..., "special": ...}]. */
static int read_added_tokens_decoder(Vocab *v, const JsonDoc *tc, const char *dir, int64_t *n_ignored,
                                     BlvError *err) {
    const JsonValue *dec = tc ? json_get(&tc->root, "added_tokens_decoder") : NULL;
    if (dec) {
        if (dec->type != JSON_OBJECT)
            return blv_fail(err, "%s:%d:%d: \"added_tokens_decoder\" must be an object", tc->name, dec->line, dec->col);
        for (size_t i = 0; i < dec->count; i++) {
            const JsonMember *m = &dec->members[i];
            char *end;
            errno = 0;
            long long id = strtoll(m->key, &end, 10);
            if (m->key_len == 0 || *end || errno)
                return blv_fail(err, "%s:%d:%d: added_tokens_decoder key \"%.32s\" is not a token id", tc->name,
                                m->line, m->col, m->key);
            const char *content;
            int special;
            if (m->value.type != JSON_OBJECT)
                return blv_fail(err, "%s:%d:%d: added_tokens_decoder[\"%s\"] must be an object", tc->name, m->line,
                                m->col, m->key);
            if (json_get_string(tc, &m->value, "content", &content, err) != 0 ||
                json_get_bool_or(tc, &m->value, "special", 0, &special, err) != 0)
                return -1;
            const JsonValue *cv = json_get(&m->value, "content");
            if (add_token(v, id, content, cv->len, special, 0, tc->name, m->line, m->col, n_ignored, err) != 0)
                return -1;
        }
        return 0;
    }
    char *path = path_in(dir, "tokenizer.json");
    if (!path) return blv_fail(err, "%s: out of memory", dir);
    int rc = 0;
    if (is_file(path)) {
        JsonDoc doc;
        rc = json_parse_file(&doc, path, err);
        const JsonValue *list = rc == 0 ? json_get(&doc.root, "added_tokens") : NULL;
        if (rc == 0 && list && list->type != JSON_ARRAY)
            rc = blv_fail(err, "%s:%d:%d: \"added_tokens\" must be an array", path, list->line, list->col);
        for (size_t i = 0; rc == 0 && list && i < list->count; i++) {
            const JsonValue *t = &list->items[i];
            int64_t id;
            const char *content;
            int special;
            if (t->type != JSON_OBJECT) {
                rc = blv_fail(err, "%s:%d:%d: added_tokens[%zu] must be an object", path, t->line, t->col, i);
                break;
            }
            rc = json_get_int(&doc, t, "id", &id, err);
            if (rc == 0) rc = json_get_string(&doc, t, "content", &content, err);
            if (rc == 0) rc = json_get_bool_or(&doc, t, "special", 0, &special, err);
            if (rc == 0)
                rc = add_token(v, id, content, json_get(t, "content")->len, special, 0, path, t->line, t->col,
                               n_ignored, err);
        }
        json_free(&doc);
    }
    free(path);
    return rc;
}

/* tokenizer_config.json's "<kind>_token": a string or {"content": ...}; its id in the vocabulary. */
static int32_t named_token(const Vocab *v, const JsonDoc *tc, const char *key) {
    const JsonValue *e = tc ? json_get(&tc->root, key) : NULL;
    if (e && e->type == JSON_OBJECT) e = json_get(e, "content");
    if (!e || e->type != JSON_STRING) return -1;
    for (int32_t i = 0; i < v->n; i++)
        if (strcmp(v->pieces[i], e->str) == 0) return i;
    return -1;
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Every token text once (model pieces are unique already: a clash involves an added token or a [PAD]). */
static int check_unique(const Vocab *v, const char *dir, BlvError *err) {
    uint64_t n_slots = 1;
    while (n_slots < 2 * (uint64_t)v->n) n_slots *= 2;
    int32_t *slots = malloc((size_t)n_slots * sizeof *slots);
    if (!slots) return blv_fail(err, "%s: out of memory", dir);
    memset(slots, 0xff, (size_t)n_slots * sizeof *slots);
    int rc = 0;
    for (int32_t i = 0; i < v->n && rc == 0; i++) {
        for (uint64_t s = fnv1a(v->pieces[i]) & (n_slots - 1);; s = (s + 1) & (n_slots - 1)) {
            int32_t o = slots[s];
            if (o < 0) {
                slots[s] = i;
                break;
            }
            if (strcmp(v->pieces[o], v->pieces[i]) == 0) {
                rc = blv_fail(err, "%s: tokens %d and %d have the same text \"%.64s\" (an added token repeats another "
                              "token's text)", dir, (int)o, (int)i, v->pieces[i]);
                break;
            }
        }
    }
    free(slots);
    return rc;
}

static int check_special(const Vocab *v, const char *what, int32_t id, const char *source, BlvError *err) {
    if (id < -1 || id >= v->n)
        return blv_fail(err, "%s: %s token id %d is outside the vocabulary of %d tokens", source, what, (int)id,
                        (int)v->n);
    return 0;
}

/* Builds the GGUF vocabulary. cfg may be NULL (vocabulary only, no config.json). */
static int build_vocab(const char *dir, const HfLlmConfig *cfg, Vocab *v, BlvError *err) {
    memset(v, 0, sizeof *v);
    char *spm_path = path_in(dir, "tokenizer.model");
    char *tc_path = path_in(dir, "tokenizer_config.json");
    SpmModel sp;
    JsonDoc tc;
    int have_tc = 0, rc = -1;
    memset(&sp, 0, sizeof sp);
    if (!spm_path || !tc_path) {
        blv_fail(err, "%s: out of memory", dir);
        goto done;
    }
    if (!is_file(spm_path)) {
        blv_fail(err, "%s: no such file: bluelmv converts SentencePiece tokenizers, and the checkpoint directory must "
                 "hold the model's tokenizer.model", spm_path);
        goto done;
    }
    if (spm_load(&sp, spm_path, err) != 0) goto done;
    if (sp.model_type != SPM_BPE) {
        blv_fail(err, "%s: a SentencePiece %s model (trainer_spec.model_type = %d): bluelmv's tokenizer implements "
                 "SentencePiece BPE (llama.cpp's `llama` vocabulary), which segments text differently, so it "
                 "cannot use this model; only model_type BPE (2) is converted", spm_path,
                 sp.model_type == SPM_UNIGRAM ? "UNIGRAM" : sp.model_type == SPM_WORD ? "WORD"
                 : sp.model_type == SPM_CHAR ? "CHAR" : "unknown-type", sp.model_type);
        goto done;
    }
    if (sp.treat_whitespace_as_suffix) {
        blv_fail(err, "%s: trainer_spec.treat_whitespace_as_suffix is set: the tokenizer (as llama.cpp's) puts the "
                 "space mark at the start of pieces", spm_path);
        goto done;
    }
    if (!sp.escape_whitespaces) {
        blv_fail(err, "%s: normalizer_spec.escape_whitespaces is false: the tokenizer (as llama.cpp's) always "
                 "writes spaces as U+2581", spm_path);
        goto done;
    }
    if (sp.charsmap_bytes > 0 || (sp.normalizer_name[0] && strcmp(sp.normalizer_name, "identity") != 0))
        vocab_note(v, "note: normalizer \"%s\"%s is not applied by bluelmv's tokenizer (nor by llama.cpp's): text "
                   "is tokenized as given", sp.normalizer_name, sp.charsmap_bytes ? " (precompiled rules)" : "");
    if (sp.remove_extra_whitespaces)
        vocab_note(v, "note: normalizer_spec.remove_extra_whitespaces%s is set, but bluelmv's tokenizer (as "
                   "llama.cpp's) keeps whitespace runs%s", "", "");
    if (!sp.byte_fallback)
        vocab_note(v, "note: byte_fallback is off%s: characters outside the vocabulary become <unk>%s", "", "");

    int64_t n = cfg ? cfg->vocab : sp.n_pieces;
    if (n < sp.n_pieces) {
        blv_fail(err, "%s: config.json says vocab_size %lld but %s has %d pieces: the model has no embedding for "
                 "pieces %lld..%d", dir, (long long)n, spm_path, (int)sp.n_pieces, (long long)n, (int)sp.n_pieces - 1);
        goto done;
    }
    v->n = (int32_t)n;
    v->pieces = calloc((size_t)n, sizeof *v->pieces);
    v->scores = calloc((size_t)n, sizeof *v->scores);
    v->types = calloc((size_t)n, sizeof *v->types);
    if (!v->pieces || !v->scores || !v->types) {
        blv_fail(err, "%s: out of memory for %lld tokens", dir, (long long)n);
        goto done;
    }
    for (int32_t i = 0; i < v->n; i++) {
        if (i < sp.n_pieces) {
            /* steal the piece */
            v->pieces[i] = sp.pieces[i];
            sp.pieces[i] = NULL;
            v->scores[i] = sp.scores[i];
            v->types[i] = sp.types[i];
        } else {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", (int)i);
            if (vocab_set(v, i, pad, PAD_SCORE, TOKEN_TYPE_UNUSED, dir, err) != 0) goto done;
        }
    }
    v->n_model = sp.n_pieces;

    /* added tokens, in llama.cpp's order: added_tokens.json, then tokenizer_config.json */
    int64_t n_ignored = 0;
    if (read_added_tokens_json(v, dir, &n_ignored, err) != 0) goto done;
    if (is_file(tc_path)) {
        if (json_parse_file(&tc, tc_path, err) != 0) goto done;
        have_tc = 1;
        if (tc.root.type != JSON_OBJECT) {
            blv_fail(err, "%s: must hold a JSON object", tc_path);
            goto done;
        }
    }
    if (read_added_tokens_decoder(v, have_tc ? &tc : NULL, dir, &n_ignored, err) != 0) goto done;
    if (n_ignored) {
        char count[32];
        snprintf(count, sizeof count, "%lld", (long long)n_ignored);
        vocab_note(v, "note: %s added token(s) with ids past the vocabulary%s were ignored (as llama.cpp does)", count,
                   "");
    }
    for (int32_t i = v->n_model; i < v->n; i++) v->n_padding += v->types[i] == TOKEN_TYPE_UNUSED;

    /* a text twice would make the tokenizer ambiguous (tokenizer.c refuses such files) */
    if (check_unique(v, dir, err) != 0) goto done;

    /* special ids: tokenizer_config.json's named tokens, else config.json's ids, else the trainer spec's */
    v->unk = sp.unk_id;
    v->bos = sp.bos_id;
    v->eos = sp.eos_id;
    v->pad = sp.pad_id;
    if (cfg) {
        if (cfg->bos_id >= 0) v->bos = (int32_t)cfg->bos_id;
        if (cfg->eos_id >= 0) v->eos = (int32_t)cfg->eos_id;
        if (cfg->pad_id >= 0) v->pad = (int32_t)cfg->pad_id;
        if (cfg->unk_id >= 0) v->unk = (int32_t)cfg->unk_id;
        if (check_special(v, "bos", v->bos, "config.json", err) || check_special(v, "eos", v->eos, "config.json", err) ||
            check_special(v, "pad", v->pad, "config.json", err) || check_special(v, "unk", v->unk, "config.json", err))
            goto done;
    }
    v->add_bos = 1;
    v->add_eos = 0;
    v->add_space_prefix = sp.add_dummy_prefix;
    if (have_tc) {
        int32_t id;
        if ((id = named_token(v, &tc, "bos_token")) >= 0) v->bos = id;
        if ((id = named_token(v, &tc, "eos_token")) >= 0) v->eos = id;
        if ((id = named_token(v, &tc, "unk_token")) >= 0) v->unk = id;
        if ((id = named_token(v, &tc, "pad_token")) >= 0) v->pad = id;
        if (cfg_bool(&tc, &tc.root, "add_bos_token", 1, &v->add_bos, err) != 0 ||
            cfg_bool(&tc, &tc.root, "add_eos_token", 0, &v->add_eos, err) != 0 ||
            cfg_bool(&tc, &tc.root, "add_prefix_space", v->add_space_prefix, &v->add_space_prefix, err) != 0)
            goto done;
    }
    rc = 0;
done:
    if (have_tc) json_free(&tc);
    spm_free(&sp);
    free(spm_path);
    free(tc_path);
    if (rc != 0) vocab_free(v);
    return rc;
}

/* ---- the tensor plan ----------------------------------------------------------------------------- */

typedef struct {
    char name[64];            /* GGUF */
    int type;
    int64_t rows, cols;       /* rows == 0: a vector of cols */
    int64_t permute_heads;    /* Q/K: heads of the rotary permutation; 0: rows in order */
    const StTensor *src;
} Plan;

typedef struct {
    const SafeTensors *st;
    int type;
    Plan *plan;
    int n, cap;
    int n_fallback;
    uint8_t *used;            /* (st->n_tensors) 1 when some plan reads the tensor */
} Planner;

static int check_source(Planner *p, const char *hf, const int64_t *want, int n_want, const StTensor **out,
                        BlvError *err) {
    const SafeTensors *st = p->st;
    const StTensor *t = st_find(st, hf);
    if (!t) return blv_fail(err, "%s: tensor %s is missing", st->source, hf);
    int same = t->n_dims == n_want;
    for (int i = 0; same && i < n_want; i++) same = t->shape[i] == want[i];
    if (!same) {
        char got[160], exp[160];
        st_format_shape(t->shape, t->n_dims, got, sizeof got);
        st_format_shape(want, n_want, exp, sizeof exp);
        return blv_fail(err, "%s: tensor %s has shape %s, config.json says %s", st_tensor_file(st, t), hf, got, exp);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return blv_fail(err, "%s: tensor %s has dtype %s, which is not a weight type bluelmv converts (F32, F16, BF16)",
                        st_tensor_file(st, t), hf, st_dtype_name(t->dtype));
    p->used[t - st->tensors] = 1;
    *out = t;
    return 0;
}

static int plan_add(Planner *p, const char *gguf, const char *hf, int64_t rows, int64_t cols, int64_t permute,
                    BlvError *err) {
    const StTensor *src;
    int64_t shape[2] = {rows ? rows : cols, cols};
    if (check_source(p, hf, rows ? shape : &shape[1], rows ? 2 : 1, &src, err) != 0) return -1;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        Plan *bigger = realloc(p->plan, (size_t)cap * sizeof *bigger);
        if (!bigger) return blv_fail(err, "out of memory planning tensors");
        p->plan = bigger;
        p->cap = cap;
    }
    Plan *t = &p->plan[p->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", gguf);
    t->rows = rows;
    t->cols = cols;
    t->permute_heads = permute;
    t->src = src;
    if (rows == 0) {
        t->type = TYPE_F32;
    } else {
        t->type = p->type;
        if (type_row_bytes(t->type, cols) < 0) {  /* rows quantized blocks cannot hold: F16, as convert.c */
            t->type = TYPE_F16;
            p->n_fallback++;
        }
    }
    return 0;
}

/* Names that a checkpoint may carry without them being weights of this model. */
static int ignorable(const char *name, const HfLlmConfig *c) {
    size_t n = strlen(name);
    const char *inv = "rotary_emb.inv_freq";
    if (n >= strlen(inv) && strcmp(name + n - strlen(inv), inv) == 0) return 1;  /* older checkpoints' RoPE table */
    if (c->tied && strcmp(name, "lm_head.weight") == 0) return 1;              /* a tied copy */
    return 0;
}

static int plan_model(Planner *p, const HfLlmConfig *c, BlvError *err) {
    int64_t D = c->dim, F = c->ffn, V = c->vocab, hd = c->head_dim, Q = c->n_heads * hd, KV = c->n_kv_heads * hd;
    char g[64], h[160];
    if (plan_add(p, "token_embd.weight", "model.embed_tokens.weight", V, D, 0, err) != 0) return -1;
    if (c->embd_norm &&
        (plan_add(p, "token_embd_norm.weight", "model.embed_layer_norm.weight", 0, D, 0, err) != 0 ||
         plan_add(p, "token_embd_norm.bias", "model.embed_layer_norm.bias", 0, D, 0, err) != 0))
        return -1;
    for (int64_t L = 0; L < c->n_layers; L++) {
        struct {
            const char *gguf, *hf;
            int64_t rows, cols, permute;
        } t[9] = {
            {"attn_norm", "input_layernorm", 0, D, 0},
            {"attn_q", "self_attn.q_proj", Q, D, c->n_heads},
            {"attn_k", "self_attn.k_proj", KV, D, c->n_kv_heads},
            {"attn_v", "self_attn.v_proj", KV, D, 0},
            {"attn_output", "self_attn.o_proj", D, Q, 0},
            {"ffn_norm", "post_attention_layernorm", 0, D, 0},
            {"ffn_gate", "mlp.gate_proj", F, D, 0},
            {"ffn_down", "mlp.down_proj", D, F, 0},
            {"ffn_up", "mlp.up_proj", F, D, 0},
        };
        for (int k = 0; k < 9; k++) {
            snprintf(g, sizeof g, "blk.%lld.%s.weight", (long long)L, t[k].gguf);
            snprintf(h, sizeof h, "model.layers.%lld.%s.weight", (long long)L, t[k].hf);
            if (plan_add(p, g, h, t[k].rows, t[k].cols, t[k].permute, err) != 0) return -1;
        }
    }
    if (plan_add(p, "output_norm.weight", "model.norm.weight", 0, D, 0, err) != 0) return -1;
    if (!c->tied && plan_add(p, "output.weight", "lm_head.weight", V, D, 0, err) != 0) return -1;
    /* anything left over would be silently dropped: refuse instead */
    for (int64_t i = 0; i < p->st->n_tensors; i++) {
        const StTensor *t = &p->st->tensors[i];
        if (p->used[i] || ignorable(t->name, c)) continue;
        return blv_fail(err, "%s: tensor %s is not part of a %s with this config.json (num_hidden_layers %lld%s%s); "
                        "bluelmv "
                        "would drop it, so it refuses the checkpoint", st_tensor_file(p->st, t), t->name, c->arch,
                        (long long)c->n_layers, c->bluelm ? (c->embd_norm ? ", use_stable_embedding" :
                                                             ", no use_stable_embedding") : "",
                        c->tied ? ", tied embeddings" : "");
    }
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------------- */

static uint32_t file_type_of(int type) {
    switch (type) {
    case TYPE_F16: return 1;
    case TYPE_Q4_0: return 2;
    case TYPE_Q8_0: return 7;
    case TYPE_BF16: return 32;
    default: return 0;
    }
}

static int set_keys(GgufWriter *w, const char *name, const HfLlmConfig *c, int type, int vocab_only, const Vocab *v) {
    int rc = 0;
    rc |= gguf_set_string(w, "general.architecture", "llama");
    rc |= gguf_set_string(w, "general.name", name);
    if (c) {
        char desc[160];
        snprintf(desc, sizeof desc, "%s converted from a Hugging Face %s checkpoint by bluelmv",
                 vocab_only ? "vocabulary of a" : "language model", c->arch);
        rc |= gguf_set_string(w, "general.description", desc);
    } else {
        rc |= gguf_set_string(w, "general.description",
                              "vocabulary converted from a SentencePiece tokenizer.model by bluelmv");
    }
    if (!vocab_only) {
        rc |= gguf_set_u32(w, "general.file_type", file_type_of(type));
        if (type == TYPE_Q4_0 || type == TYPE_Q8_0) rc |= gguf_set_u32(w, "general.quantization_version", 2);
    }
    if (c) {
        rc |= gguf_set_u32(w, "llama.context_length", (uint32_t)c->ctx);
        rc |= gguf_set_u32(w, "llama.embedding_length", (uint32_t)c->dim);
        rc |= gguf_set_u32(w, "llama.block_count", (uint32_t)c->n_layers);
        rc |= gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)c->ffn);
        rc |= gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
        rc |= gguf_set_f32(w, "llama.rope.freq_base", (float)c->rope_theta);
        rc |= gguf_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads);
        rc |= gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
        rc |= gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)c->rms_eps);
    }
    rc |= gguf_set_u32(w, "llama.vocab_size", (uint32_t)v->n);

    rc |= gguf_set_string(w, "tokenizer.ggml.model", "llama");
    rc |= gguf_set_string_array(w, "tokenizer.ggml.tokens", (const char *const *)v->pieces, NULL, (uint64_t)v->n);
    rc |= gguf_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, v->scores, (uint64_t)v->n);
    rc |= gguf_set_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->types, (uint64_t)v->n);
    if (v->unk >= 0) rc |= gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk);
    if (v->bos >= 0) rc |= gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    if (v->eos >= 0) rc |= gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    if (v->pad >= 0) rc |= gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad);
    rc |= gguf_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    rc |= gguf_set_bool(w, "tokenizer.ggml.add_eos_token", v->add_eos);
    rc |= gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix);
    return rc ? -1 : 0;
}

/* Source row of output row r: identity, or llama.cpp's rotary permutation over n_head heads. */
static int64_t source_row(const Plan *t, int64_t r) {
    if (!t->permute_heads) return r;
    int64_t hd = t->rows / t->permute_heads, half = hd / 2;
    int64_t h = r / hd, k = r % hd, i = k / 2, j = k % 2;
    return h * hd + j * half + i;
}

static int write_tensor(GgufWriter *w, const SafeTensors *st, const Plan *t, BlvError *err) {
    int64_t rows = t->rows ? t->rows : 1;
    int64_t row_bytes = type_row_bytes(t->type, t->cols);
    uint8_t *bytes = blv_malloc((size_t)(rows * row_bytes), t->name, err);
    float *row = blv_malloc((size_t)t->cols * sizeof(float), t->name, err);
    int rc = -1;
    if (!bytes || !row) goto done;
    for (int64_t r = 0; r < rows; r++) {
        if (t->rows == 0) {
            if (st_read_f32(st, t->src, row, err) != 0) goto done;
        } else if (st_read_rows_f32(st, t->src, source_row(t, r), 1, row, err) != 0) {
            goto done;
        }
        quantize_row(t->type, row, bytes + r * row_bytes, t->cols);
    }
    rc = gguf_writer_put_tensor(w, bytes, (uint64_t)(rows * row_bytes), err);
done:
    free(bytes);
    free(row);
    return rc;
}

static int write_file(GgufWriter *w, const char *out, const SafeTensors *st, const Plan *plan, int n, int progress,
                      BlvError *err) {
    for (int i = 0; i < n; i++) {
        int64_t ne[2] = {plan[i].cols, plan[i].rows};
        if (gguf_add_tensor(w, plan[i].name, (uint32_t)plan[i].type, plan[i].rows ? 2 : 1, ne) != 0)
            return blv_fail(err, "%s: %s", out, gguf_writer_error(w));
    }
    if (gguf_writer_begin(w, out, err) != 0) return -1;
    double t0 = blv_now();
    int tty = isatty(2), last_decile = -1;
    for (int i = 0; i < n; i++) {
        /* on a terminal, one line rewritten per tensor; in a log, a line per 10% (as convert.c) */
        int decile = (10 * (i + 1)) / n;
        if (progress && (tty || decile != last_decile)) {
            fprintf(stderr, "%s[%3d/%3d] %-28s %-5s %6.1fs%s", tty ? "\r" : "", i + 1, n, plan[i].name,
                    type_name(plan[i].type), blv_now() - t0, tty ? "" : "\n");
            fflush(stderr);
            last_decile = decile;
        }
        if (write_tensor(w, st, &plan[i], err) != 0) {
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

static void print_vocab(const char *dir, const Vocab *v) {
    char *spm_path = path_in(dir, "tokenizer.model");
    int32_t counts[7] = {0};
    for (int32_t i = 0; i < v->n; i++) counts[v->types[i] >= 0 && v->types[i] <= 6 ? v->types[i] : 0]++;
    fprintf(stderr,
            "%s: SentencePiece BPE, %d pieces; vocabulary %d tokens (%d normal, %d byte, %d control, "
            "%d user-defined, %d unknown, %d unused; %d set from added tokens, %d [PAD] slots); bos %d, eos %d, unk "
            "%d, pad %d; add_bos %s, add_eos %s, add_space_prefix %s\n",
            spm_path ? spm_path : dir, (int)v->n_model, (int)v->n, (int)counts[TOKEN_TYPE_NORMAL], (int)counts[TOKEN_TYPE_BYTE],
            (int)counts[TOKEN_TYPE_CONTROL], (int)counts[TOKEN_TYPE_USER_DEFINED], (int)counts[TOKEN_TYPE_UNKNOWN],
            (int)counts[TOKEN_TYPE_UNUSED], (int)v->n_added, (int)v->n_padding, (int)v->bos, (int)v->eos, (int)v->unk,
            (int)v->pad, v->add_bos ? "true" : "false", v->add_eos ? "true" : "false",
            v->add_space_prefix ? "true" : "false");
    for (int i = 0; i < v->n_notes; i++) fprintf(stderr, "%s\n", v->notes[i]);
    free(spm_path);
}

static int read_config(const char *dir, int required, HfLlmConfig *c, int *have, BlvError *err) {
    char *path = path_in(dir, "config.json");
    if (!path) return blv_fail(err, "%s: out of memory", dir);
    *have = 0;
    int rc = 0;
    if (!is_file(path)) {
        if (required)
            rc = blv_fail(err, "%s: no such file: a Hugging Face checkpoint directory holds config.json (use "
                          "--vocab-only to convert just a tokenizer.model)", path);
    } else {
        JsonDoc doc;
        rc = json_parse_file(&doc, path, err);
        if (rc == 0) {
            rc = read_config_doc(&doc, c, err);
            json_free(&doc);
        }
        *have = rc == 0;
    }
    free(path);
    return rc;
}

int convert_hf_llm(const char *dir, const char *out, int type, int vocab_only, int progress, BlvError *err) {
    if (!vocab_only && type != TYPE_F32 && type != TYPE_F16 && type != TYPE_BF16 && type != TYPE_Q8_0 &&
        type != TYPE_Q4_0)
        return blv_fail(err, "%s is not an output type for the language model (use f32, f16, bf16, q8_0 or q4_0)",
                        type_name(type));
    struct stat sb;
    if (stat(dir, &sb) != 0) return blv_fail(err, "%s: cannot open: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return blv_fail(err, "%s: not a directory (give the checkpoint directory)", dir);
    HfLlmConfig c;
    memset(&c, 0, sizeof c);
    Vocab v;
    memset(&v, 0, sizeof v);
    SafeTensors st;
    memset(&st, 0, sizeof st);
    Planner p;
    memset(&p, 0, sizeof p);
    GgufWriter *w = NULL;
    int have_cfg = 0, rc = -1;
    char name[256];
    dir_basename(dir, name, sizeof name);

    if (read_config(dir, !vocab_only, &c, &have_cfg, err) != 0) goto done;
    if (build_vocab(dir, have_cfg ? &c : NULL, &v, err) != 0) goto done;
    if (!vocab_only) {
        if (st_open(&st, dir, err) != 0) goto done;
        p.st = &st;
        p.type = type;
        p.used = calloc((size_t)(st.n_tensors ? st.n_tensors : 1), 1);
        if (!p.used) {
            blv_fail(err, "%s: out of memory", dir);
            goto done;
        }
        if (plan_model(&p, &c, err) != 0) goto done;
    }
    if (progress) {
        if (have_cfg)
            fprintf(stderr,
                    "%s: %s: hidden %lld, %lld layers, %lld heads (%lld kv, head size %lld), ffn %lld, vocab %lld, "
                    "context %lld, rms_norm_eps %g, rope_theta %g, %s output%s\n",
                    dir, c.arch, (long long)c.dim, (long long)c.n_layers, (long long)c.n_heads,
                    (long long)c.n_kv_heads, (long long)c.head_dim, (long long)c.ffn, (long long)c.vocab,
                    (long long)c.ctx, c.rms_eps, c.rope_theta, c.tied ? "tied" : "separate",
                    c.embd_norm ? ", embedding LayerNorm (use_stable_embedding)" : "");
        print_vocab(dir, &v);
        if (!vocab_only) {
            fprintf(stderr, "%s: %d shard(s), %lld tensors; writing %d tensors (matrices %s)\n", st.source,
                    st.n_shards, (long long)st.n_tensors, p.n, type_name(type));
            if (p.n_fallback)
                fprintf(stderr, "%d matrices have rows that are not a multiple of 32 and are stored as f16\n",
                        p.n_fallback);
        } else {
            fprintf(stderr, "vocabulary only: no tensors\n");
        }
    }
    if (!(w = gguf_writer_new(err))) goto done;
    if (set_keys(w, name, have_cfg ? &c : NULL, type, vocab_only, &v) != 0) {
        blv_fail(err, "%s: %s", out, gguf_writer_error(w));
        goto done;
    }
    rc = write_file(w, out, &st, p.plan, vocab_only ? 0 : p.n, progress, err);
done:
    gguf_writer_free(w);
    free(p.plan);
    free(p.used);
    st_close(&st);
    vocab_free(&v);
    return rc;
}
