/* tile.h — dynamic-resolution slicing: which grid an image gets, and the pixels of its tiles.
 *
 * Two separate steps (DESIGN.md §Data flow):
 *   1. tile_plan(): a pure function of (width, height, policy) that returns every coordinate —
 *      the grid m:n, the canvas, the aspect-preserving resize inside it, the padding, the tile
 *      rectangles and whether a thumbnail is added. No pixel is touched, so the image-token count
 *      (tile_image_tokens) is known before decoding the image.
 *   2. tile_render(): resizes (Pillow-exact bicubic), pads on black, crops, adds the thumbnail and
 *      normalizes to float CHW, in the order the plan gives.
 *
 * Three grid-selection algorithms (docs/paper-notes.md §2):
 *   TILE_RELAXED     BlueLM-V-3B's relaxed aspect ratio matching (the paper's Algorithm 1):
 *                    candidates m,n in 1..max_grid scanned in lexicographic DESCENDING (m,n) order,
 *                    accept a candidate with >alpha more effective resolution, or within alpha of
 *                    it with less waste. Canvas geometry as LLaVA-NeXT's resize_and_pad_image.
 *   TILE_LLAVA_NEXT  LLaVA-NeXT select_best_resolution over the same grids (ascending list order),
 *                    resize_and_pad_image, thumbnail first.
 *   TILE_INTERNVL    InternVL 1.5 dynamic_preprocess: the closest aspect ratio i/j with
 *                    min_num <= i*j <= max_num, a direct (distorting) resize, thumbnail last.
 *
 * A grid m:n is m tiles across (width multiplier) and n tiles down (height multiplier). */
#ifndef BLUELMV_TILE_H
#define BLUELMV_TILE_H

#include <stdint.h>

#include "util.h"

#define TILE_MAX_GRID 12    /* largest grid side accepted in a policy */
#define TILE_MAX_TILES 144  /* largest m*n accepted (12x12, or InternVL's max_num up to 144) */
#define TILE_MAX_SIDE 65536 /* largest image width or height accepted */
#define TILE_MAX_SIZE 4096  /* largest tile_size accepted */

typedef enum { TILE_RELAXED = 0, TILE_LLAVA_NEXT = 1, TILE_INTERNVL = 2 } TileAlgo;

typedef enum {
    TILE_THUMB_NONE = 0,     /* never add a thumbnail */
    TILE_THUMB_ALWAYS = 1,   /* always (LLaVA-NeXT, even for 1:1) */
    TILE_THUMB_IF_MULTI = 2, /* only when there is more than one tile (InternVL; bluelmv's relaxed default) */
} TileThumb;

/* Which Pillow's bicubic resize to reproduce byte for byte. All share the filter and the fixed-point
 * arithmetic; they differ only in the order of the two passes when both axes change:
 *   TILE_PILLOW_13    Pillow >= 13 (python-pillow/Pillow#9549): the vertical pass goes first when
 *                     the height shrinks by more than twice as many pixels as the width does,
 *                     dh < sh && sh - dh > 2 * (sw - dw)  (measured against Pillow 13.0.0 on ~5000
 *                     sizes where the order matters; tools/check_pillow_pass_order.py re-checks it).
 *   TILE_PILLOW_12_2  Pillow 12.2 .. 12.x (#9524, in Image.resize): vertical first only when
 *                     sh > 100 * sw && dh < sh.
 *   TILE_PILLOW_12_1  Pillow <= 12.1, what the published LLaVA-NeXT / InternVL / VILA models were
 *                     trained with: always horizontal first.
 * The results differ by a few levels at most, on tall images that shrink (phone screenshots). */
typedef enum { TILE_PILLOW_13 = 0, TILE_PILLOW_12_2 = 1, TILE_PILLOW_12_1 = 2 } TilePillow;

typedef struct {
    TileAlgo algo;
    int tile_size;        /* S, the side of a square tile in pixels (384 for SigLIP-so400m) */
    int max_grid;         /* relaxed, llava-next: candidate grids m,n in 1..max_grid (default 4) */
    int internvl_min_num; /* internvl: min_num <= i*j <= max_num (defaults 1 and 9) */
    int internvl_max_num;
    double alpha;         /* relaxed: the margin of the paper's eq. (1)/(2) (0.1) */
    TileThumb thumbnail;  /* when to add the global patch: a direct S x S resize of the whole image */
    int thumbnail_first;  /* 1: the thumbnail precedes the tiles (LLaVA-NeXT), 0: it follows (InternVL) */
    TilePillow pillow;    /* the Pillow whose resize tile_render reproduces (default TILE_PILLOW_12_1) */
} TilePolicy;

