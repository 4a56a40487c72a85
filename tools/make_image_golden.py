#!/usr/bin/env python3
"""make_image_golden.py -- test data and independent golden results for bluelmv's image decoders
(image.c, image_png.c, image_jpeg.c), read by tests/test_image.c.

The reference is Pillow (`Image.open(p)` then `ImageOps.exif_transpose` and `.convert('RGB')`),
i.e. what the reference preprocessing feeds the model. Two deliberate deviations from Pillow are
applied here exactly as documented in image.h:
  * 16-bit grayscale PNG (Pillow mode I;16): the expected pixel is v >> 8, not Pillow's clamp
    min(v, 255) that convert('RGB') does;
  * 16-bit PGM (Pillow mode I): the expected pixel is round(v / maxval * 255) (half to even), the
    same scaling Pillow uses for every other maxval.
Everything else is Pillow's output, byte for byte.

What it does (run from the repository root):
  1. copies third-party test files into tests/data/images/ with their licenses:
       jpeg-decoder/ (MIT/Apache-2.0): tests/reftest/images/** (JPEGs and the reference PNGs made
                     by ImageMagick; of the four largest references only the top and bottom 32
                     rows are kept, as NAME.bands.png, to keep the data small) and
                     tests/crashtest/images/** (fuzzing corpus)
       stb/          (MIT/public domain): tests/pngsuite/** (PngSuite, its own license) and
                     tests/pbm/*
       llama.cpp-media/llama1-logo.png (MIT)
  2. generates small files of our own:
       gen/pnm/      netpbm files of every kind (P1..P6, comments, odd maxvals, 16-bit)
       gen/exif/     a 13x7 JPEG and a PNG with each EXIF orientation 1..8 (Pillow's exif=)
       gen/cjpeg/    JPEGs from libjpeg-turbo's cjpeg (apt-get install libjpeg-turbo-progs) with
                     many sampling factors, progressive, restart intervals, optimized tables,
                     grayscale, RGB, and arithmetic coding (which we reject)
       gen/pillow/   Pillow's decode of every gen/cjpeg and gen/exif JPEG, as PNG, for the
                     per-pixel tolerance check
       gen/zlib/     zlib streams made by Python's zlib: stored, fixed-Huffman and dynamic blocks
  3. writes tests/data/images/golden.txt: one line per image Pillow decodes,
         <path relative to tests/data/images> <width> <height> <crc32 of the RGB bytes, hex>
     plus `shared:` lines for the large PNGs (donut/, llama.cpp-media/matmul.png) that are not
     copied; the C test checks those only when BLUELMV_SHARED_IMAGES points at the shared tree.

Needs Pillow and numpy (pip install pillow numpy) and, for gen/cjpeg, cjpeg on the PATH.
"""
import glob
import os
import shutil
import subprocess
import sys
import zlib

import numpy as np
import PIL
from PIL import Image, ImageOps

SHARED = os.environ.get("BLUELMV_SHARED_IMAGES", "/work/shared/data/images")
OUT = "tests/data/images"


def copy(src_rel, dst_rel):
    src, dst = os.path.join(SHARED, src_rel), os.path.join(OUT, dst_rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)


# The four large reference PNGs of the reftest set (2.3 MB together) are kept only as "bands": their
# top and bottom BAND_ROWS rows stacked into one PNG (the JPEGs themselves are kept whole, and are
# also checked whole against Pillow through golden.txt).
LARGE_REFERENCES = ["mjpeg", "progressive3", "rgb", "ycck"]
BAND_ROWS = 32


def make_bands():
    for name in LARGE_REFERENCES:
        path = os.path.join(OUT, f"jpeg-decoder/reftest/{name}.png")
        a = np.array(Image.open(path).convert("RGB"))
        bands = np.concatenate([a[:BAND_ROWS], a[-BAND_ROWS:]], 0)
        Image.fromarray(bands).save(os.path.join(OUT, f"jpeg-decoder/reftest/{name}.bands.png"), optimize=True)
        os.remove(path)


def copy_third_party():
    jd = "jpeg-decoder"
    for lic in ("LICENSE-MIT", "LICENSE-APACHE"):
        copy(f"{jd}/{lic}", f"{jd}/{lic}")
    ref = f"{jd}/tests/reftest/images"
    for p in sorted(glob.glob(os.path.join(SHARED, ref, "**", "*"), recursive=True)):
        rel = os.path.relpath(p, SHARED)
        base = os.path.basename(p)
        if os.path.isdir(p):
            continue
        # rgb_WxH.png are references for scaled decoding (no .jpg of their own): not used
        if base.startswith("rgb_") and base.endswith(".png"):
            continue
        copy(rel, rel.replace("tests/reftest/images", "reftest"))
    crash = f"{jd}/tests/crashtest/images"
    for p in sorted(glob.glob(os.path.join(SHARED, crash, "**", "*"), recursive=True)):
        if not os.path.isdir(p):
            rel = os.path.relpath(p, SHARED)
            copy(rel, rel.replace("tests/crashtest/images", "crashtest"))
    copy("stb/LICENSE", "stb/LICENSE")
    for p in sorted(glob.glob(os.path.join(SHARED, "stb/tests/pngsuite/**/*"), recursive=True)):
        if not os.path.isdir(p):
            rel = os.path.relpath(p, SHARED)
            copy(rel, rel.replace("stb/tests/", "stb/"))
    for p in sorted(glob.glob(os.path.join(SHARED, "stb/tests/pbm/*"))):
        rel = os.path.relpath(p, SHARED)
        copy(rel, rel.replace("stb/tests/", "stb/"))
    copy("llama.cpp-media/llama1-logo.png", "llama.cpp-media/llama1-logo.png")
    copy("llama.cpp-media/LICENSE", "llama.cpp-media/LICENSE")


