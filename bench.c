/* bench.c — `bluelmv bench`.
 *
 * Limits, measured in the same run with built-in probes (quant.h):
 *   read bandwidth  — GB/s of streaming a buffer much larger than the caches, all threads; for decode,
 *                     the same read over the decode's own memory (weights and KV rows), probed beside
 *                     each timed repetition (probe_decode_memory);
 *   int8 peak       — GOP/s of the best int8 dot instruction (one multiply-add = 2 ops), all threads.
 * Speeds:
 *   tg (decode)     — tokens/s generating one token at a time, after --depth tokens of context;
 *                     its roofline fraction is (bytes read per token × tok/s) / read bandwidth,
 *                     the bytes being the weight matrices plus the KV-cache rows attention reads;
 *   pp (prefill)    — tokens/s evaluating a prompt of N tokens from an empty cache; its fraction is
 *                     (matrix-multiply ops + attention ops) per second / int8 peak.
 * Each figure is the median of `reps` repetitions; progress goes to stderr. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bluelmv.h"
#include "image.h"
#include "llm.h"
#include "quant.h"

BenchOptions bench_default_options(void) {
    BenchOptions o = {0};
    o.n_threads = 2;
    o.reps = 5;
    o.prompt_tokens = 128;
    o.tg_tokens = 32;
    o.kv_type = -1;
    o.image_w = 768;
    o.image_h = 1536;
    return o;
}

static int64_t matrix_elems(const Matrix *m) { return m->rows * m->cols; }

static double max_of(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* The machine's limits from 5 probes each, on all of the pool's threads: read bandwidth over a
 * 256 MiB buffer (8x the largest L3 we expect), their median (this VM's memory moves between
 * regimes; the median is the typical one), and the int8 dot-product peak, their best: the probe
 * runs in registers, so another job on the machine can only lower it (one run's median once came
 * out at half the usual peak and a prefill printed 104.7% of it). */
static void probe_limits(ThreadPool *pool, double *bandwidth, double *peak, double *round_trip_ns) {
    fprintf(stderr, "bench: probing read bandwidth, int8 peak and the threads' round trip...\n");
    double bw_runs[5], peak_runs[5];
    for (int r = 0; r < 5; r++) {
        bw_runs[r] = probe_read_bandwidth(pool, (int64_t)256 << 20);
        peak_runs[r] = probe_int8_peak(pool);
    }
    *bandwidth = blv_median(bw_runs, 5);
    *peak = max_of(peak_runs, 5);
    *round_trip_ns = threadpool_round_trip_ns(pool);
}

/* The threads' round trip, and what it says about the two cores this VM was given (util.h): ~40-90
 * ns measured with the cores close, ~330 ns with them far apart; the line between is this. */
enum { FAR_CORES_ROUND_TRIP_NS = 200 };

static void print_round_trip(double ns) {
    if (ns < 0) return;
    printf("thread hand-off  %.0f ns round trip between threads 0 and 1 (median of 5)%s\n", ns,
           ns > FAR_CORES_ROUND_TRIP_NS ? ": the cores are far apart (each has its own path to memory; every hand-off costs more)" : "");
}

/* The ceiling of a GEMM with Q8_0 block scales (quant.h: probe_int8_block_scaled), the best of 5 as
 * for the peak; negative when the kernel family has no such probe. */
static double probe_block_scaled(ThreadPool *pool) {
    double runs[5];
    for (int r = 0; r < 5; r++) runs[r] = probe_int8_block_scaled(pool);
    return max_of(runs, 5);
}

/* Operations (multiply-adds ×2) of each step of a prefill of T tokens from an empty cache: every
 * layer matrix for every token, causal attention (q·k and p·v over the prefix), and the output layer
 * for the last token only. */
static void prefill_step_ops(const Llm *m, int64_t T, double ops[LLM_STEPS]) {
    const LlmConfig *c = &m->config;
    memset(ops, 0, sizeof(double) * LLM_STEPS);
    for (int64_t l = 0; l < c->n_layers; l++) {
        const LlmLayer *L = &m->weights.layers[l];
        ops[LLM_STEP_QKV] += 2.0 * (double)T * (double)(matrix_elems(&L->wq) + matrix_elems(&L->wk) + matrix_elems(&L->wv));
        ops[LLM_STEP_WO] += 2.0 * (double)T * (double)matrix_elems(&L->wo);
        ops[LLM_STEP_FFN_UP] += 2.0 * (double)T * (double)(matrix_elems(&L->w_gate) + matrix_elems(&L->w_up));
        ops[LLM_STEP_FFN_DOWN] += 2.0 * (double)T * (double)matrix_elems(&L->w_down);
    }
    ops[LLM_STEP_ATTENTION] = 2.0 * (double)c->n_layers * 2.0 * (double)(c->n_heads * c->head_dim) * (double)T *
                              (double)(T + 1) / 2.0;
    ops[LLM_STEP_OUTPUT] = 2.0 * (double)matrix_elems(&m->weights.output);
}

static double prefill_ops(const Llm *m, int64_t T) {
    double ops[LLM_STEPS], total = 0.0;
    prefill_step_ops(m, T, ops);
    for (int i = 0; i < LLM_STEPS; i++) total += ops[i];
    return total;
}

/* Bytes one decode step must read from memory at `context` tokens of context: every weight matrix
 * once, and every layer's cached K and V rows 0..context. */
static double decode_bytes(const Llm *m, int64_t context) {
    return (double)m->weight_bytes +
           2.0 * (double)m->config.n_layers * (double)(context + 1) * (double)m->state.kv_row_bytes;
}

