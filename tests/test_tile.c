/* tests/test_tile.c — slice planning and the pixel work of tile.c.
 *
 * Golden data in tests/data/tile/ (see tools/tile_reference.py and tools/gen_resize_golden.py):
 *   plans.txt                      grids chosen by an independent Python implementation
 *   src_*.ppm, resize_*            Pillow's Image.resize(..., BICUBIC) outputs
 *   pipeline*                      the whole preprocessing built with Pillow (+ SiglipImageProcessor)
 *   normalize.txt                  SiglipImageProcessor's rescale + normalize of every byte value */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tile.h"
#include "util.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static TilePolicy policy(TileAlgo algo, int tile_size, int param) {
    TilePolicy p = tile_policy_default(algo);
    p.tile_size = tile_size;
    if (algo == TILE_INTERNVL) p.internvl_max_num = param;
    else p.max_grid = param;
    return p;
}

/* The grid tile_plan chooses, or 0:0 with a failed CHECK. */
static void grid_of(int w, int h, TileAlgo algo, int param, int *m, int *n) {
    TilePolicy p = policy(algo, 384, param);
    TilePlan plan;
    BlvError err;
    *m = *n = 0;
    int rc = tile_plan(w, h, &p, &plan, &err);
    CHECK(rc == 0, "%dx%d %s: %s", w, h, tile_algo_name(algo), err.msg);
    if (rc == 0) {
        *m = plan.grid_w;
        *n = plan.grid_h;
    }
}

/* Reads a binary PPM (P6, maxval 255) into a malloc'd RGB8 buffer. */
static uint8_t *read_ppm(const char *path, int *w, int *h) {
    char *data;
    size_t len;
    BlvError err;
    if (blv_read_file(path, &data, &len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return NULL;
    }
    size_t pos = 0;
    int fields[3] = {0, 0, 0};
    int ok = len >= 2 && data[0] == 'P' && data[1] == '6';
    pos = 2;
    for (int f = 0; ok && f < 3; f++) {
        while (pos < len && (data[pos] == ' ' || data[pos] == '\n' || data[pos] == '\r' || data[pos] == '\t' ||
                             data[pos] == '#')) {
            if (data[pos] == '#')
                while (pos < len && data[pos] != '\n') pos++;
            else pos++;
        }
        if (pos >= len || data[pos] < '0' || data[pos] > '9') ok = 0;
        while (ok && pos < len && data[pos] >= '0' && data[pos] <= '9' && fields[f] < 100000)
            fields[f] = fields[f] * 10 + (data[pos++] - '0');
    }
    pos++;  /* the single whitespace after maxval */
    ok = ok && fields[0] > 0 && fields[1] > 0 && fields[2] == 255 &&
         pos + (size_t)fields[0] * fields[1] * 3 <= len;
    CHECK(ok, "%s: not a binary PPM with maxval 255", path);
    uint8_t *rgb = NULL;
    if (ok) {
        *w = fields[0];
        *h = fields[1];
        rgb = malloc((size_t)fields[0] * fields[1] * 3);
        memcpy(rgb, data + pos, (size_t)fields[0] * fields[1] * 3);
    }
    free(data);
    return rgb;
}

static uint8_t *read_blob(const char *name, size_t *len) {
    char *data;
    BlvError err;
    if (blv_read_file(test_data(name), &data, len, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return NULL;
    }
    return (uint8_t *)data;
}

static int max_abs_diff_u8(const uint8_t *a, const uint8_t *b, size_t n, size_t *first_bad) {
    int worst = 0;
    *first_bad = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d && *first_bad == (size_t)-1) *first_bad = i;
        if (d > worst) worst = d;
    }
    return worst;
}

/* ---- planning: the paper's and the notes' examples --------------------------------------------- */

/* paper-notes §2.5: the four examples of the paper, the deployment case, and the notes' table
 * (LLaVA-NeXT k=3, InternVL max 9 and 6, relaxed k=3 and 4, LLaVA-NeXT k=4). */
