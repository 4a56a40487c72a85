#!/usr/bin/env python3
"""make_quant_fixture.py — an independent check of bluelmv's quantizers.

Writes tests/data/quant/:
  input.f32    N float32 (little-endian), N = 32 * 160: random blocks of many scales plus hand-made
               edge cases (zero block, single nonzero, +/- extremes of equal magnitude, exact ties of
               the Q4_0 and Q8_0 rounding rules, tiny and huge values, fp16 rounding ties).
  input.q4_0   the same values quantized by the `gguf` package from PyPI (gguf.quants, which
  input.q8_0   implements ggml's reference quantization in numpy: "bit-exact with ggml-quants.c")
  input.f16    numpy's float32 -> float16 conversion (IEEE round-to-nearest-even)
  input.bf16   gguf.quants' bf16 conversion (the same rule as ggml_compute_fp32_to_bf16)

tests/test_quant.c checks that quantize_row(...) produces byte-identical output. Run from the
repository root: python3 tools/make_quant_fixture.py
"""
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

QK = 32
rng = np.random.default_rng(20240611)
blocks = []


def block(values):
    b = np.zeros(QK, dtype=np.float32)
    b[: len(values)] = values
    blocks.append(b)


block([])                                               # all zero: d = 0, codes 8 / 0
block([0, 0, 0, 0, 0, 3.0])                             # a single nonzero value
block([0, 0, -2.5])                                     # a single negative value
block([1, 3.0, 2, -3.0])                                # equal magnitudes: the first one sets the sign
block([1, -3.0, 2, 3.0])
block(np.arange(-127, 127, 8, dtype=np.float32)[:QK - 1].tolist() + [127.0])  # Q8_0: d = 1, exact
block([127.0] + [k + 0.5 for k in range(-16, 15)])      # Q8_0 ties (x*id = k + 0.5): away from zero
block([-8.0] + [k - 0.5 for k in range(-7, 9)] + [7.5, 7.9, -7.9, 0.49, 0.51])  # Q4_0: d = 1, exact ties
block([8.0] + [k - 0.5 for k in range(-7, 9)] + [-7.5, -7.9, 7.9])              # Q4_0: d = -1
block((rng.standard_normal(QK) * 1e-30).astype(np.float32))  # scale underflows fp16 to 0
block((rng.standard_normal(QK) * 1e-40).astype(np.float32))  # fp32 subnormals
block((rng.standard_normal(QK) * 1e6).astype(np.float32))
block([1e7, -5e6, 2.5e6, 1.0])                          # Q8_0 scale 78740: overflows fp16 to inf

# fp16 rounding ties: midpoints between consecutive half values, and one float either side
halves = rng.integers(0, 0x7BFF, size=10, dtype=np.uint16)
lo = halves.view(np.float16).astype(np.float64)
hi = (halves + 1).view(np.float16).astype(np.float64)
mid = ((lo + hi) / 2).astype(np.float32)
ties = np.concatenate([mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(0))])
block(np.concatenate([ties, [65504.0, 65519.0]]).astype(np.float32))
block(np.array([2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 6e-8, 1e-7, -3e-5],
               dtype=np.float32))

while len(blocks) < 160:                                # random blocks over 16 orders of magnitude
    scale = np.float32(10.0 ** rng.uniform(-8, 4))
    if len(blocks) % 3 == 0:
        b = rng.uniform(-1, 1, QK) * scale
    else:
        b = rng.standard_normal(QK) * scale
    blocks.append(b.astype(np.float32))

x = np.concatenate(blocks).astype(np.float32)
assert x.size == 32 * 160 and np.all(np.isfinite(x))

out = os.path.join("tests", "data", "quant")
os.makedirs(out, exist_ok=True)
x.astype("<f4").tofile(os.path.join(out, "input.f32"))
with np.errstate(over="ignore"):
    x.astype("<f2").tofile(os.path.join(out, "input.f16"))
    quantize(x.reshape(-1, QK), T.Q4_0).tofile(os.path.join(out, "input.q4_0"))
    quantize(x.reshape(-1, QK), T.Q8_0).tofile(os.path.join(out, "input.q8_0"))
    quantize(x, T.BF16).tofile(os.path.join(out, "input.bf16"))
for name in ["input.f32", "input.f16", "input.bf16", "input.q4_0", "input.q8_0"]:
    print(name, os.path.getsize(os.path.join(out, name)))
