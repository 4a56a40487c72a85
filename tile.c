/* tile.c — slice planning (relaxed aspect ratio matching, LLaVA-NeXT, InternVL 1.5) and the pixel
 * work: Pillow-exact bicubic resize, pad on black, crop, thumbnail, normalize. See tile.h.
 *
 * Every floating-point expression that decides a grid or a size is written in the same operation
 * order as the Python it mirrors (quoted in the comments), in double precision, with C's (int)
 * truncation where Python uses int(): the results are bit-identical to the Python references
 * (tools/tile_reference.py checks thousands of sizes). */
#include "tile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- policy ---------------------------------------------------------------------------------- */

TilePolicy tile_policy_default(TileAlgo algo) {
    TilePolicy p;
    memset(&p, 0, sizeof p);
    p.algo = algo;
    p.tile_size = 384;
    p.max_grid = 4;  /* paper-notes §2.3: {1..4}^2, the only set that gives 2:4 for 768x1536 */
    p.internvl_min_num = 1;
    p.internvl_max_num = 9;
    p.alpha = 0.1;   /* the paper's footnote: "alpha = 0.1 in our implementation" */
    p.pillow = TILE_PILLOW_12_1;  /* the classic order the published models were trained with */
    switch (algo) {
    case TILE_RELAXED:  /* DESIGN.md: thumbnail first, none for a 1:1 grid */
        p.thumbnail = TILE_THUMB_IF_MULTI;
        p.thumbnail_first = 1;
        break;
    case TILE_LLAVA_NEXT:  /* process_anyres_image: [image_original_resize] + patches */
        p.thumbnail = TILE_THUMB_ALWAYS;
        p.thumbnail_first = 1;
        break;
    case TILE_INTERNVL:  /* if use_thumbnail and len(processed_images) != 1: append */
        p.thumbnail = TILE_THUMB_IF_MULTI;
        p.thumbnail_first = 0;
        break;
    }
    return p;
}

const char *tile_algo_name(TileAlgo algo) {
    switch (algo) {
    case TILE_RELAXED: return "relaxed";
    case TILE_LLAVA_NEXT: return "llava-next";
    case TILE_INTERNVL: return "internvl";
    }
    return "unknown";
}

int tile_algo_parse(const char *name, TileAlgo *algo, BlvError *err) {
    if (name && strcmp(name, "relaxed") == 0) *algo = TILE_RELAXED;
    else if (name && (strcmp(name, "llava-next") == 0 || strcmp(name, "llava_next") == 0)) *algo = TILE_LLAVA_NEXT;
    else if (name && strcmp(name, "internvl") == 0) *algo = TILE_INTERNVL;
    else return blv_fail(err, "tile: unknown slicing algorithm '%s' (expected relaxed, llava-next or internvl)",
                         name ? name : "(null)");
    return 0;
}

int tile_policy_check(const TilePolicy *p, BlvError *err) {
    if (!p) return blv_fail(err, "tile: no policy given");
    if (p->tile_size < 1 || p->tile_size > TILE_MAX_SIZE)
        return blv_fail(err, "tile: tile_size %d out of range 1..%d", p->tile_size, TILE_MAX_SIZE);
    if (!(p->thumbnail == TILE_THUMB_NONE || p->thumbnail == TILE_THUMB_ALWAYS || p->thumbnail == TILE_THUMB_IF_MULTI))
        return blv_fail(err, "tile: unknown thumbnail policy %d", (int)p->thumbnail);
    if (!(p->pillow == TILE_PILLOW_13 || p->pillow == TILE_PILLOW_12_2 || p->pillow == TILE_PILLOW_12_1))
        return blv_fail(err, "tile: unknown Pillow version code %d", (int)p->pillow);
    switch (p->algo) {
    case TILE_RELAXED:
    case TILE_LLAVA_NEXT:
        if (p->algo == TILE_RELAXED && !(p->alpha >= 0.0 && p->alpha < 1.0))  /* also rejects NaN */
            return blv_fail(err, "tile: relaxed alpha %g out of range [0, 1)", p->alpha);
        if (p->max_grid < 1 || p->max_grid > TILE_MAX_GRID)
            return blv_fail(err, "tile: max_grid %d out of range 1..%d", p->max_grid, TILE_MAX_GRID);
        return 0;
    case TILE_INTERNVL:
        if (p->internvl_min_num < 1 || p->internvl_max_num < p->internvl_min_num ||
            p->internvl_max_num > TILE_MAX_TILES)
            return blv_fail(err, "tile: InternVL min_num %d / max_num %d invalid (need 1 <= min_num <= max_num <= %d)",
                            p->internvl_min_num, p->internvl_max_num, TILE_MAX_TILES);
        return 0;
    }
    return blv_fail(err, "tile: unknown slicing algorithm %d", (int)p->algo);
}

