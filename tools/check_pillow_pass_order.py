#!/usr/bin/env python3
"""check_pillow_pass_order.py -- which pass of a bicubic resize the installed Pillow runs first.

Pillow resizes in two single-axis passes with 8-bit storage in between, so the order of the passes
changes the result. tile.h (TilePillow) states the rule of each Pillow version; this script checks
the rule for the Pillow it runs with, in Pillow alone: for random noise images it compares
Image.resize((dw, dh)) with the two single-axis resizes chained in the predicted order
(a single-axis resize has no order to choose).

    python3 tools/check_pillow_pass_order.py [N]                      # Pillow >= 13 installed
    PYTHONPATH=/tmp/pillow-12.3 python3 tools/check_pillow_pass_order.py
"""
import random
import sys

import numpy as np
from PIL import Image

B = Image.Resampling.BICUBIC
VERSION = tuple(int(x) for x in Image.__version__.split(".")[:2])


def vertical_first(sw, sh, dw, dh):
    if VERSION >= (13, 0):
        return dh < sh and sh - dh > 2 * (sw - dw)
    if VERSION >= (12, 2):
        return sh > sw * 100 and dh < sh
    return False


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rng = np.random.default_rng(1)
    r = random.Random(2)
    decisive = agree = 0
    for i in range(n):
        sw, sh = r.randint(1, 300), r.randint(1, 300)
        if i % 5 == 0:
            sw = max(1, sh // r.randint(50, 150))  # very tall images
        dw, dh = r.randint(1, 300), r.randint(1, 300)
        if i % 3 == 0:
            sh2 = sh - 2 * (sw - dw) + r.randint(-1, 1)  # the boundary of Pillow 13's rule
            if 1 <= sh2 <= sh + 300:
                dh = sh2 if sh2 < sh else dh
        if dw == sw or dh == sh:
            continue
        im = Image.fromarray(rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8), "RGB")
        got = im.resize((dw, dh), B).tobytes()
        hv = im.resize((dw, sh), B).resize((dw, dh), B).tobytes()
        vh = im.resize((sw, dh), B).resize((dw, dh), B).tobytes()
        if hv == vh:
            continue
        decisive += 1
        predicted = vh if vertical_first(sw, sh, dw, dh) else hv
        if got == predicted:
            agree += 1
        else:
            print("mismatch: %dx%d -> %dx%d" % (sw, sh, dw, dh))
    print("Pillow %s: the stated pass order holds in %d of %d sizes where the order matters"
          % (Image.__version__, agree, decisive))
    sys.exit(0 if agree == decisive else 1)


if __name__ == "__main__":
    main()
