/* tests/main.c — the test runner: `tests/run_tests [SUITE ...]` runs the named suites (all by
 * default) and ends with the line `N passed, N failed`. Exit status is 0 only if none failed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int n_passed, n_failed;
static int current_failed;
static const char *current_name;
static char tmp_dir[256];

void test_check_failed(const char *file, int line, const char *cond, const char *fmt, ...) {
    if (!current_failed) printf("FAIL %s\n", current_name ? current_name : "?");
    current_failed = 1;
    printf("  %s:%d: CHECK(%s): ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

void test_note(const char *fmt, ...) {
    printf("  note: ");
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

void test_run(const char *name, void (*fn)(void)) {
    current_name = name;
    current_failed = 0;
    fflush(stdout);
    fn();
    if (current_failed) n_failed++;
    else {
        n_passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
    current_name = NULL;
}

const char *test_data(const char *relative) {
    static char buf[4096];
    const char *dir = getenv("BLUELMV_TEST_DATA");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/data", relative);
    return buf;
}

const char *test_tmp(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", tmp_dir, name);
    return buf;
}

const char *test_bin(void) {
    const char *bin = getenv("BLUELMV_BIN");
    return bin ? bin : "./bluelmv";
}

static char *slurp(FILE *f) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
        if (cap - n < 2) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    return buf;
}

int test_run_command(const char *cmd, char **out, char **err_out) {
    char errpath[4200];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", tmp_dir);
    size_t n = strlen(cmd) + strlen(errpath) + 8;
    char *full = malloc(n);
    snprintf(full, n, "%s 2>%s", cmd, errpath);
    FILE *p = popen(full, "r");
    free(full);
    if (!p) return -1;
    char *o = slurp(p);
    int status = pclose(p);
    if (out) *out = o;
    else free(o);
    if (err_out) {
        FILE *e = fopen(errpath, "rb");
        *err_out = e ? slurp(e) : strdup("");
        if (e) fclose(e);
    }
    if (status == -1) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

uint64_t test_rand_u64(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float test_rand_uniform(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * (float)((test_rand_u64(s) >> 40) * (1.0 / 16777216.0));
}

float test_rand_normal(uint64_t *s) {
    double u1 = ((test_rand_u64(s) >> 11) + 1) * (1.0 / 9007199254740993.0);
    double u2 = (test_rand_u64(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void remove_tmp_dir(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} Suite;

static const Suite suites[] = {
    {"util", suite_util},       {"gguf", suite_gguf},       {"quant", suite_quant}, {"ops", suite_ops}, {"tokenizer", suite_tokenizer},
    {"llm", suite_llm},         {"convert", suite_convert}, {"image", suite_image},
    {"tile", suite_tile},       {"vit", suite_vit},     {"hfio", suite_hfio},       {"hfllm", suite_hfllm},
    {"dump", suite_dump},    {"pipeline", suite_pipeline}, {"cli", suite_cli},
};

int main(int argc, char **argv) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/bluelmv-test-XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 2;
    }
    atexit(remove_tmp_dir);
    int n_suites = (int)(sizeof suites / sizeof suites[0]);
    for (int i = 0; i < n_suites; i++) {
        int selected = argc < 2;
        for (int a = 1; a < argc; a++)
            if (strcmp(argv[a], suites[i].name) == 0) selected = 1;
        if (!selected) continue;
        printf("== %s\n", suites[i].name);
        if (!suites[i].fn) {  /* a failure only when asked for by name (see SUITE_DECL in test.h) */
            printf("%s suite %s is not linked into this runner\n", argc < 2 ? "note:" : "FAIL", suites[i].name);
            n_failed += argc >= 2;
            continue;
        }
        suites[i].fn();
    }
    for (int a = 1; a < argc; a++) {
        int known = 0;
        for (int i = 0; i < n_suites; i++) known |= strcmp(argv[a], suites[i].name) == 0;
        if (!known) {
            printf("FAIL unknown suite '%s'\n", argv[a]);
            n_failed++;
        }
    }
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