/* ---- grid selection ------------------------------------------------------------------------ */

/* R_e and R_w of an original_width x original_height image in a width x height canvas.
 * LLaVA-NeXT select_best_resolution (and the paper's Algorithm 1, which reuses it):
 *   scale = min(width / original_width, height / original_height)
 *   downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
 *   effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
 *   wasted_resolution = (width * height) - effective_resolution */
static void effective_resolution(int original_width, int original_height, int width, int height,
                                 int64_t *effective, int64_t *wasted) {
    double scale_w = (double)width / original_width;
    double scale_h = (double)height / original_height;
    double scale = scale_h < scale_w ? scale_h : scale_w;  /* Python min(): the first on a tie */
    int64_t downscaled_width = (int64_t)((double)original_width * scale);
    int64_t downscaled_height = (int64_t)((double)original_height * scale);
    int64_t area = (int64_t)original_width * original_height;
    int64_t e = downscaled_width * downscaled_height;
    *effective = e < area ? e : area;
    *wasted = (int64_t)width * height - *effective;
}

/* The paper's Algorithm 1 (appendix §7), paper-notes §2.2. Candidates m,n in 1..max_grid in
 * lexicographic DESCENDING (m,n) order: 4:4, 4:3, ..., 4:1, 3:4, ..., 1:1. The paper says only
 * "descending"; the sort key does not change any selection (paper-notes §2.3, and
 * tools/tile_reference.py re-checks it), the direction does. */
static void select_relaxed(int w0, int h0, const TilePolicy *p, int *gm, int *gn, int64_t *re_out, int64_t *rw_out) {
    const int S = p->tile_size;
    const double alpha = p->alpha;
    int64_t re_max = 0;            /* ReMax = 0 */
    int64_t rw_min = INT64_MAX;    /* RwMin = +inf (every R_w is far below INT64_MAX) */
    int best_m = 0, best_n = 0;    /* best = NONE */
    for (int m = p->max_grid; m >= 1; m--) {
        for (int n = p->max_grid; n >= 1; n--) {
            int64_t re, rw;
            effective_resolution(w0, h0, S * m, S * n, &re, &rw);
            /* eq. (1): (Re - ReMax) > alpha * ReMax            -- more than 10% more effective res.
             * eq. (2): (ReMax - Re) < alpha * ReMax and Rw < RwMin -- within 10%, and less waste.
             * Python compares an int with a float exactly; these ints are far below 2^53, so the
             * conversions to double are exact too. */
            double margin = alpha * (double)re_max;
            if ((double)(re - re_max) > margin || ((double)(re_max - re) < margin && rw < rw_min)) {
                re_max = re;   /* eq. (3) */
                rw_min = rw;
                best_m = m;
                best_n = n;
            }
        }
    }
    if (best_m == 0) {
        /* Every candidate had R_e = 0: the short side of the image scales to under one pixel in
         * every grid (e.g. 1x8192 with max_grid 4). The pseudocode leaves best = NONE; bluelmv
         * takes 1:1, the grid with the least waste (LLaVA-NeXT's tie rule picks the same). */
        best_m = best_n = 1;
        effective_resolution(w0, h0, S, S, &re_max, &rw_min);
    }
    *gm = best_m;
    *gn = best_n;
    *re_out = re_max;
    *rw_out = rw_min;
}