/* The read bandwidth over exactly the memory one decode step reads at `context` tokens of context:
 * every weight matrix (as decode_bytes counts them) and the KV rows 0..context of every layer and KV
 * head. Probing the model's own pages (not a fresh buffer) measures them with their page sizes and
 * placement, adds nothing to the peak RSS, and can be repeated beside each timed repetition, so that
 * the roofline fraction compares a decode with the bandwidth the machine gave at that moment (on a
 * shared machine it changes by 1.5x from one minute to the next). */
static double probe_decode_memory(const Llm *m, int64_t context) {
    const LlmWeights *w = &m->weights;
    int64_t n_layers = m->config.n_layers, n_kv = m->config.n_kv_heads;
    int n = 0;
    ReadSpan *spans = malloc(sizeof *spans * (size_t)(n_layers * (7 + 2 * n_kv) + 1));
    if (!spans) return -1.0;
    for (int64_t l = 0; l < n_layers; l++) {
        const LlmLayer *L = &w->layers[l];
        const Matrix *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) spans[n++] = (ReadSpan){mats[i]->data, llm_matrix_bytes(mats[i])};
        int64_t bytes = (context + 1 < m->n_ctx ? context + 1 : m->n_ctx) * m->state.kv_head_row_bytes;
        for (int64_t h = 0; h < n_kv; h++) {
            spans[n++] = (ReadSpan){llm_kv_head_row(m, m->state.key_cache, l, h, 0), bytes};
            spans[n++] = (ReadSpan){llm_kv_head_row(m, m->state.value_cache, l, h, 0), bytes};
        }
    }
    spans[n++] = (ReadSpan){w->output.data, llm_matrix_bytes(&w->output)};
    double gbs = probe_read_spans(m->pool, spans, n);
    free(spans);
    return gbs;
}

static void fill_tokens(int32_t *ids, int64_t n, int64_t vocab, uint64_t *state) {
    for (int64_t i = 0; i < n; i++) {
        *state = *state * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)(3 + (*state >> 33) % (uint64_t)(vocab - 3));
    }
    ids[0] = 1;
}

/* One timed decode repetition: the cache holds `start` tokens; ids[0 .. n) are evaluated one at a time
 * (the first untimed, so that the timed steps start from a warm token), between two probes of the
 * memory a step reads at `context`. Gives tok/s, the mean of the two probes, and the fraction
 * gb·tok/s / bandwidth; the caller takes medians over repetitions. */
typedef struct {
    double tok_s, bandwidth, fraction;
} DecodeRep;

/* `steps`: when not NULL, the timed steps' forward passes are also timed step by step into it. */
static int decode_rep(Bluelmv *b, const int32_t *ids, int64_t start, int64_t n, int64_t context, DecodeRep *r,
                      LlmProfile *steps, BlvError *err) {
    Llm *m = bluelmv_llm(b);
    llm_rewind(m, start);
    int rc = bluelmv_eval(b, ids, 1, err);
    double bw_before = probe_decode_memory(m, context);
    m->profile = steps;
    double t0 = blv_now();
    for (int64_t i = 1; i < n && rc == 0; i++) rc = bluelmv_eval(b, ids + i, 1, err);
    r->tok_s = (double)(n - 1) / (blv_now() - t0);
    m->profile = NULL;
    r->bandwidth = 0.5 * (bw_before + probe_decode_memory(m, context));
    r->fraction = decode_bytes(m, context) / 1e9 * r->tok_s / r->bandwidth;
    return rc;
}

/* ---- --profile: one decode repetition timed step by step ---------------------------------------- */

typedef struct {
    int done;
    int64_t tokens, context;
    double ms[LLM_STEPS];   /* per token */
    double mb[LLM_STEPS];   /* bytes the step reads per token, MB */
    double total_ms;        /* per token, the whole evaluation */
    double bandwidth;       /* GB/s, the mean of the probes before and after */
    double attention_arithmetic_ms;  /* per token: llm_attention_arithmetic_seconds */
    double attention_alone_ms;       /* per token: llm_attention_alone_seconds */
    double bound_ms;        /* per token: profile_bound */
    int threads;            /* whose barrier waits are kept (at most LLM_PROFILE_THREADS) */
    double wait_ms[LLM_PROFILE_THREADS];  /* per token: each thread's waits at the decode task's barriers */
    double rows_pct[LLM_PROFILE_THREADS]; /* each thread's part of the shared products' rows, % */
} StepProfile;

/* The bytes each step of one decode step reads at `context` tokens of context (they add up to
 * decode_bytes): its weight matrices, or for attention the K and V rows 0..context of every layer. */
static void decode_step_bytes(const Llm *m, int64_t context, double bytes[LLM_STEPS]) {
    memset(bytes, 0, sizeof(double) * LLM_STEPS);
    for (int64_t l = 0; l < m->config.n_layers; l++) {
        const LlmLayer *L = &m->weights.layers[l];
        bytes[LLM_STEP_QKV] += (double)(llm_matrix_bytes(&L->wq) + llm_matrix_bytes(&L->wk) + llm_matrix_bytes(&L->wv));
        bytes[LLM_STEP_WO] += (double)llm_matrix_bytes(&L->wo);
        bytes[LLM_STEP_FFN_UP] += (double)(llm_matrix_bytes(&L->w_gate) + llm_matrix_bytes(&L->w_up));
        bytes[LLM_STEP_FFN_DOWN] += (double)llm_matrix_bytes(&L->w_down);
    }
    bytes[LLM_STEP_OUTPUT] = (double)llm_matrix_bytes(&m->weights.output);
    bytes[LLM_STEP_ATTENTION] = decode_bytes(m, context) - (double)m->weight_bytes;
}

/* The fastest a decode step can be without another attention arithmetic (ms per token): every step
 * reading its bytes at the probe's rate, the attention no faster than its arithmetic alone. The
 * read-bandwidth roofline divided by it is the largest fraction of the roofline the decode can reach
 * on this machine at this context. */
