/* tests/test_llm.c — the language model against Hugging Face transformers' LlamaForCausalLM.
 *
 * Golden data: tests/data/hf_llama/ (tools/gen_llama_golden.py). The GGUF files there were written
 * by PyPI gguf's GGUFWriter with llama.cpp's Q/K permutation, so these tests also check that
 * llama.cpp-layout files load and that our RoPE convention matches. */
#include "test.h"
#include "llm_golden.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "gguf.h"
#include "llm.h"
#include "quant.h"
#include "util.h"

typedef struct {
    GgufFile file;
    Llm llm;
    int ok;
} Loaded;

static void load_model_with(Loaded *L, const char *path, const LlmOptions *o) {
    BlvError err;
    L->ok = 0;
    if (gguf_open(&L->file, path, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    if (llm_init(&L->llm, &L->file, o, &err) != 0) {
        CHECK(0, "%s", err.msg);
        gguf_close(&L->file);
        return;
    }
    L->ok = 1;
}

static void load_model(Loaded *L, const char *path, int64_t chunk, int kv_type, int threads) {
    LlmOptions o = {0, chunk, kv_type, threads, -1, 0};
    load_model_with(L, path, &o);
}

/* A random-weight model of preset p written to the per-run directory as `name`; 0 on success. */
static int random_model(const LlmPreset *p, uint64_t seed, int type, const char *name, char path[512]) {
    BlvError err;
    snprintf(path, 512, "%s", test_tmp(name));
    if (generate_llm_preset(p, seed, type, path, 0, &err) == 0) return 0;
    CHECK(0, "%s", err.msg);
    return -1;
}

/* n token ids in 3..502 (past <unk>, <s>, </s>). */
static void random_ids(int32_t *ids, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) ids[i] = 3 + (int32_t)(test_rand_u64(&seed) % 500);
}

static void unload_model(Loaded *L) {
    if (!L->ok) return;
    llm_free(&L->llm);
    gguf_close(&L->file);
}

/* Logits at every prompt position, NMSE against transformers, then 64 greedy tokens. */
static void check_against_hf(const char *name, int64_t chunk, int kv_type, int threads, double nmse_limit) {
    char gguf_path[256], golden_path[256];
    snprintf(gguf_path, sizeof gguf_path, "%s", test_data(name));
    strcat(gguf_path, ".gguf");
    snprintf(golden_path, sizeof golden_path, "%s", test_data(name));
    strcat(golden_path, ".golden");
    Golden g;
    if (load_golden(golden_path, &g) != 0) return;
    Loaded L;
    load_model(&L, gguf_path, chunk, kv_type, threads);
    if (!L.ok) {
        free_golden(&g);
        return;
    }
    CHECK(L.llm.config.vocab_size == g.n_vocab, "vocab %lld vs golden %u", (long long)L.llm.config.vocab_size, g.n_vocab);
    BlvError err;
    float *logits = malloc(sizeof(float) * g.n_prompt * g.n_vocab);
    int rc = llm_eval_tokens(&L.llm, g.prompt, g.n_prompt, logits, 1, &err);
    CHECK(rc == 0, "%s", err.msg);
    double worst = 0;
    for (uint32_t p = 0; rc == 0 && p < g.n_prompt; p++) {
        double e = nmse(logits + (size_t)p * g.n_vocab, g.logits + (size_t)p * g.n_vocab, g.n_vocab);
        if (e > worst) worst = e;
        CHECK(e < nmse_limit, "%s position %u: NMSE %.3g >= %.1g", name, p, e, nmse_limit);
    }
    /* greedy continuation: transformers' generate(do_sample=False) */
    int32_t next = argmax(logits + (size_t)(g.n_prompt - 1) * g.n_vocab, g.n_vocab);
    uint32_t agree = 0;
    for (uint32_t i = 0; rc == 0 && i < g.n_gen; i++) {
        if (next != g.gen[i]) break;
        agree++;
        rc = llm_eval_tokens(&L.llm, &next, 1, logits, 0, &err);
        next = argmax(logits, g.n_vocab);
    }
    CHECK(agree == g.n_gen, "%s: greedy continuation agrees for %u of %u tokens", name, agree, g.n_gen);
    test_note("%s chunk %lld kv %s threads %d: worst per-position NMSE %.3g, greedy %u/%u", name, (long long)chunk,
              type_name(kv_type), threads, worst, agree, g.n_gen);
    free(logits);
    unload_model(&L);
    free_golden(&g);
}

static void test_hf_llama_gqa_f32(void) { check_against_hf("hf_llama/llama_gqa", 128, TYPE_F32, 1, 1e-8); }
static void test_hf_llama_tied_f32(void) { check_against_hf("hf_llama/llama_tied", 128, TYPE_F32, 1, 1e-8); }
static void test_hf_llama_gqa_two_threads(void) { check_against_hf("hf_llama/llama_gqa", 7, TYPE_F32, 2, 1e-8); }
/* An F16 cache rounds keys and values to 11 significant bits: the logits move a little. */
static void test_hf_llama_gqa_kv_f16(void) { check_against_hf("hf_llama/llama_gqa", 128, TYPE_F16, 1, 1e-5); }

/* Chunked prefill: chunk sizes 1, 7, 128 and whole must give the same logits up to float rounding
 * (a chunk of 1 goes through the matrix-vector path, larger chunks through the matrix-matrix one). */
static void test_chunk_invariance(void) {
    Golden g;
    if (load_golden(test_data("hf_llama/llama_gqa.golden"), &g) != 0) return;
    const int64_t chunks[] = {1, 7, 128, 24};
    float *ref = NULL;
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        Loaded L;
        load_model(&L, test_data("hf_llama/llama_gqa.gguf"), chunks[c], TYPE_F32, 1);
        if (!L.ok) break;
        BlvError err;
        float *logits = malloc(sizeof(float) * g.n_prompt * g.n_vocab);
        CHECK(llm_eval_tokens(&L.llm, g.prompt, g.n_prompt, logits, 1, &err) == 0, "%s", err.msg);
        if (!ref) {
            ref = logits;
        } else {
            double max_diff = 0, max_abs = 0;
            for (size_t i = 0; i < (size_t)g.n_prompt * g.n_vocab; i++) {
                double d = fabs((double)logits[i] - ref[i]);
                if (d > max_diff) max_diff = d;
                if (fabs(ref[i]) > max_abs) max_abs = fabs(ref[i]);
            }
            CHECK(max_diff <= 1e-5 * max_abs, "chunk %lld vs chunk 1: max |diff| %.3g (max |logit| %.3g)",
                  (long long)chunks[c], max_diff, max_abs);
            test_note("chunk %lld vs 1: max |diff| %.3g", (long long)chunks[c], max_diff);
            free(logits);
        }
        unload_model(&L);
    }
    free(ref);
    free_golden(&g);
}

