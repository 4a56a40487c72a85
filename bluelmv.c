/* bluelmv.c — the pipeline behind the public API.
 *
 *   image file ──image.c──> RGB ──tile.c──> tiles ──vit.c──> embeddings          (encode, maybe async)
 *   chat template + query ──tokenizer.c──> ids; image rows spliced in at <image>  (assemble)
 *   ──llm.c: one chunked prefill over all input rows, then decode one token at a time──> text
 *
 * The paper's system co-design, each a switch: batched tile encoding (vit_batch), the patch
 * embedding of the next batch overlapping the transformer blocks of the current one (pipeline),
 * chunked prefill (chunk), decoupled image encoding with the ViT released before the LLM runs
 * (bluelmv_encode_start / keep_vit), and mixed precision (the files' types, kv_type). */
#include "bluelmv.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "image.h"
#include "quant.h"
#include "tile.h"

static const char *default_template = "[|Human|]:<im_start><image><im_end>{query}\n[|AI|]:";

/* Stage dumps: one open .npy writer per stage, filled as the pipeline produces rows. */
typedef struct {
    char name[48];
    NpyWriter w;
} DumpStage;

typedef struct {
    DumpDir dir;
    pthread_mutex_t lock;     /* the patch embedding reports from the conv thread */
    DumpStage stages[96];
    int n_stages;
    int64_t n_images;         /* rows of the vision stages (set before encoding) */
    int64_t n_input;          /* rows of the LLM stages (set before the prefill) */
    int failed;
    BlvError err;
} DumpSink;

struct Bluelmv {
    BluelmvParams params;
    GgufFile file;            /* the language model file; the weights point into its mapping */
    Llm llm;
    Tokenizer tok;
    char *template_text;
    /* vision (optional) */
    char *mmproj_path;
    GgufFile vfile;
    Vit vit;
    int vit_loaded;
    TilePolicy tiling;
    pthread_mutex_t vit_lock; /* one encoding at a time */
    int active_jobs;          /* background encodings not finished (guarded by vit_lock) */
    int has_llm;              /* 0: a vision-only handle */
    /* conversation */
    int64_t n_turns;
    int32_t pending_eog;      /* end-of-generation token that closed the last answer, or -1 */
    float *logits;            /* (vocab) logits of the last evaluated token */
    void *sample_work;        /* sampler scratch */
    DumpSink *dump;
};

BluelmvParams bluelmv_default_params(void) {
    BluelmvParams p = {0};
    p.n_threads = 1;
    p.kv_type = -1;
    p.use_mmap = 1;
    p.pipeline = 1;
    return p;
}

BluelmvSampler bluelmv_default_sampler(void) {
    BluelmvSampler s = {0.8f, 40, 0.95f, 0};
    return s;
}

/* ---- vision loading ------------------------------------------------------------------------------ */

/* The tiling policy stored in the mmproj (bluelmv.tiling.*), tile size = the ViT input size. */
static int read_tiling(Bluelmv *b, BlvError *err) {
    const GgufFile *f = &b->vfile;
    TileAlgo algo = TILE_RELAXED;
    if (gguf_find_kv(f, "bluelmv.tiling.algo")) {
        char *name = NULL;
        if (gguf_get_string(f, "bluelmv.tiling.algo", &name, err) != 0) return -1;
        int rc = tile_algo_parse(name, &algo, err);
        free(name);
        if (rc != 0) return blv_fail_prefix(err, "%s: bluelmv.tiling.algo", f->path);
    }
    TilePolicy p = tile_policy_default(algo);
    p.tile_size = (int)b->vit.config.image_size;
    uint32_t u;
    float a;
    int thumb;
    if (gguf_find_kv(f, "bluelmv.tiling.max_grid")) {
        if (gguf_get_u32(f, "bluelmv.tiling.max_grid", &u, err) != 0) return -1;
        p.max_grid = (int)u;
    }
    if (gguf_find_kv(f, "bluelmv.tiling.alpha")) {
        if (gguf_get_f32(f, "bluelmv.tiling.alpha", &a, err) != 0) return -1;
        p.alpha = a;
    }
    if (gguf_find_kv(f, "bluelmv.tiling.thumbnail")) {
        if (gguf_get_bool(f, "bluelmv.tiling.thumbnail", &thumb, err) != 0) return -1;
        if (!thumb) p.thumbnail = TILE_THUMB_NONE;
    }
    if (tile_policy_check(&p, err) != 0) return blv_fail_prefix(err, "%s: bluelmv.tiling", f->path);
    b->tiling = p;
    return 0;
}

static int load_vision(Bluelmv *b, BlvError *err) {
    if (b->vit_loaded) return 0;
    if (gguf_open(&b->vfile, b->mmproj_path, b->params.use_mmap, err) != 0) return -1;
    VitOptions o = {b->params.n_threads, b->params.vit_batch, -1, -1};
    if (vit_init(&b->vit, &b->vfile, &o, err) != 0) {
        gguf_close(&b->vfile);
        return -1;
    }
    if (b->has_llm && b->vit.config.proj_dim != b->llm.config.dim) {
        blv_fail(err, "%s does not fit %s: its projector outputs %lld values per token (clip.vision.projection_dim) "
                 "but the language model's hidden size is %lld", b->mmproj_path, b->file.path,
                 (long long)b->vit.config.proj_dim, (long long)b->llm.config.dim);
        vit_free(&b->vit);
        gguf_close(&b->vfile);
        return -1;
    }
    if (read_tiling(b, err) != 0) {
        vit_free(&b->vit);
        gguf_close(&b->vfile);
        return -1;
    }
    b->vit_loaded = 1;
    return 0;
}