static double profile_bound(const StepProfile *p) {
    double ms = 0.0;
    for (int i = 0; i < LLM_STEPS; i++) {
        double read_ms = p->mb[i] / p->bandwidth;
        ms += i == LLM_STEP_ATTENTION && p->attention_arithmetic_ms > read_ms ? p->attention_arithmetic_ms : read_ms;
    }
    return ms;
}

/* One more decode_rep with every step of the forward pass timed: where a decode's time goes against
 * what each step reads. */
static int profile_decode(Bluelmv *b, const int32_t *ids, int64_t start, int64_t n, int64_t context, StepProfile *p,
                          BlvError *err) {
    const Llm *m = bluelmv_llm(b);
    LlmProfile prof;
    DecodeRep rep;
    memset(&prof, 0, sizeof prof);
    memset(p, 0, sizeof *p);
    fprintf(stderr, "bench: decode timed step by step (--profile)\n");
    int rc = decode_rep(b, ids, start, n, context, &rep, &prof, err);
    p->bandwidth = rep.bandwidth;
    p->tokens = n - 1;
    p->context = context;
    p->total_ms = 1e3 / rep.tok_s;
    double bytes[LLM_STEPS];
    decode_step_bytes(m, context, bytes);
    for (int i = 0; i < LLM_STEPS; i++) {
        p->ms[i] = 1e3 * prof.seconds[i] / (double)p->tokens;
        p->mb[i] = bytes[i] / 1e6;
    }
    p->threads = threadpool_size(m->pool) < LLM_PROFILE_THREADS ? threadpool_size(m->pool) : LLM_PROFILE_THREADS;
    int64_t shared_rows = 0;
    for (int t = 0; t < p->threads; t++) {
        p->wait_ms[t] = 1e3 * prof.threads[t].wait_seconds / (double)p->tokens;
        shared_rows += prof.threads[t].shared_rows;
    }
    for (int t = 0; t < p->threads; t++)
        p->rows_pct[t] = shared_rows > 0 ? 100.0 * (double)prof.threads[t].shared_rows / (double)shared_rows : 0.0;
    if (rc == 0) p->attention_arithmetic_ms = 1e3 * llm_attention_arithmetic_seconds(bluelmv_llm(b), context);
    if (rc == 0) p->attention_alone_ms = 1e3 * llm_attention_alone_seconds(bluelmv_llm(b), context);
    p->bound_ms = profile_bound(p);
    p->done = rc == 0;
    return rc;
}

static void print_profile(const StepProfile *p) {
    double sum = 0.0, mb = 0.0;
    printf("decode steps     one more repetition of %lld tokens at context %lld, each step of the forward pass timed "
           "(--profile); %.2f GB/s reading the decode's memory beside it:\n", (long long)p->tokens, (long long)p->context,
           p->bandwidth);
    for (int i = 0; i < LLM_STEPS; i++) {
        sum += p->ms[i], mb += p->mb[i];
        printf("  %-10s %8.3f ms/token", llm_step_names[i], p->ms[i]);
        if (p->mb[i] > 0)
            printf("  %9.2f MB  %6.2f GB/s = %5.1f%% of the probe (reading its bytes at the probe's rate: %.3f ms)",
                   p->mb[i], p->mb[i] / p->ms[i], 100.0 * p->mb[i] / p->ms[i] / p->bandwidth, p->mb[i] / p->bandwidth);
        if (i == LLM_STEP_ATTENTION) {
            int64_t timed = p->context < LLM_ATTENTION_PROBE_KEYS ? p->context : LLM_ATTENTION_PROBE_KEYS;
            printf("\n  %-10s %8.3f ms/token  its arithmetic alone, the rows in cache (%lld positions of one KV head "
                   "timed on one thread, scaled)", "", p->attention_arithmetic_ms, (long long)timed);
            printf("\n  %-10s %8.3f ms/token  alone over the cache, every layer, nothing between (the decode's threads "
                   "and KV heads, a barrier per layer; median of 5): %.2f GB/s = %.1f%% of the probe", "",
                   p->attention_alone_ms, p->mb[i] / p->attention_alone_ms,
                   100.0 * p->mb[i] / p->attention_alone_ms / p->bandwidth);
        }
        printf("\n");
    }
    printf("  %-10s %8.3f ms/token  %9.2f MB  %6.2f GB/s = %5.1f%% of the probe (%.3f ms per token in all; the rest "
           "outside the forward pass)\n", "steps", sum, mb, mb / sum, 100.0 * mb / sum / p->bandwidth, p->total_ms);
    printf("  %-10s %8.3f ms/token  every step reading its bytes at the probe's rate, the attention no faster than its "
           "arithmetic: at most %.1f%% of the read-bandwidth roofline here; the steps ran at %.1f%% of this "
           "bound\n", "bound", p->bound_ms, 100.0 * mb / p->bandwidth / p->bound_ms, 100.0 * p->bound_ms / sum);
    if (p->threads < 2) return;
    printf("  %-10s", "waits");
    for (int t = 0; t < p->threads; t++) printf(t ? " / %.3f" : " %8.3f", p->wait_ms[t]);
    printf(" ms/token  threads 0..%d waiting for each other at the barriers between the steps (a decoded token is "
           "one task; thread 0's waits are inside the steps above)\n", p->threads - 1);
    printf("  %-10s", "rows");
    for (int t = 0; t < p->threads; t++) printf(t ? " / %.1f%%" : " %7.1f%%", p->rows_pct[t]);
    printf("  of the products' rows each thread computed (a thread that finishes its share "
           "early takes rows from a slower one)\n");
}