# ---- generated files ----------------------------------------------------------------------------

def write(rel, data):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def gen_pnm():
    rng = np.random.default_rng(7)
    w, h = 11, 5
    bits = rng.integers(0, 2, (h, w))
    # P1 with comments everywhere and no separators between pixels on one row
    rows = ["".join(str(b) for b in r) for r in bits]
    p1 = "P1\n# a comment\n%d # width\n%d\n" % (w, h) + "\n".join(rows) + "\n"
    write("gen/pnm/p1.pbm", p1.encode())
    # P4: rows padded to whole bytes
    packed = b"".join(np.packbits(r.astype(np.uint8)).tobytes() for r in bits)
    write("gen/pnm/p4.pbm", b"P4\n%d %d\n" % (w, h) + packed)
    for maxval in (1, 7, 100, 255, 1000, 65535):
        g = rng.integers(0, maxval + 1, (h, w))
        c = rng.integers(0, maxval + 1, (h, w, 3))
        toks = lambda a: "\n".join(" ".join(str(v) for v in row.reshape(-1)) for row in a)
        write(f"gen/pnm/p2_{maxval}.pgm", (f"P2\n{w} {h}\n# c\n{maxval}\n" + toks(g) + "\n").encode())
        write(f"gen/pnm/p3_{maxval}.ppm", (f"P3 {w} {h} {maxval}\n" + toks(c) + "\n").encode())
        dt = ">u2" if maxval > 255 else "u1"
        write(f"gen/pnm/p5_{maxval}.pgm", b"P5\n%d %d\n%d\n" % (w, h, maxval) + g.astype(dt).tobytes())
        write(f"gen/pnm/p6_{maxval}.ppm", b"P6\t%d\r%d #c\n%d\n" % (w, h, maxval) + c.astype(dt).tobytes())


def test_pattern(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(np.sin(x / 5.0) + np.cos(y / 7.0)) * 60 + 128, np.sin((x + y) / 9.0) * 100 + 128,
                  x * 255 // max(w - 1, 1)], -1) + rng.normal(0, 15, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def gen_exif():
    # an asymmetric image with large flat areas so that every orientation is visibly different
    a = np.zeros((7, 13, 3), np.uint8)
    a[:, :, 0] = np.arange(13)[None, :] * 19
    a[:, :, 1] = np.arange(7)[:, None] * 36
    a[0:2, 0:3] = (255, 255, 255)
    im = Image.fromarray(a)
    for k in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = k
        path = os.path.join(OUT, f"gen/exif/orient{k}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        im.save(path, "JPEG", quality=95, exif=exif.tobytes())
        im.save(os.path.join(OUT, f"gen/exif/orient{k}.png"), "PNG", exif=exif.tobytes())


CJPEG_SAMPLES = ["1x1", "2x1", "1x2", "2x2", "4x1", "1x4", "4x2", "2x4", "3x1", "3x2", "1x3",
                 "1x1,2x2,1x1", "2x2,1x1,2x1", "2x1,1x2,1x1"]


def gen_cjpeg():
    if shutil.which("cjpeg") is None:
        sys.exit("cjpeg not found: apt-get install libjpeg-turbo-progs")
    os.makedirs(os.path.join(OUT, "gen/cjpeg"), exist_ok=True)
    tmp = os.path.join(OUT, "gen/cjpeg/src.ppm")
    for (w, h) in [(37, 29), (3, 9)]:
        Image.fromarray(test_pattern(w, h, w)).save(tmp)
        jobs = []
        for s in CJPEG_SAMPLES:
            tag = s.replace(",", "_")
            jobs.append((f"s{tag}", ["-sample", s]))
            if (w, h) == (37, 29):
                jobs.append((f"s{tag}_prog", ["-sample", s, "-progressive"]))
                jobs.append((f"s{tag}_rst", ["-sample", s, "-restart", "1B"]))
        jobs += [("gray", ["-grayscale"]), ("gray_prog", ["-grayscale", "-progressive"]),
                 ("rgb", ["-rgb"]), ("rgb_2x2", ["-rgb", "-sample", "2x2,1x1,1x1"]),
                 ("opt", ["-optimize"]), ("prog_rst", ["-progressive", "-restart", "2"]),
                 ("q100", ["-quality", "100"]), ("q5", ["-quality", "5"])]
        for name, args in jobs:
            out = os.path.join(OUT, f"gen/cjpeg/{w}x{h}_{name}.jpg")
            subprocess.run(["cjpeg", "-quality", "85", *args, "-outfile", out, tmp], check=True)
        if (w, h) == (37, 29):
            os.makedirs(os.path.join(OUT, "gen/unsupported"), exist_ok=True)
            for name, args in [("arith", ["-arithmetic"]), ("arith_prog", ["-arithmetic", "-progressive"])]:
                out = os.path.join(OUT, f"gen/unsupported/{name}.jpg")
                subprocess.run(["cjpeg", *args, "-outfile", out, tmp], check=True)
    os.remove(tmp)


def gen_zlib():
    text = (b"bluelmv inflate test: " + bytes(range(256)) * 3 + b"abcabcabcabc" * 40 +
            bytes(np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8)))
    write("gen/zlib/plain.bin", text)
    write("gen/zlib/stored.zz", zlib.compress(text, 0))
    c = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_FIXED)
    write("gen/zlib/fixed.zz", c.compress(text) + c.flush())
    write("gen/zlib/dynamic.zz", zlib.compress(text, 9))
    c = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY)
    # several blocks of different kinds: a full flush between pieces starts new blocks
    parts = c.compress(text[:1000]) + c.flush(zlib.Z_FULL_FLUSH) + c.compress(text[1000:]) + c.flush()
    write("gen/zlib/multi.zz", parts)
    write("gen/zlib/empty.zz", zlib.compress(b"", 9))


