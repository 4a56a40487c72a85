/* tests/test_util.c — the thread pool, range splitting, and releasing mapped pages. */
#include "test.h"

#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"

#include <math.h>

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

/* A pool of n threads, or NULL with the failure recorded. */
static ThreadPool *new_pool(int n) {
    BlvError err;
    ThreadPool *pool = threadpool_create(n, &err);
    CHECK(pool != NULL, "%d threads: %s", n, err.msg);
    return pool;
}

/* Every run calls the task once per thread with distinct ith, and returns only after all finished;
 * thousands of back-to-back runs exercise the spin and sleep paths of the wake-up handshake. */
static void test_threadpool_runs_every_thread_once(void) {
    for (int n = 1; n <= 4; n++) {
        ThreadPool *pool = new_pool(n);
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

/* The median of an odd count is the middle value, of an even count the mean of the middle two,
 * whatever the order. */
static void test_median(void) {
    double odd[] = {3.0, -1.0, 2.0, 9.0, 0.5}, even[] = {4.0, 1.0, 3.0, 2.0}, one[] = {7.0};
    CHECK(blv_median(odd, 5) == 2.0, "odd: %g", blv_median(odd, 5));
    CHECK(blv_median(even, 4) == 2.5, "even: %g", blv_median(even, 4));
    CHECK(blv_median(one, 1) == 7.0, "one: %g", blv_median(one, 1));
}

/* The round-trip probe finishes with any pool size (threads past the second return at once) and
 * gives a positive time with two or more threads, -1 with one; what it measures cannot be checked
 * against anything here, only that it is a time. */
static void test_threadpool_round_trip(void) {
    for (int n = 1; n <= 3; n++) {
        ThreadPool *pool = new_pool(n);
        if (!pool) continue;
        double ns = threadpool_round_trip_ns(pool);
        if (n == 1) CHECK(ns == -1.0, "one thread: %g ns", ns);
        else CHECK(ns > 0.0 && isfinite(ns), "%d threads: %g ns", n, ns);
        threadpool_free(pool);
    }
    CHECK(threadpool_round_trip_ns(NULL) == -1.0, "NULL pool");
}

/* threadpool_barrier: in every round each thread writes its slot, waits, and must then see every
 * other thread's write of that round (and no later one: the second barrier keeps a fast thread from
 * writing round r + 1 while a slow one is still reading round r). */
enum { BARRIER_ROUNDS = 1000, BARRIER_MAX_THREADS = 3 };

typedef struct {
    ThreadPool *pool;
    _Atomic long slot[BARRIER_MAX_THREADS];
    _Atomic int mismatches;
} BarrierCheck;

static void barrier_check_task(void *ctx, int ith, int nth) {
    BarrierCheck *b = ctx;
    for (long r = 1; r <= BARRIER_ROUNDS; r++) {
        atomic_store_explicit(&b->slot[ith], r, memory_order_relaxed);  /* the barrier must order it */
        threadpool_barrier(b->pool);
        for (int j = 0; j < nth; j++)
            if (atomic_load_explicit(&b->slot[j], memory_order_relaxed) != r) atomic_fetch_add(&b->mismatches, 1);
        threadpool_barrier(b->pool);
    }
}

static void test_threadpool_barrier(void) {
    for (int n = 1; n <= BARRIER_MAX_THREADS; n++) {
        BarrierCheck b;
        memset(&b, 0, sizeof b);
        b.pool = new_pool(n);
        if (!b.pool) continue;
        for (int run = 0; run < 2; run++) threadpool_run(b.pool, barrier_check_task, &b);  /* reusable across tasks */
        CHECK(atomic_load(&b.mismatches) == 0, "%d threads: %d stale reads after a barrier", n,
              atomic_load(&b.mismatches));
        threadpool_free(b.pool);
    }
    threadpool_barrier(NULL);  /* a NULL pool: nothing to wait for */
}

/* threadpool_share_*: in every one of many back-to-back steps (with a barrier between them, as the
 * decode has) each unit is claimed by exactly one thread; with balance 0 each thread claims exactly
 * its split_range share, half of what is left at a time (at least chunk units); a thread that
 * stalls after its first claim has part of its share taken by the others. In those steps the
 * others begin only once the late thread has begun and claimed (a thread that has not begun a step
 * cannot have work taken from it: without the wait the test would depend on which thread the
 * scheduler runs first). */
enum { SHARE_STEPS = 200, SHARE_MAX_THREADS = 4, SHARE_MAX_UNITS = 300 };

typedef struct {
    ThreadPool *pool;
    int64_t n, chunk;
    int balance;
    int late_thread;                        /* -1, or a thread that stalls in some steps */
    _Atomic int stalled_step;               /* the step in which late_thread has claimed and stalls */
    _Atomic int claims[SHARE_MAX_UNITS];    /* per unit, how many claimed it */
    _Atomic int wrong;                      /* units claimed 0 or 2+ times in some step */
    _Atomic long taken;                     /* units computed by a thread other than split_range's */
} ShareCheck;

static void share_check_task(void *ctx, int ith, int nth) {
    ShareCheck *c = ctx;
    int64_t s, e;
    split_range(c->n, ith, nth, 1, &s, &e);
    for (int step = 0; step < SHARE_STEPS; step++) {
        int stall_step = c->late_thread >= 0 && step % 100 == 0;
        if (stall_step && ith != c->late_thread)
            while (atomic_load(&c->stalled_step) != step) sched_yield();
        ShareClaim claim;
        threadpool_share_begin(c->pool, ith, c->n, c->chunk, c->balance, &claim);
        int64_t u0, u1;
        int got = threadpool_share_next(&claim, &u0, &u1);
        if (stall_step && ith == c->late_thread) {
            atomic_store(&c->stalled_step, step);
            usleep(20000);  /* 20 ms with its share published: ages, even under qemu */
        }
        int64_t own_next = s;  /* balance 0: where this thread's next claim must start */
        for (; got; got = threadpool_share_next(&claim, &u0, &u1)) {
            /* a claim is half of what is left of the claiming thread's slot, at least chunk; a slot
             * never holds more than a split_range share */
            int64_t share = (c->n + nth - 1) / nth, most = share / 2 > c->chunk ? share / 2 : c->chunk;
            CHECK(u0 >= 0 && u0 < u1 && u1 <= c->n && u1 - u0 <= most, "claimed [%lld, %lld) of %lld, chunk %lld",
                  (long long)u0, (long long)u1, (long long)c->n, (long long)c->chunk);
            if (!c->balance) {  /* nothing taken: exactly the halving sequence over [s, e) */
                int64_t half = (e - own_next) / 2, want = half > c->chunk ? half : c->chunk;
                int64_t end = e - own_next < want ? e : own_next + want;
                CHECK(u0 == own_next && u1 == end, "balance 0: claimed [%lld, %lld), expected [%lld, %lld)",
                      (long long)u0, (long long)u1, (long long)own_next, (long long)end);
                own_next = u1;
            }
            for (int64_t u = u0; u < u1 && u1 <= c->n; u++) {
                atomic_fetch_add(&c->claims[u], 1);
                if (u < s || u >= e) atomic_fetch_add(&c->taken, 1);
            }
        }
        threadpool_barrier(c->pool);
        if (ith == 0)
            for (int64_t u = 0; u < c->n; u++) {
                if (atomic_load(&c->claims[u]) != 1) atomic_fetch_add(&c->wrong, 1);
                atomic_store(&c->claims[u], 0);
            }
        threadpool_barrier(c->pool);
    }
}

static void test_threadpool_share(void) {
    static const int64_t ns[] = {0, 1, 5, 64, 299};
    static const int64_t chunks[] = {1, 4};
    for (int nth = 1; nth <= SHARE_MAX_THREADS; nth++) {
        ThreadPool *pool = new_pool(nth);
        if (!pool) continue;
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            for (size_t ch = 0; ch < 2; ch++)
                for (int balance = 0; balance <= 1; balance++) {
                    ShareCheck *c = calloc(1, sizeof *c);
                    c->pool = pool;
                    c->n = ns[k];
                    c->chunk = chunks[ch];
                    c->balance = balance;
                    c->late_thread = nth > 1 ? nth - 1 : -1;
                    atomic_store(&c->stalled_step, -1);
                    threadpool_run(pool, share_check_task, c);
                    CHECK(atomic_load(&c->wrong) == 0, "%d threads, n %lld, chunk %lld, balance %d: %d units not claimed "
                          "exactly once", nth, (long long)c->n, (long long)c->chunk, balance, atomic_load(&c->wrong));
                    CHECK(balance || atomic_load(&c->taken) == 0, "balance 0: %ld claims outside the thread's share",
                          atomic_load(&c->taken));
                    /* a late thread with 2+ chunks of its own has some taken by the others */
                    if (balance && nth > 1 && ns[k] / nth >= 4 * chunks[ch])
                        CHECK(atomic_load(&c->taken) > 0, "%d threads, n %lld, chunk %lld: nothing taken from the "
                              "late thread in %d steps", nth, (long long)c->n, (long long)c->chunk, SHARE_STEPS);
                    free(c);
                }
        threadpool_free(pool);
    }
    /* a NULL pool: the one thread claims everything, half of what is left at a time, at least 4 */
    static const int64_t ends[] = {12, 18, 22, 25};  /* 25 units: 12 of 25, 6 of 13, 4 (at least), the last 3 */
    ShareClaim claim;
    threadpool_share_begin(NULL, 0, 25, 4, 1, &claim);
    int64_t u0, u1, next = 0;
    for (int k = 0; threadpool_share_next(&claim, &u0, &u1); k++) {
        CHECK(k < 4 && u0 == next && u1 == ends[k], "NULL pool: claim %d is [%lld, %lld)", k, (long long)u0, (long long)u1);
        next = u1;
    }
    CHECK(next == 25, "NULL pool: claimed up to %lld of 25", (long long)next);
}

/* Released pages of a file mapping leave the resident set and read the file's bytes again when
 * touched (the LLM releases the file's Q4_0 pages once it has repacked them). */
static void test_release_mapped_pages(void) {
    enum { PAGES = 1024 };
    const long page = sysconf(_SC_PAGESIZE);
    const size_t bytes = (size_t)PAGES * (size_t)page;
    const char *path = test_tmp("release-pages.bin");
    unsigned char *data = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) data[i] = (unsigned char)(i * 131 + 7);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, bytes, f) == bytes, "writing %s", path);
    if (f) fclose(f);
    int fd = open(path, O_RDONLY);
    unsigned char *map = fd >= 0 ? mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    CHECK(map != MAP_FAILED, "mapping %s", path);
    if (map != MAP_FAILED) {
        long sum = 0;
        for (size_t i = 0; i < bytes; i += 64) sum += map[i];  /* make every page resident */
        CHECK(sum > 0, "the file's bytes");
        int64_t rss_before = blv_current_rss_bytes();
        blv_release_mapped_pages(map + 100, (int64_t)bytes - 100);  /* the first page is partial: kept */
        int64_t rss_after = blv_current_rss_bytes();
        /* Linux counts RSS with per-thread batches of up to 64 pages: allow for them */
        CHECK(rss_before - rss_after >= (PAGES - 1 - 64) * page, "RSS fell by %lld bytes, expected about %lld",
              (long long)(rss_before - rss_after), (long long)((PAGES - 1) * page));
        CHECK(memcmp(map, data, bytes) == 0, "the released pages read back the file's bytes");
        munmap(map, bytes);
    }
    if (fd >= 0) close(fd);
    free(data);
}