static void print_profile_json(const StepProfile *p) {
    printf(", \"decode_profile\": {\"tokens\": %lld, \"context\": %lld, \"bandwidth_gbs\": %.2f, \"total_ms\": %.4f, "
           "\"attention_arithmetic_ms\": %.4f, \"attention_alone_ms\": %.4f, \"bound_ms\": %.4f, \"steps\": [",
           (long long)p->tokens, (long long)p->context, p->bandwidth, p->total_ms, p->attention_arithmetic_ms,
           p->attention_alone_ms, p->bound_ms);
    for (int i = 0; i < LLM_STEPS; i++)
        printf("%s{\"step\": \"%s\", \"ms\": %.4f, \"mb\": %.6f}", i ? ", " : "", llm_step_names[i], p->ms[i], p->mb[i]);
    printf("], \"barrier_wait_ms\": [");
    for (int t = 0; t < p->threads; t++) printf("%s%.4f", t ? ", " : "", p->wait_ms[t]);
    printf("], \"shared_rows_pct\": [");
    for (int t = 0; t < p->threads; t++) printf("%s%.3f", t ? ", " : "", p->rows_pct[t]);
    printf("]}");
}

/* --profile, prefill: the steps of one prefill timed (Llm.profile) against the operations they do. */
typedef struct {
    int done;
    int64_t tokens;
    double s[LLM_STEPS];    /* seconds, the whole prefill */
    double gop[LLM_STEPS];  /* operations, GOP */
    double total_s;         /* the whole evaluation */
} PrefillProfile;

static void finish_prefill_profile(const Llm *m, const LlmProfile *prof, int64_t T, double total_s, PrefillProfile *p) {
    double ops[LLM_STEPS];
    prefill_step_ops(m, T, ops);
    p->tokens = T;
    p->total_s = total_s;
    for (int i = 0; i < LLM_STEPS; i++) p->s[i] = prof->seconds[i], p->gop[i] = ops[i] / 1e9;
    p->done = 1;
}

static void print_prefill_profile(const PrefillProfile *p, double peak) {
    double sum = 0.0, gop = 0.0;
    printf("prefill steps    one more prefill of %lld tokens, each step of the forward pass timed (--profile):\n",
           (long long)p->tokens);
    for (int i = 0; i < LLM_STEPS; i++) {
        sum += p->s[i], gop += p->gop[i];
        printf("  %-10s %10.2f ms", llm_step_names[i], 1e3 * p->s[i]);
        if (p->gop[i] > 0 && p->s[i] > 0)
            printf("  %10.3f GOP  %7.1f GOP/s = %5.1f%% of int8 peak", p->gop[i], p->gop[i] / p->s[i],
                   100.0 * p->gop[i] / p->s[i] / peak);
        printf("\n");
    }
    printf("  %-10s %10.2f ms  %10.3f GOP  %7.1f GOP/s = %5.1f%% of int8 peak (%.2f ms in all)\n", "steps", 1e3 * sum,
           gop, gop / sum, 100.0 * gop / sum / peak, 1e3 * p->total_s);
}

static void print_prefill_profile_json(const PrefillProfile *p) {
    printf(", \"prefill_profile\": {\"tokens\": %lld, \"total_s\": %.6f, \"steps\": [", (long long)p->tokens, p->total_s);
    for (int i = 0; i < LLM_STEPS; i++)
        printf("%s{\"step\": \"%s\", \"s\": %.6f, \"gop\": %.6f}", i ? ", " : "", llm_step_names[i], p->s[i], p->gop[i]);
    printf("]}");
}

int bench_multimodal(const BenchOptions *o, BlvError *err);

