#!/usr/bin/env python3
"""gen_resize_golden.py -- Pillow-built golden data for bluelmv's pixel work (tile.c).

Writes tests/data/tile/:

  src_*.ppm            small RGB sources (binary PPM, P6) cut from the real images under
                       /work/shared/data/images (donut receipt, llama.cpp logo and matmul
                       figure; MIT licensed, see the LICENSE files there), plus one seeded noise
                       image, the hardest case for clipping.
  resize_cases.txt     "SRC DW DH OFF13 OFF12_2 OFF12_1": Image.resize((DW, DH), Image.BICUBIC) of
  resize_expected.bin  SRC as raw RGB8 at those offsets of resize_expected.bin, made by Pillow 13
                       (the one installed), by Pillow 12.2..12.x and by Pillow <= 12.1. They differ
                       only in the order of the two passes (see tile.h, TilePillow); an output equal
                       to Pillow 13's is stored once.
  pipeline.txt         whole preprocessing cases: the grid and canvas geometry, then the expected
  pipeline_u8.bin      images built with Pillow exactly as LLaVA-NeXT's process_anyres_image
  pipeline_f32.bin     (select_best_resolution -> resize_and_pad_image -> divide_to_patches, with
                       image.resize((S, S)) placed first) or InternVL's dynamic_preprocess does it
                       (direct resize, row-major crops, thumbnail appended last). BlueLM's relaxed
                       algorithm uses the LLaVA-NeXT geometry with its own grid, and no thumbnail
                       for a 1:1 grid (DESIGN.md). Each image is stored either as raw RGB8 (u8),
                       as float32 CHW produced by Hugging Face's SiglipImageProcessor (f32), or,
                       for the full-size S = 384 cases, as one FNV-1a 64 hash per pixel row
                       (rowhash lines) to keep the data small.
  normalize.txt        SiglipImageProcessor's output for each byte value 0..255 (rescale 1/255,
                       normalize) with SigLIP's mean/std 0.5 and with CLIP's mean/std.

The grids come from tools/tile_reference.py (independent of tile.c). Run from the repository root:
    pip install "pillow>=13" numpy transformers      # transformers for pipeline_f32 / normalize.txt
    pip install --target /tmp/pillow-12.3 "pillow>=12.2,<13"
    pip install --target /tmp/pillow-12.1 "pillow<12.2"
    python3 tools/gen_resize_golden.py --pillow-12.2 /tmp/pillow-12.3 --pillow-12.1 /tmp/pillow-12.1
"""
import math
import os
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tile_reference as ref  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "data", "tile")
IMAGES = "/work/shared/data/images"
BICUBIC = Image.Resampling.BICUBIC

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def save_ppm(im, name):
    assert im.mode == "RGB"
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % im.size)
        f.write(im.tobytes())


def make_sources():
    receipt = Image.open(os.path.join(IMAGES, "donut/sample_image_cord_test_receipt_00004.png")).convert("RGB")
    logo = Image.open(os.path.join(IMAGES, "llama.cpp-media/llama1-logo.png")).convert("RGB")
    matmul = Image.open(os.path.join(IMAGES, "llama.cpp-media/matmul.png")).convert("RGB")
    src = {}
    # receipt text, a mild downscale of a photo: soft edges and dark print on crumpled paper
    src["src_receipt_97x61.ppm"] = receipt.crop((60, 560, 760, 1000)).resize((97, 61), Image.Resampling.LANCZOS)
    # the llama.cpp logo: flat colours and hard edges (clipping in both directions)
    src["src_logo_160x113.ppm"] = logo.crop((430, 40, 1070, 492)).resize((160, 113), Image.Resampling.LANCZOS)
    # a tall strip: the handwriting at the receipt's left edge
    src["src_strip_33x400.ppm"] = receipt.crop((0, 0, 110, 1296)).resize((33, 400), Image.Resampling.BOX)
    # thin coloured lines of a figure, cropped without resampling
    src["src_matmul_64x48.ppm"] = matmul.crop((1000, 600, 1064, 648))
    # seeded noise: every pixel an edge
    rng = np.random.default_rng(7)
    src["src_noise_31x23.ppm"] = Image.fromarray(rng.integers(0, 256, size=(23, 31, 3), dtype=np.uint8), "RGB")
    # taller than 100x its width: the case Pillow 12.2 resizes vertically first
    src["src_thin_3x400.ppm"] = receipt.crop((20, 0, 30, 1296)).resize((3, 400), Image.Resampling.BOX)
    # the paper's Fig. 9B size (CogVLM-SFT), 500x102: relaxed 2:1, InternVL 5:1
    src["src_receipt_500x102.ppm"] = receipt.crop((0, 580, 864, 756)).resize((500, 102), Image.Resampling.LANCZOS)
    for name, im in src.items():
        save_ppm(im, name)
    return src