/* LLaVA-NeXT select_best_resolution over the grids (i*S, j*S), in the list order of LLaVA's
 * "(1x1),...,(kxk)" pinpoints: i (width) ascending, then j (height) ascending. */
static void select_llava_next(int w0, int h0, const TilePolicy *p, int *gm, int *gn, int64_t *re_out, int64_t *rw_out) {
    const int S = p->tile_size;
    int64_t max_effective_resolution = 0;
    int64_t min_wasted_resolution = INT64_MAX;  /* float("inf") */
    int best_m = 0, best_n = 0;
    for (int m = 1; m <= p->max_grid; m++) {
        for (int n = 1; n <= p->max_grid; n++) {
            int64_t re, rw;
            effective_resolution(w0, h0, S * m, S * n, &re, &rw);
            /* if effective_resolution > max_effective_resolution or (effective_resolution ==
             *     max_effective_resolution and wasted_resolution < min_wasted_resolution): */
            if (re > max_effective_resolution || (re == max_effective_resolution && rw < min_wasted_resolution)) {
                max_effective_resolution = re;
                min_wasted_resolution = rw;
                best_m = m;
                best_n = n;
            }
        }
    }
    *gm = best_m;  /* always set: the first candidate passes the tie branch at worst */
    *gn = best_n;
    *re_out = max_effective_resolution;
    *rw_out = min_wasted_resolution;
}

/* InternVL 1.5 dynamic_preprocess + find_closest_aspect_ratio. The candidates are all (i, j) with
 * min_num <= i*j <= max_num, "sorted(target_ratios, key=lambda x: x[0] * x[1])". Within one area
 * Python's order comes from a set; we use i ascending. That order could only matter on an exact
 * tie between two different ratios of the same area that are both the closest, which does not
 * happen for max_num 6, 9 or 12 (tools/tile_reference.py checks every such midpoint). */
static void select_internvl(int w0, int h0, const TilePolicy *p, int *gm, int *gn) {
    const int S = p->tile_size;
    double aspect_ratio = (double)w0 / h0;          /* aspect_ratio = orig_width / orig_height */
    double best_ratio_diff = INFINITY;              /* best_ratio_diff = float('inf') */
    int best_i = 1, best_j = 1;                     /* best_ratio = (1, 1) */
    int64_t area = (int64_t)w0 * h0;                /* area = width * height */
    for (int blocks = p->internvl_min_num; blocks <= p->internvl_max_num; blocks++) {
        for (int i = 1; i <= blocks; i++) {
            if (blocks % i != 0) continue;
            int j = blocks / i;
            double target_aspect_ratio = (double)i / j;          /* ratio[0] / ratio[1] */
            double ratio_diff = fabs(aspect_ratio - target_aspect_ratio);
            if (ratio_diff < best_ratio_diff) {
                best_ratio_diff = ratio_diff;
                best_i = i;
                best_j = j;
            } else if (ratio_diff == best_ratio_diff) {
                /* if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]: best_ratio = ratio */
                if ((double)area > 0.5 * S * S * i * j) {
                    best_i = i;
                    best_j = j;
                }
            }
        }
    }
    *gm = best_i;
    *gn = best_j;
}

/* LLaVA-NeXT resize_and_pad_image: the aspect-preserving size inside the target and its offset.
 *   scale_w = target_width / original_width;  scale_h = target_height / original_height
 *   if scale_w < scale_h: new_width = target_width
 *                         new_height = min(math.ceil(original_height * scale_w), target_height)
 *   else:                 new_height = target_height
 *                         new_width = min(math.ceil(original_width * scale_h), target_width)
 *   paste_x = (target_width - new_width) // 2;  paste_y = (target_height - new_height) // 2 */
static void resize_and_pad_geometry(int original_width, int original_height, int target_width, int target_height,
                                    int *new_width, int *new_height, int *paste_x, int *paste_y) {
    double scale_w = (double)target_width / original_width;
    double scale_h = (double)target_height / original_height;
    int nw, nh;
    if (scale_w < scale_h) {
        nw = target_width;
        double c = ceil((double)original_height * scale_w);
        nh = c < (double)target_height ? (int)c : target_height;
    } else {
        nh = target_height;
        double c = ceil((double)original_width * scale_h);
        nw = c < (double)target_width ? (int)c : target_width;
    }
    *new_width = nw;
    *new_height = nh;
    *paste_x = (target_width - nw) / 2;  /* both differences are >= 0, so / is Python's // */
    *paste_y = (target_height - nh) / 2;
}