static void test_paper_table(void) {
    static const struct {
        int w, h;
        int g[6][2];  /* llava3, internvl9, internvl6, relaxed3, relaxed4, llava4 */
    } rows[] = {
        {394, 390, {{2, 2}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {2, 2}}},    /* Fig 3A */
        {380, 76, {{1, 1}, {5, 1}, {5, 1}, {1, 1}, {1, 1}, {1, 1}}},     /* Fig 3B */
        {380, 393, {{1, 2}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 2}}},    /* Fig 9A */
        {500, 102, {{2, 1}, {5, 1}, {5, 1}, {2, 1}, {2, 1}, {2, 1}}},    /* Fig 9B */
        {768, 1536, {{2, 3}, {2, 4}, {1, 2}, {2, 3}, {2, 4}, {2, 4}}},   /* deployment benchmark */
        {1080, 2400, {{2, 3}, {2, 4}, {1, 2}, {2, 3}, {2, 4}, {2, 4}}},
        {1920, 1080, {{3, 2}, {4, 2}, {2, 1}, {3, 2}, {4, 3}, {4, 3}}},
        {800, 600, {{3, 2}, {3, 2}, {3, 2}, {2, 2}, {2, 2}, {3, 2}}},
        {700, 400, {{2, 2}, {2, 1}, {2, 1}, {2, 1}, {2, 1}, {2, 2}}},
        {1024, 768, {{3, 2}, {3, 2}, {3, 2}, {3, 2}, {3, 2}, {3, 2}}},
    };
    static const struct {
        TileAlgo algo;
        int param;
        const char *label;
    } cols[6] = {{TILE_LLAVA_NEXT, 3, "llava k3"}, {TILE_INTERNVL, 9, "internvl max9"},
                 {TILE_INTERNVL, 6, "internvl max6"}, {TILE_RELAXED, 3, "relaxed k3"},
                 {TILE_RELAXED, 4, "relaxed k4"}, {TILE_LLAVA_NEXT, 4, "llava k4"}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        for (int c = 0; c < 6; c++) {
            int m, n;
            grid_of(rows[r].w, rows[r].h, cols[c].algo, cols[c].param, &m, &n);
            CHECK(m == rows[r].g[c][0] && n == rows[r].g[c][1], "%dx%d %s: got %d:%d, expected %d:%d", rows[r].w,
                  rows[r].h, cols[c].label, m, n, rows[r].g[c][0], rows[r].g[c][1]);
        }
}

/* The paper's statements: 394x390 -> 1:1 (LLaVA-NeXT: 2:2, 768x768); 380x393 -> 1:1 (384x384);
 * 500x102 -> 2:1 (768x384); 768x1536 -> 2:4, 9 patches, 1764 image tokens. */
