/* tests/test_util.c — the thread pool and range splitting. */
#include "test.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* split_range covers [0, n) exactly once, in order, with aligned starts. */
static void test_split_range(void) {
    const int64_t ns[] = {0, 1, 7, 32, 33, 1000, 4097};
    const int64_t aligns[] = {1, 4, 16, 32};
    for (size_t a = 0; a < 4; a++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            for (int nth = 1; nth <= 5; nth++) {
                int64_t expect = 0;
                for (int ith = 0; ith < nth; ith++) {
                    int64_t s, e;
                    split_range(ns[k], ith, nth, aligns[a], &s, &e);
                    CHECK(s == expect && e >= s && e <= ns[k], "n %lld nth %d ith %d align %lld: [%lld, %lld)",
                          (long long)ns[k], nth, ith, (long long)aligns[a], (long long)s, (long long)e);
                    CHECK(s == ns[k] || s % aligns[a] == 0, "start %lld not aligned to %lld", (long long)s,
                          (long long)aligns[a]);
                    expect = e;
                }
                CHECK(expect == ns[k], "n %lld nth %d: covered %lld", (long long)ns[k], nth, (long long)expect);
            }
}

typedef struct {
    atomic_int calls;
    atomic_long sum;
    int *seen;  /* (nth) */
} CountTask;

static void count_task(void *ctx, int ith, int nth) {
    CountTask *t = ctx;
    atomic_fetch_add(&t->calls, 1);
    atomic_fetch_add(&t->sum, ith);
    t->seen[ith] += 1;
    (void)nth;
}

/* Every run calls the task once per thread with distinct ith, and returns only after all finished;
 * thousands of back-to-back runs exercise the spin and sleep paths of the wake-up handshake. */
static void test_threadpool_runs_every_thread_once(void) {
    for (int n = 1; n <= 4; n++) {
        BlvError err;
        ThreadPool *pool = threadpool_create(n, &err);
        CHECK(pool != NULL, "%s", err.msg);
        if (!pool) continue;
        CHECK(threadpool_size(pool) == n, "size %d", threadpool_size(pool));
        int seen[4] = {0};
        CountTask t;
        atomic_init(&t.calls, 0);
        atomic_init(&t.sum, 0);
        t.seen = seen;
        const int runs = 5000;
        for (int r = 0; r < runs; r++) threadpool_run(pool, count_task, &t);
        CHECK(atomic_load(&t.calls) == runs * n, "%d threads: %d calls", n, atomic_load(&t.calls));
        CHECK(atomic_load(&t.sum) == (long)runs * n * (n - 1) / 2, "%d threads: ith sum %ld", n, atomic_load(&t.sum));
        for (int i = 0; i < n; i++) CHECK(seen[i] == runs, "thread %d ran %d times", i, seen[i]);
        threadpool_free(pool);
    }
    threadpool_run(NULL, count_task, &(CountTask){.seen = (int[1]){0}});  /* NULL pool: caller only */
}

void suite_util(void) {
    RUN_TEST(test_split_range);
    RUN_TEST(test_threadpool_runs_every_thread_once);
}