int tile_plan(int width, int height, const TilePolicy *p, TilePlan *out, BlvError *err) {
    if (!out) return blv_fail(err, "tile: no output plan given");
    memset(out, 0, sizeof *out);
    if (tile_policy_check(p, err) != 0) return -1;
    if (width < 1 || height < 1 || width > TILE_MAX_SIDE || height > TILE_MAX_SIDE)
        return blv_fail(err, "tile: image size %dx%d out of range 1..%d", width, height, TILE_MAX_SIDE);

    const int S = p->tile_size;
    int m = 1, n = 1;
    int64_t re = 0, rw = 0;
    switch (p->algo) {
    case TILE_RELAXED: select_relaxed(width, height, p, &m, &n, &re, &rw); break;
    case TILE_LLAVA_NEXT: select_llava_next(width, height, p, &m, &n, &re, &rw); break;
    case TILE_INTERNVL:
        select_internvl(width, height, p, &m, &n);
        effective_resolution(width, height, S * m, S * n, &re, &rw);  /* reported only */
        break;
    }
    if ((int64_t)m * n > TILE_MAX_TILES) return blv_fail(err, "tile: grid %d:%d has too many tiles", m, n);

    out->algo = p->algo;
    out->tile_size = S;
    out->src_w = width;
    out->src_h = height;
    out->grid_w = m;
    out->grid_h = n;
    out->canvas_w = S * m;
    out->canvas_h = S * n;
    out->effective_res = re;
    out->wasted_res = rw;
    if (p->algo == TILE_INTERNVL) {
        /* resized_img = image.resize((target_width, target_height)): no aspect preservation, no pad */
        out->resized_w = out->canvas_w;
        out->resized_h = out->canvas_h;
    } else {
        resize_and_pad_geometry(width, height, out->canvas_w, out->canvas_h, &out->resized_w, &out->resized_h,
                                &out->pad_x, &out->pad_y);
    }

    /* Local tiles in raster order (LLaVA-NeXT divide_to_patches: for i in range(0, height, S):
     * for j in range(0, width, S); InternVL: box = (i % cols * S, i // cols * S, ...)). */
    out->n_tiles = m * n;
    for (int ty = 0; ty < n; ty++)
        for (int tx = 0; tx < m; tx++) out->tiles[ty * m + tx] = (TileRect){tx * S, ty * S, S, S};

    out->has_thumbnail = p->thumbnail == TILE_THUMB_ALWAYS || (p->thumbnail == TILE_THUMB_IF_MULTI && m * n > 1);
    out->thumbnail_first = out->has_thumbnail ? (p->thumbnail_first != 0) : 0;
    out->n_images = out->n_tiles + out->has_thumbnail;
    out->pillow = p->pillow;
    return 0;
}

int tile_image_tokens(const TilePlan *plan, int tokens_per_tile) { return plan->n_images * tokens_per_tile; }

/* ---- Pillow bicubic resampling ---------------------------------------------------------------
 * Mirrors Pillow's src/libImaging/Resample.c (ImagingResample with BICUBIC, 8 bits per channel):
 * the same filter, support, bounds rounding, normalization, fixed-point conversion, clipping and
 * pass skipping, and the pass order of the chosen Pillow version (tile.h, TilePillow), so the output
 * bytes are Pillow's. Written with the same operation order as Pillow's double-precision code: the
 * coefficients must round the same way (build without -ffast-math). */

/* Pillow: #define PRECISION_BITS (32 - 8 - 2) -- 8 bits of result, 2 bits of headroom for the
 * negative lobes and sums above 1. */
enum { PRECISION_BITS = 32 - 8 - 2 };

/* Pillow bicubic_filter, a = -0.5 (Keys' kernel), support 2. The expressions keep Pillow's
 * operation order: the coefficients must round the same way. */
