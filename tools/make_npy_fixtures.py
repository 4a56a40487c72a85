#!/usr/bin/env python3
"""make_npy_fixtures.py — tiny .npy files written by NumPy itself, for tests/test_dump.c.

The C test reads each file with npy_read and checks shape and values against the same formulas
(written out again in the test), and checks that npy_write_f32 / npy_write_i32 reproduce the bytes
numpy.save wrote for the float32 and int32 cases. Run from the repository root:

    python3 tools/make_npy_fixtures.py        # writes tests/data/npy/*.npy

Files (all written with numpy.save unless noted):
  f32_2d.npy     (3, 4) float32   i*0.25 - 1.5, i = 0..11
  f32_4d.npy     (2, 3, 2, 2) float32   (-1)^i * i / 8
  f32_1d.npy     (5,) float32      1, -2, 0.5, 1e-3, 3.4e38
  f32_scalar.npy ()   float32      2.5
  f32_empty.npy  (0, 3) float32
  f16.npy        (6,) float16      1, -2, 65504, 2^-24 (smallest subnormal), 2^-14 (smallest normal), inf
  f64.npy        (2, 2) float64    1/3, -2/3, 1e-300, 1e300
  i32.npy        (4,) int32        -1, 2147483647, -2147483648, 7
  i64.npy        (3,) int64        -5, 2^40, 0
  v2.npy         (2, 3) float32    i + 0.5, written as format version 2.0 (numpy.lib.format.write_array)
  v3.npy         (2, 2) float32    -i, written as format version 3.0
  fortran.npy    (2, 3) float32    numpy.asfortranarray(arange(6)): fortran_order True (an error)
  bigendian.npy  (2,) '>f4'        big-endian (an error)
  u8.npy         (3,) uint8        an unsupported dtype (an error)
"""
import os

import numpy as np
from numpy.lib import format as npformat

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "npy")


def main():
    os.makedirs(OUT, exist_ok=True)
    i12 = np.arange(12, dtype=np.float32)
    i24 = np.arange(24, dtype=np.float32)
    arrays = {
        "f32_2d": (i12 * np.float32(0.25) - np.float32(1.5)).reshape(3, 4),
        "f32_4d": (np.where(np.arange(24) % 2 == 0, 1, -1).astype(np.float32) * i24 / np.float32(8)).reshape(2, 3, 2, 2),
        "f32_1d": np.array([1, -2, 0.5, 1e-3, 3.4e38], dtype=np.float32),
        "f32_scalar": np.array(2.5, dtype=np.float32),
        "f32_empty": np.zeros((0, 3), dtype=np.float32),
        "f16": np.array([1, -2, 65504, 2.0 ** -24, 2.0 ** -14, np.inf], dtype=np.float16),
        "f64": np.array([[1 / 3, -2 / 3], [1e-300, 1e300]], dtype=np.float64),
        "i32": np.array([-1, 2147483647, -2147483648, 7], dtype=np.int32),
        "i64": np.array([-5, 2 ** 40, 0], dtype=np.int64),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "bigendian": np.array([1.0, 2.0], dtype=">f4"),
        "u8": np.array([1, 2, 3], dtype=np.uint8),
    }
    for name, a in arrays.items():
        np.save(os.path.join(OUT, name + ".npy"), a)
    for name, a, version in (("v2", (np.arange(6, dtype=np.float32) + np.float32(0.5)).reshape(2, 3), (2, 0)),
                             ("v3", -np.arange(4, dtype=np.float32).reshape(2, 2), (3, 0))):
        with open(os.path.join(OUT, name + ".npy"), "wb") as f:
            npformat.write_array(f, a, version=version)
    assert np.load(os.path.join(OUT, "fortran.npy")).flags.f_contiguous
    for name in sorted(os.listdir(OUT)):
        p = os.path.join(OUT, name)
        with open(p, "rb") as f:
            head = f.read(8)
        print("%-16s %4d bytes  version %d.%d" % (name, os.path.getsize(p), head[6], head[7]))


if __name__ == "__main__":
    main()
