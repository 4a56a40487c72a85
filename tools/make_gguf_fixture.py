#!/usr/bin/env python3
"""make_gguf_fixture.py — write tests/data/gguf/fixture.gguf with an independent writer (PyPI `gguf`,
GGUFWriter) and, next to it, fixture.expected.txt: the values tests/test_gguf.c must read back.

    python3 tools/make_gguf_fixture.py [OUT_DIR]      (default tests/data/gguf)

The expectations are computed here, in numpy, not by our reader. Sidecar format, one item a line,
fields separated by single spaces:

    kv KEY TYPE VALUE           TYPE as gguf.h names it; VALUE: integer, float (repr of the exact
                                double), bool 0/1, string as x + hex of its UTF-8 bytes ("x" = empty)
    arr KEY ELEM COUNT V0 V1..  a flat array (ELEM as above); a nested array lists only its COUNT
    tensor NAME TYPE_ID N_DIMS NE0 .. N_BYTES FNV    dims in GGUF order (ne[0] innermost); FNV is the
                                FNV-1a 64-bit hash of the tensor's bytes, in hex
    elem NAME INDEX VALUE       element INDEX (flat, row-major over the numpy shape) as float:
                                f16 widened, q8_0 dequantized (d * q in f32, as ggml does)
The file is deterministic (fixed seed) and small (a few KB).
"""
import importlib.metadata
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V

SHORT = {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32",
         V.INT32: "i32", V.FLOAT32: "f32", V.BOOL: "bool", V.STRING: "string", V.ARRAY: "array",
         V.UINT64: "u64", V.INT64: "i64", V.FLOAT64: "f64"}


def fnv1a64(data: bytes) -> int:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def text(v, vtype):
    """A value as the sidecar writes it."""
    if vtype == V.STRING:
        return "x" + v.encode("utf-8").hex()
    if vtype == V.BOOL:
        return "1" if v else "0"
    if vtype == V.FLOAT32:
        return repr(float(np.float32(v)))   # the exact value stored in the file
    if vtype == V.FLOAT64:
        return repr(float(v))
    return str(int(v))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "data", "gguf")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "fixture.gguf")
    lines = []

    w = gguf.GGUFWriter(path, arch="fixture", use_temp_file=False)
    w.add_custom_alignment(64)
    lines.append("kv general.architecture string " + text("fixture", V.STRING))
    lines.append("kv general.alignment u32 64")

    scalars = [
        ("test.u8", 200, V.UINT8), ("test.i8", -100, V.INT8), ("test.u16", 60000, V.UINT16),
        ("test.i16", -30000, V.INT16), ("test.u32", 4000000000, V.UINT32),
        ("test.i32", -2000000000, V.INT32), ("test.f32", 3.14159265358979, V.FLOAT32),
        ("test.bool", True, V.BOOL), ("test.string", "héllo wörld ✓ 日本", V.STRING),
        ("test.empty_string", "", V.STRING), ("test.u64", 2**63 + 5, V.UINT64),
        ("test.i64", -(2**62) - 3, V.INT64), ("test.f64", 2.718281828459045, V.FLOAT64),
    ]
    for key, val, vtype in scalars:
        w.add_key_value(key, val, vtype)  # add_key_value: add_string would drop the empty string
        lines.append("kv %s %s %s" % (key, SHORT[vtype], text(val, vtype)))

    arrays = [
        ("test.arr_i32", [1, -2, 3, 2147483647], V.INT32),
        ("test.arr_f32", [0.5, -1.25, 3.0e-5], V.FLOAT32),
        ("test.arr_u64", [0, 2**64 - 1], V.UINT64),
        ("test.arr_bool", [True, False, True], V.BOOL),
        ("test.arr_str", ["a", "", "ccc", "ü€"], V.STRING),
    ]
    for key, val, elem in arrays:
        w.add_key_value(key, val, V.ARRAY, sub_type=elem)
        lines.append("arr %s %s %d %s" % (key, SHORT[elem], len(val), " ".join(text(v, elem) for v in val)))
    w.add_key_value("test.nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY)  # array of arrays of i32
    lines.append("arr test.nested array 3")

    rng = np.random.default_rng(1234)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)          # GGUF dims [5, 3]
    f32_odd = rng.standard_normal(7).astype(np.float32)           # 28 bytes: padding follows
    f16 = rng.standard_normal((2, 4)).astype(np.float16)          # GGUF dims [4, 2]
    x = rng.standard_normal((2, 64)).astype(np.float32)
    q8 = gguf.quants.quantize(x, Q.Q8_0)                          # uint8, shape (2, 68)
    q8_values = gguf.quants.dequantize(q8, Q.Q8_0).reshape(-1)    # f32, d * q
    w.add_tensor("f32.weight", f32)
    w.add_tensor("f32_odd.bias", f32_odd)
    w.add_tensor("f16.weight", f16)
    w.add_tensor("q8.weight", q8, raw_dtype=Q.Q8_0)

    tensors = [("f32.weight", f32, 0, [5, 3], f32.reshape(-1)),
               ("f32_odd.bias", f32_odd, 0, [7], f32_odd),
               ("f16.weight", f16, 1, [4, 2], f16.reshape(-1).astype(np.float32)),
               ("q8.weight", q8, 8, [64, 2], q8_values)]
    for name, arr, type_id, ne, values in tensors:
        data = arr.tobytes()
        lines.append("tensor %s %d %d %s %d %016x" % (name, type_id, len(ne), " ".join(map(str, ne)),
                                                     len(data), fnv1a64(data)))
        for i in sorted({0, 1, len(values) // 2, len(values) - 1}):
            lines.append("elem %s %d %s" % (name, i, repr(float(values[i]))))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(out_dir, "fixture.expected.txt"), "w") as fp:
        fp.write("# written by tools/make_gguf_fixture.py (gguf-py %s); see that file for the format\n"
                 % importlib.metadata.version("gguf"))
        fp.write("\n".join(lines) + "\n")
    print("wrote %s (%d bytes) and fixture.expected.txt" % (path, os.path.getsize(path)))


if __name__ == "__main__":
    main()
