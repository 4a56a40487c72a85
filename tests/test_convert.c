/* tests/test_convert.c — llama2.c checkpoint conversion.
 *
 * Facts used as expectations come from the checkpoint format as documented in
 * ../shared/data/SOURCES.md (copied to tests/data/stories260K/): header dim 64, hidden_dim 172,
 * 5 layers, 8 heads, 4 KV heads, vocabulary 512 (shared classifier), seq_len 512, and the fp32
 * weight order token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "gguf.h"
#include "quant.h"
#include "util.h"

static int convert(const char *ckpt, const char *out, int type, BlvError *err) {
    char c[512], t[512];
    snprintf(c, sizeof c, "%s", test_data(ckpt));
    snprintf(t, sizeof t, "%s", test_data("stories260K/tok512.bin"));
    return convert_llama2c(c, t, out, type, 0, err);
}

static void test_metadata_and_shapes(void) {
    char out[512];
    snprintf(out, sizeof out, "%s", test_tmp("conv-f32.gguf"));
    BlvError err;
    CHECK(convert("stories260K/stories260K.bin", out, TYPE_F32, &err) == 0, "%s", err.msg);
    GgufFile f;
    if (gguf_open(&f, out, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    uint32_t v;
    struct { const char *key; uint32_t want; } keys[] = {
        {"llama.embedding_length", 64}, {"llama.feed_forward_length", 172}, {"llama.block_count", 5},
        {"llama.attention.head_count", 8}, {"llama.attention.head_count_kv", 4}, {"llama.context_length", 512},
        {"llama.rope.dimension_count", 8}, {"tokenizer.ggml.bos_token_id", 1}, {"tokenizer.ggml.eos_token_id", 2},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        CHECK(gguf_get_u32(&f, keys[i].key, &v, &err) == 0 && v == keys[i].want, "%s = %u, want %u (%s)", keys[i].key,
              v, keys[i].want, err.msg);
    }
    CHECK(gguf_find_tensor(&f, "output.weight") == NULL, "shared classifier: no output.weight expected");
    const GgufTensor *t = gguf_find_tensor(&f, "blk.4.attn_k.weight");
    CHECK(t && t->ne[0] == 64 && t->ne[1] == 32 && t->type == TYPE_F32, "blk.4.attn_k.weight shape");
    /* The first row of the embedding equals the first 64 floats after the 28-byte header, and
     * rms_final equals the floats right after w3. */
    char *raw;
    size_t raw_len;
    if (t && blv_read_file(test_data("stories260K/stories260K.bin"), &raw, &raw_len, &err) == 0) {
        const GgufTensor *e = gguf_find_tensor(&f, "token_embd.weight");
        CHECK(e && memcmp(e->data, raw + 28, 64 * 4) == 0, "token_embd row 0 differs from the checkpoint");
        size_t D = 64, H = 172, L = 5, V = 512, KV = 32;
        size_t rms_final = 28 + 4 * (V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D + 3 * L * H * D);
        const GgufTensor *n = gguf_find_tensor(&f, "output_norm.weight");
        CHECK(n && memcmp(n->data, raw + rms_final, 64 * 4) == 0, "output_norm differs from rms_final");
        free(raw);
    }
    gguf_close(&f);
}