static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Pillow clip8: clip8_lookups[in >> PRECISION_BITS], a table that maps every negative index to 0
 * and every index above 255 to 255. */
static uint8_t clip8(int32_t in) {
    if (in < 0) return 0;
    int32_t v = in >> PRECISION_BITS;
    return (uint8_t)(v > 255 ? 255 : v);
}

/* The filter of one resampling pass: output pixel xx reads `count[xx]` input pixels starting at
 * `first[xx]`, weighted by coeffs[xx * ksize + 0 .. count-1] (22-bit fixed point). */
typedef struct {
    int out_size;
    int ksize;
    int *first;       /* (out_size) */
    int *count;       /* (out_size) */
    int32_t *coeffs;  /* (out_size, ksize) */
} ResampleFilter;

static void resample_filter_free(ResampleFilter *f) {
    free(f->first);
    free(f->count);
    free(f->coeffs);
    memset(f, 0, sizeof *f);
}

/* Pillow precompute_coeffs(inSize, in0 = 0, in1 = inSize, outSize, &BICUBIC) followed by
 * normalize_coeffs_8bpc. */
static int resample_filter_init(ResampleFilter *f, int in_size, int out_size, BlvError *err) {
    memset(f, 0, sizeof *f);
    /* filterscale = scale = (double)(in1 - in0) / outSize;  if (filterscale < 1.0) filterscale = 1.0;
     * (in0, in1 are floats 0 and inSize: exact for sizes below 2^24) */
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;            /* support = filterp->support * filterscale */
    int ksize = (int)ceil(support) * 2 + 1;        /* maximum number of coeffs */
    f->out_size = out_size;
    f->ksize = ksize;
    f->first = blv_malloc((size_t)out_size * sizeof(int), "resize bounds", err);
    f->count = blv_malloc((size_t)out_size * sizeof(int), "resize bounds", err);
    f->coeffs = blv_malloc((size_t)out_size * (size_t)ksize * sizeof(int32_t), "resize coefficients", err);
    double *k = blv_malloc((size_t)ksize * sizeof(double), "resize coefficients", err);
    if (!f->first || !f->count || !f->coeffs || !k) {
        free(k);
        resample_filter_free(f);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = 0.0 + (xx + 0.5) * scale;  /* center = in0 + (xx + 0.5) * scale */
        double ww = 0.0;
        double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);   /* "Round the value" (truncation, as in C) */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double w = bicubic_filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        /* normalize_coeffs_8bpc: round half away from zero to 22-bit fixed point */
        int32_t *kk = f->coeffs + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? k[x] : 0.0;
            kk[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS)) : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        f->first[xx] = xmin;
        f->count[xx] = xmax;
    }
    free(k);
    return 0;
}

/* Pillow ImagingResampleHorizontal_8bpc, 3 bands. Output row r (of `rows`) filters source row
 * row0 + r; output pixel xx reads source pixels f->first[xx] - x_shift + 0 .. count-1 (x_shift is
 * nonzero when the source is a strip cut from a wider image by a vertical first pass). */
static void resample_horizontal(const uint8_t *src, int src_w, int row0, int rows, int x_shift, uint8_t *dst,
                                const ResampleFilter *f) {
    int dw = f->out_size;
    for (int yy = 0; yy < rows; yy++) {
        const uint8_t *in = src + (size_t)(yy + row0) * src_w * 3;
        uint8_t *o = dst + (size_t)yy * dw * 3;
        for (int xx = 0; xx < dw; xx++) {
            int xmin = f->first[xx] - x_shift, xmax = f->count[xx];
            const int32_t *k = f->coeffs + (size_t)xx * f->ksize;
            int32_t ss0 = 1 << (PRECISION_BITS - 1), ss1 = ss0, ss2 = ss0;  /* rounding offset */
            for (int x = 0; x < xmax; x++) {
                const uint8_t *px = in + (size_t)(x + xmin) * 3;
                ss0 += px[0] * k[x];
                ss1 += px[1] * k[x];
                ss2 += px[2] * k[x];
            }
            o[xx * 3 + 0] = clip8(ss0);
            o[xx * 3 + 1] = clip8(ss1);
            o[xx * 3 + 2] = clip8(ss2);
        }
    }
}

