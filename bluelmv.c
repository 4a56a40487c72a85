/* bluelmv.c — the pipeline behind the public API: loading, prompt tokenization, the generation
 * loop and sampling. */
#include "bluelmv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

struct Bluelmv {
    GgufFile file;          /* the language model file; the weights point into its mapping */
    Llm llm;
    Tokenizer tok;
    float *logits;          /* (vocab) logits of the last evaluated token */
    void *sample_work;      /* sampler scratch */
};

BluelmvParams bluelmv_default_params(void) {
    BluelmvParams p = {0};
    p.n_threads = 1;
    p.kv_type = -1;
    p.use_mmap = 1;
    return p;
}

BluelmvSampler bluelmv_default_sampler(void) {
    BluelmvSampler s = {0.8f, 40, 0.95f, 0};
    return s;
}

Bluelmv *bluelmv_load(const BluelmvParams *params, BlvError *err) {
    if (!params || !params->model_path) {
        blv_fail(err, "no model file given");
        return NULL;
    }
    Bluelmv *b = blv_calloc(1, sizeof *b, "model", err);
    if (!b) return NULL;
    if (gguf_open(&b->file, params->model_path, params->use_mmap, err) != 0) {
        free(b);
        return NULL;
    }
    LlmOptions o = {params->n_ctx, params->chunk, params->kv_type, params->n_threads, -1};
    if (llm_init(&b->llm, &b->file, &o, err) != 0) {
        gguf_close(&b->file);
        free(b);
        return NULL;
    }
    if (tokenizer_load(&b->tok, &b->file, err) != 0) {
        llm_free(&b->llm);
        gguf_close(&b->file);
        free(b);
        return NULL;
    }
    if (b->tok.n_vocab != b->llm.config.vocab_size) {
        blv_fail(err, "%s: the vocabulary has %d tokens but token_embd.weight has %lld rows", params->model_path,
                 b->tok.n_vocab, (long long)b->llm.config.vocab_size);
        bluelmv_free(b);
        return NULL;
    }
    int64_t vocab = b->llm.config.vocab_size;
    b->logits = blv_calloc((size_t)vocab, sizeof(float), "logits", err);
    b->sample_work = blv_malloc(bluelmv_sample_work_bytes(vocab), "sampler", err);
    if (!b->logits || !b->sample_work) {
        bluelmv_free(b);
        return NULL;
    }
    return b;
}

void bluelmv_free(Bluelmv *b) {
    if (!b) return;
    tokenizer_free(&b->tok);
    llm_free(&b->llm);
    gguf_close(&b->file);
    free(b->logits);
    free(b->sample_work);
    free(b);
}

Llm *bluelmv_llm(Bluelmv *b) { return &b->llm; }
const Tokenizer *bluelmv_tokenizer(const Bluelmv *b) { return &b->tok; }
const GgufFile *bluelmv_gguf(const Bluelmv *b) { return &b->file; }
int64_t bluelmv_vocab_size(const Bluelmv *b) { return b->llm.config.vocab_size; }
int64_t bluelmv_context_used(const Bluelmv *b) { return b->llm.n_past; }
const float *bluelmv_logits(const Bluelmv *b) { return b->logits; }
void bluelmv_reset(Bluelmv *b) { llm_rewind(&b->llm, 0); }

int64_t bluelmv_tokenize(const Bluelmv *b, const char *text, int add_bos, int32_t *ids, int64_t max_ids, BlvError *err) {
    return tokenizer_encode(&b->tok, text, strlen(text), add_bos, 1, ids, max_ids, err);
}

int bluelmv_eval(Bluelmv *b, const int32_t *tokens, int64_t n, BlvError *err) {
    if (n <= 0) return blv_fail(err, "nothing to evaluate");
    return llm_eval_tokens(&b->llm, tokens, n, b->logits, 0, err);
}

/* ---- sampling (llama2.c run.c's sampler, plus optional top-k) -------------------------------- */

typedef struct {
    float prob;
    int32_t index;
} ProbIndex;

size_t bluelmv_sample_work_bytes(int64_t n) { return (size_t)n * sizeof(ProbIndex); }

/* llama2.c random_u32 / random_f32: xorshift64* */
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float random_f32(uint64_t *state) { return (float)(random_u32(state) >> 8) / 16777216.0f; }

static int32_t argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

static void softmax(float *x, int64_t n) {
    float max = x[0];
    for (int64_t i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int64_t i = 0; i < n; i++) x[i] /= sum;
}

static int compare_prob_desc(const void *a, const void *b) {
    const ProbIndex *pa = a, *pb = b;
    if (pa->prob > pb->prob) return -1;
    if (pa->prob < pb->prob) return 1;
    return 0;
}

