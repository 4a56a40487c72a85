/* tests/test_vit.c — the vision side against Hugging Face's SiglipVisionModel and a PyTorch
 * transcription of VILA's mlp_downsample projector.
 *
 * Golden data: tests/data/vit/ (tools/gen_vit_golden.py; README.md there). Inputs are not stored:
 * both sides compute them from the same counter-based hash (hash_uniform below). The SigLIP-so400m
 * shape test also builds its weights from that hash, so only a few output rows are stored. */
#include "test.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "util.h"
#include "vit.h"

/* ---- shared with tools/gen_vit_golden.py ---------------------------------------------------- */

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* Element i: the top 24 bits k of splitmix64's mix of seed + (i+1)·φ64, as k·2^-23 - 1 (exact). */
static void hash_uniform(const char *name, int64_t n, float *out) {
    uint64_t seed = fnv1a64(name);
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        out[i] = (float)(z >> 40) * 0x1p-23f - 1.0f;
    }
}

#define N_TILES 5
static const char *const PIXELS_NAME = "vit.small.pixels";

/* ---- .npy reading (float32 / float64, C order) ------------------------------------------------ */

typedef struct {
    int ndim;
    int64_t shape[4];
    int64_t n;
    double *data;
} Npy;

static int load_npy(const char *name, Npy *a) {
    char rel[256];
    snprintf(rel, sizeof rel, "vit/%s.npy", name);
    const char *path = test_data(rel);
    char *buf;
    size_t len;
    BlvError err;
    memset(a, 0, sizeof *a);
    if (blv_read_file(path, &buf, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    int ok = len >= 10 && memcmp(buf, "\x93NUMPY", 6) == 0;
    size_t header_len = 0, start = 0;
    if (ok && buf[6] == 1) {
        header_len = (uint8_t)buf[8] | (size_t)(uint8_t)buf[9] << 8;
        start = 10;
    } else if (ok && len >= 12) {
        header_len = (uint8_t)buf[8] | (size_t)(uint8_t)buf[9] << 8 | (size_t)(uint8_t)buf[10] << 16 |
                     (size_t)(uint8_t)buf[11] << 24;
        start = 12;
    } else {
        ok = 0;
    }
    ok = ok && start + header_len <= len;
    char header[512] = {0};
    if (ok && header_len < sizeof header) memcpy(header, buf + start, header_len);
    int f8 = strstr(header, "'descr': '<f8'") != NULL, f4 = strstr(header, "'descr': '<f4'") != NULL;
    ok = ok && (f4 || f8) && strstr(header, "'fortran_order': False") != NULL;
    const char *sh = strstr(header, "'shape': (");
    ok = ok && sh;
    if (ok) {
        sh += strlen("'shape': (");
        a->n = 1;
        while (*sh && *sh != ')' && a->ndim < 4) {
            char *end;
            long long d = strtoll(sh, &end, 10);
            if (end == sh) break;
            a->shape[a->ndim++] = d;
            a->n *= d;
            sh = end;
            while (*sh == ',' || *sh == ' ') sh++;
        }
        ok = a->ndim > 0 && start + header_len + (size_t)a->n * (f8 ? 8 : 4) == len;
    }
    if (!ok) {
        CHECK(0, "%s: not a float32/float64 C-order .npy file of the expected size", path);
        free(buf);
        return -1;
    }
    a->data = malloc((size_t)a->n * sizeof(double));
    const char *p = buf + start + header_len;
    for (int64_t i = 0; i < a->n; i++) {
        if (f8) {
            memcpy(&a->data[i], p + 8 * i, 8);
        } else {
            float x;
            memcpy(&x, p + 4 * i, 4);
            a->data[i] = x;
        }
    }
    free(buf);
    return 0;
}

static void free_npy(Npy *a) { free(a->data); }

/* ---- comparisons ------------------------------------------------------------------------------- */

typedef struct {
    double max_abs, max_ref, nmse, cosine;
} Diff;

static Diff diff_d(const float *a, const double *ref, int64_t n) {
    Diff d = {0, 0, 0, 0};
    double num = 0, den = 0, dot = 0, aa = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)a[i] - ref[i];
        if (fabs(e) > d.max_abs || isnan(e)) d.max_abs = isnan(e) ? INFINITY : fabs(e);
        if (fabs(ref[i]) > d.max_ref) d.max_ref = fabs(ref[i]);
        num += e * e;
        den += ref[i] * ref[i];
        dot += (double)a[i] * ref[i];
        aa += (double)a[i] * a[i];
    }
    d.nmse = den > 0 ? num / den : num;
    d.cosine = aa > 0 && den > 0 ? dot / sqrt(aa * den) : 0;
    if (isnan(d.nmse)) d.nmse = INFINITY;
    return d;
}

static Diff diff_f(const float *a, const float *ref, int64_t n) {
    double *r = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) r[i] = ref[i];
    Diff d = diff_d(a, r, n);
    free(r);
    return d;
}

/* Compares n values with a golden array and reports the figures. */
static void expect_close(const char *what, const float *got, const Npy *ref, int64_t n, double nmse_limit) {
    CHECK(ref->n == n, "%s: %lld values, golden has %lld", what, (long long)n, (long long)ref->n);
    if (ref->n != n) return;
    Diff d = diff_d(got, ref->data, n);
    CHECK(d.nmse < nmse_limit, "%s: NMSE %.3g >= %.1g (max |diff| %.3g)", what, d.nmse, nmse_limit, d.max_abs);
    test_note("%-28s max|diff| %.3g (max|ref| %.3g)  NMSE %.3g", what, d.max_abs, d.max_ref, d.nmse);
}