/* Pillow ImagingResampleVertical_8bpc, 3 bands. Output (yy, xx), for xx in 0..cols-1, filters
 * source column col0 + xx over source rows f->first[yy] - y_shift + 0 .. count-1 (y_shift is
 * Pillow's "Shift bounds for vertical pass" when the source is the horizontally resampled strip). */
static void resample_vertical(const uint8_t *src, int src_w, int col0, int cols, int y_shift, uint8_t *dst,
                              const ResampleFilter *f) {
    for (int yy = 0; yy < f->out_size; yy++) {
        int ymin = f->first[yy] - y_shift, ymax = f->count[yy];
        const int32_t *k = f->coeffs + (size_t)yy * f->ksize;
        uint8_t *o = dst + (size_t)yy * cols * 3;
        for (int xx = 0; xx < cols; xx++) {
            int32_t ss0 = 1 << (PRECISION_BITS - 1), ss1 = ss0, ss2 = ss0;
            for (int y = 0; y < ymax; y++) {
                const uint8_t *px = src + ((size_t)(y + ymin) * src_w + col0 + xx) * 3;
                ss0 += px[0] * k[y];
                ss1 += px[1] * k[y];
                ss2 += px[2] * k[y];
            }
            o[xx * 3 + 0] = clip8(ss0);
            o[xx * 3 + 1] = clip8(ss1);
            o[xx * 3 + 2] = clip8(ss2);
        }
    }
}

/* Whether the given Pillow runs the vertical pass first when both passes are needed. */
static int pillow_vertical_first(int sw, int sh, int dw, int dh, TilePillow pillow) {
    switch (pillow) {
    case TILE_PILLOW_13:  /* measured: height shrinks by more than twice the width's pixels */
        return dh < sh && (int64_t)sh - dh > 2 * ((int64_t)sw - dw);
    case TILE_PILLOW_12_2:  /* Image.resize: if self.size[1] > self.size[0] * 100 and size[1] < self.size[1] */
        return (int64_t)sh > (int64_t)sw * 100 && dh < sh;
    case TILE_PILLOW_12_1:
        return 0;
    }
    return 0;
}

int tile_resize_bicubic_pillow(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh, TilePillow pillow,
                               BlvError *err) {
    if (!src || !dst) return blv_fail(err, "tile: resize: no %s buffer", src ? "destination" : "source");
    if (sw < 1 || sh < 1 || sw > TILE_MAX_SIDE || sh > TILE_MAX_SIDE)
        return blv_fail(err, "tile: resize: source size %dx%d out of range 1..%d", sw, sh, TILE_MAX_SIDE);
    if (dw < 1 || dh < 1 || dw > TILE_MAX_SIDE || dh > TILE_MAX_SIDE)
        return blv_fail(err, "tile: resize: target size %dx%d out of range 1..%d", dw, dh, TILE_MAX_SIDE);
    if (!(pillow == TILE_PILLOW_13 || pillow == TILE_PILLOW_12_2 || pillow == TILE_PILLOW_12_1))
        return blv_fail(err, "tile: resize: unknown Pillow version code %d", (int)pillow);

    /* Image.resize: "if self.size == size and box == (0, 0) + self.size: return self.copy()" */
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * 3);
        return 0;
    }
    /* ImagingResampleInner: need_horizontal = xsize != imIn->xsize || box[0] || box[2] != xsize,
     * which for the default box (0, 0, sw, sh) is dw != sw; likewise vertical. */
    int need_horizontal = dw != sw;
    int need_vertical = dh != sh;

    ResampleFilter horiz, vert;
    memset(&horiz, 0, sizeof horiz);
    memset(&vert, 0, sizeof vert);
    if ((need_horizontal && resample_filter_init(&horiz, sw, dw, err) != 0) ||
        (need_vertical && resample_filter_init(&vert, sh, dh, err) != 0)) {
        resample_filter_free(&horiz);
        return blv_fail_prefix(err, "tile: resize");
    }
    uint8_t *tmp = NULL;
    if (!need_vertical) {
        resample_horizontal(src, sw, 0, sh, 0, dst, &horiz);
    } else if (!need_horizontal) {
        resample_vertical(src, sw, 0, sw, 0, dst, &vert);
    } else if (!pillow_vertical_first(sw, sh, dw, dh, pillow)) {
        /* Horizontal first, over only the source rows the vertical pass reads
         * (ybox_first = bounds_vert[0]; ybox_last = bounds_vert[last] + count[last]), into an 8-bit
         * intermediate image. */
        int ybox_first = vert.first[0];
        int ybox_last = vert.first[dh - 1] + vert.count[dh - 1];
        tmp = blv_malloc((size_t)dw * (size_t)(ybox_last - ybox_first) * 3, "resize intermediate image", err);
        if (tmp) {
            resample_horizontal(src, sw, ybox_first, ybox_last - ybox_first, 0, tmp, &horiz);
            resample_vertical(tmp, dw, 0, dw, ybox_first, dst, &vert);
        }
    } else {
        /* Vertical first, the mirror image: over only the source columns the horizontal pass reads. */
        int xbox_first = horiz.first[0];
        int xbox_last = horiz.first[dw - 1] + horiz.count[dw - 1];
        tmp = blv_malloc((size_t)(xbox_last - xbox_first) * (size_t)dh * 3, "resize intermediate image", err);
        if (tmp) {
            resample_vertical(src, sw, xbox_first, xbox_last - xbox_first, 0, tmp, &vert);
            resample_horizontal(tmp, xbox_last - xbox_first, 0, dh, xbox_first, dst, &horiz);
        }
    }
    int failed = need_vertical && need_horizontal && !tmp;
    free(tmp);
    resample_filter_free(&horiz);
    resample_filter_free(&vert);
    return failed ? blv_fail_prefix(err, "tile: resize") : 0;
}