int bench_run(const BenchOptions *o, BlvError *err) {
    if (o->mmproj_path) return bench_multimodal(o, err);
    BluelmvParams params = bluelmv_default_params();
    params.model_path = o->model_path;
    params.n_threads = o->n_threads;
    params.kv_type = o->kv_type;
    params.no_repack = o->no_repack;
    params.n_ctx = o->prompt_tokens + 8 > o->depth + o->tg_tokens + 8 ? o->prompt_tokens + 8
                                                                       : o->depth + o->tg_tokens + 8;
    double t_load = blv_now();
    Bluelmv *b = bluelmv_load(&params, err);
    if (!b) return -1;
    t_load = blv_now() - t_load;
    Llm *m = bluelmv_llm(b);
    llm_prepare_weights(m);  /* the first forward pass would do it: keep it out of the first repetition */
    if (params.n_ctx > m->config.context_length) {
        bluelmv_free(b);
        return blv_fail(err, "%s: --prompt-tokens %lld or --depth %lld + --tg-tokens %lld does not fit the model's "
                        "context of %lld", o->model_path, (long long)o->prompt_tokens, (long long)o->depth,
                        (long long)o->tg_tokens, (long long)m->config.context_length);
    }
    int64_t vocab = m->config.vocab_size, n_tg = o->depth + o->tg_tokens;
    int64_t n_ids = o->prompt_tokens > n_tg ? o->prompt_tokens : n_tg;
    int32_t *ids = malloc((size_t)n_ids * sizeof(int32_t));
    double *tg = calloc((size_t)o->reps * 4, sizeof(double));
    /* the mean context over the timed steps: depth + 1 .. depth + tg_tokens - 1 */
    int64_t tg_context = o->depth + o->tg_tokens / 2;
    double tg_gb = decode_bytes(m, tg_context) / 1e9;
    if (!ids || !tg) {
        free(ids);
        free(tg);
        bluelmv_free(b);
        return blv_fail(err, "out of memory");
    }
    double *pp = tg + o->reps, *tg_bw = pp + o->reps, *tg_frac = tg_bw + o->reps;
    ThreadPool *pool = m->pool;
    fprintf(stderr, "bench: %s, %d threads, kernels %s\n", o->model_path, threadpool_size(pool), quant_kernel_name());

    uint64_t rng = 42;
    int rc = 0;
    for (int r = 0; r < o->reps && rc == 0; r++) {
        fprintf(stderr, isatty(2) ? "\rbench: repetition %d/%d" : "bench: repetition %d/%d\n", r + 1, o->reps);
        fflush(stderr);
        /* prefill: prompt_tokens from an empty cache */
        fill_tokens(ids, o->prompt_tokens, vocab, &rng);
        bluelmv_reset(b);
        double t0 = blv_now();
        rc = bluelmv_eval(b, ids, o->prompt_tokens, err);
        pp[r] = (double)o->prompt_tokens / (blv_now() - t0);
        /* decode: tg_tokens single-token evaluations after BOS and `depth` more tokens (one prefill) */
        fill_tokens(ids, n_tg, vocab, &rng);
        bluelmv_reset(b);
        if (rc == 0 && o->depth > 0) rc = bluelmv_eval(b, ids, o->depth, err);
        DecodeRep d = {0, 0, 0};
        if (rc == 0) rc = decode_rep(b, ids + o->depth, o->depth, o->tg_tokens, tg_context, &d, NULL, err);
        tg[r] = d.tok_s, tg_bw[r] = d.bandwidth, tg_frac[r] = d.fraction;
    }
    if (isatty(2)) fprintf(stderr, "\n");
    /* peak RSS before the probes, whose buffer would otherwise count */
    double rss = (double)blv_peak_rss_bytes() / 1e9;
    StepProfile prof = {0};
    if (rc == 0 && o->profile) {
        fill_tokens(ids, n_tg, vocab, &rng);
        bluelmv_reset(b);
        if (o->depth > 0) rc = bluelmv_eval(b, ids, o->depth, err);
        if (rc == 0) rc = profile_decode(b, ids + o->depth, o->depth, o->tg_tokens, tg_context, &prof, err);
    }
    PrefillProfile pprof = {0};
    if (rc == 0 && o->profile) {
        LlmProfile lp;
        memset(&lp, 0, sizeof lp);
        fprintf(stderr, "bench: prefill timed step by step (--profile)\n");
        fill_tokens(ids, o->prompt_tokens, vocab, &rng);
        bluelmv_reset(b);
        m->profile = &lp;
        double t0 = blv_now();
        rc = bluelmv_eval(b, ids, o->prompt_tokens, err);
        double total = blv_now() - t0;
        m->profile = NULL;
        if (rc == 0) finish_prefill_profile(m, &lp, o->prompt_tokens, total, &pprof);
    }
    double bandwidth, peak, round_trip_ns;
    probe_limits(pool, &bandwidth, &peak, &round_trip_ns);
    if (rc == 0) {
        double tg_med = blv_median(tg, o->reps), pp_med = blv_median(pp, o->reps);
        double tg_fraction = blv_median(tg_frac, o->reps), tg_bandwidth = blv_median(tg_bw, o->reps);
        double gb_per_token = (double)m->weight_bytes / 1e9;
        double pp_gops = prefill_ops(m, o->prompt_tokens) / 1e9 * pp_med / (double)o->prompt_tokens;
        double pp_fraction = pp_gops / peak;
        if (o->json) {
            printf("{\"model\": \"%s\", \"threads\": %d, \"kernels\": \"%s\", \"kv_cache\": \"%s\", \"load_s\": %.3f, "
                   "\"read_bandwidth_gbs\": %.2f, \"decode_memory_bandwidth_gbs\": %.2f, \"int8_peak_gops\": %.1f, \"weight_gb\": %.4f, "
                   "\"tg_depth\": %lld, \"tg_gb_per_token\": %.9f, "
                   "\"tg_tok_s\": %.3f, \"tg_roofline_fraction\": %.4f, \"pp_tokens\": %lld, \"pp_tok_s\": %.3f, "
                   "\"pp_gops\": %.2f, \"pp_peak_fraction\": %.4f, \"peak_rss_gb\": %.3f, \"repacked_matrices\": %lld, "
                   "\"repack_s\": %.3f, \"round_trip_ns\": %.1f",
                   o->model_path, threadpool_size(pool), quant_kernel_name(), type_name(m->kv_type), t_load, bandwidth,
                   tg_bandwidth, peak, gb_per_token,
                   (long long)o->depth, tg_gb, tg_med, tg_fraction, (long long)o->prompt_tokens, pp_med, pp_gops, pp_fraction, rss,
                   (long long)m->repacked_matrices, m->repack_seconds, round_trip_ns);
            if (prof.done) print_profile_json(&prof);
            if (pprof.done) print_prefill_profile_json(&pprof);
            printf("}\n");
        } else {
            printf("model            %s (%.3f GB of weight matrices), loaded in %.2f s; %lld Q4_0 matrices repacked "
                   "by 16 rows in %.2f s%s\n", o->model_path, gb_per_token, t_load, (long long)m->repacked_matrices,
                   m->repack_seconds, o->no_repack ? " (--no-repack)" : "");
            printf("threads          %d, kernels %s, KV cache %s\n", threadpool_size(pool), quant_kernel_name(),
                   type_name(m->kv_type));
            printf("read bandwidth   %.2f GB/s (probe of a fresh 256 MiB buffer, median of 5); %.2f GB/s over the "
                   "decode's own memory (median of the probes beside each repetition)\n", bandwidth, tg_bandwidth);
            printf("int8 peak        %.1f GOP/s (probe, best of 5)\n", peak);
            print_round_trip(round_trip_ns);
            printf("tg               %.2f tok/s at depth %lld = %.2f GB/s of weights and KV cache (%.3f GB per token) "
                   "= %.1f%% of the read bandwidth beside it (median of %d)\n",
                   tg_med, (long long)o->depth, tg_gb * tg_med, tg_gb, 100.0 * tg_fraction, o->reps);
            printf("pp%-4lld           %.2f tok/s = %.1f GOP/s = %.1f%% of int8 peak (median of %d)\n",
                   (long long)o->prompt_tokens, pp_med, pp_gops, 100.0 * pp_fraction, o->reps);
            printf("peak RSS         %.3f GB\n", rss);
            if (prof.done) print_profile(&prof);
            if (pprof.done) print_prefill_profile(&pprof, peak);
        }
    }
    free(ids);
    free(tg);
    bluelmv_free(b);
    return rc;
}

