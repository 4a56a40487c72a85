/* util.c — errors, timing, memory figures, file reading, and the thread pool. */
#define _GNU_SOURCE
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

int blv_fail(BlvError *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int blv_fail_prefix(BlvError *err, const char *fmt, ...) {
    if (err) {
        char prefix[512], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    }
    return -1;
}

void *blv_malloc(size_t n, const char *what, BlvError *err) {
    void *p = malloc(n ? n : 1);
    if (!p) blv_fail(err, "out of memory allocating %zu bytes for %s", n, what);
    return p;
}

void *blv_calloc(size_t count, size_t size, const char *what, BlvError *err) {
    if (size && count > SIZE_MAX / size) {
        blv_fail(err, "size overflow allocating %zu x %zu bytes for %s", count, size, what);
        return NULL;
    }
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) blv_fail(err, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

double blv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t blv_peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024;  /* Linux reports KiB */
}

int64_t blv_current_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long long pages_total = 0, pages_resident = 0;
    int n = fscanf(f, "%lld %lld", &pages_total, &pages_resident);
    fclose(f);
    if (n != 2) return -1;
    return (int64_t)pages_resident * 4096;
}

int blv_read_file(const char *path, char **data, size_t *len, BlvError *err) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return blv_fail(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return blv_fail(err, "%s: out of memory", path);
    }
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) {
            if (ferror(f)) {
                free(buf);
                fclose(f);
                return blv_fail(err, "%s: read error", path);
            }
            break;
        }
        char *bigger = realloc(buf, cap * 2 + 1);
        if (!bigger) {
            free(buf);
            fclose(f);
            return blv_fail(err, "%s: out of memory", path);
        }
        buf = bigger;
        cap *= 2;
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

/* ---- thread pool ------------------------------------------------------------------------- */

struct ThreadPool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mutex;
    pthread_cond_t work_ready;  /* signalled when a new generation of work is posted */
    pthread_cond_t work_done;   /* signalled when the last worker finishes */
    ThreadTask fn;
    void *ctx;
    uint64_t generation;        /* incremented for each threadpool_run */
    int pending;                /* workers still running the current generation */
    int stop;
};

typedef struct {
    ThreadPool *pool;
    int ith;
} WorkerArg;

static void *worker_main(void *p) {
    WorkerArg *arg = p;
    ThreadPool *pool = arg->pool;
    int ith = arg->ith;
    free(arg);
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool->mutex);
        while (!pool->stop && pool->generation == seen) pthread_cond_wait(&pool->work_ready, &pool->mutex);
        if (pool->stop) {
            pthread_mutex_unlock(&pool->mutex);
            return NULL;
        }
        seen = pool->generation;
        ThreadTask fn = pool->fn;
        void *ctx = pool->ctx;
        pthread_mutex_unlock(&pool->mutex);

        fn(ctx, ith, pool->n_threads);

        pthread_mutex_lock(&pool->mutex);
        if (--pool->pending == 0) pthread_cond_signal(&pool->work_done);
        pthread_mutex_unlock(&pool->mutex);
    }
}

ThreadPool *threadpool_create(int n_threads, BlvError *err) {
    if (n_threads < 1) n_threads = 1;
    ThreadPool *pool = blv_calloc(1, sizeof *pool, "thread pool", err);
    if (!pool) return NULL;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->work_ready, NULL);
    pthread_cond_init(&pool->work_done, NULL);
    pool->threads = blv_calloc((size_t)n_threads, sizeof(pthread_t), "thread handles", err);
    if (!pool->threads) {
        free(pool);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        WorkerArg *arg = malloc(sizeof *arg);
        if (!arg || pthread_create(&pool->threads[i], NULL, worker_main, arg ? (arg->pool = pool, arg->ith = i, arg) : NULL) != 0) {
            free(arg);
            pool->n_threads = i;  /* shut down the ones already started */
            threadpool_free(pool);
            blv_fail(err, "cannot start worker thread %d of %d", i, n_threads);
            return NULL;
        }
    }
    return pool;
}

void threadpool_free(ThreadPool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->work_ready);
    pthread_cond_destroy(&pool->work_done);
    free(pool->threads);
    free(pool);
}

int threadpool_size(const ThreadPool *pool) { return pool ? pool->n_threads : 1; }

void threadpool_run(ThreadPool *pool, ThreadTask fn, void *ctx) {
    if (!pool || pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool->mutex);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->pending = pool->n_threads - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->mutex);

    fn(ctx, 0, pool->n_threads);  /* the caller is thread 0 */

    pthread_mutex_lock(&pool->mutex);
    while (pool->pending > 0) pthread_cond_wait(&pool->work_done, &pool->mutex);
    pthread_mutex_unlock(&pool->mutex);
}

void split_range(int64_t n, int ith, int nth, int64_t align, int64_t *start, int64_t *end) {
    if (align < 1) align = 1;
    int64_t units = (n + align - 1) / align;
    int64_t per = units / nth, extra = units % nth;
    int64_t s = ith * per + (ith < extra ? ith : extra);
    int64_t e = s + per + (ith < extra ? 1 : 0);
    *start = s * align < n ? s * align : n;
    *end = e * align < n ? e * align : n;
}
