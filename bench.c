/* bench.c — `bluelmv bench`.
 *
 * Limits, measured in the same run with built-in probes (quant.h):
 *   read bandwidth  — GB/s of streaming a buffer much larger than the caches, all threads;
 *   int8 peak       — GOP/s of the best int8 dot instruction (one multiply-add = 2 ops), all threads.
 * Speeds:
 *   tg (decode)     — tokens/s generating one token at a time; its roofline fraction is
 *                     (weight bytes read per token × tok/s) / read bandwidth;
 *   pp (prefill)    — tokens/s evaluating a prompt of N tokens from an empty cache; its fraction is
 *                     (matrix-multiply ops + attention ops) per second / int8 peak.
 * Each figure is the median of `reps` repetitions; progress goes to stderr. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bluelmv.h"
#include "quant.h"

BenchOptions bench_default_options(void) {
    BenchOptions o = {0};
    o.n_threads = 2;
    o.reps = 5;
    o.prompt_tokens = 128;
    o.tg_tokens = 32;
    o.kv_type = -1;
    return o;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int64_t matrix_elems(const Matrix *m) { return m->rows * m->cols; }

/* Multiply-add operations (×2) of a prefill of T tokens: every layer matrix for every token, the
 * output layer for the last token only, and causal attention (q·k and a·v over the prefix). */
static double prefill_ops(const Llm *m, int64_t T) {
    const LlmConfig *c = &m->config;
    double per_token = 0.0;
    for (int64_t l = 0; l < c->n_layers; l++) {
        const LlmLayer *L = &m->weights.layers[l];
        per_token += (double)(matrix_elems(&L->wq) + matrix_elems(&L->wk) + matrix_elems(&L->wv) + matrix_elems(&L->wo) +
                              matrix_elems(&L->w_gate) + matrix_elems(&L->w_up) + matrix_elems(&L->w_down));
    }
    double attention = (double)c->n_layers * 2.0 * (double)(c->n_heads * c->head_dim) * (double)T * (double)(T + 1) / 2.0;
    return 2.0 * (per_token * (double)T + (double)matrix_elems(&m->weights.output) + attention);
}

static void fill_tokens(int32_t *ids, int64_t n, int64_t vocab, uint64_t *state) {
    for (int64_t i = 0; i < n; i++) {
        *state = *state * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)(3 + (*state >> 33) % (uint64_t)(vocab - 3));
    }
    ids[0] = 1;
}

int bench_run(const BenchOptions *o, BlvError *err) {
    BluelmvParams params = bluelmv_default_params();
    params.model_path = o->model_path;
    params.n_threads = o->n_threads;
    params.kv_type = o->kv_type;
    params.n_ctx = o->prompt_tokens + 8 > o->tg_tokens + 8 ? o->prompt_tokens + 8 : o->tg_tokens + 8;
    double t_load = blv_now();
    Bluelmv *b = bluelmv_load(&params, err);
    if (!b) return -1;
    t_load = blv_now() - t_load;
    Llm *m = bluelmv_llm(b);
    if (params.n_ctx > m->config.context_length) {
        bluelmv_free(b);
        return blv_fail(err, "%s: --prompt-tokens %lld does not fit the model's context of %lld", o->model_path,
                        (long long)o->prompt_tokens, (long long)m->config.context_length);
    }
    int64_t vocab = m->config.vocab_size, n_ids = o->prompt_tokens > o->tg_tokens ? o->prompt_tokens : o->tg_tokens;
    int32_t *ids = malloc((size_t)n_ids * sizeof(int32_t));
    double *tg = calloc((size_t)o->reps, sizeof(double)), *pp = calloc((size_t)o->reps, sizeof(double));
    if (!ids || !tg || !pp) {
        free(ids);
        free(tg);
        free(pp);
        bluelmv_free(b);
        return blv_fail(err, "out of memory");
    }
    ThreadPool *pool = m->pool;
    fprintf(stderr, "bench: %s, %d threads, kernels %s\n", o->model_path, threadpool_size(pool), quant_kernel_name());
    fprintf(stderr, "bench: probing read bandwidth and int8 peak...\n");
    double bw_runs[5], peak_runs[5];
    for (int r = 0; r < 5; r++) {
        bw_runs[r] = probe_read_bandwidth(pool, (int64_t)1 << 30);
        peak_runs[r] = probe_int8_peak(pool);
    }
    double bandwidth = median(bw_runs, 5), peak = median(peak_runs, 5);

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
        /* decode: tg_tokens single-token evaluations after BOS */
        fill_tokens(ids, o->tg_tokens, vocab, &rng);
        bluelmv_reset(b);
        if (rc == 0) rc = bluelmv_eval(b, ids, 1, err);
        t0 = blv_now();
        for (int64_t i = 1; i < o->tg_tokens && rc == 0; i++) rc = bluelmv_eval(b, ids + i, 1, err);
        tg[r] = (double)(o->tg_tokens - 1) / (blv_now() - t0);
    }
    if (isatty(2)) fprintf(stderr, "\n");
    if (rc == 0) {
        double tg_med = median(tg, o->reps), pp_med = median(pp, o->reps);
        double gb_per_token = (double)m->weight_bytes / 1e9;
        double tg_fraction = gb_per_token * tg_med / bandwidth;
        double pp_gops = prefill_ops(m, o->prompt_tokens) / 1e9 * pp_med / (double)o->prompt_tokens;
        double pp_fraction = pp_gops / peak;
        double rss = (double)blv_peak_rss_bytes() / 1e9;
        if (o->json) {
            printf("{\"model\": \"%s\", \"threads\": %d, \"kernels\": \"%s\", \"load_s\": %.3f, "
                   "\"read_bandwidth_gbs\": %.2f, \"int8_peak_gops\": %.1f, \"weight_gb\": %.4f, "
                   "\"tg_tok_s\": %.3f, \"tg_roofline_fraction\": %.4f, \"pp_tokens\": %lld, \"pp_tok_s\": %.3f, "
                   "\"pp_gops\": %.2f, \"pp_peak_fraction\": %.4f, \"peak_rss_gb\": %.3f}\n",
                   o->model_path, threadpool_size(pool), quant_kernel_name(), t_load, bandwidth, peak, gb_per_token,
                   tg_med, tg_fraction, (long long)o->prompt_tokens, pp_med, pp_gops, pp_fraction, rss);
        } else {
            printf("model            %s (%.3f GB of weight matrices), loaded in %.2f s\n", o->model_path, gb_per_token, t_load);
            printf("threads          %d, kernels %s\n", threadpool_size(pool), quant_kernel_name());
            printf("read bandwidth   %.2f GB/s (probe, median of 5)\n", bandwidth);
            printf("int8 peak        %.1f GOP/s (probe, median of 5)\n", peak);
            printf("tg               %.2f tok/s = %.2f GB/s of weights = %.1f%% of read bandwidth (median of %d)\n",
                   tg_med, gb_per_token * tg_med, 100.0 * tg_fraction, o->reps);
            printf("pp%-4lld           %.2f tok/s = %.1f GOP/s = %.1f%% of int8 peak (median of %d)\n",
                   (long long)o->prompt_tokens, pp_med, pp_gops, 100.0 * pp_fraction, o->reps);
            printf("peak RSS         %.3f GB\n", rss);
        }
    }
    free(ids);
    free(tg);
    free(pp);
    bluelmv_free(b);
    return rc;
}