RESIZE_CASES = {
    # strong and slight downscales, upscales (x1.3, x2, x3), one axis only, mixed, to one pixel, identity
    "src_receipt_97x61.ppm": [(14, 9), (87, 55), (126, 79), (194, 122), (60, 120), (1, 61), (97, 1), (1, 1),
                              (97, 61), (97, 30), (200, 61)],
    "src_logo_160x113.ppm": [(23, 16), (144, 102), (159, 112), (40, 200), (1, 113), (160, 1)],
    "src_strip_33x400.ppm": [(5, 57), (30, 360), (66, 100), (150, 40), (1, 400), (33, 1), (2, 3)],
    "src_matmul_64x48.ppm": [(9, 7), (58, 43), (83, 62), (192, 144), (64, 100), (32, 48)],
    "src_noise_31x23.ppm": [(4, 3), (28, 21), (40, 30), (93, 69), (7, 69), (93, 5), (31, 46)],
    "src_receipt_500x102.ppm": [(71, 15), (250, 51), (1, 1)],
    "src_thin_3x400.ppm": [(2, 57), (1, 13), (9, 50), (2, 399), (6, 200), (3, 100)],
}


def resize_all(src):
    """Every case's output bytes, in RESIZE_CASES order, with the Pillow that is imported."""
    return [src[name].resize((dw, dh), BICUBIC).tobytes() for name, sizes in RESIZE_CASES.items() for dw, dh in sizes]


def resize_with_other_pillow(pillow_dir, expect_prefix):
    """Runs this script with another Pillow first on sys.path and returns its outputs."""
    dump = os.path.join(OUT, ".resize_dump.bin")
    env = dict(os.environ, PYTHONPATH=pillow_dir)
    version = subprocess.run([sys.executable, os.path.abspath(__file__), "--dump-resizes", dump], env=env,
                             check=True, capture_output=True, text=True).stdout.strip()
    assert version.startswith(expect_prefix), "%s holds Pillow %s, expected %s" % (pillow_dir, version, expect_prefix)
    outputs = []
    with open(dump, "rb") as f:
        for name, sizes in RESIZE_CASES.items():
            for dw, dh in sizes:
                outputs.append(f.read(dw * dh * 3))
    os.remove(dump)
    return version, outputs


def dump_resizes(path):
    """--dump-resizes: the sources are read back from tests/data/tile/*.ppm (written by a full run)."""
    src = {name: Image.open(os.path.join(OUT, name)).convert("RGB") for name in RESIZE_CASES}
    with open(path, "wb") as f:
        for out in resize_all(src):
            f.write(out)
    print(Image.__version__)


