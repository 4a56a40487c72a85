/* tests/llm_golden.h — the LLM goldens written by tools/gen_llama_golden.py and
 * tools/gen_hf_llm_fixture.py ("0GLL": magic, version 1, n_prompt, n_vocab, n_gen, then the prompt
 * ids, transformers' logits at every prompt position, its greedy continuation, and the smallest
 * top-1/top-2 logit gap), shared by test_llm.c and test_hfllm.c. */
#ifndef BLUELMV_TESTS_LLM_GOLDEN_H
#define BLUELMV_TESTS_LLM_GOLDEN_H

#include <stdint.h>

typedef struct {
    uint32_t n_prompt, n_vocab, n_gen;
    int32_t *prompt;   /* (n_prompt) */
    float *logits;     /* (n_prompt, n_vocab) */
    int32_t *gen;      /* (n_gen) */
    float min_gap;
} Golden;

int load_golden(const char *path, Golden *g);   /* 0, or -1 after a failed CHECK */
void free_golden(Golden *g);
double nmse(const float *a, const float *ref, int64_t n);   /* Σ(a - ref)² / Σref² */
int32_t argmax(const float *x, int64_t n);

#endif