typedef struct {
    int x, y, w, h;
} TileRect;

typedef struct {
    TileAlgo algo;
    int tile_size;               /* S */
    int src_w, src_h;            /* the image the plan is for */
    int grid_w, grid_h;          /* m (tiles across), n (tiles down) */
    int canvas_w, canvas_h;      /* S*m x S*n */
    int resized_w, resized_h;    /* the resized image inside the canvas: aspect-preserving (relaxed,
                                    llava-next: resize_and_pad_image) or the whole canvas (internvl) */
    int pad_x, pad_y;            /* where the resized image sits in the canvas; the rest is black */
    int64_t effective_res;       /* R_e and R_w of the chosen grid (paper-notes §2.1), for reports */
    int64_t wasted_res;
    int has_thumbnail;
    int thumbnail_first;         /* meaningful when has_thumbnail */
    int n_tiles;                 /* m*n local tiles */
    int n_images;                /* n_tiles + has_thumbnail: the S x S images the ViT encodes */
    TilePillow pillow;           /* copied from the policy, used by tile_render */
    TileRect tiles[TILE_MAX_TILES]; /* canvas rectangles of the local tiles, raster order */
} TilePlan;

/* The default policy of each algorithm: S = 384, max_grid 4, InternVL 1..9, alpha 0.1;
 * thumbnails: relaxed IF_MULTI + first (DESIGN.md), llava-next ALWAYS + first, internvl IF_MULTI + last. */
TilePolicy tile_policy_default(TileAlgo algo);

/* "relaxed", "llava-next", "internvl". tile_algo_parse also accepts "llava_next"; returns 0/-1. */
const char *tile_algo_name(TileAlgo algo);
int tile_algo_parse(const char *name, TileAlgo *algo, BlvError *err);

/* Checks a policy's fields (tile_size, max_grid, InternVL bounds, alpha). */
int tile_policy_check(const TilePolicy *p, BlvError *err);

/* Plans the slicing of a width x height image. Pure: no pixels, no allocation. */
int tile_plan(int width, int height, const TilePolicy *p, TilePlan *out, BlvError *err);

/* Image tokens for a plan: tokens_per_tile x (tiles + thumbnail). 196 for SigLIP-so400m with the
 * 2x2 token downsampler (27x27 patches, zero-padded to 28x28, merged 2x2). */
int tile_image_tokens(const TilePlan *plan, int tokens_per_tile);

/* Resizes an RGB8 image (rows of 3*sw bytes) to dw x dh with Pillow's bicubic resampling, byte for
 * byte as `Image.resize((dw, dh), Image.BICUBIC)` in the given Pillow: separable passes, kernel
 * a = -0.5 widened by the downscale factor, coefficients in 22-bit fixed point, 8-bit storage
 * between the passes, a pass skipped when its dimension is unchanged. */
int tile_resize_bicubic_pillow(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh, TilePillow pillow,
                               BlvError *err);
/* The same with the default, TILE_PILLOW_12_1 (horizontal pass first, as the models were trained). */
int tile_resize_bicubic(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh, BlvError *err);

/* Renders the plan's images from an RGB8 image of the plan's size as float32
 * [n_images][3][S][S]: value = (u8/255 - mean[c]) / std[c] (SigLIP: mean = std = 0.5), computed as
 * Hugging Face's image processors do (x = (float)(u8 * (1/255.0)), then (x - mean) / std in float),
 * so it equals SiglipImageProcessor's output bit for bit. Order: thumbnail first or last as the plan
 * says, the tiles in raster order. Resizes with the plan's Pillow version. */
int tile_render(const uint8_t *rgb, int w, int h, const TilePlan *plan, const float mean[3], const float std[3],
                float *out, BlvError *err);

/* The same images as RGB8, [n_images][S][S][3], before normalization (for dumps and tests). */
int tile_render_u8(const uint8_t *rgb, int w, int h, const TilePlan *plan, uint8_t *out, BlvError *err);

#endif