def make_resize_golden(src, pillow_12_2_dir, pillow_12_1_dir):
    v13 = Image.__version__
    assert int(v13.split(".")[0]) >= 13, "run with Pillow >= 13 installed (found %s)" % v13
    out13 = resize_all(src)
    v122, out122 = resize_with_other_pillow(pillow_12_2_dir, "12.")
    v121, out121 = resize_with_other_pillow(pillow_12_1_dir, "12.")
    assert tuple(map(int, v122.split(".")[:2])) >= (12, 2) and tuple(map(int, v121.split(".")[:2])) < (12, 2)
    lines = ["# tests/data/tile/resize_cases.txt -- written by tools/gen_resize_golden.py",
             "# SRC DW DH OFF13 OFF12_2 OFF12_1: Image.resize((DW, DH), Image.BICUBIC) of SRC, raw RGB8 at these offsets",
             "# of resize_expected.bin, made by Pillow %s, Pillow %s and Pillow %s" % (v13, v122, v121)]
    blob = bytearray()
    i = 0
    n_differ = [0, 0]
    for name, sizes in RESIZE_CASES.items():
        for dw, dh in sizes:
            off13 = len(blob)
            blob += out13[i]
            offs = []
            for k, other in enumerate((out122[i], out121[i])):
                if other == out13[i]:
                    offs.append(off13)
                else:
                    n_differ[k] += 1
                    offs.append(len(blob))
                    blob += other
            lines.append("%s %d %d %d %d %d" % (name, dw, dh, off13, offs[0], offs[1]))
            i += 1
    with open(os.path.join(OUT, "resize_cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "resize_expected.bin"), "wb") as f:
        f.write(blob)
    print("resize: %d cases, %d bytes; Pillow %s differs from %s in %d cases, Pillow %s in %d" % (
        i, len(blob), v13, v122, n_differ[0], v121, n_differ[1]))


# ---- whole preprocessing, built with Pillow the way LLaVA-NeXT and InternVL do it -------------

def llava_resize_and_pad_image(image, target_resolution):
    """LLaVA-NeXT mm_utils.resize_and_pad_image (paraphrased)."""
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)
    resized_image = image.resize((new_width, new_height))  # the default filter: BICUBIC for RGB
    new_image = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    paste_x = (target_width - new_width) // 2
    paste_y = (target_height - new_height) // 2
    new_image.paste(resized_image, (paste_x, paste_y))
    return new_image, (new_width, new_height, paste_x, paste_y)


def llava_divide_to_patches(image, patch_size):
    patches = []
    width, height = image.size
    for i in range(0, height, patch_size):
        for j in range(0, width, patch_size):
            patches.append(image.crop((j, i, j + patch_size, i + patch_size)))
    return patches


def anyres_images(image, grid, S, thumbnail):
    """process_anyres_image without the processor: [image.resize((S, S))] + patches.
    thumbnail: 'always' (LLaVA-NeXT) or 'if_multi' (bluelmv's relaxed default)."""
    padded, geom = llava_resize_and_pad_image(image, (grid[0] * S, grid[1] * S))
    patches = llava_divide_to_patches(padded, S)
    if thumbnail == "always" or len(patches) > 1:
        patches = [image.resize((S, S))] + patches
    return patches, geom


def internvl_images(image, grid, S):
    """InternVL dynamic_preprocess(use_thumbnail=True) from the chosen ratio on (paraphrased)."""
    target_width, target_height = S * grid[0], S * grid[1]
    blocks = grid[0] * grid[1]
    resized_img = image.resize((target_width, target_height))
    processed_images = []
    for i in range(blocks):
        box = ((i % (target_width // S)) * S, (i // (target_width // S)) * S,
               ((i % (target_width // S)) + 1) * S, ((i // (target_width // S)) + 1) * S)
        processed_images.append(resized_img.crop(box))
    if len(processed_images) != 1:
        processed_images.append(image.resize((S, S)))
    return processed_images, (target_width, target_height, 0, 0)


def select_grid(algo, w, h, S, param):
    """Grid selection from tile_reference, at tile size S (the module's S is 384)."""
    saved = ref.S
    ref.S = S
    try:
        if algo == "relaxed":
            return ref.relaxed_select(w, h, param)
        if algo == "llava-next":
            return ref.llava_select(w, h, param)
        return ref.internvl_select(w, h, param)
    finally:
        ref.S = saved


def build_case(image, algo, S, param):
    grid = select_grid(algo, image.size[0], image.size[1], S, param)
    if algo == "internvl":
        images, geom = internvl_images(image, grid, S)
    else:
        images, geom = anyres_images(image, grid, S, "always" if algo == "llava-next" else "if_multi")
    return grid, geom, images


def fnv1a64_rows(arr):
    """FNV-1a 64 of each row of an (H, W, 3) uint8 array (numpy's uint64 arithmetic wraps)."""
    rows = arr.reshape(arr.shape[0], -1).astype(np.uint64)
    h = np.full(rows.shape[0], 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for col in range(rows.shape[1]):
            h = (h ^ rows[:, col]) * prime
    return h


PIPELINE_CASES = [
    # name, source, algo, S, param (max_grid or InternVL max_num), storage
    ("receipt500_relaxed_s384", "src_receipt_500x102.ppm", "relaxed", 384, 4, "rowhash"),
    ("receipt500_internvl6_s384", "src_receipt_500x102.ppm", "internvl", 384, 6, "rowhash"),
    ("logo_llava_s32", "src_logo_160x113.ppm", "llava-next", 32, 4, "u8"),
    ("logo_internvl9_s32", "src_logo_160x113.ppm", "internvl", 32, 9, "u8"),
    ("strip_relaxed_s32", "src_strip_33x400.ppm", "relaxed", 32, 4, "u8"),
    ("strip_internvl6_s32", "src_strip_33x400.ppm", "internvl", 32, 6, "u8"),
    ("receipt97_relaxed_k3_s48", "src_receipt_97x61.ppm", "relaxed", 48, 3, "u8"),
    ("noise_relaxed_s16", "src_noise_31x23.ppm", "relaxed", 16, 4, "f32"),
    ("matmul_llava_s64", "src_matmul_64x48.ppm", "llava-next", 64, 4, "u8"),
]


def siglip_processor(S, mean, std):
    from transformers import SiglipImageProcessor
    return SiglipImageProcessor(size={"height": S, "width": S}, resample=3, do_rescale=True,
                                rescale_factor=1 / 255, do_normalize=True, image_mean=mean, image_std=std)


def make_pipeline_golden(src):
    lines = ["# tests/data/tile/pipeline.txt -- written by tools/gen_resize_golden.py (Pillow %s)" % Image.__version__,
             "# case NAME SRC ALGO S PARAM GRID_W GRID_H RESIZED_W RESIZED_H PAD_X PAD_Y N_IMAGES STORAGE [OFFSET]",
             "# STORAGE u8: N_IMAGES x S x S x 3 bytes at OFFSET of pipeline_u8.bin;"
             " f32: N_IMAGES x 3 x S x S float32 (SiglipImageProcessor, mean = std = 0.5) at OFFSET of"
             " pipeline_f32.bin; rowhash: N_IMAGES x S lines 'FNV-1a-64 of the row' follow."]
    blob_u8 = bytearray()
    blob_f32 = bytearray()
    for name, src_name, algo, S, param, storage in PIPELINE_CASES:
        image = src[src_name]
        grid, geom, images = build_case(image, algo, S, param)
        head = "case %s %s %s %d %d %d %d %d %d %d %d %d %s" % (
            name, src_name, algo, S, param, grid[0], grid[1], geom[0], geom[1], geom[2], geom[3], len(images), storage)
        if storage == "u8":
            lines.append(head + " %d" % len(blob_u8))
            for im in images:
                blob_u8 += im.tobytes()
        elif storage == "f32":
            lines.append(head + " %d" % len(blob_f32))
            proc = siglip_processor(S, [0.5] * 3, [0.5] * 3)
            for im in images:
                px = proc(im, return_tensors="np")["pixel_values"][0]
                assert px.shape == (3, S, S) and px.dtype == np.float32
                blob_f32 += px.astype("<f4").tobytes()
        else:
            lines.append(head)
            for im in images:
                for h in fnv1a64_rows(np.asarray(im)):
                    lines.append("%016x" % int(h))
        print("pipeline %-28s %dx%d %-10s S=%-3d -> %d:%d, %d images" % (
            name, image.size[0], image.size[1], algo, S, grid[0], grid[1], len(images)))
    with open(os.path.join(OUT, "pipeline.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "pipeline_u8.bin"), "wb") as f:
        f.write(blob_u8)
    with open(os.path.join(OUT, "pipeline_f32.bin"), "wb") as f:
        f.write(blob_f32)
    print("pipeline: %d + %d bytes" % (len(blob_u8), len(blob_f32)))


def make_normalize_table():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([values] * 3, axis=-1), "RGB")
    lines = ["# tests/data/tile/normalize.txt -- written by tools/gen_resize_golden.py",
             "# NAME MEAN0 MEAN1 MEAN2 STD0 STD1 STD2, then 3 lines (channels) of 256 values: the output of",
             "# transformers.SiglipImageProcessor for byte values 0..255 (%.9g-exact float32)."]
    for label, mean, std in (("siglip", [0.5] * 3, [0.5] * 3), ("clip", CLIP_MEAN, CLIP_STD)):
        px = siglip_processor(16, mean, std)(image, return_tensors="np")["pixel_values"][0]
        lines.append("norm %s %s %s" % (label, " ".join("%.9g" % v for v in mean), " ".join("%.9g" % v for v in std)))
        for c in range(3):
            lines.append(" ".join("%.9g" % float(v) for v in px[c].reshape(-1)))
    with open(os.path.join(OUT, "normalize.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    if "--dump-resizes" in sys.argv:
        dump_resizes(sys.argv[sys.argv.index("--dump-resizes") + 1])
        return
    if "--pillow-12.2" not in sys.argv or "--pillow-12.1" not in sys.argv:
        sys.exit(__doc__)
    pillow_12_2_dir = sys.argv[sys.argv.index("--pillow-12.2") + 1]
    pillow_12_1_dir = sys.argv[sys.argv.index("--pillow-12.1") + 1]
    os.makedirs(OUT, exist_ok=True)
    src = make_sources()
    make_resize_golden(src, pillow_12_2_dir, pillow_12_1_dir)
    make_pipeline_golden(src)
    make_normalize_table()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("tests/data/tile: %d files, %d bytes" % (len(os.listdir(OUT)), total))


if __name__ == "__main__":
    main()
