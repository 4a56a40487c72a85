#!/usr/bin/env python3
"""tile_reference.py -- an independent reference for bluelmv's slice planning (tile.c).

Three grid-selection algorithms, written here straight from their published sources and NOT from
tile.c:

  relaxed      BlueLM-V-3B's "relaxed aspect ratio matching", Algorithm 1 of the paper
               (arXiv 2411.10640, appendix 7), as transcribed in docs/paper-notes.md section 2.2.
  llava-next   select_best_resolution and resize_and_pad_image from LLaVA-VL/LLaVA-NeXT,
               llava/mm_utils.py.
  internvl     dynamic_preprocess / find_closest_aspect_ratio, the InternVL 1.5 model-card code.

Writes tests/data/tile/plans.txt: one line per image size, with the grid each algorithm chooses
(columns described in the file's header). tests/test_tile.c reads it and requires tile_plan() to
agree on every line. Run from the repository root:

    python3 tools/tile_reference.py            # writes tests/data/tile/plans.txt
    python3 tools/tile_reference.py --check    # also prints the table of paper-notes section 2.5

Needs only the Python standard library.
"""
import math
import os
import random
import sys

S = 384  # the base tile (SigLIP-so400m input size)


# --------------------------------------------------------------------------------------------
# Algorithm 1 (relaxed aspect ratio matching), from the paper's pseudocode:
#   for each candidate (m, n), in descending order:
#     W, H = 384m, 384n;  scale = min(W/W0, H/H0)
#     Re = min(int(W0*scale) * int(H0*scale), W0*H0);  Rw = W*H - Re
#     if (Re - Re_max) > alpha*Re_max  or  ((Re_max - Re) < alpha*Re_max and Rw < Rw_min):
#         Re_max, Rw_min, best = Re, Rw, (m, n)
# --------------------------------------------------------------------------------------------
def relaxed_candidates(k, order="lex"):
    """Candidate grids (m, n), m = width multiplier, in descending order. The paper says only
    "descending"; bluelmv uses lexicographic descending (m, n). The other keys are here to show
    that the key does not change any selection (paper-notes 2.3)."""
    grids = [(m, n) for m in range(1, k + 1) for n in range(1, k + 1)]
    if order == "lex":
        return sorted(grids, reverse=True)
    if order == "lex_nm":
        return sorted(grids, key=lambda g: (g[1], g[0]), reverse=True)
    if order == "area":
        return sorted(grids, key=lambda g: (g[0] * g[1], g[0]), reverse=True)
    raise ValueError(order)


def relaxed_select(w0, h0, k, alpha=0.1, order="lex"):
    best = None
    re_max = 0
    rw_min = float("inf")
    for m, n in relaxed_candidates(k, order):
        W, H = S * m, S * n
        scale = min(W / w0, H / h0)
        re = min(int(w0 * scale) * int(h0 * scale), w0 * h0)
        rw = W * H - re
        if (re - re_max) > alpha * re_max or ((re_max - re) < alpha * re_max and rw < rw_min):
            re_max, rw_min, best = re, rw, (m, n)
    if best is None:
        # The pseudocode has no answer when every candidate has Re = 0 (an image so thin that its
        # short side scales to less than one pixel in every grid, e.g. 1x8192 with k = 4).
        # bluelmv's documented choice: 1:1, the grid with the least waste (LLaVA-NeXT's tie rule
        # gives the same answer for such an image).
        best = (1, 1)
    return best


# --------------------------------------------------------------------------------------------
# LLaVA-NeXT, llava/mm_utils.py (paraphrased line by line)
# --------------------------------------------------------------------------------------------
def llava_possible_resolutions(k):
    # "(1x1),...,(kxk)" expanded as [(i, j) for i in range(1, k+1) for j in range(1, k+1)],
    # each multiplied by the patch size; used as (width, height).
    return [(i * S, j * S) for i in range(1, k + 1) for j in range(1, k + 1)]


def llava_select_best_resolution(original_size, possible_resolutions):
    original_width, original_height = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
            effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution
        ):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (width, height)
    return best_fit


def llava_resize_and_pad_size(original_size, target_resolution):
    """The (new_width, new_height, paste_x, paste_y) of resize_and_pad_image."""
    original_width, original_height = original_size
    target_width, target_height = target_resolution
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)
    paste_x = (target_width - new_width) // 2
    paste_y = (target_height - new_height) // 2
    return new_width, new_height, paste_x, paste_y


def llava_select(w0, h0, k):
    width, height = llava_select_best_resolution((w0, h0), llava_possible_resolutions(k))
    return width // S, height // S


# --------------------------------------------------------------------------------------------
# InternVL 1.5 dynamic_preprocess / find_closest_aspect_ratio (model-card code, paraphrased)
# --------------------------------------------------------------------------------------------
def internvl_target_ratios(min_num, max_num):
    target_ratios = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    return sorted(target_ratios, key=lambda x: x[0] * x[1])


def internvl_find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def internvl_select(w0, h0, max_num, min_num=1, target_ratios=None):
    if target_ratios is None:
        target_ratios = internvl_target_ratios(min_num, max_num)
    return internvl_find_closest_aspect_ratio(w0 / h0, target_ratios, w0, h0, S)