static void test_paper_examples_geometry(void) {
    TilePolicy relaxed = tile_policy_default(TILE_RELAXED);
    TilePolicy llava = tile_policy_default(TILE_LLAVA_NEXT);
    TilePolicy internvl = tile_policy_default(TILE_INTERNVL);
    TilePlan plan;
    BlvError err;

    CHECK(tile_plan(768, 1536, &relaxed, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.grid_w == 2 && plan.grid_h == 4, "768x1536: %d:%d", plan.grid_w, plan.grid_h);
    CHECK(plan.canvas_w == 768 && plan.canvas_h == 1536, "canvas %dx%d", plan.canvas_w, plan.canvas_h);
    CHECK(plan.resized_w == 768 && plan.resized_h == 1536 && plan.pad_x == 0 && plan.pad_y == 0,
          "768x1536 fits exactly: resized %dx%d at %d,%d", plan.resized_w, plan.resized_h, plan.pad_x, plan.pad_y);
    CHECK(plan.n_tiles == 8 && plan.has_thumbnail && plan.thumbnail_first && plan.n_images == 9,
          "tiles %d thumb %d first %d images %d", plan.n_tiles, plan.has_thumbnail, plan.thumbnail_first, plan.n_images);
    CHECK(tile_image_tokens(&plan, 196) == 1764, "tokens %d", tile_image_tokens(&plan, 196));
    CHECK(plan.effective_res == 768 * 1536 && plan.wasted_res == 0, "Re %lld Rw %lld", (long long)plan.effective_res,
          (long long)plan.wasted_res);

    CHECK(tile_plan(394, 390, &relaxed, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.grid_w == 1 && plan.grid_h == 1 && plan.n_images == 1, "394x390 relaxed: %d:%d, %d images",
          plan.grid_w, plan.grid_h, plan.n_images);
    /* slightly downscaled into 384x384: new_height = min(ceil(390 * 384/394), 384) = ceil(380.10) = 381 */
    CHECK(plan.resized_w == 384 && plan.resized_h == 381 && plan.pad_x == 0 && plan.pad_y == 1,
          "394x390 resized %dx%d at %d,%d", plan.resized_w, plan.resized_h, plan.pad_x, plan.pad_y);
    CHECK(tile_image_tokens(&plan, 196) == 196, "tokens %d", tile_image_tokens(&plan, 196));
    CHECK(tile_plan(394, 390, &llava, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.canvas_w == 768 && plan.canvas_h == 768 && plan.n_images == 5, "394x390 llava: %dx%d, %d images",
          plan.canvas_w, plan.canvas_h, plan.n_images);

    CHECK(tile_plan(380, 393, &relaxed, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.canvas_w == 384 && plan.canvas_h == 384, "380x393 relaxed canvas %dx%d", plan.canvas_w, plan.canvas_h);
    CHECK(tile_plan(380, 393, &llava, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.canvas_w == 384 && plan.canvas_h == 768, "380x393 llava canvas %dx%d", plan.canvas_w, plan.canvas_h);

    CHECK(tile_plan(500, 102, &relaxed, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.canvas_w == 768 && plan.canvas_h == 384 && plan.n_images == 3, "500x102 relaxed: %dx%d, %d images",
          plan.canvas_w, plan.canvas_h, plan.n_images);
    /* scale_w = 768/500 < scale_h = 384/102: new_height = ceil(102 * 1.536) = ceil(156.672) = 157,
     * paste_y = (384 - 157) // 2 = 113 */
    CHECK(plan.resized_w == 768 && plan.resized_h == 157 && plan.pad_x == 0 && plan.pad_y == 113,
          "500x102 resized %dx%d at %d,%d", plan.resized_w, plan.resized_h, plan.pad_x, plan.pad_y);
    internvl.internvl_max_num = 6;
    CHECK(tile_plan(500, 102, &internvl, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.canvas_w == 1920 && plan.canvas_h == 384 && plan.resized_w == 1920 && plan.resized_h == 384 &&
              plan.n_tiles == 5 && plan.has_thumbnail && !plan.thumbnail_first && plan.n_images == 6,
          "500x102 internvl6: canvas %dx%d resized %dx%d tiles %d thumb %d first %d", plan.canvas_w, plan.canvas_h,
          plan.resized_w, plan.resized_h, plan.n_tiles, plan.has_thumbnail, plan.thumbnail_first);
    CHECK(tile_plan(380, 76, &internvl, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.grid_w == 5 && plan.grid_h == 1, "380x76 internvl6 %d:%d (paper: 5:1, 25x the area)", plan.grid_w,
          plan.grid_h);
}

/* ---- planning: agreement with the independent Python reference ------------------------------- */

static void test_plans_match_reference(void) {
    FILE *f = fopen(test_data("tile/plans.txt"), "r");
    CHECK(f != NULL, "cannot open %s", test_data("tile/plans.txt"));
    if (!f) return;
    static const struct {
        TileAlgo algo;
        int param;
        const char *label;
    } cols[6] = {{TILE_RELAXED, 3, "relaxed k3"}, {TILE_RELAXED, 4, "relaxed k4"}, {TILE_LLAVA_NEXT, 3, "llava k3"},
                 {TILE_LLAVA_NEXT, 4, "llava k4"}, {TILE_INTERNVL, 9, "internvl max9"},
                 {TILE_INTERNVL, 6, "internvl max6"}};
    char line[512];
    int n_lines = 0, n_bad = 0, n_fewer_relaxed = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        int w, h, g[6][2], rsz[2][2];
        int got = sscanf(line, "%d %d %d:%d %d:%d %d:%d %d:%d %d:%d %d:%d %d %d %d %d", &w, &h, &g[0][0], &g[0][1],
                         &g[1][0], &g[1][1], &g[2][0], &g[2][1], &g[3][0], &g[3][1], &g[4][0], &g[4][1], &g[5][0],
                         &g[5][1], &rsz[0][0], &rsz[0][1], &rsz[1][0], &rsz[1][1]);
        CHECK(got == 18, "plans.txt: malformed line '%s'", line);
        if (got != 18) break;
        n_lines++;
        int line_bad = 0;
        for (int c = 0; c < 6; c++) {
            TilePolicy p = policy(cols[c].algo, 384, cols[c].param);
            TilePlan plan;
            BlvError err;
            int rc = tile_plan(w, h, &p, &plan, &err);
            int ok = rc == 0 && plan.grid_w == g[c][0] && plan.grid_h == g[c][1];
            /* the resize_and_pad_image sizes, for relaxed k4 and llava k4 */
            int r = c == 1 ? 0 : c == 3 ? 1 : -1;
            if (ok && r >= 0)
                ok = plan.resized_w == rsz[r][0] && plan.resized_h == rsz[r][1] &&
                     plan.pad_x == (plan.canvas_w - rsz[r][0]) / 2 && plan.pad_y == (plan.canvas_h - rsz[r][1]) / 2;
            if (!ok && n_bad < 20)
                CHECK(0, "%dx%d %s: got %d:%d resized %dx%d, reference %d:%d%s", w, h, cols[c].label, plan.grid_w,
                      plan.grid_h, plan.resized_w, plan.resized_h, g[c][0], g[c][1], rc ? err.msg : "");
            line_bad |= !ok;
        }
        n_bad += line_bad;
        if (g[1][0] * g[1][1] < g[3][0] * g[3][1]) n_fewer_relaxed++;
    }
    fclose(f);
    CHECK(n_lines > 3500, "plans.txt has only %d sizes", n_lines);
    CHECK(n_bad == 0, "%d of %d sizes disagree", n_bad, n_lines);
    test_note("%d sizes x 6 policies agree with tools/tile_reference.py; relaxed k4 picks fewer tiles than "
              "LLaVA-NeXT k4 for %d of them", n_lines, n_fewer_relaxed);
}

/* ---- planning: geometry and policy ------------------------------------------------------------ */

static void test_plan_geometry(void) {
    static const int sizes[][2] = {{1, 1}, {1, 8192}, {8192, 1}, {97, 61}, {383, 385}, {1080, 2400}, {8192, 8192},
                                   {5000, 37}, {384, 384}, {769, 767}};
    for (int a = 0; a < 3; a++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            TilePolicy p = tile_policy_default((TileAlgo)a);
            TilePlan plan;
            BlvError err;
            int w = sizes[s][0], h = sizes[s][1];
            CHECK(tile_plan(w, h, &p, &plan, &err) == 0, "%dx%d: %s", w, h, err.msg);
            const char *name = tile_algo_name((TileAlgo)a);
            CHECK(plan.grid_w >= 1 && plan.grid_h >= 1 && plan.canvas_w == 384 * plan.grid_w &&
                      plan.canvas_h == 384 * plan.grid_h && plan.n_tiles == plan.grid_w * plan.grid_h,
                  "%s %dx%d: grid %d:%d canvas %dx%d", name, w, h, plan.grid_w, plan.grid_h, plan.canvas_w, plan.canvas_h);
            /* the resized image lies inside the canvas and touches two opposite sides */
            CHECK(plan.resized_w >= 1 && plan.resized_h >= 1 && plan.pad_x >= 0 && plan.pad_y >= 0 &&
                      plan.pad_x + plan.resized_w <= plan.canvas_w && plan.pad_y + plan.resized_h <= plan.canvas_h &&
                      (plan.resized_w == plan.canvas_w || plan.resized_h == plan.canvas_h),
                  "%s %dx%d: resized %dx%d at %d,%d in %dx%d", name, w, h, plan.resized_w, plan.resized_h, plan.pad_x,
                  plan.pad_y, plan.canvas_w, plan.canvas_h);
            /* centred: the two margins differ by at most one pixel, the extra one at the end */
            int mx = plan.canvas_w - plan.resized_w - plan.pad_x, my = plan.canvas_h - plan.resized_h - plan.pad_y;
            CHECK((mx == plan.pad_x || mx == plan.pad_x + 1) && (my == plan.pad_y || my == plan.pad_y + 1),
                  "%s %dx%d: not centred", name, w, h);
            if (a == TILE_INTERNVL)
                CHECK(plan.resized_w == plan.canvas_w && plan.resized_h == plan.canvas_h, "internvl does not pad");
            /* raster order, covering the canvas */
            for (int t = 0; t < plan.n_tiles; t++) {
                TileRect r = plan.tiles[t];
                CHECK(r.x == (t % plan.grid_w) * 384 && r.y == (t / plan.grid_w) * 384 && r.w == 384 && r.h == 384,
                      "%s %dx%d tile %d at %d,%d", name, w, h, t, r.x, r.y);
            }
            /* thumbnail policy */
            int expect_thumb = a == TILE_LLAVA_NEXT ? 1 : plan.n_tiles > 1;
            CHECK(plan.has_thumbnail == expect_thumb && plan.n_images == plan.n_tiles + expect_thumb &&
                      (!expect_thumb || plan.thumbnail_first == (a != TILE_INTERNVL)),
                  "%s %dx%d: thumbnail %d first %d", name, w, h, plan.has_thumbnail, plan.thumbnail_first);
            CHECK(tile_image_tokens(&plan, 196) == 196 * plan.n_images, "tokens");
        }
    }
    /* the thumbnail is a policy field */
    TilePolicy p = tile_policy_default(TILE_RELAXED);
    TilePlan plan;
    BlvError err;
    p.thumbnail = TILE_THUMB_ALWAYS;
    CHECK(tile_plan(400, 400, &p, &plan, &err) == 0 && plan.n_images == 2 && plan.thumbnail_first, "always");
    p.thumbnail = TILE_THUMB_NONE;
    CHECK(tile_plan(768, 1536, &p, &plan, &err) == 0 && plan.n_images == 8 && !plan.has_thumbnail, "none");
    p.thumbnail = TILE_THUMB_IF_MULTI;
    p.thumbnail_first = 0;
    CHECK(tile_plan(768, 1536, &p, &plan, &err) == 0 && plan.n_images == 9 && !plan.thumbnail_first, "last");
    /* a different tile size and grid limit */
    p = policy(TILE_RELAXED, 224, 6);
    CHECK(tile_plan(1344, 224, &p, &plan, &err) == 0 && plan.grid_w == 6 && plan.grid_h == 1 && plan.canvas_w == 1344,
          "224 tiles, max_grid 6: %d:%d", plan.grid_w, plan.grid_h);
    /* the relaxed fallback: every candidate has Re = 0 -> 1:1 */
    p = tile_policy_default(TILE_RELAXED);
    CHECK(tile_plan(1, 8192, &p, &plan, &err) == 0 && plan.grid_w == 1 && plan.grid_h == 1 && plan.resized_w == 1 &&
              plan.resized_h == 384,
          "1x8192: %d:%d resized %dx%d", plan.grid_w, plan.grid_h, plan.resized_w, plan.resized_h);
    /* alpha = 0 keeps the largest grid whenever Re stays the same (no tie-break on Rw, paper-notes §2.2) */
    p.alpha = 0.0;
    CHECK(tile_plan(100, 100, &p, &plan, &err) == 0 && plan.grid_w == 4 && plan.grid_h == 4, "alpha 0: %d:%d",
          plan.grid_w, plan.grid_h);
}

static void test_algo_names(void) {
    TileAlgo a;
    BlvError err;
    for (int i = 0; i < 3; i++) {
        CHECK(tile_algo_parse(tile_algo_name((TileAlgo)i), &a, &err) == 0 && (int)a == i, "round trip %d", i);
    }
    CHECK(tile_algo_parse("llava_next", &a, &err) == 0 && a == TILE_LLAVA_NEXT, "llava_next");
    CHECK(tile_algo_parse("anyres", &a, &err) == -1 && strstr(err.msg, "anyres"), "unknown name: '%s'", err.msg);
    CHECK(tile_algo_parse(NULL, &a, &err) == -1, "NULL name");
}

static void test_bad_inputs(void) {
    TilePolicy p = tile_policy_default(TILE_RELAXED);
    TilePlan plan;
    BlvError err;
    static const int bad_sizes[][2] = {{0, 10}, {10, 0}, {-1, 10}, {10, -5}, {0, 0}, {TILE_MAX_SIDE + 1, 10}};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        err.msg[0] = 0;
        CHECK(tile_plan(bad_sizes[i][0], bad_sizes[i][1], &p, &plan, &err) == -1 && strstr(err.msg, "image size"),
              "%dx%d: '%s'", bad_sizes[i][0], bad_sizes[i][1], err.msg);
    }
    for (int a = 0; a < 3; a++) {
        p = tile_policy_default((TileAlgo)a);
        p.tile_size = 0;
        CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "tile_size"), "tile_size 0: '%s'", err.msg);
        p.tile_size = -384;
        CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "tile_size"), "negative: '%s'", err.msg);
    }
    for (int a = 0; a < 2; a++) {
        p = tile_policy_default((TileAlgo)a);
        p.max_grid = 0;
        CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "max_grid"), "max_grid 0: '%s'", err.msg);
        p.max_grid = TILE_MAX_GRID + 1;
        CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "max_grid"), "max_grid big: '%s'", err.msg);
    }
    p = tile_policy_default(TILE_INTERNVL);
    p.internvl_max_num = 0;
    CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "max_num"), "max_num 0: '%s'", err.msg);
    p.internvl_max_num = 4;
    p.internvl_min_num = 5;
    CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "min_num"), "min > max: '%s'", err.msg);
    p = tile_policy_default(TILE_RELAXED);
    p.alpha = NAN;
    CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "alpha"), "alpha NaN: '%s'", err.msg);
    p.alpha = -0.1;
    CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "alpha"), "alpha < 0: '%s'", err.msg);
    p = tile_policy_default(TILE_RELAXED);
    p.algo = (TileAlgo)7;
    CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "algorithm"), "algo 7: '%s'", err.msg);
    p = tile_policy_default(TILE_RELAXED);
    p.pillow = (TilePillow)3;
    CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "Pillow"), "pillow 3: '%s'", err.msg);
    p = tile_policy_default(TILE_RELAXED);
    p.thumbnail = (TileThumb)9;
    CHECK(tile_plan(100, 100, &p, &plan, &err) == -1 && strstr(err.msg, "thumbnail"), "thumb 9: '%s'", err.msg);
    CHECK(tile_plan(100, 100, NULL, &plan, &err) == -1, "NULL policy");
    CHECK(tile_plan(100, 100, &p, NULL, &err) == -1, "NULL plan");

    /* resize */
    uint8_t src[4 * 4 * 3] = {0}, dst[4 * 4 * 3];
    CHECK(tile_resize_bicubic(src, 0, 4, dst, 4, 4, &err) == -1 && strstr(err.msg, "source size"), "'%s'", err.msg);
    CHECK(tile_resize_bicubic(src, 4, 4, dst, 4, -1, &err) == -1 && strstr(err.msg, "target size"), "'%s'", err.msg);
    CHECK(tile_resize_bicubic(NULL, 4, 4, dst, 4, 4, &err) == -1, "NULL src");
    CHECK(tile_resize_bicubic(src, 4, 4, NULL, 4, 4, &err) == -1, "NULL dst");
    CHECK(tile_resize_bicubic_pillow(src, 4, 4, dst, 2, 2, (TilePillow)5, &err) == -1 && strstr(err.msg, "Pillow"),
          "'%s'", err.msg);

    /* render: the image must be the plan's */
    p = tile_policy_default(TILE_RELAXED);
    p.tile_size = 4;
    CHECK(tile_plan(4, 4, &p, &plan, &err) == 0, "%s", err.msg);
    float out[3 * 4 * 4];
    const float mean[3] = {0.5f, 0.5f, 0.5f}, bad_std[3] = {0.5f, 0.0f, 0.5f};
    CHECK(tile_render(src, 4, 3, &plan, mean, mean, out, &err) == -1 && strstr(err.msg, "4x3"), "'%s'", err.msg);
    CHECK(tile_render(src, 4, 4, &plan, mean, bad_std, out, &err) == -1 && strstr(err.msg, "channel 1"), "'%s'",
          err.msg);
    CHECK(tile_render(NULL, 4, 4, &plan, mean, mean, out, &err) == -1, "NULL image");
    TilePlan broken = plan;
    broken.n_images = 7;
    CHECK(tile_render(src, 4, 4, &broken, mean, mean, out, &err) == -1 && strstr(err.msg, "plan"), "'%s'", err.msg);
    CHECK(tile_render(src, 4, 4, &plan, mean, mean, out, &err) == 0, "%s", err.msg);
}

