#!/usr/bin/env python3
"""check_gguf.py — read a GGUF file with an independent reader (PyPI `gguf`, GGUFReader) and print it.

    python3 tools/check_gguf.py FILE [--expect-json J]

Prints one line per item, so that a test can compare them with what it wrote:

    gguf version V alignment A tensors N kvs M
    kv KEY TYPE VALUE                    TYPE as in gguf.h: u8 i8 ... string array[ELEM]
    tensor NAME NE0,NE1,.. TYPE N_BYTES  shape in GGUF order (ne[0] first), TYPE as ggml: q8_0, f32, ...

Exit status: 0 if the file reads and matches the expectations, 1 on a mismatch, 2 if the reader
raises (the file is not valid GGUF as far as gguf-py is concerned).

--expect-json J names a JSON file {"kv": {KEY: {"type": T, "value": V}}, "tensors": [{"name": ...,
"shape": [ne0, ...], "type": "q8_0"}]}. "value" is optional; for arrays it is the list of elements
(strings as str). Only the keys listed are checked; the tensor list must match exactly, in order.
"""
import argparse
import json
import sys

import numpy as np

try:
    import gguf
    from gguf import GGUFValueType
except ImportError as e:  # pragma: no cover - environment problem, not a file problem
    print(f"check_gguf: cannot import gguf: {e}", file=sys.stderr)
    sys.exit(3)

SHORT = {
    GGUFValueType.UINT8: "u8", GGUFValueType.INT8: "i8", GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16", GGUFValueType.UINT32: "u32", GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32", GGUFValueType.BOOL: "bool", GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array", GGUFValueType.UINT64: "u64", GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}


def elem_type(field):
    """An array's element type. Read from the raw parts (key length, key, type, element type, count,
    ...) because gguf-py leaves it out of field.types when the array is empty."""
    return GGUFValueType(int(field.parts[3][0]))


def type_name(field):
    """The KV's type as gguf.h names it; arrays as array[ELEM] (nested: array[array])."""
    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        return "array[%s]" % SHORT[elem_type(field)]
    return SHORT[main]


def as_text(part):
    return bytes(part).decode("utf-8", "backslashreplace")


def value_of(field):
    """A Python value for the KV: scalars as numbers/bool/str, flat arrays as lists, nested as None."""
    main = field.types[0]
    if main == GGUFValueType.STRING:
        return as_text(field.parts[field.data[0]])
    if main != GGUFValueType.ARRAY:
        v = field.parts[field.data[0]][0]
        if main == GGUFValueType.BOOL:
            return bool(v)
        return v.item() if isinstance(v, np.generic) else v
    elem = elem_type(field)
    if elem == GGUFValueType.ARRAY:
        return None  # nested array: gguf-py flattens it, so no element list is compared
    if elem == GGUFValueType.STRING:
        return [as_text(field.parts[i]) for i in field.data]
    if elem == GGUFValueType.BOOL:
        return [bool(field.parts[i][0]) for i in field.data]
    return [field.parts[i][0].item() for i in field.data]


def shown(v):
    if isinstance(v, list):
        head = ", ".join(repr(x) for x in v[:8])
        return "n=%d [%s%s]" % (len(v), head, ", ..." if len(v) > 8 else "")
    if v is None:
        return "(nested)"
    return repr(v)


def same_value(got, want, tname):
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            same_value(g, w, tname) for g, w in zip(got, want))
    if isinstance(want, float) or "f32" in tname or "f64" in tname:
        if "f32" in tname:  # compare at f32 precision: the file holds a float
            return np.float32(got) == np.float32(want)
        return float(got) == float(want)
    return got == want


def check(reader, expect):
    bad = []
    fields = reader.fields
    for key, spec in expect.get("kv", {}).items():
        f = fields.get(key)
        if f is None:
            bad.append("kv %s: missing" % key)
            continue
        t = type_name(f)
        if "type" in spec and spec["type"] != t:
            bad.append("kv %s: type %s, expected %s" % (key, t, spec["type"]))
        if "value" in spec and not same_value(value_of(f), spec["value"], t):
            bad.append("kv %s: value %s, expected %s" % (key, shown(value_of(f)), shown(spec["value"])))
    want_t = expect.get("tensors")
    if want_t is not None:
        got_t = [(t.name, [int(d) for d in t.shape], t.tensor_type.name.lower()) for t in reader.tensors]
        want = [(t["name"], list(t["shape"]), t["type"].lower()) for t in want_t]
        if got_t != want:
            bad.append("tensors %s, expected %s" % (got_t, want))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--expect-json")
    args = ap.parse_args()
    try:
        reader = gguf.GGUFReader(args.file)
        # Touch every tensor's bytes: a tensor running past the end of the file raises here.
        for t in reader.tensors:
            _ = np.asarray(t.data).reshape(-1)[-1:]
    except Exception as e:  # any failure of the reader means the file is not valid for it
        print("check_gguf: %s: reader failed: %s: %s" % (args.file, type(e).__name__, e), file=sys.stderr)
        return 2
    version = int(reader.fields["GGUF.version"].parts[-1][0])
    print("gguf version %d alignment %d tensors %d kvs %d" % (
        version, reader.alignment, len(reader.tensors),
        sum(1 for k in reader.fields if not k.startswith("GGUF."))))
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        print("kv %s %s %s" % (key, type_name(f), shown(value_of(f))))
    for t in reader.tensors:
        print("tensor %s %s %s %d" % (t.name, ",".join(str(int(d)) for d in t.shape),
                                      t.tensor_type.name.lower(), t.n_bytes))
    if args.expect_json:
        with open(args.expect_json) as fp:
            bad = check(reader, json.load(fp))
        for b in bad:
            print("check_gguf: mismatch: " + b, file=sys.stderr)
        if bad:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
