/* util.h — what every module shares: error messages, timing, memory figures, a thread pool.
 *
 * Error convention (DESIGN.md §Errors): a fallible function takes a BlvError* as its last argument,
 * returns 0 on success and -1 on failure, and on failure leaves a message in err->msg that names the
 * file and what is wrong with it. Nothing in the library prints, exits or aborts on bad input. */
#ifndef BLUELMV_UTIL_H
#define BLUELMV_UTIL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char msg[1024];
} BlvError;

/* Formats a message into err (err may be NULL) and returns -1, so callers can write
 * `return blv_fail(err, "%s: bad magic", path);`. */
int blv_fail(BlvError *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prepends "prefix: " to an existing message (used to add context on the way up). */
int blv_fail_prefix(BlvError *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* malloc/calloc that report failure through err, naming what was being allocated. */
void *blv_malloc(size_t n, const char *what, BlvError *err);
void *blv_calloc(size_t count, size_t size, const char *what, BlvError *err);
/* The same, the block starting on a cache line (64 bytes; free with free). */
void *blv_malloc_lines(size_t n, const char *what, BlvError *err);

double blv_now(void);                 /* monotonic seconds */
/* The median of v[0..n) (n > 0; the mean of the middle two when n is even); sorts v in place. */
double blv_median(double *v, int n);
int64_t blv_peak_rss_bytes(void);     /* peak resident set size of this process, or -1 */
int64_t blv_current_rss_bytes(void);  /* current resident set size, or -1 */

/* Drops the whole pages inside [p, p + bytes) of a read-only file mapping from the resident set
 * (madvise MADV_DONTNEED): they are read from the file again if touched. Only for such mappings:
 * anonymous memory would read back as zeros. Does nothing where madvise is missing. */
void blv_release_mapped_pages(const void *p, int64_t bytes);

/* A large zeroed buffer (weights, caches) in its own 2 MiB-aligned anonymous mapping, which the
 * kernel is asked to back with transparent huge pages (MADV_HUGEPAGE, honoured when THP is set to
 * "madvise" or "always"). A decode step streams every weight once: with 4 KiB pages that is a TLB
 * miss and a page walk every 4 KiB, with 2 MiB pages one every 2 MiB (measured: decode +1.8% on
 * the 3B preset). Pages become resident as they are first written, as with malloc. Free with
 * blv_free_large and the same size. Falls back to calloc where there is no mmap. */
void *blv_alloc_large(size_t bytes, const char *what, BlvError *err);
void blv_free_large(void *p, size_t bytes);

/* Reads a whole file into memory (NUL-terminated for convenience; *len excludes the NUL). */
int blv_read_file(const char *path, char **data, size_t *len, BlvError *err);

/* ---- thread pool ---------------------------------------------------------------------------
 * A fixed set of worker threads. threadpool_run(pool, fn, ctx) calls fn(ctx, ith, nth) once on
 * every thread (ith = 0..nth-1; the calling thread is ith 0) and returns when all have finished.
 * Each task splits its own work by ith/nth, as ggml's compute threads do. A NULL pool means
 * "run on the calling thread only" (nth = 1). */
typedef struct ThreadPool ThreadPool;
typedef void (*ThreadTask)(void *ctx, int ith, int nth);

ThreadPool *threadpool_create(int n_threads, BlvError *err);
void threadpool_free(ThreadPool *pool);
int threadpool_size(const ThreadPool *pool);
/* Nanoseconds for threads 0 and 1 of the pool to pass one cache line to each other and back (the
 * median of 5 runs of 10000 round trips; includes one wake-up per run). It tells how far apart the
 * two cores are: ~40-90 ns inside one core complex of this Zen 4 VM, ~330 ns when the VM's two
 * vCPUs sit on different ones — and then each core also has its own path to memory, so the read
 * probe doubles while every hand-off between the threads costs four times as much. -1 with fewer
 * than 2 threads. */
double threadpool_round_trip_ns(ThreadPool *pool);
void threadpool_run(ThreadPool *pool, ThreadTask fn, void *ctx);
/* Inside a task: returns once every thread of the pool has called it (a task that runs several
 * dependent steps, each thread on its own share, waits here between them instead of returning and
 * being dispatched again). Every thread of the task must call it the same number of times. Does
 * nothing with a NULL or one-thread pool. Whatever a thread wrote before the barrier is visible to
 * every thread after it. */
void threadpool_barrier(ThreadPool *pool);

/* The [start, end) share of n items for thread ith of nth, in contiguous pieces whose starts are
 * multiples of `align` (use 1 for no alignment). */
void split_range(int64_t n, int ith, int nth, int64_t align, int64_t *start, int64_t *end);

/* ---- work shared out while a task runs -------------------------------------------------------
 * A static split (split_range) leaves the faster threads waiting at the next barrier whenever the
 * threads do not run at the same speed: a busy neighbour on the host, a vCPU far from its memory,
 * a phone's big and little cores. Here every thread starts on its split_range share of n units and
 * claims it from the front, half of what it has left at a time but at least `chunk` units (its claims
 * shrink from a quarter of the step, with two threads, to `chunk` as it nears the end); a thread
 * that has finished its own share takes the back half of what another thread has left unclaimed
 * (one compare-and-swap on that thread's cache line), and may lose half of it again in turn. Every
 * unit is claimed exactly once. A caller whose results do not depend on which thread computes a
 * unit (each matrix row's dot product does not) gets the static split's results bit for bit. With
 * `balance` 0 nothing is taken: each thread does exactly its split_range share (for A/B runs and
 * tests).
 *
 * Inside a pool task: every thread calls threadpool_share_begin for the same sequence of shared
 * steps, with the same n for each, then threadpool_share_next until it returns 0. A thread may leave
 * while others still work; the next barrier orders it all.
 * From 2^24 units on, the static split. Works with a NULL or one-thread pool (it claims it all). */
typedef struct {
    ThreadPool *pool;
    int ith, balance;
    uint32_t epoch;          /* which shared step this is: a thread takes only from the same step */
    int64_t chunk;
    int64_t next, end;       /* one thread: the units left */
} ShareClaim;
void threadpool_share_begin(ThreadPool *pool, int ith, int64_t n, int64_t chunk, int balance, ShareClaim *c);
/* Claims units [*u0, *u1); 0 when none is left for this thread. */
int threadpool_share_next(ShareClaim *c, int64_t *u0, int64_t *u1);

#endif