/* A large buffer: 2 MiB-aligned, zeroed, every byte writable and readable back; a second one does
 * not overlap it; both can be freed (the sizes are not multiples of a page). */
static void test_alloc_large(void) {
    const size_t sizes[2] = {5 * 1000 * 1000 + 3, 1};
    unsigned char *p[2];
    BlvError err;
    for (int k = 0; k < 2; k++) {
        p[k] = blv_alloc_large(sizes[k], "test buffer", &err);
        CHECK(p[k] != NULL, "allocating %zu bytes", sizes[k]);
        if (!p[k]) return;
        CHECK((uintptr_t)p[k] % (2u << 20) == 0, "buffer %d at %p: not 2 MiB-aligned", k, (void *)p[k]);
        size_t nonzero = 0;
        for (size_t i = 0; i < sizes[k]; i++) nonzero += p[k][i] != 0;
        CHECK(nonzero == 0, "%zu of %zu bytes not zero", nonzero, sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++) p[k][i] = (unsigned char)(i * 7 + (size_t)k);
    }
    CHECK(p[1] + sizes[1] <= p[0] || p[0] + sizes[0] <= p[1], "the buffers overlap");
    size_t wrong = 0;
    for (size_t i = 0; i < sizes[0]; i++) wrong += p[0][i] != (unsigned char)(i * 7);
    CHECK(wrong == 0, "%zu bytes of the first buffer changed", wrong);
    for (int k = 0; k < 2; k++) blv_free_large(p[k], sizes[k]);
}

void suite_util(void) {
    RUN_TEST(test_split_range);
    RUN_TEST(test_threadpool_runs_every_thread_once);
    RUN_TEST(test_median);
    RUN_TEST(test_threadpool_round_trip);
    RUN_TEST(test_threadpool_barrier);
    RUN_TEST(test_threadpool_share);
    RUN_TEST(test_release_mapped_pages);
    RUN_TEST(test_alloc_large);
}