/* ---- Pillow-exact resize ---------------------------------------------------------------------- */

/* Every case against Pillow 13 (installed when the data was made), Pillow 12.2..12.x and Pillow <= 12.1. */
static void test_resize_matches_pillow(void) {
    static const struct {
        TilePillow pillow;
        const char *label;
    } versions[3] = {{TILE_PILLOW_13, "Pillow 13"}, {TILE_PILLOW_12_2, "Pillow 12.2+"}, {TILE_PILLOW_12_1, "Pillow <= 12.1"}};
    FILE *f = fopen(test_data("tile/resize_cases.txt"), "r");
    CHECK(f != NULL, "cannot open resize_cases.txt");
    if (!f) return;
    size_t blob_len = 0;
    uint8_t *blob = read_blob("tile/resize_expected.bin", &blob_len);
    char line[512], loaded[256] = "", path[300];
    uint8_t *src = NULL;
    int sw = 0, sh = 0, n_cases = 0, n_exact[3] = {0, 0, 0}, worst[3] = {0, 0, 0}, n_order_matters = 0;
    size_t n_bytes = 0, n_wrong_bytes[3] = {0, 0, 0};
    while (blob && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[256];
        int dw, dh;
        long long off[3];
        if (sscanf(line, "%255s %d %d %lld %lld %lld", name, &dw, &dh, &off[0], &off[1], &off[2]) != 6) {
            CHECK(0, "resize_cases.txt: malformed line '%s'", line);
            break;
        }
        if (strcmp(name, loaded) != 0) {
            free(src);
            snprintf(path, sizeof path, "tile/%s", name);
            src = read_ppm(test_data(path), &sw, &sh);
            snprintf(loaded, sizeof loaded, "%s", name);
            if (!src) break;
        }
        size_t n = (size_t)dw * dh * 3;
        int in_range = 1;
        for (int v = 0; v < 3; v++) in_range &= off[v] >= 0 && (size_t)off[v] + n <= blob_len;
        CHECK(in_range, "%s -> %dx%d: outside resize_expected.bin", name, dw, dh);
        if (!in_range) break;
        n_order_matters += off[1] != off[0] || off[2] != off[0];
        uint8_t *dst = malloc(n);
        for (int v = 0; v < 3; v++) {
            BlvError err;
            int rc = tile_resize_bicubic_pillow(src, sw, sh, dst, dw, dh, versions[v].pillow, &err);
            CHECK(rc == 0, "%s -> %dx%d: %s", name, dw, dh, err.msg);
            if (rc != 0) continue;
            const uint8_t *expect = blob + off[v];
            size_t first_bad;
            int d = max_abs_diff_u8(dst, expect, n, &first_bad);
            size_t wrong = 0;
            for (size_t i = 0; i < n; i++) wrong += dst[i] != expect[i];
            CHECK(d == 0, "%s: %s %dx%d -> %dx%d: max abs diff %d, %zu of %zu bytes differ, first at pixel (%zu, %zu) "
                  "channel %zu", versions[v].label, name, sw, sh, dw, dh, d, wrong, n, first_bad / 3 % (size_t)dw,
                  first_bad / 3 / (size_t)dw, first_bad % 3);
            if (d > worst[v]) worst[v] = d;
            n_exact[v] += d == 0;
            n_wrong_bytes[v] += wrong;
        }
        /* the default entry point is the classic order (Pillow <= 12.1) */
        BlvError err;
        uint8_t *dst2 = malloc(n);
        CHECK(tile_resize_bicubic(src, sw, sh, dst2, dw, dh, &err) == 0 && memcmp(dst2, blob + off[2], n) == 0,
              "tile_resize_bicubic is not Pillow <= 12.1 for %s -> %dx%d", name, dw, dh);
        free(dst2);
        n_bytes += n;
        n_cases++;
        free(dst);
    }
    free(src);
    free(blob);
    fclose(f);
    CHECK(n_cases >= 40, "only %d resize cases", n_cases);
    for (int v = 0; v < 3; v++)
        test_note("%s: %d/%d resize cases byte-identical to Image.resize(BICUBIC); max abs diff %d, %zu of %zu "
                  "bytes differ", versions[v].label, n_exact[v], n_cases, worst[v], n_wrong_bytes[v], n_bytes);
    test_note("the pass order changes the bytes in %d of the %d cases", n_order_matters, n_cases);
}