/* The legacy and the version-1 exports of the same model convert to identical tensors. */
static void test_legacy_equals_v1(void) {
    char a[512], b[512];
    snprintf(a, sizeof a, "%s", test_tmp("conv-legacy.gguf"));
    snprintf(b, sizeof b, "%s", test_tmp("conv-v1.gguf"));
    BlvError err;
    CHECK(convert("stories260K/stories260K.bin", a, TYPE_F32, &err) == 0, "%s", err.msg);
    CHECK(convert("stories260K/stories260K_v1.bin", b, TYPE_F32, &err) == 0, "%s", err.msg);
    GgufFile fa, fb;
    if (gguf_open(&fa, a, 1, &err) != 0 || gguf_open(&fb, b, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    CHECK(fa.n_tensors == fb.n_tensors, "tensor counts %lld vs %lld", (long long)fa.n_tensors, (long long)fb.n_tensors);
    for (int64_t i = 0; i < fa.n_tensors && i < fb.n_tensors; i++) {
        const GgufTensor *ta = &fa.tensors[i], *tb = &fb.tensors[i];
        CHECK(ta->n_bytes == tb->n_bytes && memcmp(ta->data, tb->data, (size_t)ta->n_bytes) == 0, "tensor %.*s differs",
              (int)ta->name.len, ta->name.ptr);
    }
    gguf_close(&fa);
    gguf_close(&fb);
}

/* Q4_0: matrices with 64-element rows are q4_0; ffn_down (172-element rows) falls back to f16. */
static void test_quantized_types(void) {
    char out[512];
    snprintf(out, sizeof out, "%s", test_tmp("conv-q4.gguf"));
    BlvError err;
    CHECK(convert("stories260K/stories260K.bin", out, TYPE_Q4_0, &err) == 0, "%s", err.msg);
    GgufFile f;
    if (gguf_open(&f, out, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    const GgufTensor *q = gguf_find_tensor(&f, "blk.0.attn_q.weight");
    const GgufTensor *d = gguf_find_tensor(&f, "blk.0.ffn_down.weight");
    const GgufTensor *n = gguf_find_tensor(&f, "blk.0.attn_norm.weight");
    CHECK(q && q->type == TYPE_Q4_0, "attn_q type %u", q ? q->type : 99);
    CHECK(d && d->type == TYPE_F16, "ffn_down type %u", d ? d->type : 99);
    CHECK(n && n->type == TYPE_F32, "attn_norm type %u", n ? n->type : 99);
    uint32_t v;
    CHECK(gguf_get_u32(&f, "general.quantization_version", &v, &err) == 0 && v == 2, "quantization_version");
    gguf_close(&f);
}

/* Bad checkpoints and tokenizers: clear errors naming the file. */
static void test_bad_inputs(void) {
    char *raw;
    size_t len;
    BlvError err;
    if (blv_read_file(test_data("stories260K/stories260K.bin"), &raw, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    char trunc[512], out[512], tok[512];
    snprintf(trunc, sizeof trunc, "%s", test_tmp("truncated.bin"));
    snprintf(out, sizeof out, "%s", test_tmp("bad-out.gguf"));
    snprintf(tok, sizeof tok, "%s", test_data("stories260K/tok512.bin"));
    FILE *f = fopen(trunc, "wb");
    fwrite(raw, 1, len / 2, f);
    fclose(f);
    int rc = convert_llama2c(trunc, tok, out, TYPE_F32, 0, &err);
    CHECK(rc != 0 && strstr(err.msg, "truncated.bin") && strstr(err.msg, "holds only"), "truncated: %s", err.msg);

    f = fopen(trunc, "wb");
    fwrite("GGUF\3\0\0\0garbage garbage garbage garbage", 1, 40, f);
    fclose(f);
    rc = convert_llama2c(trunc, tok, out, TYPE_F32, 0, &err);
    CHECK(rc != 0 && strstr(err.msg, "plausible"), "garbage header: %s", err.msg);

    /* a tokenizer cut short */
    char *traw;
    size_t tlen;
    char tshort[512];
    snprintf(tshort, sizeof tshort, "%s", test_tmp("tok-short.bin"));
    if (blv_read_file(tok, &traw, &tlen, &err) == 0) {
        f = fopen(tshort, "wb");
        fwrite(traw, 1, tlen / 3, f);
        fclose(f);
        free(traw);
        rc = convert_llama2c(test_data("stories260K/stories260K.bin"), tshort, out, TYPE_F32, 0, &err);
        CHECK(rc != 0 && strstr(err.msg, "tok-short.bin") && strstr(err.msg, "512"), "short tokenizer: %s", err.msg);
    }
    rc = convert_llama2c("/nonexistent.bin", tok, out, TYPE_F32, 0, &err);
    CHECK(rc != 0 && strstr(err.msg, "/nonexistent.bin"), "missing file: %s", err.msg);
    free(raw);
}

/* PyPI gguf's GGUFReader (independent of our reader) opens what we wrote, with the expected
 * names, shapes and types. Needs Python: run when BLUELMV_PYTHON_CHECKS=1 (CI sets it). */
static void test_pypi_gguf_reads_our_file(void) {
    if (!getenv("BLUELMV_PYTHON_CHECKS")) {
        test_note("skipped: set BLUELMV_PYTHON_CHECKS=1 to check with PyPI gguf");
        return;
    }
    char out[512], cmd[1024];
    snprintf(out, sizeof out, "%s", test_tmp("conv-pypi.gguf"));
    BlvError err;
    CHECK(convert("stories260K/stories260K.bin", out, TYPE_Q4_0, &err) == 0, "%s", err.msg);
    snprintf(cmd, sizeof cmd, "python3 tools/check_gguf.py %s", out);
    char *o, *e;
    int rc = test_run_command(cmd, &o, &e);
    CHECK(rc == 0, "GGUFReader failed (%d): %s", rc, e);
    /* tools/check_gguf.py prints "tensor NAME NE0,NE1 TYPE N_BYTES" as GGUFReader sees it */
    CHECK(strstr(o, "tensor blk.0.attn_q.weight 64,64 q4_0 2304\n"), "q4_0 tensor not as expected:\n%s", o);
    CHECK(strstr(o, "tensor blk.4.ffn_down.weight 172,64 f16 22016\n"), "f16 fallback not as expected");
    CHECK(strstr(o, "tensor output_norm.weight 64 f32 256\n"), "output_norm not as expected");
    CHECK(strstr(o, "kv tokenizer.ggml.tokens array[string] n=512"), "tokenizer array not listed");
    CHECK(strstr(o, "kv llama.attention.head_count_kv u32 4\n"), "head_count_kv not listed");
    free(o);
    free(e);
}

void suite_convert(void) {
    RUN_TEST(test_metadata_and_shapes);
    RUN_TEST(test_legacy_equals_v1);
    RUN_TEST(test_quantized_types);
    RUN_TEST(test_bad_inputs);
    RUN_TEST(test_pypi_gguf_reads_our_file);
}