int tile_resize_bicubic(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh, BlvError *err) {
    return tile_resize_bicubic_pillow(src, sw, sh, dst, dw, dh, TILE_PILLOW_12_1, err);
}

/* ---- rendering ------------------------------------------------------------------------------ */

static int check_render_args(const uint8_t *rgb, int w, int h, const TilePlan *plan, BlvError *err) {
    if (!plan) return blv_fail(err, "tile: render: no plan given");
    if (!rgb) return blv_fail(err, "tile: render: no image given");
    if (w != plan->src_w || h != plan->src_h)
        return blv_fail(err, "tile: render: image is %dx%d but the plan is for %dx%d", w, h, plan->src_w, plan->src_h);
    if (plan->tile_size < 1 || plan->n_tiles < 1 || plan->n_tiles > TILE_MAX_TILES ||
        plan->n_images != plan->n_tiles + (plan->has_thumbnail != 0) || plan->resized_w < 1 || plan->resized_h < 1)
        return blv_fail(err, "tile: render: the plan is not one tile_plan() made");
    return 0;
}

/* Writes image `img` (an S x S RGB8 picture given as a pixel callback's result) either as RGB8 HWC
 * into out_u8 or as normalized float CHW into out_f. */
typedef struct {
    int S;
    uint8_t *out_u8;   /* [n_images][S][S][3] or NULL */
    float *out_f;      /* [n_images][3][S][S] or NULL */
    float lut[3][256]; /* normalized value of each byte, per channel */
} RenderOut;

static void put_pixel(RenderOut *o, int img, int y, int x, const uint8_t *px) {
    size_t S = (size_t)o->S;
    if (o->out_u8) {
        uint8_t *d = o->out_u8 + (((size_t)img * S + y) * S + x) * 3;
        d[0] = px[0];
        d[1] = px[1];
        d[2] = px[2];
    }
    if (o->out_f) {
        for (int c = 0; c < 3; c++) o->out_f[(((size_t)img * 3 + c) * S + y) * S + x] = o->lut[c][px[c]];
    }
}

/* The thumbnail: a direct S x S resize of the whole image. */
static void put_thumbnail(RenderOut *o, int img, const uint8_t *thumb) {
    for (int y = 0; y < o->S; y++)
        for (int x = 0; x < o->S; x++) put_pixel(o, img, y, x, thumb + ((size_t)y * o->S + x) * 3);
}