# ---- golden hashes -------------------------------------------------------------------------------

def netpbm_gray16(path):
    """The samples of a PGM with maxval > 255 (P2 or P5), scaled by round(v / maxval * 255)."""
    with open(path, "rb") as f:
        data = f.read()
    fields, pos = [], 2  # magic, then width, height, maxval with '#' comments
    while len(fields) < 3:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while data[pos:pos + 1].isdigit():
            pos += 1
        fields.append(int(data[start:pos]))
    w, h, maxval = fields
    if data[:2] == b"P5":
        v = np.frombuffer(data[pos + 1:pos + 1 + w * h * 2], ">u2").astype(np.float64)
    else:
        v = np.array([int(t) for t in data[pos:].split()[: w * h]], np.float64)
    a = np.rint(v / maxval * 255.0).astype(np.uint8).reshape(h, w)
    return np.stack([a, a, a], -1)


def pillow_rgb(path):
    im = Image.open(path)
    fmt, mode = im.format, im.mode
    if mode in ("I;16", "I;16B", "I;16L") and fmt == "PNG":
        a = (np.array(im).astype(np.uint32) >> 8).astype(np.uint8)
        a = np.stack([a, a, a], -1)
        return np.array(ImageOps.exif_transpose(Image.fromarray(a)))  # (no EXIF in these files)
    if mode == "I" and fmt == "PPM":
        return netpbm_gray16(path)
    return np.array(ImageOps.exif_transpose(im).convert("RGB"))


def golden_lines():
    lines = []
    for path in sorted(glob.glob(os.path.join(OUT, "**", "*"), recursive=True)):
        rel = os.path.relpath(path, OUT)
        if os.path.isdir(path) or path.endswith((".txt", ".md", ".csv", ".list", ".zz", ".bin")) or \
                "LICENSE" in path or rel.startswith("gen/pillow/"):
            continue
        try:
            a = pillow_rgb(path)
        except Exception:
            continue  # Pillow cannot decode it: the C test checks those separately
        h, w = a.shape[:2]
        lines.append(f"{rel} {w} {h} {zlib.crc32(np.ascontiguousarray(a).tobytes()):08x}")
    for rel in ["donut/sample_image_cord_test_receipt_00004.png", "donut/sample_image_donut_document.png",
                "llama.cpp-media/matmul.png", "llama.cpp-media/llama1-logo.png"]:
        a = pillow_rgb(os.path.join(SHARED, rel))
        lines.append(f"shared:{rel} {a.shape[1]} {a.shape[0]} {zlib.crc32(a.tobytes()):08x}")
    return lines


def save_pillow_decodes():
    for path in sorted(glob.glob(os.path.join(OUT, "gen/cjpeg/*.jpg")) + glob.glob(os.path.join(OUT, "gen/exif/*.jpg"))):
        rel = os.path.relpath(path, os.path.join(OUT, "gen"))
        dst = os.path.join(OUT, "gen/pillow", rel[:-4].replace("/", "_") + ".png")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        Image.fromarray(pillow_rgb(path)).save(dst)


def main():
    if not os.path.isdir("tests") or not os.path.isdir(SHARED):
        sys.exit("run from the repository root; set BLUELMV_SHARED_IMAGES to the shared image tree")
    copy_third_party()
    make_bands()
    gen_pnm()
    gen_exif()
    gen_cjpeg()
    gen_zlib()
    save_pillow_decodes()
    lines = golden_lines()
    with open(os.path.join(OUT, "golden.txt"), "w") as f:
        f.write("# made by tools/make_image_golden.py with Pillow %s: path width height crc32(RGB bytes)\n"
                % PIL.__version__)
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines)} golden lines")


if __name__ == "__main__":
    main()