/* ---- the multimodal benchmark: the paper's Table 5 on this machine ------------------------------ */

/* A synthetic test image (smooth gradients with some texture) written as PPM, for --size. */
static int write_synthetic_image(const char *path, int w, int h, BlvError *err) {
    Image img = {w, h, malloc((size_t)w * (size_t)h * 3)};
    if (!img.rgb) return blv_fail(err, "out of memory for a %dx%d image", w, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img.rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
            p[0] = (uint8_t)(255 * x / (w > 1 ? w - 1 : 1));
            p[1] = (uint8_t)(255 * y / (h > 1 ? h - 1 : 1));
            p[2] = (uint8_t)((x * 7 + y * 13) & 255);
        }
    int rc = image_write_ppm(&img, path, err);
    free(img.rgb);
    return rc;
}

/* A query whose template fills the input to `target` rows together with the image tokens. */
static char *padding_query(Bluelmv *b, int64_t image_tokens, int64_t target, BlvError *err) {
    const char *tpl = bluelmv_chat_template(b);
    int64_t words = 0, lo = 0, hi = target * 4 + 16;
    char *q = NULL;
    /* binary search on the number of " a" repetitions */
    while (lo < hi) {
        words = (lo + hi + 1) / 2;
        free(q);
        q = malloc((size_t)words * 2 + 1);
        if (!q) {
            blv_fail(err, "out of memory");
            return NULL;
        }
        for (int64_t i = 0; i < words; i++) memcpy(q + 2 * i, " a", 2);
        q[2 * words] = 0;
        size_t tl = strlen(tpl) + strlen(q) + 1;
        char *text = malloc(tl);
        snprintf(text, tl, "%s%s", tpl, q);
        int64_t n = bluelmv_tokenize(b, text, 1, NULL, 0, err);
        free(text);
        if (n + image_tokens <= target) lo = words;
        else hi = words - 1;
    }
    free(q);
    q = malloc((size_t)lo * 2 + 1);
    for (int64_t i = 0; q && i < lo; i++) memcpy(q + 2 * i, " a", 2);
    if (q) q[2 * lo] = 0;
    return q;
}

typedef struct {
    double prefill_s, decode_tok_s, ttft_s;
    int64_t n_input;
} TurnResult;

/* One question about the already-encoded image: prefill of the whole input, then tg tokens. */
static int bench_turn(Bluelmv *b, BluelmvImage *img, const char *query, int64_t tg, TurnResult *r, BlvError *err) {
    BluelmvSampler greedy = {0, 0, 1, 1};
    BluelmvStats st;
    bluelmv_chat_reset(b);
    if (bluelmv_chat(b, query, &img, 1, tg, &greedy, NULL, NULL, &st, err) != 0) return -1;
    r->prefill_s = st.prefill_seconds;
    r->decode_tok_s = st.n_generated > 1 ? (double)(st.n_generated - 1) / st.decode_seconds : 0;
    r->ttft_s = st.first_token_seconds;
    r->n_input = st.n_prompt;
    return 0;
}