/* ---- running a model with stage capture ------------------------------------------------------- */

#define MAX_STAGES 8

typedef struct {
    char name[32];
    int64_t rows, cols;
    float *data;              /* (n_tiles, rows, cols) */
} Stage;

typedef struct {
    int64_t n_tiles;
    int n;
    Stage stages[MAX_STAGES];
} Capture;

static void capture_fn(void *user, const char *stage, int64_t tile0, int64_t n_tiles, int64_t rows, int64_t cols,
                       const float *data) {
    Capture *c = user;
    Stage *s = NULL;
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->stages[i].name, stage) == 0) s = &c->stages[i];
    if (!s && c->n < MAX_STAGES) {
        s = &c->stages[c->n++];
        snprintf(s->name, sizeof s->name, "%s", stage);
        s->rows = rows;
        s->cols = cols;
        s->data = calloc((size_t)(c->n_tiles * rows * cols), sizeof(float));
    }
    if (!s) return;
    CHECK(s->rows == rows && s->cols == cols && tile0 + n_tiles <= c->n_tiles, "stage %s: inconsistent dump", stage);
    memcpy(s->data + tile0 * rows * cols, data, (size_t)(n_tiles * rows * cols) * sizeof(float));
}

static const float *stage(const Capture *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->stages[i].name, name) == 0) return c->stages[i].data;
    CHECK(0, "stage %s was not dumped", name);
    return NULL;
}

static void free_capture(Capture *c) {
    for (int i = 0; i < c->n; i++) free(c->stages[i].data);
    memset(c, 0, sizeof *c);
}

typedef struct {
    GgufFile file;
    Vit vit;
    int ok;
} Loaded;