/* Splitting the same input over several eval calls (a multi-turn chat) equals one call. */
static void test_incremental_eval(void) {
    Golden g;
    if (load_golden(test_data("hf_llama/llama_gqa.golden"), &g) != 0) return;
    Loaded L;
    load_model(&L, test_data("hf_llama/llama_gqa.gguf"), 5, TYPE_F32, 1);
    if (L.ok) {
        BlvError err;
        float *logits = malloc(sizeof(float) * g.n_prompt * g.n_vocab);
        CHECK(llm_eval_tokens(&L.llm, g.prompt, 10, logits, 1, &err) == 0, "%s", err.msg);
        CHECK(llm_eval_tokens(&L.llm, g.prompt + 10, g.n_prompt - 10, logits + 10 * g.n_vocab, 1, &err) == 0, "%s", err.msg);
        double worst = 0;
        for (uint32_t p = 0; p < g.n_prompt; p++) {
            double e = nmse(logits + (size_t)p * g.n_vocab, g.logits + (size_t)p * g.n_vocab, g.n_vocab);
            if (e > worst) worst = e;
        }
        CHECK(worst < 1e-8, "worst NMSE %.3g", worst);
        /* rewinding and re-evaluating the tail reproduces it */
        llm_rewind(&L.llm, 10);
        float *again = malloc(sizeof(float) * g.n_vocab);
        CHECK(llm_eval_tokens(&L.llm, g.prompt + 10, g.n_prompt - 10, again, 0, &err) == 0, "%s", err.msg);
        double e = nmse(again, g.logits + (size_t)(g.n_prompt - 1) * g.n_vocab, g.n_vocab);
        CHECK(e < 1e-8, "after rewind: NMSE %.3g", e);
        free(again);
        free(logits);
        unload_model(&L);
    }
    free_golden(&g);
}