/* A uniform image stays uniform, and identity sizes copy. */
static void test_resize_simple_properties(void) {
    enum { W = 13, H = 7 };
    uint8_t src[W * H * 3], dst[40 * 40 * 3];
    for (int i = 0; i < W * H; i++) {
        src[i * 3 + 0] = 0;
        src[i * 3 + 1] = 255;
        src[i * 3 + 2] = 77;
    }
    BlvError err;
    static const int sizes[][2] = {{1, 1}, {5, 3}, {13, 7}, {13, 40}, {40, 7}, {40, 40}, {2, 39}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int dw = sizes[s][0], dh = sizes[s][1];
        CHECK(tile_resize_bicubic(src, W, H, dst, dw, dh, &err) == 0, "%s", err.msg);
        int bad = 0;
        for (int i = 0; i < dw * dh; i++) bad += dst[i * 3] != 0 || dst[i * 3 + 1] != 255 || dst[i * 3 + 2] != 77;
        CHECK(bad == 0, "uniform image -> %dx%d: %d pixels changed", dw, dh, bad);
    }
    uint64_t rng = 42;
    for (int i = 0; i < W * H * 3; i++) src[i] = (uint8_t)test_rand_u64(&rng);
    CHECK(tile_resize_bicubic(src, W, H, dst, W, H, &err) == 0 && memcmp(src, dst, sizeof src) == 0, "identity");
}