def internvl_order_matters(max_num, min_num=1):
    """Python's set iteration order decides the order of equal-area ratios in target_ratios (the
    sort is stable). That order could only matter at an exact tie of |a - i/j| between two
    different ratios of the same area that are both the best. Returns the list of such ties (the
    midpoints a that are a true best tie), which is empty for the cases bluelmv tests."""
    ratios = internvl_target_ratios(min_num, max_num)
    bad = []
    for p in ratios:
        for q in ratios:
            if p >= q or p[0] * p[1] != q[0] * q[1]:
                continue
            a = (p[0] / p[1] + q[0] / q[1]) / 2
            d = abs(a - p[0] / p[1])
            if all(abs(a - r[0] / r[1]) >= d for r in ratios):
                bad.append((p, q, a))
    return bad


# --------------------------------------------------------------------------------------------
# The sizes to test
# --------------------------------------------------------------------------------------------
PAPER_SIZES = [(394, 390), (380, 76), (380, 393), (500, 102), (768, 1536), (1080, 2400), (1920, 1080),
               (800, 600), (700, 400), (1024, 768)]


def edge_sizes():
    sizes = [(1, 1), (1, 8192), (8192, 1), (8192, 8192), (1, 2), (2, 1), (2, 2), (3, 8192), (8192, 3),
             (1, 384), (384, 1), (17, 8192), (8192, 17), (24, 8192), (8192, 24)]
    near = [383, 384, 385, 767, 768, 769, 1151, 1152, 1153, 1535, 1536, 1537]
    sizes += [(a, b) for a in near for b in near]
    sizes += [(384 * i, 384 * j) for i in range(1, 6) for j in range(1, 6)]
    # near the 10% boundary of the relaxed rule: a 1:1 canvas holding 384x384 versus upscaling
    sizes += [(x, x) for x in (403, 404, 405, 420, 421, 422, 423, 424, 425)]
    sizes += [(x, 384) for x in (400, 420, 421, 422, 423, 424, 425, 426, 427)]
    return sizes


def random_sizes(n, seed=20241116):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:  # uniform over the whole range
            w, h = rng.randint(1, 8192), rng.randint(1, 8192)
        elif kind == 1:  # log-uniform: many small and thin images
            w = int(round(math.exp(rng.uniform(0, math.log(8192)))))
            h = int(round(math.exp(rng.uniform(0, math.log(8192)))))
        else:  # typical photo and screen sizes, where the algorithms disagree most
            w, h = rng.randint(100, 2500), rng.randint(100, 2500)
        out.append((max(1, min(8192, w)), max(1, min(8192, h))))
    return out


def plan_line(w, h):
    r3 = relaxed_select(w, h, 3)
    r4 = relaxed_select(w, h, 4)
    l3 = llava_select(w, h, 3)
    l4 = llava_select(w, h, 4)
    i9 = internvl_select(w, h, 9)
    i6 = internvl_select(w, h, 6)
    rw, rh, _, _ = llava_resize_and_pad_size((w, h), (S * r4[0], S * r4[1]))
    lw, lh, _, _ = llava_resize_and_pad_size((w, h), (S * l4[0], S * l4[1]))
    g = lambda t: "%d:%d" % t
    return "%d %d %s %s %s %s %s %s %d %d %d %d" % (w, h, g(r3), g(r4), g(l3), g(l4), g(i9), g(i6), rw, rh, lw, lh)


HEADER = """\
# tests/data/tile/plans.txt -- written by tools/tile_reference.py (an independent Python
# implementation of the paper's Algorithm 1, LLaVA-NeXT's select_best_resolution and
# resize_and_pad_image, and InternVL 1.5's find_closest_aspect_ratio). Tile size S = 384.
# Columns: W H relaxed_k3 relaxed_k4 llava_k3 llava_k4 internvl_max9 internvl_max6
#          relaxed_k4_resized_w relaxed_k4_resized_h llava_k4_resized_w llava_k4_resized_h
# A grid is m:n, m = width multiplier, n = height multiplier. relaxed: alpha = 0.1, candidates
# m,n in 1..k scanned in lexicographic descending (m,n) order. llava: m,n in 1..k, list order
# ascending. internvl: 1 <= i*j <= max_num.
"""


def print_table():
    print("W x H        llava3 iv9  iv6  rel3 rel4 llava4")
    for w, h in PAPER_SIZES:
        row = [llava_select(w, h, 3), internvl_select(w, h, 9), internvl_select(w, h, 6),
               relaxed_select(w, h, 3), relaxed_select(w, h, 4), llava_select(w, h, 4)]
        print("%4dx%-4d    " % (w, h) + " ".join("%d:%d" % g for g in row))


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out_dir = os.path.join(root, "tests", "data", "tile")
    os.makedirs(out_dir, exist_ok=True)
    sizes = PAPER_SIZES + edge_sizes() + random_sizes(3700)

    # The sort key of the relaxed scan does not matter, only its direction (paper-notes 2.3).
    for k in (3, 4):
        for order in ("lex_nm", "area"):
            diff = sum(relaxed_select(w, h, k, order=order) != relaxed_select(w, h, k) for w, h in sizes)
            print("relaxed k=%d: order %-6s differs from lexicographic descending in %d of %d sizes"
                  % (k, order, diff, len(sizes)))
    # InternVL's set order cannot matter for these max_num values.
    for max_num in (6, 9, 12):
        print("internvl max_num=%d: equal-area best ties: %s" % (max_num, internvl_order_matters(max_num)))

    path = os.path.join(out_dir, "plans.txt")
    with open(path, "w") as f:
        f.write(HEADER)
        for w, h in sizes:
            f.write(plan_line(w, h) + "\n")
    print("wrote %s (%d sizes, %d bytes)" % (path, len(sizes), os.path.getsize(path)))
    if "--check" in sys.argv:
        print_table()


if __name__ == "__main__":
    main()