void bluelmv_release_vision(Bluelmv *b) {
    if (!b->vit_loaded) return;
    vit_free(&b->vit);
    gguf_close(&b->vfile);  /* unmaps the ViT weights: their pages leave the resident set */
    b->vit_loaded = 0;
}

int bluelmv_has_vision(const Bluelmv *b) { return b->mmproj_path != NULL; }
int bluelmv_vision_loaded(const Bluelmv *b) { return b->vit_loaded; }
Vit *bluelmv_vit(Bluelmv *b) { return b->vit_loaded ? &b->vit : NULL; }

/* The chat template: the LLM file's, else the mmproj's, else the BlueLM SDK format. */
static int read_template(Bluelmv *b, BlvError *err) {
    const GgufFile *files[2] = {b->has_llm ? &b->file : NULL, b->mmproj_path ? &b->vfile : NULL};
    for (int i = 0; i < 2; i++) {
        if (files[i] && gguf_find_kv(files[i], "bluelmv.chat_template"))
            return gguf_get_string(files[i], "bluelmv.chat_template", &b->template_text, err);
    }
    b->template_text = strdup(default_template);
    return b->template_text ? 0 : blv_fail(err, "out of memory");
}

const char *bluelmv_chat_template(const Bluelmv *b) { return b->template_text; }

/* ---- loading ------------------------------------------------------------------------------------- */

Bluelmv *bluelmv_load(const BluelmvParams *params, BlvError *err) {
    if (!params || (!params->model_path && !params->mmproj_path)) {
        blv_fail(err, "no model file given");
        return NULL;
    }
    Bluelmv *b = blv_calloc(1, sizeof *b, "model", err);
    if (!b) return NULL;
    b->params = *params;
    b->pending_eog = -1;
    b->has_llm = params->model_path != NULL;
    pthread_mutex_init(&b->vit_lock, NULL);
    if (b->has_llm) {
        if (gguf_open(&b->file, params->model_path, params->use_mmap, err) != 0) {
            pthread_mutex_destroy(&b->vit_lock);
            free(b);
            return NULL;
        }
        LlmOptions o = {params->n_ctx, params->chunk, params->kv_type, params->n_threads, -1, params->no_repack};
        if (llm_init(&b->llm, &b->file, &o, err) != 0 || tokenizer_load(&b->tok, &b->file, err) != 0) {
            bluelmv_free(b);
            return NULL;
        }
        if (b->tok.n_vocab != b->llm.config.vocab_size) {
            blv_fail(err, "%s: the vocabulary has %d tokens but token_embd.weight has %lld rows", params->model_path,
                     b->tok.n_vocab, (long long)b->llm.config.vocab_size);
            bluelmv_free(b);
            return NULL;
        }
    }
    if (params->mmproj_path) {
        b->mmproj_path = strdup(params->mmproj_path);
        if (!b->mmproj_path || load_vision(b, err) != 0) {
            bluelmv_free(b);
            return NULL;
        }
    }
    if (read_template(b, err) != 0) {
        bluelmv_free(b);
        return NULL;
    }
    if (!b->has_llm) return b;
    int64_t vocab = b->llm.config.vocab_size;
    b->logits = blv_calloc((size_t)vocab, sizeof(float), "logits", err);
    b->sample_work = blv_malloc(bluelmv_sample_work_bytes(vocab), "sampler", err);
    if (!b->logits || !b->sample_work) {
        bluelmv_free(b);
        return NULL;
    }
    return b;
}

static void dump_sink_free(DumpSink *d);

void bluelmv_free(Bluelmv *b) {
    if (!b) return;
    bluelmv_release_vision(b);
    if (b->has_llm) {
        tokenizer_free(&b->tok);
        llm_free(&b->llm);
        gguf_close(&b->file);
    }
    if (b->dump) dump_sink_free(b->dump);
    pthread_mutex_destroy(&b->vit_lock);
    free(b->mmproj_path);
    free(b->template_text);
    free(b->logits);
    free(b->sample_work);
    free(b);
}

Llm *bluelmv_llm(Bluelmv *b) { return &b->llm; }
const Tokenizer *bluelmv_tokenizer(const Bluelmv *b) { return &b->tok; }
const GgufFile *bluelmv_gguf(const Bluelmv *b) { return &b->file; }
int64_t bluelmv_vocab_size(const Bluelmv *b) { return b->llm.config.vocab_size; }
int64_t bluelmv_context_used(const Bluelmv *b) { return b->llm.n_past; }
const float *bluelmv_logits(const Bluelmv *b) { return b->logits; }
void bluelmv_reset(Bluelmv *b) { llm_rewind(&b->llm, 0); }

