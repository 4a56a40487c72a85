/* bench.h — `bluelmv bench`: speed measured against this machine's own limits, in one run. */
#ifndef BLUELMV_BENCH_H
#define BLUELMV_BENCH_H

#include <stdint.h>
#include "util.h"

typedef struct {
    const char *model_path;
    int n_threads;          /* default 2 */
    int reps;               /* repetitions per measurement; medians are reported (default 5) */
    int64_t prompt_tokens;  /* prefill length (default 128) */
    int64_t tg_tokens;      /* decoded tokens per repetition (default 32) */
    int kv_type;            /* -1: F16 */
    int json;               /* results as JSON on stdout */
} BenchOptions;

BenchOptions bench_default_options(void);
int bench_run(const BenchOptions *o, BlvError *err);

#endif