static void load_vit(Loaded *L, const char *path, int threads, int batch, int merge_order, int attn_type) {
    BlvError err;
    L->ok = 0;
    if (gguf_open(&L->file, path, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    VitOptions o = {threads, batch, merge_order, attn_type};
    if (vit_init(&L->vit, &L->file, &o, &err) != 0) {
        CHECK(0, "%s", err.msg);
        gguf_close(&L->file);
        return;
    }
    L->ok = 1;
}

static void unload_vit(Loaded *L) {
    if (!L->ok) return;
    vit_free(&L->vit);
    gguf_close(&L->file);
    L->ok = 0;
}

static float *make_pixels(const VitConfig *c, const char *name, int64_t n) {
    int64_t count = n * 3 * c->image_size * c->image_size;
    float *px = malloc((size_t)count * sizeof(float));
    hash_uniform(name, count, px);
    return px;
}

/* Encodes the 5 golden tiles; returns the embeddings (malloc'd) and fills cap if given. */
static float *encode_golden(Loaded *L, Capture *cap) {
    const VitConfig *c = &L->vit.config;
    float *px = make_pixels(c, PIXELS_NAME, N_TILES);
    float *out = malloc(sizeof(float) * N_TILES * c->n_merged * c->proj_dim);
    if (cap) {
        memset(cap, 0, sizeof *cap);
        cap->n_tiles = N_TILES;
        L->vit.dump = capture_fn;
        L->vit.dump_user = cap;
    }
    BlvError err;
    CHECK(vit_encode(&L->vit, px, N_TILES, out, &err) == 0, "%s", err.msg);
    L->vit.dump = NULL;
    free(px);
    return out;
}

static void expect_golden_stage(const Capture *cap, const char *stage_name, const char *golden, int64_t n,
                                double limit) {
    Npy ref;
    const float *got = stage(cap, stage_name);
    if (!got || load_npy(golden, &ref) != 0) return;
    expect_close(golden, got, &ref, n, limit);
    free_npy(&ref);
}

/* ---- tests ------------------------------------------------------------------------------------ */

/* siglip_a: the first 2 of 3 layers, no post-LN, padded Kp/Fp, VILA order; batch 4 (4 + 1). */
static void test_hf_siglip_stages_f32(void) {
    Loaded L;
    load_vit(&L, test_data("vit/siglip_a.gguf"), 1, 4, -1, -1);
    if (!L.ok) return;
    const VitConfig *c = &L.vit.config;
    CHECK(c->grid == 7 && c->n_patches == 49 && c->n_merged == 16 && c->patch_dim == 147 && c->patch_dim_stored == 160 &&
          c->ffn_dim == 172 && c->ffn_dim_stored == 192 && c->n_layers == 2 && !c->post_ln,
          "config: grid %lld, merged %lld, K %lld/%lld, F %lld/%lld, layers %lld", (long long)c->grid,
          (long long)c->n_merged, (long long)c->patch_dim, (long long)c->patch_dim_stored, (long long)c->ffn_dim,
          (long long)c->ffn_dim_stored, (long long)c->n_layers);
    CHECK(L.vit.attn_type == TYPE_F32, "float file: f32 attention");
    Capture cap;
    float *out = encode_golden(&L, &cap);
    int64_t nv = N_TILES * c->n_patches * c->dim, nm = N_TILES * c->n_merged;
    expect_golden_stage(&cap, "patch_embed", "a_patch_embed", nv, 1e-8);
    expect_golden_stage(&cap, "vit_block_0", "a_vit_block_0", nv, 1e-8);
    expect_golden_stage(&cap, "vit_block_1", "a_vit_out", nv, 1e-8);
    expect_golden_stage(&cap, "vit_out", "a_vit_out", nv, 1e-8);
    expect_golden_stage(&cap, "merged", "a_merged_vila", nm * c->merged_dim, 1e-8);
    expect_golden_stage(&cap, "image_embeds", "a_image_embeds_vila", nm * c->proj_dim, 1e-8);
    Npy ref;
    if (load_npy("a_image_embeds_vila", &ref) == 0) {
        expect_close("a_image_embeds_vila (output)", out, &ref, nm * c->proj_dim, 1e-8);
        free_npy(&ref);
    }
    free_capture(&cap);
    free(out);
    unload_vit(&L);
}

/* The raster order override: merged tokens (i, j) at t = i·G2 + j; the same projector per token. */
static void test_hf_siglip_raster_order(void) {
    Loaded L;
    load_vit(&L, test_data("vit/siglip_a.gguf"), 2, 2, VIT_MERGE_RASTER, -1);
    if (!L.ok) return;
    const VitConfig *c = &L.vit.config;
    CHECK(c->merge_order == VIT_MERGE_RASTER, "override");
    Capture cap;
    float *out = encode_golden(&L, &cap);
    int64_t G2 = c->merge_grid, M = c->merged_dim, nm = N_TILES * c->n_merged;
    Npy vila;
    const float *merged = stage(&cap, "merged");
    if (merged && load_npy("a_merged_vila", &vila) == 0) {
        /* raster token i·G2 + j is VILA token j·G2 + i */
        double *want = malloc(sizeof(double) * (size_t)(nm * M));
        for (int64_t b = 0; b < N_TILES; b++)
            for (int64_t i = 0; i < G2; i++)
                for (int64_t j = 0; j < G2; j++)
                    memcpy(want + ((b * G2 + i) * G2 + j) * M, vila.data + ((b * G2 + j) * G2 + i) * M,
                           sizeof(double) * (size_t)M);
        Diff d = diff_d(merged, want, nm * M);
        CHECK(d.nmse < 1e-8, "raster merged NMSE %.3g", d.nmse);
        test_note("%-28s max|diff| %.3g  NMSE %.3g", "merged (raster)", d.max_abs, d.nmse);
        free(want);
        free_npy(&vila);
    }
    Npy ref;
    if (load_npy("a_image_embeds_raster", &ref) == 0) {
        expect_close("a_image_embeds_raster", out, &ref, nm * c->proj_dim, 1e-8);
        free_npy(&ref);
    }
    free_capture(&cap);
    free(out);
    unload_vit(&L);
}

/* siglip_b: all 3 layers + post-LN (HF last_hidden_state), unpadded float file (Kp = K, Fp = F). */
static void test_hf_siglip_post_ln_unpadded(void) {
    Loaded L;
    load_vit(&L, test_data("vit/siglip_b.gguf"), 2, 4, -1, -1);
    if (!L.ok) return;
    const VitConfig *c = &L.vit.config;
    CHECK(c->post_ln && c->n_layers == 3 && c->patch_dim_stored == 147 && c->ffn_dim_stored == 172,
          "config: post_ln %d, layers %lld, Kp %lld, Fp %lld", c->post_ln, (long long)c->n_layers,
          (long long)c->patch_dim_stored, (long long)c->ffn_dim_stored);
    Capture cap;
    float *out = encode_golden(&L, &cap);
    int64_t nv = N_TILES * c->n_patches * c->dim, nm = N_TILES * c->n_merged;
    expect_golden_stage(&cap, "patch_embed", "a_patch_embed", nv, 1e-8);
    expect_golden_stage(&cap, "vit_out", "b_vit_out", nv, 1e-8);
    Npy ref;
    if (load_npy("b_image_embeds_vila", &ref) == 0) {
        expect_close("b_image_embeds_vila", out, &ref, nm * c->proj_dim, 1e-8);
        free_npy(&ref);
    }
    free_capture(&cap);
    free(out);
    unload_vit(&L);
}

/* Batch sizes 1, 2, 4 (5 tiles: 1+1+1+1+1, 2+2+1, 4+1) and 1 or 2 threads agree. */
static void test_batching_invariance(void) {
    const int batches[] = {4, 1, 2, 4, 5};
    const int threads[] = {1, 1, 2, 2, 1};
    float *ref = NULL;
    int64_t n = 0;
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        Loaded L;
        load_vit(&L, test_data("vit/siglip_a.gguf"), threads[i], batches[i], -1, -1);
        if (!L.ok) break;
        n = N_TILES * L.vit.config.n_merged * L.vit.config.proj_dim;
        float *out = encode_golden(&L, NULL);
        if (!ref) {
            ref = out;
        } else {
            Diff d = diff_f(out, ref, n);
            CHECK(d.max_abs <= 1e-5 * d.max_ref, "batch %d threads %d: max |diff| %.3g (max |ref| %.3g)", batches[i],
                  threads[i], d.max_abs, d.max_ref);
            test_note("batch %d, %d thread(s) vs batch 4, 1 thread: max |diff| %.3g", batches[i], threads[i], d.max_abs);
            free(out);
        }
        unload_vit(&L);
    }
    free(ref);
}

/* ---- rewriting an mmproj (quantized and malformed variants) ---------------------------------- */

typedef struct {
    const char *drop;             /* tensor to leave out */
    const char *truncate;         /* 2-D tensor written with half its rows */
    const char *poke;             /* tensor whose element poke_index is set to poke_value */
    int64_t poke_index;
    float poke_value;
    const char *str_key, *str_value;  /* a string KV to set */
    const char *u32_key;          /* a u32 KV to set */
    uint32_t u32_value;
    int matrix_type;              /* -1: keep; else convert every 2-D tensor but the position table */
} Edit;

static int key_is(const GgufString *s, const char *name) {
    return s->len == strlen(name) && memcmp(s->ptr, name, (size_t)s->len) == 0;
}

static int rewrite(const char *src, const char *dst, const Edit *e) {
    GgufFile f;
    BlvError err;
    if (gguf_open(&f, src, 1, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    GgufWriter *w = gguf_writer_new(&err);
    int rc = w ? 0 : -1;
    for (int64_t i = 0; rc == 0 && i < f.n_kv; i++) rc |= gguf_copy_kv(w, &f, &f.kv[i]);
    if (rc == 0 && e->str_key) rc |= gguf_set_string(w, e->str_key, e->str_value);
    if (rc == 0 && e->u32_key) rc |= gguf_set_u32(w, e->u32_key, e->u32_value);
    int *types = calloc((size_t)f.n_tensors, sizeof(int));
    int64_t *rows_out = calloc((size_t)f.n_tensors, sizeof(int64_t));
    for (int64_t i = 0; rc == 0 && i < f.n_tensors; i++) {
        const GgufTensor *t = &f.tensors[i];
        if (e->drop && key_is(&t->name, e->drop)) continue;
        int64_t ne[2] = {t->ne[0], t->n_dims > 1 ? t->ne[1] : 1};
        types[i] = (int)t->type;
        if (e->matrix_type >= 0 && t->n_dims == 2 && !key_is(&t->name, "v.position_embd.weight"))
            types[i] = e->matrix_type;
        if (e->truncate && key_is(&t->name, e->truncate)) ne[1] /= 2;
        rows_out[i] = ne[1];
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        rc |= gguf_add_tensor(w, name, (uint32_t)types[i], t->n_dims, ne);
    }
    if (rc != 0) CHECK(0, "writer: %s", w ? gguf_writer_error(w) : err.msg);
    if (rc == 0) rc = gguf_writer_begin(w, dst, &err);
    for (int64_t i = 0; rc == 0 && i < f.n_tensors; i++) {
        const GgufTensor *t = &f.tensors[i];
        if (e->drop && key_is(&t->name, e->drop)) continue;
        int64_t cols = t->ne[0], rows = rows_out[i];
        float *x = malloc(sizeof(float) * (size_t)(cols * rows));
        int64_t in_row = type_row_bytes((int)t->type, cols), out_row = type_row_bytes(types[i], cols);
        for (int64_t r = 0; r < rows; r++) dequantize_row((int)t->type, (const uint8_t *)t->data + r * in_row, x + r * cols, cols);
        if (e->poke && key_is(&t->name, e->poke)) x[e->poke_index] = e->poke_value;
        uint8_t *bytes = malloc((size_t)(rows * out_row));
        for (int64_t r = 0; r < rows; r++) quantize_row(types[i], x + r * cols, bytes + r * out_row, cols);
        rc = gguf_writer_put_tensor(w, bytes, (uint64_t)(rows * out_row), &err);
        free(bytes);
        free(x);
    }
    if (rc == 0) rc = gguf_writer_finish(w, &err);
    if (rc != 0) CHECK(0, "rewrite %s: %s", dst, err.msg);
    gguf_writer_free(w);
    free(types);
    free(rows_out);
    gguf_close(&f);
    return rc;
}

static const Edit NO_EDIT = {NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, 0, -1};

/* Q8_0 matrices (and int8 attention by default): figures against F32 and against HF. */
static void test_q8_0_against_f32(void) {
    char path[512];
    snprintf(path, sizeof path, "%s", test_tmp("siglip_a_q8_0.gguf"));
    Edit e = NO_EDIT;
    e.matrix_type = TYPE_Q8_0;
    if (rewrite(test_data("vit/siglip_a.gguf"), path, &e) != 0) return;
    Loaded F, Q, Qf;
    load_vit(&F, test_data("vit/siglip_a.gguf"), 2, 4, -1, -1);
    load_vit(&Q, path, 2, 4, -1, -1);
    load_vit(&Qf, path, 2, 4, -1, TYPE_F32);
    if (F.ok && Q.ok && Qf.ok) {
        CHECK(Q.vit.attn_type == TYPE_Q8_0, "quantized file: q8_0 attention by default");
        Capture cf, cq, cqf;
        float *of = encode_golden(&F, &cf), *oq = encode_golden(&Q, &cq), *oqf = encode_golden(&Qf, &cqf);
        const VitConfig *c = &F.vit.config;
        int64_t nv = N_TILES * c->n_patches * c->dim, ne = N_TILES * c->n_merged * c->proj_dim;
        const char *stages[] = {"patch_embed", "vit_out", "image_embeds"};
        for (int s = 0; s < 3; s++) {
            const float *a = stage(&cq, stages[s]), *b = stage(&cf, stages[s]), *a2 = stage(&cqf, stages[s]);
            if (!a || !b || !a2) continue;
            int64_t n = s < 2 ? nv : ne;
            Diff d = diff_f(a, b, n), d2 = diff_f(a2, b, n);
            test_note("q8_0 vs f32 %-13s q8_0 attention: NMSE %.3g cosine %.6f | f32 attention: NMSE %.3g cosine %.6f",
                      stages[s], d.nmse, d.cosine, d2.nmse, d2.cosine);
            CHECK(d.cosine > 0.99 && d2.cosine > 0.99, "%s: cosine %.4f / %.4f", stages[s], d.cosine, d2.cosine);
        }
        Npy ref;
        if (load_npy("a_image_embeds_vila", &ref) == 0) {
            Diff d = diff_d(oq, ref.data, ne);
            test_note("q8_0 image_embeds vs HF: NMSE %.3g cosine %.6f", d.nmse, d.cosine);
            CHECK(d.cosine > 0.99, "cosine %.4f", d.cosine);
            free_npy(&ref);
        }
        free_capture(&cf);
        free_capture(&cq);
        free_capture(&cqf);
        free(of);
        free(oq);
        free(oqf);
    }
    unload_vit(&F);
    unload_vit(&Q);
    unload_vit(&Qf);
}

/* vit_init on a rewritten file must fail with a message naming the file and containing `want`. */
static void expect_load_error(const char *label, const Edit *e, const char *want, const char *want2) {
    char path[512];
    snprintf(path, sizeof path, "%s", test_tmp("bad.gguf"));
    if (rewrite(test_data("vit/siglip_a.gguf"), path, e) != 0) return;
    GgufFile f;
    BlvError err = {{0}};
    if (gguf_open(&f, path, 1, &err) != 0) {
        CHECK(0, "%s: %s", label, err.msg);
        return;
    }
    Vit v;
    int rc = vit_init(&v, &f, NULL, &err);
    CHECK(rc != 0, "%s: vit_init accepted the file", label);
    if (rc == 0) vit_free(&v);
    CHECK(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", label, err.msg);
    CHECK(strstr(err.msg, want) != NULL, "%s: message lacks \"%s\": %s", label, want, err.msg);
    if (want2) CHECK(strstr(err.msg, want2) != NULL, "%s: message lacks \"%s\": %s", label, want2, err.msg);
    test_note("%-22s %s", label, err.msg);
    gguf_close(&f);
}

static void test_malformed_mmproj(void) {
    Edit e = NO_EDIT;
    e.drop = "v.blk.1.attn_v.bias";
    expect_load_error("missing tensor", &e, "v.blk.1.attn_v.bias", "missing");
    e = NO_EDIT;
    e.truncate = "v.blk.0.attn_k.weight";
    expect_load_error("wrong shape", &e, "v.blk.0.attn_k.weight", "shape");
    e = NO_EDIT;
    e.str_key = "general.architecture";
    e.str_value = "llama";
    expect_load_error("wrong architecture", &e, "general.architecture", "clip");
    e = NO_EDIT;
    e.str_key = "clip.projector_type";
    e.str_value = "mlp";
    expect_load_error("wrong projector type", &e, "clip.projector_type", "bluelmv");
    e = NO_EDIT;
    e.u32_key = "clip.vision.projection_dim";
    e.u32_value = 96;
    expect_load_error("projection_dim", &e, "mm.0.weight", "projection_dim");
    e = NO_EDIT;
    e.poke = "v.patch_embd.weight";
    e.poke_index = 3 * 160 + 150;  /* row 3, column 150 >= K = 147 */
    e.poke_value = 0.5f;
    expect_load_error("patch padding", &e, "v.patch_embd.weight", "padding column 150");
    e = NO_EDIT;
    e.poke = "v.blk.1.ffn_up.weight";
    e.poke_index = 180 * 64 + 5;   /* row 180 >= F = 172 */
    e.poke_value = -1.0f;
    expect_load_error("ffn_up padding row", &e, "v.blk.1.ffn_up.weight", "padding row 180");
    e = NO_EDIT;
    e.poke = "v.blk.0.ffn_up.bias";
    e.poke_index = 191;
    e.poke_value = 2.0f;
    expect_load_error("ffn_up padding bias", &e, "v.blk.0.ffn_up.bias", "padding entry 191");
    e = NO_EDIT;
    e.poke = "v.blk.0.ffn_down.weight";
    e.poke_index = 7 * 192 + 172;
    e.poke_value = 1.0f;
    expect_load_error("ffn_down padding col", &e, "v.blk.0.ffn_down.weight", "padding column 172");
    e = NO_EDIT;
    e.str_key = "bluelmv.merge.order";
    e.str_value = "zigzag";
    expect_load_error("merge order", &e, "bluelmv.merge.order", "zigzag");
    e = NO_EDIT;
    e.u32_key = "clip.vision.feed_forward_length";
    e.u32_value = 150;
    expect_load_error("ffn width", &e, "v.blk.0.ffn_up.weight", "150");
    e = NO_EDIT;
    e.u32_key = "clip.vision.block_count";
    e.u32_value = 3;
    expect_load_error("too few blocks", &e, "v.blk.2.", "missing");
}

/* vit_write_random("tiny") loads and runs, in F32 and Q8_0; 7×7 grid → 16 merged tokens. */
static void test_write_random_tiny(void) {
    VitShape sh;
    BlvError err;
    CHECK(vit_shape_preset("tiny", &sh, &err) == 0, "%s", err.msg);
    CHECK(vit_shape_preset("huge", &sh, &err) != 0 && strstr(err.msg, "huge"), "unknown preset");
    CHECK(vit_shape_preset("tiny", &sh, &err) == 0, "%s", err.msg);
    const int types[] = {TYPE_F32, TYPE_Q8_0, TYPE_Q4_0, TYPE_F16};
    float *ref = NULL;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        char path[512];
        snprintf(path, sizeof path, "%s", test_tmp("tiny_vit.gguf"));
        CHECK(vit_write_random(path, &sh, types[t], 42, &err) == 0, "%s", err.msg);
        Loaded L;
        load_vit(&L, path, 2, 2, -1, -1);
        if (!L.ok) continue;
        const VitConfig *c = &L.vit.config;
        CHECK(c->image_size == 60 && c->grid == 7 && c->n_merged == 16 && c->dim == 64 && c->n_layers == 2 &&
              c->proj_dim == 64 && c->ffn_dim == 172 && c->ffn_dim_stored == 192 && c->patch_dim_stored == 192,
              "tiny config");
        float *px = make_pixels(c, "vit.tiny.pixels", 3);
        int64_t n = 3 * c->n_merged * c->proj_dim;
        float *out = malloc(sizeof(float) * (size_t)n);
        CHECK(vit_encode(&L.vit, px, 3, out, &err) == 0, "%s", err.msg);
        int finite = 1;
        for (int64_t i = 0; i < n; i++) finite &= isfinite(out[i]);
        CHECK(finite, "%s: non-finite embeddings", type_name(types[t]));
        if (!ref) {
            ref = out;
        } else {
            Diff d = diff_f(out, ref, n);
            test_note("tiny %s vs f32: NMSE %.3g cosine %.6f", type_name(types[t]), d.nmse, d.cosine);
            CHECK(d.cosine > 0.98, "tiny %s: cosine %.4f", type_name(types[t]), d.cosine);
            free(out);
        }
        free(px);
        unload_vit(&L);
    }
    free(ref);
}

/* The patch embedding of one batch on another thread (its own pool: NULL) while the blocks of the
 * previous batch run: the pipeline the stage functions exist for. Same numbers as vit_encode. */
typedef struct {
    Vit *v;
    const float *tiles;
    int64_t tile0, n;
    float *out;
} EmbedJob;

static void *embed_thread(void *p) {
    EmbedJob *j = p;
    vit_patch_embed(j->v, NULL, j->tiles, j->tile0, j->n, j->out);
    return NULL;
}

static void test_pipelined_stages(void) {
    Loaded L;
    load_vit(&L, test_data("vit/siglip_a.gguf"), 2, 2, -1, -1);
    if (!L.ok) return;
    const VitConfig *c = &L.vit.config;
    float *ref = encode_golden(&L, NULL);
    float *px = make_pixels(c, PIXELS_NAME, N_TILES);
    int64_t tile_floats = 3 * c->image_size * c->image_size, xs = 2 * c->n_patches * c->dim;
    int64_t per_tile = c->n_merged * c->proj_dim;
    float *x[2] = {malloc(sizeof(float) * (size_t)xs), malloc(sizeof(float) * (size_t)xs)};
    float *out = malloc(sizeof(float) * (size_t)(N_TILES * per_tile));
    vit_patch_embed(&L.vit, L.vit.pool, px, 0, 2, x[0]);
    int cur = 0;
    for (int64_t t0 = 0; t0 < N_TILES; t0 += 2) {
        int64_t n = N_TILES - t0 < 2 ? N_TILES - t0 : 2, next = t0 + 2;
        pthread_t th;
        EmbedJob job = {&L.vit, px + next * tile_floats, next, N_TILES - next < 2 ? N_TILES - next : 2, x[1 - cur]};
        int started = next < N_TILES && pthread_create(&th, NULL, embed_thread, &job) == 0;
        vit_blocks(&L.vit, x[cur], t0, n);
        vit_project(&L.vit, x[cur], t0, n, out + t0 * per_tile);
        if (started) pthread_join(th, NULL);
        cur = 1 - cur;
    }
    Diff d = diff_f(out, ref, N_TILES * per_tile);
    CHECK(d.max_abs <= 1e-6 * d.max_ref, "pipelined vs vit_encode: max |diff| %.3g", d.max_abs);
    free(x[0]);
    free(x[1]);
    free(out);
    free(px);
    free(ref);
    unload_vit(&L);
}

/* ---- the SigLIP-so400m shape ------------------------------------------------------------------ */

/* The value rule of gen_vit_golden.py's so400m_values (u = hash_uniform(name)):
 *   w16: u/16 as f16   b: u/16   pos: u/4   lnw: 1 + u/4   lnb: u/8   mm0: u/32 as f16   mm2: u/8 as f16 */
typedef enum { K_W16, K_B, K_POS, K_LNW, K_LNB, K_MM0, K_MM2 } ValueKind;

typedef struct {
    char name[64];
    int64_t rows, cols;       /* rows 1 for vectors */
    ValueKind kind;
} PlanItem;

static void item(PlanItem *p, int *n, const char *name, int64_t rows, int64_t cols, ValueKind kind) {
    snprintf(p[*n].name, sizeof p[*n].name, "%s", name);
    p[*n].rows = rows;
    p[*n].cols = cols;
    p[*n].kind = kind;
    (*n)++;
}

static int so400m_plan(PlanItem *p, int64_t D, int64_t F, int64_t K, int64_t G, int64_t H, int64_t n_layers) {
    int n = 0;
    item(p, &n, "v.patch_embd.weight", D, K, K_W16);
    item(p, &n, "v.patch_embd.bias", 1, D, K_B);
    item(p, &n, "v.position_embd.weight", G * G, D, K_POS);
    for (int64_t l = 0; l < n_layers; l++) {
        char nm[64];
        const char *mats[4] = {"attn_q", "attn_k", "attn_v", "attn_out"};
        snprintf(nm, sizeof nm, "v.blk.%lld.ln1.weight", (long long)l);
        item(p, &n, nm, 1, D, K_LNW);
        snprintf(nm, sizeof nm, "v.blk.%lld.ln1.bias", (long long)l);
        item(p, &n, nm, 1, D, K_LNB);
        for (int m = 0; m < 4; m++) {
            snprintf(nm, sizeof nm, "v.blk.%lld.%s.weight", (long long)l, mats[m]);
            item(p, &n, nm, D, D, K_W16);
            snprintf(nm, sizeof nm, "v.blk.%lld.%s.bias", (long long)l, mats[m]);
            item(p, &n, nm, 1, D, K_B);
        }
        snprintf(nm, sizeof nm, "v.blk.%lld.ln2.weight", (long long)l);
        item(p, &n, nm, 1, D, K_LNW);
        snprintf(nm, sizeof nm, "v.blk.%lld.ln2.bias", (long long)l);
        item(p, &n, nm, 1, D, K_LNB);
        snprintf(nm, sizeof nm, "v.blk.%lld.ffn_up.weight", (long long)l);
        item(p, &n, nm, F, D, K_W16);
        snprintf(nm, sizeof nm, "v.blk.%lld.ffn_up.bias", (long long)l);
        item(p, &n, nm, 1, F, K_B);
        snprintf(nm, sizeof nm, "v.blk.%lld.ffn_down.weight", (long long)l);
        item(p, &n, nm, D, F, K_W16);
        snprintf(nm, sizeof nm, "v.blk.%lld.ffn_down.bias", (long long)l);
        item(p, &n, nm, 1, D, K_B);
    }
    item(p, &n, "mm.input_norm.weight", 1, 4 * D, K_LNW);
    item(p, &n, "mm.input_norm.bias", 1, 4 * D, K_LNB);
    item(p, &n, "mm.0.weight", H, 4 * D, K_MM0);
    item(p, &n, "mm.0.bias", 1, H, K_B);
    item(p, &n, "mm.2.weight", H, H, K_MM2);
    item(p, &n, "mm.2.bias", 1, H, K_B);
    return n;
}

static int write_so400m(const char *path, int64_t n_layers) {
    const int64_t S = 384, P = 14, D = 1152, F = 4304, H = 64, G = S / P, K = 3 * P * P;
    PlanItem plan[64];
    int n = so400m_plan(plan, D, F, K, G, H, n_layers);
    BlvError err;
    GgufWriter *w = gguf_writer_new(&err);
    if (!w) return -1;
    const float half[3] = {0.5f, 0.5f, 0.5f};
    int rc = 0;
    rc |= gguf_set_string(w, "general.architecture", "clip");
    rc |= gguf_set_bool(w, "clip.has_vision_encoder", 1);
    rc |= gguf_set_string(w, "clip.projector_type", "bluelmv");
    rc |= gguf_set_u32(w, "clip.vision.image_size", (uint32_t)S);
    rc |= gguf_set_u32(w, "clip.vision.patch_size", (uint32_t)P);
    rc |= gguf_set_u32(w, "clip.vision.embedding_length", (uint32_t)D);
    rc |= gguf_set_u32(w, "clip.vision.feed_forward_length", (uint32_t)F);
    rc |= gguf_set_u32(w, "clip.vision.block_count", (uint32_t)n_layers);
    rc |= gguf_set_u32(w, "clip.vision.attention.head_count", 16);
    rc |= gguf_set_f32(w, "clip.vision.attention.layer_norm_epsilon", 1e-6f);
    rc |= gguf_set_array(w, "clip.vision.image_mean", GGUF_TYPE_FLOAT32, half, 3);
    rc |= gguf_set_array(w, "clip.vision.image_std", GGUF_TYPE_FLOAT32, half, 3);
    rc |= gguf_set_u32(w, "clip.vision.projection_dim", (uint32_t)H);
    rc |= gguf_set_bool(w, "clip.use_gelu", 1);
    rc |= gguf_set_string(w, "bluelmv.merge.order", "vila");
    for (int i = 0; rc == 0 && i < n; i++) {
        int is_matrix = plan[i].kind == K_W16 || plan[i].kind == K_MM0 || plan[i].kind == K_MM2;
        int64_t ne[2] = {plan[i].cols, plan[i].rows};
        rc |= gguf_add_tensor(w, plan[i].name, is_matrix ? TYPE_F16 : TYPE_F32, plan[i].rows > 1 ? 2 : 1, ne);
    }
    if (rc != 0) CHECK(0, "writer: %s", gguf_writer_error(w));
    if (rc == 0) rc = gguf_writer_begin(w, path, &err);
    for (int i = 0; rc == 0 && i < n; i++) {
        int64_t count = plan[i].rows * plan[i].cols;
        float *u = malloc(sizeof(float) * (size_t)count);
        hash_uniform(plan[i].name, count, u);
        int is_matrix = plan[i].kind == K_W16 || plan[i].kind == K_MM0 || plan[i].kind == K_MM2;
        for (int64_t j = 0; j < count; j++) {
            switch (plan[i].kind) {
            case K_W16: case K_B: u[j] = u[j] * (1.0f / 16); break;
            case K_POS: u[j] = u[j] * 0.25f; break;
            case K_LNW: u[j] = 1.0f + u[j] * 0.25f; break;
            case K_LNB: u[j] = u[j] * 0.125f; break;
            case K_MM0: u[j] = u[j] * (1.0f / 32); break;
            case K_MM2: u[j] = u[j] * 0.125f; break;
            }
        }
        if (is_matrix) {
            uint16_t *h = malloc(sizeof(uint16_t) * (size_t)count);
            for (int64_t j = 0; j < count; j++) h[j] = fp32_to_fp16(u[j]);
            rc = gguf_writer_put_tensor(w, h, (uint64_t)count * 2, &err);
            free(h);
        } else {
            rc = gguf_writer_put_tensor(w, u, (uint64_t)count * 4, &err);
        }
        free(u);
    }
    if (rc == 0) rc = gguf_writer_finish(w, &err);
    if (rc != 0) CHECK(0, "%s: %s", path, err.msg);
    gguf_writer_free(w);
    return rc;
}

/* The real SigLIP-so400m layer shape (1152, 16 heads of 72, MLP 4304, patch 14, 384² → 27×27, odd:
 * the downsampler pads 27 → 28), 2 layers, F16 matrices, one tile, against HF. */
static void test_hf_so400m_shape(void) {
    char path[512];
    snprintf(path, sizeof path, "%s", test_tmp("so400m_2l.gguf"));
    if (write_so400m(path, 2) != 0) return;
    Loaded L;
    load_vit(&L, path, 2, 4, -1, -1);
    if (!L.ok) return;
    const VitConfig *c = &L.vit.config;
    CHECK(c->grid == 27 && c->n_merged == 196 && c->head_dim == 72 && c->patch_dim_stored == 588, "so400m config");
    float *px = make_pixels(c, "vit.so400m.pixels", 1);
    float *out = malloc(sizeof(float) * (size_t)(c->n_merged * c->proj_dim));
    Capture cap = {0};
    cap.n_tiles = 1;
    L.vit.dump = capture_fn;
    L.vit.dump_user = &cap;
    BlvError err;
    double t0 = blv_now();
    CHECK(vit_encode(&L.vit, px, 1, out, &err) == 0, "%s", err.msg);
    double dt = blv_now() - t0;
    const float *vo = stage(&cap, "vit_out"), *pe = stage(&cap, "patch_embed");
    Npy rows, pe_rows, sumsq, embeds;
    const int64_t D = c->dim, n_rows = 21;
    if (vo && pe && load_npy("so400m_vit_out_rows", &rows) == 0 && load_npy("so400m_patch_embed_rows", &pe_rows) == 0) {
        float *sel = malloc(sizeof(float) * (size_t)(n_rows * D)), *sel_pe = malloc(sizeof(float) * (size_t)(n_rows * D));
        for (int64_t r = 0; r < n_rows; r++) {
            int64_t tok = r < 20 ? 37 * r : 728;
            memcpy(sel + r * D, vo + tok * D, sizeof(float) * (size_t)D);
            memcpy(sel_pe + r * D, pe + tok * D, sizeof(float) * (size_t)D);
        }
        expect_close("so400m patch_embed rows", sel_pe, &pe_rows, n_rows * D, 1e-8);
        expect_close("so400m vit_out rows", sel, &rows, n_rows * D, 1e-8);
        free(sel);
        free(sel_pe);
        free_npy(&rows);
        free_npy(&pe_rows);
    }
    if (vo && load_npy("so400m_vit_out_sumsq", &sumsq) == 0) {
        double ss = 0;
        for (int64_t i = 0; i < c->n_patches * D; i++) ss += (double)vo[i] * vo[i];
        double rel = fabs(ss - sumsq.data[0]) / sumsq.data[0];
        CHECK(rel < 1e-5, "sum of squares %.9g vs %.9g", ss, sumsq.data[0]);
        test_note("%-28s %.9g vs HF %.9g (rel %.2g)", "so400m vit_out sum x^2", ss, sumsq.data[0], rel);
        free_npy(&sumsq);
    }
    if (load_npy("so400m_image_embeds_vila", &embeds) == 0) {
        expect_close("so400m image_embeds", out, &embeds, c->n_merged * c->proj_dim, 1e-8);
        free_npy(&embeds);
    }
    test_note("so400m shape, 2 layers, F16, 2 threads: %.2f s for one tile", dt);
    free_capture(&cap);
    free(out);
    free(px);
    unload_vit(&L);
}

void suite_vit(void) {
    RUN_TEST(test_hf_siglip_stages_f32);
    RUN_TEST(test_hf_siglip_raster_order);
    RUN_TEST(test_hf_siglip_post_ln_unpadded);
    RUN_TEST(test_batching_invariance);
    RUN_TEST(test_q8_0_against_f32);
    RUN_TEST(test_malformed_mmproj);
    RUN_TEST(test_write_random_tiny);
    RUN_TEST(test_pipelined_stages);
    RUN_TEST(test_hf_so400m_shape);
}
