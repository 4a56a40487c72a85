/* tests/test.h — a minimal test harness (no framework, no hidden control flow).
 *
 * A test is a void function. CHECK records a failed condition with its location and a message and
 * carries on (it never returns early). The runner counts a test as failed if any CHECK in it failed.
 * A suite function calls RUN_TEST for each of its tests; tests/main.c calls the suites. */
#ifndef BLUELMV_TEST_H
#define BLUELMV_TEST_H

#include <stdint.h>
#include <stdio.h>

void test_check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
void test_run(const char *name, void (*fn)(void));
/* Prints an informational line under the current test (figures a reader may want to see). */
void test_note(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* Path of a file under the test data directory (tests/data, or $BLUELMV_TEST_DATA). Returns a
 * pointer to a static buffer that the next call overwrites. */
const char *test_data(const char *relative);
/* A fresh path in a per-run temporary directory (removed at exit). Static buffer as above. */
const char *test_tmp(const char *name);
/* Path of the bluelmv binary for command-line tests ($BLUELMV_BIN, default ./bluelmv). */
const char *test_bin(void);
/* Runs a shell command, capturing stdout (and stderr separately) into malloc'd strings.
 * Returns the exit status (or -1 if it could not run / was killed by a signal: then 128+signal). */
int test_run_command(const char *cmd, char **out, char **err_out);
/* Deterministic pseudo-random numbers for test data (xorshift64*). */
uint64_t test_rand_u64(uint64_t *state);
float test_rand_uniform(uint64_t *state, float lo, float hi);
float test_rand_normal(uint64_t *state);

#define CHECK(cond, ...) \
    do { if (!(cond)) test_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)
#define RUN_TEST(fn) test_run(#fn, fn)

/* Suites, one per test file. Declared weak so that a partial build (a few modules and their test
 * file, e.g. while developing one piece) links; a suite that is not linked in is reported as missing. */
#if defined(__GNUC__)
#define SUITE_DECL __attribute__((weak))
#else
#define SUITE_DECL
#endif
SUITE_DECL void suite_util(void);
SUITE_DECL void suite_gguf(void);
SUITE_DECL void suite_quant(void);
SUITE_DECL void suite_tokenizer(void);
SUITE_DECL void suite_llm(void);
SUITE_DECL void suite_convert(void);
SUITE_DECL void suite_image(void);
SUITE_DECL void suite_tile(void);
SUITE_DECL void suite_vit(void);
SUITE_DECL void suite_hfio(void);
SUITE_DECL void suite_dump(void);
SUITE_DECL void suite_pipeline(void);
SUITE_DECL void suite_hfllm(void);
SUITE_DECL void suite_ops(void);
SUITE_DECL void suite_cli(void);

#endif