/* A local tile: its rectangle of the canvas, where the resized image sits at (pad_x, pad_y) on
 * black. LLaVA-NeXT: new_image = Image.new("RGB", (target_width, target_height), (0, 0, 0));
 * new_image.paste(resized_image, (paste_x, paste_y)); then image.crop(box). */
static void put_tile(RenderOut *o, int img, const TilePlan *plan, const TileRect *r, const uint8_t *resized) {
    static const uint8_t black[3] = {0, 0, 0};
    for (int y = 0; y < r->h; y++) {
        int ry = r->y + y - plan->pad_y;
        for (int x = 0; x < r->w; x++) {
            int rx = r->x + x - plan->pad_x;
            int inside = ry >= 0 && ry < plan->resized_h && rx >= 0 && rx < plan->resized_w;
            put_pixel(o, img, y, x, inside ? resized + ((size_t)ry * plan->resized_w + rx) * 3 : black);
        }
    }
}

static int render(const uint8_t *rgb, int w, int h, const TilePlan *plan, RenderOut *o, BlvError *err) {
    const int S = plan->tile_size;
    uint8_t *thumb = NULL;
    uint8_t *resized = blv_malloc((size_t)plan->resized_w * plan->resized_h * 3, "resized image", err);
    if (!resized) return blv_fail_prefix(err, "tile: render");
    if (plan->has_thumbnail) {
        thumb = blv_malloc((size_t)S * S * 3, "thumbnail", err);
        if (!thumb || tile_resize_bicubic_pillow(rgb, w, h, thumb, S, S, plan->pillow, err) != 0) {
            free(thumb);
            free(resized);
            return blv_fail_prefix(err, "tile: render: thumbnail");
        }
    }
    if (tile_resize_bicubic_pillow(rgb, w, h, resized, plan->resized_w, plan->resized_h, plan->pillow, err) != 0) {
        free(thumb);
        free(resized);
        return blv_fail_prefix(err, "tile: render");
    }
    int img = 0;
    if (plan->has_thumbnail && plan->thumbnail_first) put_thumbnail(o, img++, thumb);
    for (int t = 0; t < plan->n_tiles; t++) put_tile(o, img++, plan, &plan->tiles[t], resized);
    if (plan->has_thumbnail && !plan->thumbnail_first) put_thumbnail(o, img++, thumb);
    free(thumb);
    free(resized);
    return 0;
}

int tile_render(const uint8_t *rgb, int w, int h, const TilePlan *plan, const float mean[3], const float std[3],
                float *out, BlvError *err) {
    if (check_render_args(rgb, w, h, plan, err) != 0) return -1;
    if (!out || !mean || !std) return blv_fail(err, "tile: render: no output or normalization given");
    RenderOut o;
    memset(&o, 0, sizeof o);
    o.S = plan->tile_size;
    o.out_f = out;
    for (int c = 0; c < 3; c++) {
        if (!(std[c] != 0.0f) || !isfinite(std[c]) || !isfinite(mean[c]))
            return blv_fail(err, "tile: render: bad normalization for channel %d (mean %g, std %g)", c, mean[c], std[c]);
        /* As the Hugging Face image processors do it: rescale = image.astype(float64) * (1/255),
         * stored as float32; normalize = (image - mean) / std in float32. */
        for (int v = 0; v < 256; v++) {
            float x = (float)((double)v * (1.0 / 255.0));
            o.lut[c][v] = (x - mean[c]) / std[c];
        }
    }
    return render(rgb, w, h, plan, &o, err);
}

int tile_render_u8(const uint8_t *rgb, int w, int h, const TilePlan *plan, uint8_t *out, BlvError *err) {
    if (check_render_args(rgb, w, h, plan, err) != 0) return -1;
    if (!out) return blv_fail(err, "tile: render: no output given");
    RenderOut o;
    memset(&o, 0, sizeof o);
    o.S = plan->tile_size;
    o.out_u8 = out;
    return render(rgb, w, h, plan, &o, err);
}