/* ---- the whole preprocessing against Pillow-built expectations --------------------------------- */

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001B3ull;
    }
    return h;
}

static void test_pipeline_matches_pillow(void) {
    FILE *f = fopen(test_data("tile/pipeline.txt"), "r");
    CHECK(f != NULL, "cannot open pipeline.txt");
    if (!f) return;
    size_t u8_len = 0, f32_len = 0;
    uint8_t *blob_u8 = read_blob("tile/pipeline_u8.bin", &u8_len);
    uint8_t *blob_f32 = read_blob("tile/pipeline_f32.bin", &f32_len);
    const float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.5f, 0.5f, 0.5f};
    char line[1024];
    int n_cases = 0, n_pipeline_failures = 0;
    while (blob_u8 && blob_f32 && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[128], src_name[128], algo_name[32], storage[16];
        int S, param, gw, gh, rw, rh, px, py, n_images;
        long long off = 0;
        int got = sscanf(line, "case %127s %127s %31s %d %d %d %d %d %d %d %d %d %15s %lld", name, src_name, algo_name,
                         &S, &param, &gw, &gh, &rw, &rh, &px, &py, &n_images, storage, &off);
        CHECK(got >= 13, "pipeline.txt: malformed line '%s'", line);
        if (got < 13) break;
        n_cases++;

        char path[300];
        snprintf(path, sizeof path, "tile/%s", src_name);
        int w, h;
        uint8_t *rgb = read_ppm(test_data(path), &w, &h);
        TileAlgo algo;
        BlvError err;
        CHECK(tile_algo_parse(algo_name, &algo, &err) == 0, "%s", err.msg);
        TilePolicy p = policy(algo, S, param);
        p.pillow = TILE_PILLOW_13;  /* the pipeline goldens were built with the installed Pillow 13 */
        TilePlan plan;
        int rc = rgb ? tile_plan(w, h, &p, &plan, &err) : -1;
        CHECK(rc == 0, "%s: %s", name, err.msg);
        if (rc != 0) {
            free(rgb);
            break;
        }
        CHECK(plan.grid_w == gw && plan.grid_h == gh && plan.resized_w == rw && plan.resized_h == rh &&
                  plan.pad_x == px && plan.pad_y == py && plan.n_images == n_images,
              "%s: plan %d:%d resized %dx%d at %d,%d, %d images; Pillow-built %d:%d %dx%d at %d,%d, %d images", name,
              plan.grid_w, plan.grid_h, plan.resized_w, plan.resized_h, plan.pad_x, plan.pad_y, plan.n_images, gw, gh, rw,
              rh, px, py, n_images);
        if (plan.n_images != n_images || plan.grid_w != gw || plan.grid_h != gh) {  /* the data would not line up */
            free(rgb);
            break;
        }
        size_t per_image = (size_t)S * S * 3;
        size_t n_vals = (size_t)plan.n_images * per_image;
        uint8_t *u8 = malloc(n_vals);
        float *fl = malloc(n_vals * sizeof(float));
        CHECK(tile_render_u8(rgb, w, h, &plan, u8, &err) == 0, "%s: %s", name, err.msg);
        CHECK(tile_render(rgb, w, h, &plan, mean, std, fl, &err) == 0, "%s: %s", name, err.msg);

        /* the float output is the normalized byte output, value for value (CHW vs HWC) */
        size_t n_inconsistent = 0;
        for (int i = 0; i < plan.n_images; i++)
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < S; y++)
                    for (int x = 0; x < S; x++) {
                        uint8_t b = u8[(size_t)i * per_image + ((size_t)y * S + x) * 3 + c];
                        float v = fl[(((size_t)i * 3 + c) * S + y) * S + x];
                        n_inconsistent += v != ((float)((double)b * (1.0 / 255.0)) - 0.5f) / 0.5f;
                    }
        CHECK(n_inconsistent == 0, "%s: %zu float values are not the normalized bytes", name, n_inconsistent);

        int n_failed_before = n_pipeline_failures;
        if (strcmp(storage, "u8") == 0) {
            CHECK(off >= 0 && (size_t)off + n_vals <= u8_len, "%s: outside pipeline_u8.bin", name);
            if (off >= 0 && (size_t)off + n_vals <= u8_len) {
                size_t first_bad;
                int d = max_abs_diff_u8(u8, blob_u8 + off, n_vals, &first_bad);
                CHECK(d == 0, "%s: max abs diff %d; first in image %zu at (%zu, %zu)", name, d, first_bad / per_image,
                      first_bad % per_image / 3 % (size_t)S, first_bad % per_image / 3 / (size_t)S);
                n_pipeline_failures += d != 0;
            }
        } else if (strcmp(storage, "f32") == 0) {
            CHECK(off >= 0 && (size_t)off + n_vals * 4 <= f32_len, "%s: outside pipeline_f32.bin", name);
            if (off >= 0 && (size_t)off + n_vals * 4 <= f32_len) {
                double worst = 0;
                for (size_t i = 0; i < n_vals; i++) {
                    float e;
                    memcpy(&e, blob_f32 + off + i * 4, 4);  /* little-endian float32, as written */
                    double d = fabs((double)e - (double)fl[i]);
                    if (d > worst) worst = d;
                }
                CHECK(worst == 0.0, "%s: max abs diff %g against SiglipImageProcessor", name, worst);
                n_pipeline_failures += worst != 0.0;
                test_note("%s: %d images x 3 x %d x %d floats, max abs diff %g against Pillow + SiglipImageProcessor",
                          name, plan.n_images, S, S, worst);
            }
        } else {  /* rowhash: one line per pixel row of each image */
            int n_bad_rows = 0, first_img = -1, first_row = -1;
            for (int i = 0; i < plan.n_images; i++)
                for (int y = 0; y < S; y++) {
                    char hl[64];
                    unsigned long long expect = 0;
                    if (!fgets(hl, sizeof hl, f) || sscanf(hl, "%16llx", &expect) != 1) {
                        CHECK(0, "%s: pipeline.txt ends early", name);
                        i = plan.n_images;
                        break;
                    }
                    uint64_t got_h = fnv1a64(u8 + (size_t)i * per_image + (size_t)y * S * 3, (size_t)S * 3);
                    if (got_h != (uint64_t)expect) {
                        if (n_bad_rows == 0) {
                            first_img = i;
                            first_row = y;
                        }
                        n_bad_rows++;
                    }
                }
            CHECK(n_bad_rows == 0, "%s: %d of %d rows differ from Pillow, first: image %d row %d", name, n_bad_rows,
                  plan.n_images * S, first_img, first_row);
            n_pipeline_failures += n_bad_rows != 0;
        }
        if (n_pipeline_failures == n_failed_before)
            test_note("%s: %dx%d %s S=%d -> %d:%d, %d images, identical to the Pillow-built pipeline", name, w, h,
                  algo_name, S, plan.grid_w, plan.grid_h, plan.n_images);
        free(u8);
        free(fl);
        free(rgb);
    }
    fclose(f);
    free(blob_u8);
    free(blob_f32);
    CHECK(n_cases >= 8, "only %d pipeline cases", n_cases);
}