int64_t bluelmv_tokenize(const Bluelmv *b, const char *text, int add_bos, int32_t *ids, int64_t max_ids, BlvError *err) {
    return tokenizer_encode(&b->tok, text, strlen(text), add_bos, 1, ids, max_ids, err);
}

int bluelmv_eval(Bluelmv *b, const int32_t *tokens, int64_t n, BlvError *err) {
    if (n <= 0) return blv_fail(err, "nothing to evaluate");
    return llm_eval_tokens(&b->llm, tokens, n, b->logits, 0, err);
}

/* ---- dumps ----------------------------------------------------------------------------------- */

static void dump_sink_free(DumpSink *d) {
    for (int i = 0; i < d->n_stages; i++) npy_writer_abort(&d->stages[i].w);
    dump_close(&d->dir);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

int bluelmv_set_dump_dir(Bluelmv *b, const char *dir, BlvError *err) {
    DumpSink *d = blv_calloc(1, sizeof *d, "dump state", err);
    if (!d) return -1;
    if (dump_open(&d->dir, dir, err) != 0) {
        free(d);
        return -1;
    }
    pthread_mutex_init(&d->lock, NULL);
    if (b->dump) dump_sink_free(b->dump);
    b->dump = d;
    return 0;
}

/* Appends rows to stage `name`, opening its file with the full shape on first use. */
static void dump_rows(DumpSink *d, const char *name, int ndim, const int64_t *shape, const float *data, int64_t n) {
    pthread_mutex_lock(&d->lock);
    DumpStage *st = NULL;
    for (int i = 0; i < d->n_stages; i++)
        if (strcmp(d->stages[i].name, name) == 0) st = &d->stages[i];
    if (!st && !d->failed && d->n_stages < (int)(sizeof d->stages / sizeof d->stages[0])) {
        st = &d->stages[d->n_stages];
        snprintf(st->name, sizeof st->name, "%s", name);
        if (dump_begin(&d->dir, name, NPY_F32, ndim, shape, &st->w, &d->err) != 0) d->failed = 1;
        else d->n_stages++;
        if (d->failed) st = NULL;
    }
    if (st && !d->failed && npy_writer_append_f32(&st->w, data, n, &d->err) != 0) d->failed = 1;
    pthread_mutex_unlock(&d->lock);
}

int bluelmv_finish_dump(Bluelmv *b, BlvError *err);

/* Closes every stage file; a stage that did not receive all its rows is an error. */
static int dump_finish(DumpSink *d, BlvError *err) {
    int rc = d->failed ? -1 : 0;
    if (d->failed) *err = d->err;
    for (int i = 0; i < d->n_stages; i++) {
        if (rc == 0 && npy_writer_close(&d->stages[i].w, err) != 0) rc = -1;
        else if (rc != 0) npy_writer_abort(&d->stages[i].w);
    }
    d->n_stages = 0;
    return rc;
}

int bluelmv_finish_dump(Bluelmv *b, BlvError *err) {
    if (!b->dump) return 0;
    int rc = dump_finish(b->dump, err);
    dump_sink_free(b->dump);
    b->dump = NULL;
    return rc;
}

static void vit_dump_cb(void *user, const char *stage, int64_t tile0, int64_t n_tiles, int64_t rows, int64_t cols,
                        const float *data) {
    DumpSink *d = user;
    (void)tile0;
    int64_t shape[3] = {d->n_images, rows, cols};
    dump_rows(d, stage, 3, shape, data, n_tiles * rows * cols);
}

static void llm_dump_cb(void *user, const char *stage, int64_t pos0, int64_t n_rows, int64_t cols, const float *data) {
    DumpSink *d = user;
    (void)pos0;
    int64_t shape[2] = {d->n_input, cols};
    dump_rows(d, stage, 2, shape, data, n_rows * cols);
}
/* ---- image encoding ------------------------------------------------------------------------------ */

void bluelmv_image_free(BluelmvImage *img) {
    if (!img) return;
    free(img->path);
    free(img->embeds);
    free(img);
}

/* The conv thread of the pipeline: patch-embeds batch after batch into a ring of two buffers, one
 * batch ahead of the transformer blocks (the paper's Fig. 5: Conv2D on the CPU overlapping the ViT). */
typedef struct {
    Vit *vit;
    const float *tiles;       /* (n_images, 3, S, S) */
    int64_t n_images, batch;
    float *ring[2];           /* (batch, n_patches, D) each */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int64_t produced;         /* batches embedded so far */
    int64_t consumed;         /* batches the blocks have finished with */
    double conv_s;            /* seconds of patch embedding */
    double conv_hidden_s;     /* of which while the blocks were busy */
    double conv_first_s;      /* of which the first batch's */
    int blocks_busy;
} ConvPipe;

static void *conv_thread(void *arg) {
    ConvPipe *p = arg;
    int64_t n_batches = (p->n_images + p->batch - 1) / p->batch;
    int64_t S = p->vit->config.image_size;
    for (int64_t i = 0; i < n_batches; i++) {
        pthread_mutex_lock(&p->lock);
        while (i - p->consumed >= 2) pthread_cond_wait(&p->changed, &p->lock);  /* both buffers in use */
        pthread_mutex_unlock(&p->lock);
        int64_t tile0 = i * p->batch, n = p->n_images - tile0 < p->batch ? p->n_images - tile0 : p->batch;
        double t0 = blv_now();
        vit_patch_embed(p->vit, NULL, p->tiles + tile0 * 3 * S * S, tile0, n, p->ring[i % 2]);
        double dt = blv_now() - t0;
        pthread_mutex_lock(&p->lock);
        p->conv_s += dt;
        if (i == 0) p->conv_first_s = dt;
        if (p->blocks_busy) p->conv_hidden_s += dt;
        p->produced = i + 1;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

/* tiles → embeddings, batch by batch; with the pipeline, the patch embedding of batch i+1 runs on
 * its own thread while the blocks work on batch i. */
static int encode_tiles(Bluelmv *b, const float *tiles, int64_t n_images, float *out, BluelmvImage *img, BlvError *err) {
    Vit *v = &b->vit;
    const VitConfig *c = &v->config;
    int64_t B = v->batch, n_batches = (n_images + B - 1) / B, S = c->image_size;
    int64_t per_out = c->n_merged * c->proj_dim, per_x = c->n_patches * c->dim;
    img->n_batches = (int)n_batches;
    vit_reset_timings(v);
    if (!b->params.pipeline || n_batches < 2) {
        float *x = v->state.x;
        for (int64_t i = 0; i < n_batches; i++) {
            int64_t tile0 = i * B, n = n_images - tile0 < B ? n_images - tile0 : B;
            double t0 = blv_now();
            vit_patch_embed(v, v->pool, tiles + tile0 * 3 * S * S, tile0, n, x);
            img->conv_s += blv_now() - t0;
            vit_blocks(v, x, tile0, n);
            vit_project(v, x, tile0, n, out + tile0 * per_out);
        }
    } else {
        ConvPipe p = {0};
        p.vit = v;
        p.tiles = tiles;
        p.n_images = n_images;
        p.batch = B;
        p.ring[0] = v->state.x;
        p.ring[1] = blv_malloc((size_t)(B * per_x) * sizeof(float), "pipeline buffer", err);
        if (!p.ring[1]) return -1;
        pthread_mutex_init(&p.lock, NULL);
        pthread_cond_init(&p.changed, NULL);
        pthread_t th;
        if (pthread_create(&th, NULL, conv_thread, &p) != 0) {
            free(p.ring[1]);
            return blv_fail(err, "cannot start the patch-embedding thread");
        }
        for (int64_t i = 0; i < n_batches; i++) {
            pthread_mutex_lock(&p.lock);
            while (p.produced <= i) pthread_cond_wait(&p.changed, &p.lock);
            p.blocks_busy = 1;
            pthread_mutex_unlock(&p.lock);
            int64_t tile0 = i * B, n = n_images - tile0 < B ? n_images - tile0 : B;
            vit_blocks(v, p.ring[i % 2], tile0, n);
            vit_project(v, p.ring[i % 2], tile0, n, out + tile0 * per_out);
            pthread_mutex_lock(&p.lock);
            p.blocks_busy = 0;
            p.consumed = i + 1;
            pthread_cond_broadcast(&p.changed);
            pthread_mutex_unlock(&p.lock);
        }
        pthread_join(th, NULL);
        img->conv_s = p.conv_s;
        img->conv_hidden_s = p.conv_hidden_s;
        img->conv_first_s = p.conv_first_s;
        pthread_mutex_destroy(&p.lock);
        pthread_cond_destroy(&p.changed);
        free(p.ring[1]);
    }
    img->blocks_s = v->timings.qkvo + v->timings.attention + v->timings.mlp + v->timings.other;
    img->project_s = v->timings.project;
    return 0;
}

/* Decode, plan, render and encode one image. The caller holds vit_lock with the ViT loaded. */
static BluelmvImage *encode_one(Bluelmv *b, const char *path, BlvError *err) {
    BluelmvImage *img = blv_calloc(1, sizeof *img, "image", err);
    if (!img) return NULL;
    img->path = strdup(path);
    double t0 = blv_now();
    Image rgb;
    if (!img->path || image_load(&rgb, path, NULL, err) != 0) {
        bluelmv_image_free(img);
        return NULL;
    }
    img->width = rgb.width;
    img->height = rgb.height;
    double t1 = blv_now();
    img->decode_s = t1 - t0;

    const VitConfig *c = &b->vit.config;
    TilePlan plan;
    float *tiles = NULL;
    if (tile_plan(rgb.width, rgb.height, &b->tiling, &plan, err) != 0) {
        blv_fail_prefix(err, "%s", path);
        goto fail;
    }
    int64_t S = c->image_size, n_images = plan.n_images;
    tiles = blv_malloc((size_t)(n_images * 3 * S * S) * sizeof(float), "tiles", err);
    if (!tiles || tile_render(rgb.rgb, rgb.width, rgb.height, &plan, c->image_mean, c->image_std, tiles, err) != 0) goto fail;
    image_free(&rgb);
    rgb.rgb = NULL;
    img->grid_w = plan.grid_w;
    img->grid_h = plan.grid_h;
    img->n_tiles = plan.n_tiles;
    img->has_thumbnail = plan.has_thumbnail;
    img->n_images = n_images;
    img->n_tokens = n_images * c->n_merged;
    img->dim = c->proj_dim;
    double t2 = blv_now();
    img->preprocess_s = t2 - t1;
    if (b->dump) {
        int64_t shape[4] = {b->dump->n_images, 3, S, S};
        dump_rows(b->dump, "pixels", 4, shape, tiles, n_images * 3 * S * S);
    }

    img->embeds = blv_malloc((size_t)(img->n_tokens * img->dim) * sizeof(float), "image embeddings", err);
    if (!img->embeds || encode_tiles(b, tiles, n_images, img->embeds, img, err) != 0) goto fail;
    img->encode_s = blv_now() - t2;
    img->finished_at = blv_now();
    free(tiles);
    return img;
fail:
    free(tiles);
    if (rgb.rgb) image_free(&rgb);
    bluelmv_image_free(img);
    return NULL;
}

/* Encodes n images in order (one run's images: dumps cover all of them), loading the ViT if it
 * was released. */
static int encode_many(Bluelmv *b, const char *const *paths, int n, BluelmvImage **out, BlvError *err) {
    if (!b->mmproj_path) return blv_fail(err, "an image was given but no vision model (--mmproj MMPROJ.gguf)");
    pthread_mutex_lock(&b->vit_lock);
    int rc = load_vision(b, err);
    if (rc == 0 && b->dump) {
        /* the vision stages need the total number of ViT inputs up front: plan every image first */
        b->dump->n_images = 0;
        for (int i = 0; i < n && rc == 0; i++) {
            Image probe;
            TilePlan plan;
            rc = image_load(&probe, paths[i], NULL, err);
            if (rc == 0) {
                rc = tile_plan(probe.width, probe.height, &b->tiling, &plan, err);
                image_free(&probe);
            }
            if (rc == 0) b->dump->n_images += plan.n_images;
        }
        b->vit.dump = vit_dump_cb;
        b->vit.dump_user = b->dump;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        out[i] = encode_one(b, paths[i], err);
        if (!out[i]) rc = -1;
    }
    if (b->vit_loaded) b->vit.dump = NULL;
    if (rc != 0)
        for (int i = 0; i < n; i++) {
            bluelmv_image_free(out[i]);
            out[i] = NULL;
        }
    pthread_mutex_unlock(&b->vit_lock);
    return rc;
}

BluelmvImage *bluelmv_encode_image(Bluelmv *b, const char *path, BlvError *err) {
    BluelmvImage *img = NULL;
    return encode_many(b, &path, 1, &img, err) == 0 ? img : NULL;
}

struct BluelmvEncodeJob {
    Bluelmv *b;
    char **paths;
    int n;
    BluelmvImage **images;
    pthread_t thread;
    int rc;
    BlvError err;
};

static void *encode_job_main(void *arg) {
    BluelmvEncodeJob *job = arg;
    Bluelmv *b = job->b;
    job->rc = encode_many(b, (const char *const *)job->paths, job->n, job->images, &job->err);
    /* Decoupling (paper §3.4): the ViT is freed as soon as the last pending image is encoded, before
     * the LLM runs, so the two are never resident together at their peaks. */
    pthread_mutex_lock(&b->vit_lock);
    if (--b->active_jobs == 0 && !b->params.keep_vit) bluelmv_release_vision(b);
    pthread_mutex_unlock(&b->vit_lock);
    return NULL;
}

static void encode_job_free(BluelmvEncodeJob *job) {
    for (int i = 0; i < job->n; i++) free(job->paths[i]);
    free(job->paths);
    free(job->images);
    free(job);
}

BluelmvEncodeJob *bluelmv_encode_start(Bluelmv *b, const char *const *paths, int n, BlvError *err) {
    if (!b->mmproj_path) {
        blv_fail(err, "an image was given but no vision model (--mmproj MMPROJ.gguf)");
        return NULL;
    }
    BluelmvEncodeJob *job = blv_calloc(1, sizeof *job, "encode job", err);
    if (!job) return NULL;
    job->b = b;
    job->n = n;
    job->paths = calloc((size_t)(n ? n : 1), sizeof(char *));
    job->images = calloc((size_t)(n ? n : 1), sizeof(BluelmvImage *));
    int ok = job->paths && job->images;
    for (int i = 0; ok && i < n; i++) ok = (job->paths[i] = strdup(paths[i])) != NULL;
    if (ok) {
        pthread_mutex_lock(&b->vit_lock);
        b->active_jobs++;
        pthread_mutex_unlock(&b->vit_lock);
    }
    if (!ok || pthread_create(&job->thread, NULL, encode_job_main, job) != 0) {
        if (ok) {
            pthread_mutex_lock(&b->vit_lock);
            b->active_jobs--;
            pthread_mutex_unlock(&b->vit_lock);
        }
        blv_fail(err, ok ? "cannot start the image-encoding thread" : "out of memory");
        encode_job_free(job);
        return NULL;
    }
    return job;
}

int bluelmv_encode_finish(BluelmvEncodeJob *job, BluelmvImage ***images, BlvError *err) {
    pthread_join(job->thread, NULL);
    int rc = job->rc;
    if (rc != 0) {
        if (err) *err = job->err;
        *images = NULL;
    } else {
        *images = job->images;
        job->images = NULL;
    }
    encode_job_free(job);
    return rc;
}

/* ---- sampling (llama2.c run.c's sampler, plus optional top-k) -------------------------------- */

typedef struct {
    float prob;
    int32_t index;
} ProbIndex;

size_t bluelmv_sample_work_bytes(int64_t n) { return (size_t)n * sizeof(ProbIndex); }

/* llama2.c random_u32 / random_f32: xorshift64* */
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float random_f32(uint64_t *state) { return (float)(random_u32(state) >> 8) / 16777216.0f; }

static int32_t argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

static void softmax(float *x, int64_t n) {
    float max = x[0];
    for (int64_t i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int64_t i = 0; i < n; i++) x[i] /= sum;
}

static int compare_prob_desc(const void *a, const void *b) {
    const ProbIndex *pa = a, *pb = b;
    if (pa->prob > pb->prob) return -1;
    if (pa->prob < pb->prob) return 1;
    return 0;
}

/* Keeps the k most probable tokens and renormalizes. */
static void keep_top_k(float *probs, int64_t n, int k, ProbIndex *work) {
    if (k <= 0 || k >= n) return;
    for (int64_t i = 0; i < n; i++) work[i] = (ProbIndex){probs[i], (int32_t)i};
    qsort(work, (size_t)n, sizeof *work, compare_prob_desc);
    float kept = 0.0f;
    for (int i = 0; i < k; i++) kept += work[i].prob;
    for (int64_t i = k; i < n; i++) probs[work[i].index] = 0.0f;
    for (int64_t i = 0; i < n; i++) probs[i] /= kept;
}

/* Multinomial sampling: the first index whose cumulative probability exceeds coin in [0, 1). */
static int32_t sample_mult(const float *probs, int64_t n, float coin) {
    float cdf = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        cdf += probs[i];
        if (coin < cdf) return (int32_t)i;
    }
    return (int32_t)(n - 1);
}

/* Nucleus sampling from the smallest set of tokens whose probabilities exceed top_p. Tokens below
 * (1 - top_p) / (n - 1) cannot be in it, so they are dropped before sorting, as llama2.c does. */
static int32_t sample_top_p(const float *probs, int64_t n, float top_p, ProbIndex *work, float coin) {
    int64_t n0 = 0;
    const float cutoff = (1.0f - top_p) / (float)(n - 1);
    for (int64_t i = 0; i < n; i++)
        if (probs[i] >= cutoff) work[n0++] = (ProbIndex){probs[i], (int32_t)i};
    qsort(work, (size_t)n0, sizeof *work, compare_prob_desc);
    float cumulative = 0.0f;
    int64_t last = n0 - 1;
    for (int64_t i = 0; i < n0; i++) {
        cumulative += work[i].prob;
        if (cumulative > top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative, cdf = 0.0f;
    for (int64_t i = 0; i <= last; i++) {
        cdf += work[i].prob;
        if (r < cdf) return work[i].index;
    }
    return work[last].index;
}

int32_t bluelmv_sample(float *logits, int64_t n, const BluelmvSampler *s, uint64_t *rng_state, void *work) {
    if (s->temperature <= 0.0f) return argmax(logits, n);
    for (int64_t i = 0; i < n; i++) logits[i] /= s->temperature;
    softmax(logits, n);
    keep_top_k(logits, n, s->top_k, work);
    float coin = random_f32(rng_state);
    if (s->top_p <= 0.0f || s->top_p >= 1.0f) return sample_mult(logits, n, coin);
    return sample_top_p(logits, n, s->top_p, work, coin);
}

/* ---- prompt assembly -------------------------------------------------------------------------- */

/* The input of one turn as rows for the LLM: token ids (-1 for an image row) and their input
 * embeddings (text rows: token embedding + embedding LayerNorm; image rows: projector output). */
typedef struct {
    int64_t n, cap;
    int32_t *ids;           /* (n) */
    float *rows;            /* (n, dim) */
    int64_t n_image_rows;
} InputSeq;

static void input_free(InputSeq *s) {
    free(s->ids);
    free(s->rows);
    memset(s, 0, sizeof *s);
}

static int input_reserve(InputSeq *s, int64_t extra, int64_t dim, BlvError *err) {
    if (s->n + extra <= s->cap) return 0;
    int64_t cap = s->cap ? s->cap : 64;
    while (cap < s->n + extra) cap *= 2;
    int32_t *ids = realloc(s->ids, (size_t)cap * sizeof(int32_t));
    if (ids) s->ids = ids;
    float *rows = ids ? realloc(s->rows, (size_t)(cap * dim) * sizeof(float)) : NULL;
    if (!ids || !rows) return blv_fail(err, "out of memory for %lld input rows", (long long)cap);
    s->rows = rows;
    s->cap = cap;
    return 0;
}

static int input_add_text(Bluelmv *b, InputSeq *s, const char *text, size_t len, int add_bos, BlvError *err) {
    int64_t n = tokenizer_encode(&b->tok, text, len, add_bos, 1, NULL, 0, err);
    int64_t dim = b->llm.config.dim;
    if (n < 0 || input_reserve(s, n, dim, err) != 0) return -1;
    if (tokenizer_encode(&b->tok, text, len, add_bos, 1, s->ids + s->n, n, err) != n) return -1;
    for (int64_t i = 0; i < n; i++) llm_input_embedding(&b->llm, s->ids[s->n + i], s->rows + (s->n + i) * dim);
    s->n += n;
    return 0;
}

static int input_add_token(Bluelmv *b, InputSeq *s, int32_t id, BlvError *err) {
    int64_t dim = b->llm.config.dim;
    if (input_reserve(s, 1, dim, err) != 0) return -1;
    s->ids[s->n] = id;
    llm_input_embedding(&b->llm, id, s->rows + s->n * dim);
    s->n++;
    return 0;
}

static int input_add_image(Bluelmv *b, InputSeq *s, const BluelmvImage *img, BlvError *err) {
    int64_t dim = b->llm.config.dim;
    if (img->dim != dim)
        return blv_fail(err, "%s was encoded for a %lld-wide model, this one is %lld wide", img->path,
                        (long long)img->dim, (long long)dim);
    if (input_reserve(s, img->n_tokens, dim, err) != 0) return -1;
    for (int64_t i = 0; i < img->n_tokens; i++) s->ids[s->n + i] = -1;
    memcpy(s->rows + s->n * dim, img->embeds, (size_t)(img->n_tokens * dim) * sizeof(float));
    s->n += img->n_tokens;
    s->n_image_rows += img->n_tokens;
    return 0;
}

/* Fills the template: text before <image> (BOS first on the first turn), the images' rows, then
 * the rest, with {query} replaced. Each text part is tokenized on its own, as llama.cpp's mtmd
 * tokenizes the text chunks around an image. */
static int assemble_turn(Bluelmv *b, const char *query, BluelmvImage *const *images, int n_images, InputSeq *s,
                         BlvError *err) {
    const char *tpl = b->template_text;
    char *text = NULL;
    /* with no image, leave out "<im_start><image><im_end>" (or a bare "<image>") */
    const char *marker = "<im_start><image><im_end>";
    const char *at = strstr(tpl, "<image>");
    const char *cut_from = at, *cut_to = at ? at + strlen("<image>") : NULL;
    if (n_images == 0 && at) {
        const char *block = strstr(tpl, marker);
        if (block) {
            cut_from = block;
            cut_to = block + strlen(marker);
        }
    }
    if (n_images > 0 && !at) return blv_fail(err, "the chat template has no <image> placeholder: \"%s\"", tpl);
    /* replace {query}; the image split point is remembered as an offset */
    const char *q = strstr(tpl, "{query}");
    size_t qlen = strlen(query), tlen = strlen(tpl);
    text = malloc(tlen + qlen + 1);
    if (!text) return blv_fail(err, "out of memory");
    size_t o = 0, split_from = (size_t)-1, split_to = (size_t)-1;
    for (size_t i = 0; i <= tlen;) {
        if (cut_from && tpl + i == cut_from) split_from = o;
        if (cut_to && tpl + i == cut_to) split_to = o;
        if (i == tlen) break;
        if (q && tpl + i == q) {
            memcpy(text + o, query, qlen);
            o += qlen;
            i += strlen("{query}");
        } else {
            text[o++] = tpl[i++];
        }
    }
    text[o] = 0;
    if (!q) {  /* no {query} in the template: append the query */
        blv_fail(err, "the chat template has no {query} placeholder: \"%s\"", tpl);
        free(text);
        return -1;
    }
    int rc = 0;
    int first = b->n_turns == 0 && b->llm.n_past == 0;
    if (b->pending_eog >= 0) rc = input_add_token(b, s, b->pending_eog, err);  /* close the last answer */
    if (rc == 0 && split_from != (size_t)-1) {
        rc = input_add_text(b, s, text, split_from, first, err);
        for (int i = 0; rc == 0 && n_images > 0 && i < n_images; i++) rc = input_add_image(b, s, images[i], err);
        if (rc == 0) rc = input_add_text(b, s, text + split_to, o - split_to, 0, err);
    } else if (rc == 0) {
        rc = input_add_text(b, s, text, o, first, err);
    }
    free(text);
    return rc;
}

/* ---- generation ------------------------------------------------------------------------------- */

/* Samples up to n_predict tokens after the logits in b->logits, streaming text. */
static int generate_tokens(Bluelmv *b, int32_t prev, int64_t n_predict, const BluelmvSampler *sampler,
                           BluelmvTextFn on_text, void *user, BluelmvStats *st, double t_start, BlvError *err) {
    const Tokenizer *tok = &b->tok;
    uint64_t rng = sampler->seed ? sampler->seed : 0x5eed;
    double t1 = blv_now();
    b->pending_eog = -1;
    for (int64_t i = 0; i < n_predict; i++) {
        int32_t next = bluelmv_sample(b->logits, b->llm.config.vocab_size, sampler, &rng, b->sample_work);
        if (i == 0) st->first_token_seconds = blv_now() - t_start;
        if (tokenizer_is_eog(tok, next)) {  /* EOS, or a turn-ending token such as <|end|> */
            st->stopped_at_eos = 1;
            b->pending_eog = next;
            break;
        }
        char piece[256];
        int n = tokenizer_decode_token(tok, prev, next, piece, sizeof piece);
        if (on_text && n > 0) on_text(piece, (size_t)n, user);
        st->n_generated++;
        prev = next;
        if (i + 1 == n_predict) break;  /* the last token needs no evaluation */
        if (b->llm.n_past >= b->llm.n_ctx) {
            st->stopped_at_context = 1;
            break;
        }
        if (bluelmv_eval(b, &next, 1, err) != 0) return -1;
    }
    st->decode_seconds = blv_now() - t1;
    return 0;
}

/* One prefill over all rows of the turn (chunked by the LLM), then generation. */
static int run_turn(Bluelmv *b, InputSeq *s, int64_t n_predict, const BluelmvSampler *sampler, BluelmvTextFn on_text,
                    void *user, BluelmvStats *stats, double t_start, BlvError *err) {
    BluelmvStats st = {0};
    Llm *m = &b->llm;
    if (s->n == 0) return blv_fail(err, "the prompt is empty and the vocabulary has no BOS token to start from");
    if (m->n_past + s->n >= m->n_ctx)
        return blv_fail(err, "the input is %lld tokens (%lld of them image tokens) but only %lld of the %lld-token "
                        "context are free (use a shorter prompt, fewer or smaller images, or a larger -c)",
                        (long long)s->n, (long long)s->n_image_rows, (long long)(m->n_ctx - m->n_past),
                        (long long)m->n_ctx);
    st.n_prompt = s->n;
    st.n_image_tokens = s->n_image_rows;
    int64_t vocab = m->config.vocab_size;
    float *all_logits = NULL;
    DumpSink *d = b->dump;
    if (d) {  /* dump every input position */
        all_logits = blv_malloc((size_t)(s->n * vocab) * sizeof(float), "logits dump", err);
        if (!all_logits) return -1;
        d->n_input = s->n;
        m->dump = llm_dump_cb;
        m->dump_user = d;
        int64_t shape[1] = {s->n};
        NpyWriter w;
        if (dump_begin(&d->dir, "tokens", NPY_I32, 1, shape, &w, err) != 0 ||
            npy_writer_append_i32(&w, s->ids, s->n, err) != 0 || npy_writer_close(&w, err) != 0) {
            free(all_logits);
            m->dump = NULL;
            return -1;
        }
    }
    double t0 = blv_now();
    int rc = llm_eval_embeds(m, s->rows, s->n, d ? all_logits : b->logits, d != NULL, err);
    st.prefill_seconds = blv_now() - t0;
    if (d) {
        m->dump = NULL;
        if (rc == 0) {
            memcpy(b->logits, all_logits + (s->n - 1) * vocab, (size_t)vocab * sizeof(float));
            int64_t shape[2] = {s->n, vocab};
            dump_rows(d, "logits", 2, shape, all_logits, s->n * vocab);
        }
        free(all_logits);
        if (dump_finish(d, rc == 0 ? err : &(BlvError){{0}}) != 0 && rc == 0) rc = -1;
        dump_sink_free(d);
        b->dump = NULL;  /* one run per dump directory */
    }
    if (rc != 0) return -1;
    int32_t prev = s->ids[s->n - 1];
    if (generate_tokens(b, prev, n_predict, sampler, on_text, user, &st, t_start, err) != 0) return -1;
    if (stats) *stats = st;
    return 0;
}

int bluelmv_chat(Bluelmv *b, const char *query, BluelmvImage *const *images, int n_images, int64_t n_predict,
                 const BluelmvSampler *sampler, BluelmvTextFn on_text, void *user, BluelmvStats *stats, BlvError *err) {
    double t_start = blv_now();
    if (!b->has_llm) return blv_fail(err, "no language model loaded (-m MODEL.gguf)");
    InputSeq s = {0};
    int rc = assemble_turn(b, query ? query : "", images, n_images, &s, err);
    if (rc == 0) rc = run_turn(b, &s, n_predict, sampler, on_text, user, stats, t_start, err);
    input_free(&s);
    if (rc == 0) b->n_turns++;
    return rc;
}

void bluelmv_chat_reset(Bluelmv *b) {
    llm_rewind(&b->llm, 0);
    b->n_turns = 0;
    b->pending_eog = -1;
}

/* Plain completion: BOS, the prompt as it is (no template), then generation. */
int bluelmv_generate(Bluelmv *b, const char *prompt, int64_t n_predict, const BluelmvSampler *sampler,
                     BluelmvTextFn on_text, void *user, BluelmvStats *stats, BlvError *err) {
    double t_start = blv_now();
    if (!b->has_llm) return blv_fail(err, "no language model loaded (-m MODEL.gguf)");
    bluelmv_chat_reset(b);
    InputSeq s = {0};
    int rc = input_add_text(b, &s, prompt ? prompt : "", prompt ? strlen(prompt) : 0, 1, err);
    if (rc == 0) rc = run_turn(b, &s, n_predict, sampler, on_text, user, stats, t_start, err);
    input_free(&s);
    return rc;
}