int bench_multimodal(const BenchOptions *o, BlvError *err) {
    char synthetic[256] = "";
    const char *image = o->image_path;
    if (!image) {
        const char *tmp = getenv("TMPDIR");
        snprintf(synthetic, sizeof synthetic, "%s/bluelmv-bench-%d.ppm", tmp && tmp[0] ? tmp : "/tmp", (int)getpid());
        if (write_synthetic_image(synthetic, o->image_w, o->image_h, err) != 0) return -1;
        image = synthetic;
    }
    int rc = -1;
    BluelmvParams params = bluelmv_default_params();
    params.model_path = o->model_path;
    params.mmproj_path = o->mmproj_path;
    params.n_threads = o->n_threads;
    params.kv_type = o->kv_type;
    params.no_repack = o->no_repack;
    params.n_ctx = o->prompt_tokens + o->tg_tokens + 8;
    BluelmvImage **imgs = NULL;
    char *query = NULL;
    Bluelmv *b = NULL;

    fprintf(stderr, "bench: loading %s and %s (%d threads)\n", o->model_path, o->mmproj_path, o->n_threads);
    double t0 = blv_now();
    if (!(b = bluelmv_load(&params, err))) goto done;
    double load_s = blv_now() - t0;
    Llm *m = bluelmv_llm(b);
    double vit_gb = (double)bluelmv_vit(b)->weight_bytes / 1e9;
    int vit_batch = (int)bluelmv_vit(b)->batch;
    double vit_ops = vit_block_ops(&bluelmv_vit(b)->config);  /* per ViT input (tile or thumbnail) */

    /* Table 5: encode (decoupled: the ViT is released afterwards), then the whole input, then decode */
    fprintf(stderr, "bench: encoding %s\n", image);
    BluelmvEncodeJob *job = bluelmv_encode_start(b, &image, 1, err);
    if (!job || bluelmv_encode_finish(job, &imgs, err) != 0) goto done;
    BluelmvImage *img = imgs[0];
    int64_t rss_after_release = blv_current_rss_bytes();
    if (!(query = padding_query(b, img->n_tokens, o->prompt_tokens, err))) goto done;
    fprintf(stderr, "bench: prefill + decode\n");
    TurnResult main_run;
    if (bench_turn(b, img, query, o->tg_tokens, &main_run, err) != 0) goto done;
    double peak_rss = (double)blv_peak_rss_bytes() / 1e9;
    /* decode speed against the roofline: --reps more decodes of tg tokens from the same context, each
     * between two probes of the memory it reads (one probe after the turn alone was seen to land in
     * another bandwidth regime than the decode: 108% "of the roofline") */
    int64_t n_dec = m->n_ctx - main_run.n_input < o->tg_tokens ? m->n_ctx - main_run.n_input : o->tg_tokens;
    if (n_dec < 2) {  /* an image larger than --prompt-tokens leaves no room past the answer */
        blv_fail(err, "%s: the input (%lld tokens) leaves no room for decoding in a context of %lld; raise "
                 "--prompt-tokens", image, (long long)main_run.n_input, (long long)m->n_ctx);
        goto done;
    }
    int64_t decode_context = main_run.n_input + n_dec / 2;
    double *dec = calloc((size_t)o->reps * 3, sizeof(double));
    int32_t *dec_ids = malloc((size_t)n_dec * sizeof(int32_t));
    if (!dec || !dec_ids) {
        free(dec), free(dec_ids);
        blv_fail(err, "out of memory");
        goto done;
    }
    double *dec_bw = dec + o->reps, *dec_frac = dec_bw + o->reps;
    uint64_t rng = 7;
    for (int r = 0; r < o->reps; r++) {
        fprintf(stderr, isatty(2) ? "\rbench: decode repetition %d/%d" : "bench: decode repetition %d/%d\n", r + 1, o->reps);
        fill_tokens(dec_ids, n_dec, m->config.vocab_size, &rng);
        DecodeRep d;
        if (decode_rep(b, dec_ids, main_run.n_input, n_dec, decode_context, &d, NULL, err) != 0) {
            free(dec), free(dec_ids);
            goto done;
        }
        dec[r] = d.tok_s, dec_bw[r] = d.bandwidth, dec_frac[r] = d.fraction;
    }
    if (isatty(2)) fprintf(stderr, "\n");
    double decode_tok_s = blv_median(dec, o->reps), decode_bw = blv_median(dec_bw, o->reps);
    double decode_fraction = blv_median(dec_frac, o->reps);
    StepProfile prof = {0};
    PrefillProfile pprof = {0};
    if (o->profile) {
        fill_tokens(dec_ids, n_dec, m->config.vocab_size, &rng);
        if (profile_decode(b, dec_ids, main_run.n_input, n_dec, decode_context, &prof, err) != 0) {
            free(dec), free(dec_ids);
            goto done;
        }
        /* the same question again, answered with one token: its prefill timed step by step */
        LlmProfile lp;
        memset(&lp, 0, sizeof lp);
        fprintf(stderr, "bench: prefill timed step by step (--profile)\n");
        m->profile = &lp;
        TurnResult again;
        int trc = bench_turn(b, img, query, 1, &again, err);
        m->profile = NULL;
        if (trc != 0) {
            free(dec), free(dec_ids);
            goto done;
        }
        finish_prefill_profile(m, &lp, again.n_input, again.prefill_s, &pprof);
    }
    free(dec), free(dec_ids);
    double gb_per_token = (double)m->weight_bytes / 1e9;
    double ops = prefill_ops(m, main_run.n_input);
    double bandwidth, peak, round_trip_ns;
    probe_limits(m->pool, &bandwidth, &peak, &round_trip_ns);
    double scaled_peak = probe_block_scaled(m->pool);
    double vit_gops = vit_ops * (double)img->n_images / img->blocks_s / 1e9;
    double encode_total = img->decode_s + img->preprocess_s + img->encode_s;
    double decode_gb = decode_bytes(m, decode_context) / 1e9;
    if (o->json) {
        printf("{\"threads\": %d, \"kernels\": \"%s\", \"kv_cache\": \"%s\", \"read_bandwidth_gbs\": %.2f, \"int8_peak_gops\": %.1f, "
               "\"llm_gb\": %.4f, \"vit_gb\": %.4f, \"load_s\": %.3f, \"grid\": \"%d:%d\", \"vit_inputs\": %lld, "
               "\"image_tokens\": %lld, \"encode_s\": %.3f, \"patch_embed_s\": %.3f, \"patch_embed_hidden_s\": %.3f, \"patch_embed_after_first_s\": %.3f, "
               "\"vit_blocks_s\": %.3f, \"vit_gops\": %.1f, \"block_scaled_peak_gops\": %.1f, \"input_tokens\": %lld, \"prefill_s\": %.3f, \"decode_tok_s\": %.3f, "
               "\"decode_roofline_fraction\": %.4f, \"ttft_s\": %.3f, \"peak_rss_gb\": %.3f, \"decode_memory_bandwidth_gbs\": %.2f, "
               "\"repack_s\": %.3f, \"round_trip_ns\": %.1f",
               o->n_threads, quant_kernel_name(), type_name(m->kv_type), bandwidth, peak, gb_per_token, vit_gb, load_s, img->grid_w,
               img->grid_h, (long long)img->n_images, (long long)img->n_tokens, encode_total, img->conv_s,
               img->conv_hidden_s, img->conv_s - img->conv_first_s, img->blocks_s, vit_gops, scaled_peak, (long long)main_run.n_input, main_run.prefill_s,
               decode_tok_s, decode_fraction, main_run.ttft_s, peak_rss, decode_bw,
               m->repack_seconds, round_trip_ns);
        if (prof.done) print_profile_json(&prof);
        if (pprof.done) print_prefill_profile_json(&pprof);
        printf("}\n");
        rc = 0;
        goto done;
    }

    printf("bluelmv bench — the paper's Table 5 setup on this machine (%d threads, kernels %s, KV cache %s; the paper's "
           "is INT8: --kv q8_0)\n", o->n_threads, quant_kernel_name(), type_name(m->kv_type));
    printf("machine limits   read bandwidth %.2f GB/s, int8 peak %.1f GOP/s (probes)\n", bandwidth, peak);
    print_round_trip(round_trip_ns);
    printf("models           LLM %.3f GB of matrices, ViT+projector %.3f GB; load %.3f s\n", gb_per_token, vit_gb, load_s);
    printf("image            %s: %dx%d -> grid %d:%d, %d tiles + %d thumbnail = %lld ViT inputs, %lld image tokens\n",
           image == synthetic ? "synthetic" : image, img->width, img->height, img->grid_w, img->grid_h, img->n_tiles,
           img->has_thumbnail, (long long)img->n_images, (long long)img->n_tokens);
    printf("image encode     %.3f s (decode %.3f, tiles %.3f, ViT %.3f: %d batches of %d; patch embedding %.3f s, "
           "%.3f s of it hidden behind the blocks, of the %.3f s after the first batch; blocks %.3f s = %.3f s per tile; projector %.3f s)\n",
           encode_total, img->decode_s, img->preprocess_s, img->encode_s, img->n_batches, vit_batch, img->conv_s,
           img->conv_hidden_s, img->conv_s - img->conv_first_s,
           img->blocks_s, img->blocks_s / (double)img->n_images, img->project_s);
    printf("ViT blocks       %.1f GOP per input, %.1f GOP/s = %.1f%% of int8 peak", vit_ops / 1e9, vit_gops,
           100.0 * vit_gops / peak);
    if (scaled_peak > 0)
        printf(" = %.1f%% of the block-scaled int8 ceiling (%.1f GOP/s: the most a Q8_0 GEMM can do here)",
               100.0 * vit_gops / scaled_peak, scaled_peak);
    printf("\n");
    printf("LLM prefill      %lld tokens (%lld image) in %.3f s = %.1f tok/s = %.1f GOP/s = %.1f%% of int8 peak "
           "(the first forward pass: %.3f s of it repacking %lld Q4_0 matrices)\n",
           (long long)main_run.n_input, (long long)img->n_tokens, main_run.prefill_s,
           (double)main_run.n_input / main_run.prefill_s, ops / 1e9 / main_run.prefill_s,
           100.0 * ops / 1e9 / main_run.prefill_s / peak, m->repack_seconds, (long long)m->repacked_matrices);
    if (pprof.done) print_prefill_profile(&pprof, peak);
    printf("LLM decode       %.2f tok/s at context %lld = %.1f%% of the read-bandwidth roofline (%.3f GB of weights "
           "and KV cache per token; %.2f GB/s reading that memory; medians of %d repetitions of %lld tokens, each "
           "between two probes; the answer's own decode: %.2f tok/s)\n", decode_tok_s,
           (long long)main_run.n_input, 100.0 * decode_fraction, decode_gb, decode_bw, o->reps, (long long)n_dec,
           main_run.decode_tok_s);
    if (prof.done) print_profile(&prof);
    printf("time to first token  %.3f s after the prompt (prefill); %.3f s including the image encode\n",
           main_run.ttft_s, main_run.ttft_s + encode_total);
    printf("memory           peak RSS %.3f GB (ViT released before the LLM ran; RSS right after release %.3f GB)\n",
           peak_rss, (double)rss_after_release / 1e9);
    printf("paper (Dimensity 9300 NPU): load 0.47 s, encode 2.06 s, prefill 2.7 s, decode 24.4 tok/s, peak 2.2 GB\n");
    fflush(stdout);  /* the sweeps take minutes: show the main table first */

    if (!o->no_sweeps) {
        /* Fig. 8: prefill chunk sweep (t32, t128, t512, whole input) */
        printf("chunk sweep (Fig. 8):");
        const int64_t chunks[4] = {32, 128, 512, main_run.n_input};
        for (int i = 0; i < 4; i++) {
            BluelmvParams p = params;
            p.mmproj_path = NULL;
            p.chunk = chunks[i];
            fprintf(stderr, "bench: chunk %lld\n", (long long)chunks[i]);
            Bluelmv *bc = bluelmv_load(&p, err);
            if (!bc) goto done;
            TurnResult r;
            int trc = bench_turn(bc, img, query, o->tg_tokens, &r, err);
            bluelmv_free(bc);
            if (trc != 0) goto done;
            printf("  t%lld: prefill %.3f s, decode %.2f tok/s;", (long long)chunks[i], r.prefill_s, r.decode_tok_s);
            fflush(stdout);
        }
        printf("\n");
        /* Fig. 7: ViT batch sweep (1, 2, 4, 6 tiles per batch) */
        printf("ViT batch sweep (Fig. 7):");
        const int batches[4] = {1, 2, 4, 6};
        for (int i = 0; i < 4; i++) {
            BluelmvParams p = params;
            p.model_path = NULL;
            p.vit_batch = batches[i];
            fprintf(stderr, "bench: ViT batch %d\n", batches[i]);
            Bluelmv *bv = bluelmv_load(&p, err);
            if (!bv) goto done;
            BluelmvImage *e = bluelmv_encode_image(bv, image, err);
            bluelmv_free(bv);
            if (!e) goto done;
            printf("  B=%d: %.3f s (%d batches);", batches[i], e->encode_s, e->n_batches);
            bluelmv_image_free(e);
        }
        printf("\n");
    }
    rc = 0;
done:
    if (imgs) {
        bluelmv_image_free(imgs[0]);
        free(imgs);
    }
    free(query);
    bluelmv_free(b);
    if (synthetic[0]) remove(synthetic);
    return rc;
}