/* tile_render's normalization equals SiglipImageProcessor's (rescale 1/255 in float64, stored as
 * float32, then (x - mean) / std in float32) for every byte value, for SigLIP's and CLIP's constants. */
static void test_normalize_matches_hf(void) {
    FILE *f = fopen(test_data("tile/normalize.txt"), "r");
    CHECK(f != NULL, "cannot open normalize.txt");
    if (!f) return;
    /* a 16x16 image holding every byte value: plans to one 16x16 tile, resized 16x16 (a copy) */
    uint8_t rgb[16 * 16 * 3];
    for (int i = 0; i < 256; i++) rgb[i * 3 + 0] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = (uint8_t)i;
    TilePolicy p = policy(TILE_RELAXED, 16, 4);
    TilePlan plan;
    BlvError err;
    CHECK(tile_plan(16, 16, &p, &plan, &err) == 0 && plan.n_images == 1 && plan.resized_w == 16, "16x16 plan");
    static char line[16384];
    int n_tables = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "norm ", 5) != 0) continue;
        char label[32];
        float mean[3], std[3];
        if (sscanf(line, "norm %31s %f %f %f %f %f %f", label, &mean[0], &mean[1], &mean[2], &std[0], &std[1],
                   &std[2]) != 7) {
            CHECK(0, "normalize.txt: malformed '%s'", line);
            break;
        }
        float out[3 * 256];
        CHECK(tile_render(rgb, 16, 16, &plan, mean, std, out, &err) == 0, "%s", err.msg);
        double worst = 0;
        for (int c = 0; c < 3; c++) {
            CHECK(fgets(line, sizeof line, f) != NULL, "normalize.txt ends early");
            char *s = line;
            for (int v = 0; v < 256; v++) {
                char *end;
                float e = strtof(s, &end);
                CHECK(end != s, "normalize.txt: %s channel %d has %d values", label, c, v);
                if (end == s) break;
                s = end;
                double d = fabs((double)e - (double)out[c * 256 + v]);
                if (d > worst) worst = d;
            }
        }
        CHECK(worst == 0.0, "%s: max abs diff %g against SiglipImageProcessor", label, worst);
        n_tables++;
    }
    fclose(f);
    CHECK(n_tables == 2, "%d normalization tables", n_tables);
}

void suite_tile(void) {
    RUN_TEST(test_paper_table);
    RUN_TEST(test_paper_examples_geometry);
    RUN_TEST(test_plans_match_reference);
    RUN_TEST(test_plan_geometry);
    RUN_TEST(test_algo_names);
    RUN_TEST(test_bad_inputs);
    RUN_TEST(test_resize_matches_pillow);
    RUN_TEST(test_resize_simple_properties);
    RUN_TEST(test_pipeline_matches_pillow);
    RUN_TEST(test_normalize_matches_hf);
}
