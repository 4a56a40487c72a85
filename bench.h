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
    int64_t depth;          /* tokens already in the context when decode is timed (llama-bench -d) */
    int kv_type;            /* -1: F16 */
    int json;               /* results as JSON on stdout */
    int no_repack;          /* keep Q4_0 weights in the file's layout (to measure what repacking gives) */
    int profile;            /* one more decode repetition with each step of the forward pass timed */
    /* the multimodal benchmark (the paper's Table 5), when mmproj_path is set */
    const char *mmproj_path;
    const char *image_path; /* or a synthetic image of image_w x image_h (default 768x1536) */
    int image_w, image_h;
    int no_sweeps;          /* skip the chunk (Fig. 8) and ViT-batch (Fig. 7) sweeps */
} BenchOptions;

BenchOptions bench_default_options(void);
int bench_run(const BenchOptions *o, BlvError *err);

#endif