/* Keeps the k most probable tokens and renormalizes. */
static void keep_top_k(float *probs, int64_t n, int k, ProbIndex *work) {
    if (k <= 0 || k >= n) return;
    for (int64_t i = 0; i < n; i++) work[i] = (ProbIndex){probs[i], (int32_t)i};
    qsort(work, (size_t)n, sizeof *work, compare_prob_desc);
    float kept = 0.0f;
    for (int i = 0; i < k; i++) kept += work[i].prob;
    for (int64_t i = k; i < n; i++) probs[work[i].index] = 0.0f;
    for (int64_t i = 0; i < n; i++) probs[i] /= kept;
}

/* Multinomial sampling: the first index whose cumulative probability exceeds coin in [0, 1). */
static int32_t sample_mult(const float *probs, int64_t n, float coin) {
    float cdf = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        cdf += probs[i];
        if (coin < cdf) return (int32_t)i;
    }
    return (int32_t)(n - 1);
}

/* Nucleus sampling from the smallest set of tokens whose probabilities exceed top_p. Tokens below
 * (1 - top_p) / (n - 1) cannot be in it, so they are dropped before sorting, as llama2.c does. */
static int32_t sample_top_p(const float *probs, int64_t n, float top_p, ProbIndex *work, float coin) {
    int64_t n0 = 0;
    const float cutoff = (1.0f - top_p) / (float)(n - 1);
    for (int64_t i = 0; i < n; i++)
        if (probs[i] >= cutoff) work[n0++] = (ProbIndex){probs[i], (int32_t)i};
    qsort(work, (size_t)n0, sizeof *work, compare_prob_desc);
    float cumulative = 0.0f;
    int64_t last = n0 - 1;
    for (int64_t i = 0; i < n0; i++) {
        cumulative += work[i].prob;
        if (cumulative > top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative, cdf = 0.0f;
    for (int64_t i = 0; i <= last; i++) {
        cdf += work[i].prob;
        if (r < cdf) return work[i].index;
    }
    return work[last].index;
}

int32_t bluelmv_sample(float *logits, int64_t n, const BluelmvSampler *s, uint64_t *rng_state, void *work) {
    if (s->temperature <= 0.0f) return argmax(logits, n);
    for (int64_t i = 0; i < n; i++) logits[i] /= s->temperature;
    softmax(logits, n);
    keep_top_k(logits, n, s->top_k, work);
    float coin = random_f32(rng_state);
    if (s->top_p <= 0.0f || s->top_p >= 1.0f) return sample_mult(logits, n, coin);
    return sample_top_p(logits, n, s->top_p, work, coin);
}

/* ---- generation ------------------------------------------------------------------------------- */

int bluelmv_generate(Bluelmv *b, const char *prompt, int64_t n_predict, const BluelmvSampler *sampler,
                     BluelmvTextFn on_text, void *user, BluelmvStats *stats, BlvError *err) {
    BluelmvStats st = {0};
    const Tokenizer *tok = &b->tok;
    int64_t n_ctx = b->llm.n_ctx;
    bluelmv_reset(b);

    /* BOS + prompt. The whole prompt must fit with room for at least one generated token. */
    size_t len = prompt ? strlen(prompt) : 0;
    int64_t need = tokenizer_encode(tok, prompt ? prompt : "", len, 1, 1, NULL, 0, err);
    if (need < 0) return -1;
    if (need == 0) return blv_fail(err, "the prompt is empty and the vocabulary has no BOS token to start from");
    if (need >= n_ctx)
        return blv_fail(err, "the prompt is %lld tokens long but the context holds %lld (use a shorter prompt or a larger -c)",
                        (long long)need, (long long)n_ctx);
    int32_t *ids = blv_malloc((size_t)need * sizeof(int32_t), "prompt tokens", err);
    if (!ids) return -1;
    if (tokenizer_encode(tok, prompt ? prompt : "", len, 1, 1, ids, need, err) != need) {
        free(ids);
        return -1;
    }
    st.n_prompt = need;

    double t0 = blv_now();
    int rc = bluelmv_eval(b, ids, need, err);
    st.prefill_seconds = blv_now() - t0;
    int32_t prev = ids[need - 1];
    free(ids);
    if (rc != 0) return -1;

    uint64_t rng = sampler->seed ? sampler->seed : 0x5eed;
    double t1 = blv_now();
    for (int64_t i = 0; i < n_predict; i++) {
        int32_t next = bluelmv_sample(b->logits, b->llm.config.vocab_size, sampler, &rng, b->sample_work);
        if (tokenizer_is_eog(tok, next)) {  /* EOS, or a turn-ending token such as <|end|> */
            st.stopped_at_eos = 1;
            break;
        }
        char piece[256];
        int n = tokenizer_decode_token(tok, prev, next, piece, sizeof piece);
        if (on_text && n > 0) on_text(piece, (size_t)n, user);
        st.n_generated++;
        prev = next;
        if (i + 1 == n_predict) break;  /* the last token needs no evaluation */
        if (b->llm.n_past >= n_ctx) {
            st.stopped_at_context = 1;
            break;
        }
        if (bluelmv_eval(b, &next, 1, err) != 0) return -1;
    }
    st.decode_seconds = blv_now() - t1;
    if (stats) *stats = st;
    return 0;
}