static void test_context_overflow_is_an_error(void) {
    Loaded L;
    load_model(&L, test_data("hf_llama/llama_gqa.gguf"), 16, TYPE_F32, 1);
    if (!L.ok) return;
    int32_t *ids = calloc(300, sizeof(int32_t));
    BlvError err = {{0}};
    int rc = llm_eval_tokens(&L.llm, ids, 300, NULL, 0, &err);  /* the file's context is 256 */
    CHECK(rc != 0, "300 tokens into a 256-token context must fail");
    CHECK(strstr(err.msg, "context") != NULL, "message: %s", err.msg);
    ids[3] = 999;  /* outside the 512-token vocabulary */
    rc = llm_eval_tokens(&L.llm, ids, 10, NULL, 0, &err);
    CHECK(rc != 0 && strstr(err.msg, "vocabulary"), "bad token id: rc %d, %s", rc, err.msg);
    free(ids);
    unload_model(&L);
}

static void test_q8_0_cache_needs_blocked_heads(void) {
    BlvError err = {{0}};
    GgufFile f;
    if (gguf_open(&f, test_data("hf_llama/llama_gqa.gguf"), 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    Llm m;
    LlmOptions o = {0, 16, TYPE_Q8_0, 1, -1, 0};
    int rc = llm_init(&m, &f, &o, &err);
    CHECK(rc != 0 && strstr(err.msg, "q8_0") && strstr(err.msg, "16"), "head size 16 with a q8_0 cache: %s", err.msg);
    if (rc == 0) llm_free(&m);
    gguf_close(&f);
}

/* Greedy tokens of a model from BOS: the first n argmax tokens. */
static void greedy_tokens(const char *path, int kv_type, int32_t *out, int n) {
    Loaded L;
    load_model(&L, path, 128, kv_type, 1);
    if (!L.ok) return;
    BlvError err;
    float *logits = malloc(sizeof(float) * (size_t)L.llm.config.vocab_size);
    int32_t tok = 1;
    for (int i = 0; i < n; i++) {
        if (llm_eval_tokens(&L.llm, &tok, 1, logits, 0, &err) != 0) {
            CHECK(0, "%s", err.msg);
            break;
        }
        tok = out[i] = argmax(logits, L.llm.config.vocab_size);
    }
    free(logits);
    unload_model(&L);
}

/* stories260K converted to F16, Q8_0 and Q4_0: greedy tokens compared with the F32 model's. */
static void test_stories_quantized_agreement(void) {
    const int types[] = {TYPE_F32, TYPE_F16, TYPE_Q8_0, TYPE_Q4_0};
    int32_t tokens[4][200];
    memset(tokens, 0, sizeof tokens);
    for (int i = 0; i < 4; i++) {
        char path[512], ckpt[512], tok[512];
        snprintf(path, sizeof path, "%s", test_tmp("stories-agree-"));
        strcat(path, type_name(types[i]));
        snprintf(ckpt, sizeof ckpt, "%s", test_data("stories260K/stories260K.bin"));
        snprintf(tok, sizeof tok, "%s", test_data("stories260K/tok512.bin"));
        BlvError err;
        CHECK(convert_llama2c(ckpt, tok, path, types[i], 0, &err) == 0, "%s", err.msg);
        greedy_tokens(path, TYPE_F32, tokens[i], 200);
        if (i == 0) continue;
        int prefix = 0, same = 0;
        while (prefix < 200 && tokens[i][prefix] == tokens[0][prefix]) prefix++;
        for (int k = 0; k < 200; k++) same += tokens[i][k] == tokens[0][k];
        test_note("stories260K %s: first %d of 200 greedy tokens identical to F32 (%d of 200 position-wise)",
                  type_name(types[i]), prefix, same);
    }
}

/* The KV cache types on a model whose head size (64) allows Q8_0 blocks: F16 and Q8_0 caches stay
 * within their rounding of the F32 cache (F16: 11 significant bits; Q8_0: 8-bit with one scale
 * per 32 values). The model is random, with the BlueLM embedding LayerNorm. */
static void test_kv_cache_types(void) {
    LlmPreset p = {"kvtest", "random weights, untrained", 128, 2, 2, 1, 256, 512, 256, 10000.0f, 1e-5f, 1, 0};
    char path[512];
    BlvError err;
    if (random_model(&p, 7, TYPE_F32, "kvtest.gguf", path) != 0) return;
    enum { N = 48 };
    int32_t ids[N];
    random_ids(ids, N, 3);
    const int kv[3] = {TYPE_F32, TYPE_F16, TYPE_Q8_0};
    const double limit[3] = {0, 1e-5, 1e-3};
    float *logits[3];
    for (int k = 0; k < 3; k++) {
        logits[k] = calloc((size_t)N * 512, sizeof(float));
        Loaded L;
        load_model(&L, path, 16, kv[k], 2);
        if (!L.ok) continue;
        CHECK(L.llm.config.has_embd_norm, "the embedding LayerNorm was not picked up");
        CHECK(llm_eval_tokens(&L.llm, ids, N, logits[k], 1, &err) == 0, "%s", err.msg);
        unload_model(&L);
        if (k == 0) continue;
        double e = nmse(logits[k], logits[0], (int64_t)N * 512);
        CHECK(e < limit[k], "kv %s: NMSE %.3g vs F32 cache (limit %.0e)", type_name(kv[k]), e, limit[k]);
        test_note("kv %s vs f32: NMSE %.3g over %d positions", type_name(kv[k]), e, N);
    }
    for (int k = 0; k < 3; k++) free(logits[k]);
}

/* One token in one task (decode_task: each thread quantizes each product's input itself, barriers
 * between the steps) against the task-per-step path a chunk takes (Llm.split_decode): the same
 * logits bit for bit, for quantized and float weights, every KV cache type and 1-3 threads (with 1
 * and 2 each thread computes the q, k, v rows of its own KV heads, own_heads_qkv in llm.c; with 3
 * the 2 KV heads do not split evenly and those products are shared out like the others). The
 * tokens go one at a time after a prefill, and also as a prefill in chunks of one token with logits
 * for every position. */
static void test_one_task_decode_equals_steps(void) {
    LlmPreset p = {"decodetest", "random weights, untrained", 128, 2, 4, 2, 256, 512, 256, 10000.0f, 1e-5f, 1, 0};
    static const int wtypes[] = {TYPE_Q4_0, TYPE_Q8_0, TYPE_F32};
    static const int kv[] = {TYPE_F16, TYPE_Q8_0, TYPE_F32};
    enum { PREFILL = 9, STEPS = 5, V = 512 };
    int32_t ids[PREFILL + STEPS];
    random_ids(ids, PREFILL + STEPS, 17);
    float *logits[2];
    for (int v = 0; v < 2; v++) logits[v] = calloc((size_t)2 * (PREFILL + STEPS) * V, sizeof(float));
    int bad = 0, cases = 0;
    for (int w = 0; w < 3; w++) {
        char path[512], name[64];
        snprintf(name, sizeof name, "decodetest-%s.gguf", type_name(wtypes[w]));
        if (random_model(&p, 23, wtypes[w], name, path) != 0) continue;
        for (int k = 0; k < 3; k++)
            for (int threads = 1; threads <= 3; threads++) {
                for (int v = 0; v < 2; v++) {  /* 0: one task per token, 1: a task per step */
                    BlvError err;
                    Loaded L;
                    load_model(&L, path, 4, kv[k], threads);
                    if (!L.ok) continue;
                    L.llm.split_decode = v;
                    float *out = logits[v];
                    CHECK(llm_eval_tokens(&L.llm, ids, PREFILL, NULL, 0, &err) == 0, "%s", err.msg);
                    for (int i = 0; i < STEPS; i++)
                        CHECK(llm_eval_tokens(&L.llm, ids + PREFILL + i, 1, out + (size_t)i * V, 0, &err) == 0, "%s",
                              err.msg);
                    unload_model(&L);
                    load_model(&L, path, 1, kv[k], threads);  /* chunks of one token: all positions' logits */
                    if (!L.ok) continue;
                    L.llm.split_decode = v;
                    CHECK(llm_eval_tokens(&L.llm, ids, PREFILL + STEPS, out + (size_t)STEPS * V, 1, &err) == 0, "%s",
                          err.msg);
                    unload_model(&L);
                }
                size_t n = (size_t)(2 * STEPS + PREFILL) * V;
                bad += memcmp(logits[0], logits[1], n * sizeof(float)) != 0;
                cases++;
            }
    }
    CHECK(bad == 0, "%d of %d one-task decodes differ from the step-by-step decode", bad, cases);
    for (int v = 0; v < 2; v++) free(logits[v]);
}

/* The decode's shared products (q, k, v, wo, gate/up, down, output: threadpool_share_next lets a
 * thread that finishes its rows early take rows from a slower one; with 2 threads q, k, v are each
 * thread's own KV heads' rows instead, own_heads_qkv) against each thread computing exactly its
 * split_range rows (Llm.static_decode_rows): the same logits bit for bit, with 2 threads and
 * with 3 and 4 on this machine's cores, where the threads' progress is uneven and rows do change
 * hands (how many is noted; it is not deterministic). The products have 64-128 groups of 16 rows,
 * so each thread's share is several chunks and can be taken from. */
static void test_shared_decode_rows_equal_static(void) {
    LlmPreset p = {"sharetest", "random weights, untrained", 256, 2, 4, 2, 1024, 2048, 256, 10000.0f, 1e-5f, 0, 0};
    enum { PREFILL = 5, STEPS = 12, V = 2048 };
    int32_t ids[PREFILL + STEPS];
    random_ids(ids, PREFILL + STEPS, 5);
    char path[512];
    if (random_model(&p, 31, TYPE_Q4_0, "sharetest.gguf", path) != 0) return;
    float *logits[2];
    for (int v = 0; v < 2; v++) logits[v] = calloc((size_t)STEPS * V, sizeof(float));
    for (int threads = 2; threads <= 4; threads++) {
        int64_t did[2][8] = {{0}};  /* per mode and thread: the rows it computed (at most 4 threads) */
        for (int v = 0; v < 2; v++) {  /* 0: rows shared out as they run, 1: static rows */
            BlvError err;
            Loaded L;
            load_model(&L, path, 8, TYPE_F16, threads);
            if (!L.ok) continue;
            L.llm.static_decode_rows = v;
            LlmProfile prof;
            memset(&prof, 0, sizeof prof);
            CHECK(llm_eval_tokens(&L.llm, ids, PREFILL, NULL, 0, &err) == 0, "%s", err.msg);
            L.llm.profile = &prof;
            for (int i = 0; i < STEPS; i++)
                CHECK(llm_eval_tokens(&L.llm, ids + PREFILL + i, 1, logits[v] + (size_t)i * V, 0, &err) == 0, "%s",
                      err.msg);
            L.llm.profile = NULL;
            for (int ith = 0; ith < threads; ith++) did[v][ith] = prof.threads[ith].shared_rows;
            unload_model(&L);
        }
        CHECK(memcmp(logits[0], logits[1], (size_t)STEPS * V * sizeof(float)) == 0,
              "%d threads: shared rows give other logits than static rows", threads);
        int64_t moved = 0, total = 0;
        for (int ith = 0; ith < threads; ith++) {
            moved += did[0][ith] > did[1][ith] ? did[0][ith] - did[1][ith] : 0;
            total += did[1][ith];
        }
        test_note("%d threads: %lld of %lld rows computed by another thread than split_range's", threads,
                  (long long)moved, (long long)total);
    }
    for (int v = 0; v < 2; v++) free(logits[v]);
}

/* Repacking (llm_prepare_weights, run by the first evaluation): with a kernel family that has
 * Q4_0x16 kernels every Q4_0 product matrix is repacked (a layer's seven and the untied output;
 * token_embd stays as it is, its rows are looked up); the logits stay the file layout's up to float
 * rounding (the same exact integer block dots, added in another order) over chunked prefill (GEMM)
 * and single-token steps (GEMV), with the same argmax everywhere; and the reference family, forced
 * after the repack, computes on the repacked weights too. Without such kernels nothing changes. */
static void test_q4_0_repack_matches_file_layout(void) {
    LlmPreset p = {"repacktest", "random weights, untrained", 128, 2, 4, 2, 256, 512, 256, 10000.0f, 1e-5f, 0, 0};
    char path[512];
    BlvError err;
    if (random_model(&p, 11, TYPE_Q4_0, "repacktest.gguf", path) != 0) return;
    enum { N = 40, STEPS = 4, V = 512 };
    int32_t ids[N + STEPS];
    random_ids(ids, N + STEPS, 5);
    float *logits[3];
    for (int v = 0; v < 3; v++) {  /* 0: --no-repack, 1: repacked, 2: repacked, reference kernels */
        logits[v] = calloc((size_t)(N + STEPS) * V, sizeof(float));
        LlmOptions o = {0, 16, TYPE_F32, 2, -1, v == 0};
        Loaded L;
        load_model_with(&L, path, &o);
        if (!L.ok) continue;
        Llm *m = &L.llm;
        if (v == 2) {
            llm_prepare_weights(m);
            quant_force_kernels("ref");
        }
        CHECK(llm_eval_tokens(m, ids, N, logits[v], 1, &err) == 0, "%s", err.msg);
        for (int i = 0; i < STEPS; i++)
            CHECK(llm_eval_tokens(m, ids + N + i, 1, logits[v] + (size_t)(N + i) * V, 0, &err) == 0, "%s", err.msg);
        quant_force_kernels(NULL);
        const int repacks = v > 0 && quant_has_q4_0x16();
        const int want_type = repacks ? TYPE_Q4_0X16 : TYPE_Q4_0;
        CHECK(m->repacked_matrices == (repacks ? 2 * 7 + 1 : 0), "variant %d: %lld matrices repacked", v,
              (long long)m->repacked_matrices);
        CHECK(m->weights.layers[1].w_down.type == want_type && m->weights.output.type == want_type,
              "variant %d: matrix types %d, %d", v, m->weights.layers[1].w_down.type, m->weights.output.type);
        CHECK(m->weights.token_embd.type == TYPE_Q4_0, "token_embd must keep the file layout");
        unload_model(&L);
        if (v == 0) continue;
        double e = nmse(logits[v], logits[0], (int64_t)(N + STEPS) * V);
        int same = 0;
        for (int t = 0; t < N + STEPS; t++)
            same += argmax(logits[v] + (size_t)t * V, V) == argmax(logits[0] + (size_t)t * V, V);
        CHECK(e < 1e-10, "variant %d: NMSE %.3g against the file layout", v, e);
        CHECK(same == N + STEPS, "variant %d: argmax agrees at %d of %d positions", v, same, N + STEPS);
        test_note("%s: NMSE %.3g against the file layout, argmax %d/%d%s", v == 1 ? "repacked" : "repacked, ref kernels",
                  e, same, N + STEPS, quant_has_q4_0x16() ? "" : " (this CPU's kernels do not repack)");
    }
    for (int v = 0; v < 3; v++) free(logits[v]);
}

void suite_llm(void) {
    RUN_TEST(test_stories_quantized_agreement);
    RUN_TEST(test_kv_cache_types);
    RUN_TEST(test_one_task_decode_equals_steps);
    RUN_TEST(test_shared_decode_rows_equal_static);
    RUN_TEST(test_q4_0_repack_matches_file_layout);
    RUN_TEST(test_hf_llama_gqa_f32);
    RUN_TEST(test_hf_llama_tied_f32);
    RUN_TEST(test_hf_llama_gqa_two_threads);
    RUN_TEST(test_hf_llama_gqa_kv_f16);
    RUN_TEST(test_chunk_invariance);
    RUN_TEST(test_incremental_eval);
    RUN_TEST(test_context_overflow_is_an_error);
    RUN_TEST(test_q8_0_cache_needs_blocked_heads);
}
