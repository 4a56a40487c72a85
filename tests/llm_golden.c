/* tests/llm_golden.c — reading the language-model goldens of tools/gen_llama_golden.py and
 * tools/gen_hf_llm_fixture.py (the "0GLL" format), and the comparisons both LLM suites use. */
#include "llm_golden.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "util.h"

int load_golden(const char *path, Golden *g) {
    char *data;
    size_t len;
    BlvError err;
    memset(g, 0, sizeof *g);
    if (blv_read_file(path, &data, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    uint32_t h[5] = {0};
    if (len >= 20) memcpy(h, data, 20);
    size_t need = 20 + 4 * (size_t)h[2] + 4 * (size_t)h[2] * h[3] + 4 * (size_t)h[4] + 4;
    if (len < 20 || h[0] != 0x4C4C4730u || h[1] != 1 || len != need) {
        free(data);
        CHECK(0, "%s: bad golden header or size", path);
        return -1;
    }
    g->n_prompt = h[2];
    g->n_vocab = h[3];
    g->n_gen = h[4];
    g->prompt = malloc(4 * (size_t)g->n_prompt);
    g->logits = malloc(4 * (size_t)g->n_prompt * g->n_vocab);
    g->gen = malloc(4 * (size_t)g->n_gen);
    const char *q = data + 20;
    memcpy(g->prompt, q, 4 * (size_t)g->n_prompt);
    q += 4 * (size_t)g->n_prompt;
    memcpy(g->logits, q, 4 * (size_t)g->n_prompt * g->n_vocab);
    q += 4 * (size_t)g->n_prompt * g->n_vocab;
    memcpy(g->gen, q, 4 * (size_t)g->n_gen);
    q += 4 * (size_t)g->n_gen;
    memcpy(&g->min_gap, q, 4);
    free(data);
    return 0;
}

void free_golden(Golden *g) {
    free(g->prompt);
    free(g->logits);
    free(g->gen);
}

double nmse(const float *a, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

int32_t argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}
