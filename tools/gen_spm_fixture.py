#!/usr/bin/env python3
"""gen_spm_fixture.py — SentencePiece fixtures for bluelmv's tokenizer.model reader (spm.c) and its
conversion to GGUF tokenizer arrays (convert_hf_llm.c), checked against PyPI `sentencepiece`.

Trains SentencePiece models with PyPI `sentencepiece` on public-domain text (tools/spm_corpus.py) and
records what sentencepiece itself says about them, so the C tests can compare without Python:

    tests/data/spm/bpe2000.model     BPE, 2000 pieces, byte_fallback, ids unk 0 / bos 1 / eos 2 / pad 3
                                     (BlueLM's layout), two user-defined symbols "[|Human|]" and "[|AI|]"
                                     (BlueLM's chat roles), trained on the English and Chinese text
    tests/data/spm/bpe2000.golden    for every piece: a hash of (piece, type, score) as sentencepiece's
                                     API reports them; for every line of the test corpus below:
                                     the text, sp.encode(text) (no BOS) and sp.decode(ids)
    tests/data/spm/bpe2000.corpus.json  the same corpus, readable: text, ids, pieces, decoded, kind
    tests/data/spm/bpe380.model      BPE, 380 pieces, English text only, ids as bpe2000: the tokenizer.model of
                                     the small Hugging Face test models (tools/gen_hf_llm_fixture.py copies it;
                                     their vocabulary is 384 = these 380 pieces + 4 added tokens)
    tests/data/spm/unigram.model     a UNIGRAM model (150 pieces), which bluelmv must refuse

Training options (bpe2000): model_type=bpe, byte_fallback=True, character_coverage=0.9995 (the value
sentencepiece recommends for Chinese/Japanese: the rarest characters fall back to bytes, which the
test then exercises), split_digits=True (as Llama's tokenizer), and normalization_rule_name=identity
with remove_extra_whitespaces=False: llama.cpp's SPM tokenizer, which bluelmv's tokenizer.c follows,
applies no normalization (no NFKC, no whitespace collapsing), so the comparison is about the BPE
segmentation itself. add_dummy_prefix stays True (sentencepiece's default), i.e. GGUF
tokenizer.ggml.add_space_prefix = true.

Corpus lines have a kind:
    exact  — bluelmv must give exactly sentencepiece's ids and decode back to sentencepiece's text;
    probe  — a case where llama.cpp's algorithm is known to differ from sentencepiece's (user-defined
             symbols followed by text: llama.cpp adds its dummy-prefix space again after every special
             token, sentencepiece only at the start of the text); the C test reports these as notes.

Deterministic: one training thread, fixed input order; rerunning gives byte-identical files.
Usage: python3 tools/gen_spm_fixture.py [--out DIR]
"""
import argparse
import io
import json
import os
import struct
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spm_corpus  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_MAGIC = b"SPMG"
GOLDEN_VERSION = 1
KIND_EXACT, KIND_PROBE = 1, 2

# The test corpus: mixed English, Chinese, emoji, digits, whitespace runs, control characters.
EXACT = [
    "Hello world",
    "Four score and seven years ago our fathers brought forth on this continent",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    "The quick brown fox jumps over the lazy dog.",
    "道可道，非常道。名可名，非常名。",
    "學而時習之，不亦說乎？有朋自遠方來，不亦樂乎？",
    "床前明月光，疑是地上霜。",
    "今天天氣很好，我們去公園散步吧。",
    "Mixed 中文 and English 混合 text, 然後 back to English.",
    "Emoji: 😀 👍🏽 👨‍👩‍👧 ❤️ 🇨🇳 🐉",
    "😀😀😀",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1,000,000 1e-5",
    "2024年11月21日 下午3點45分",
    "  two leading spaces",
    "trailing spaces   ",
    "multiple    internal     spaces",
    " ",
    "   ",
    "",
    "\ttab\tseparated\tvalues\t",
    "line one\nline two\r\nline three\n\n",
    "龘靐齉 rare characters fall back to bytes",
    "こんにちは、世界。안녕하세요 세계. Привет, мир. Γειά σου Κόσμε.",
    "def f(x):\n    return x ** 2  # comment",
    "https://example.com/path?q=1&r=2#frag",
    "!!! ??? ... --- *** ((( ))) [[[ ]]]",
    "ＡＢＣ１２３ full-width ｆｏｒｍｓ",
    "e\u0301 (a decomposed é) and é (precomposed)",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "thethethethethe the the the",
    "<s> and </s> and <unk> and <pad> as plain text",
    "<0x41> <0xE4> are not byte tokens in text",
    "▁ a literal lower-one-eighth block ▁▁",
    "\u00a0non-breaking\u00a0space and\u3000ideographic space",
    "zero\u200bwidth\u200djoiner",
    "Hello [|AI|]",
    "中文：「引號」與《書名號》。",
    "In the beginning God created the heaven and the earth.",
    "天地玄黃，宇宙洪荒。日月盈昃，辰宿列張。",
    "MiXeD CaSe WoRdS and ALLCAPS",
    "x" * 3 + " " * 7 + "y",
    "\u0000NUL and \u0007bell and \u001bescape",
]

PROBE = [
    "[|Human|]:Hello, who are you?\n[|AI|]:",
    "[|Human|]: 你好\n[|AI|]:",
    "Hello [|AI|]world",
    "[|AI|][|Human|]",
]


def random_lines(sp, n=40, seed=20241121):
    """Strings that stress the merge order: random normal pieces of the model glued together (so that
    many overlapping merges compete), with random spaces, digits and byte-fallback characters between."""
    import random
    rng = random.Random(seed)
    normal = [sp.id_to_piece(i).replace("\u2581", " ") for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.id_to_piece(i) in USER_DEFINED)]
    extra = [" ", "  ", "0", "7", "42", "\u9f98", "\U0001F600", "\n", "\t", ".", ","]
    out = []
    for _ in range(n):
        parts = [rng.choice(normal) if rng.random() < 0.85 else rng.choice(extra)
                 for _ in range(rng.randint(2, 24))]
        out.append("".join(parts))
    return out


def train(lines, out_bytes, **opts):
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=f, num_threads=1, minloglevel=2,
                                   **opts)
    out_bytes[:] = f.getvalue()
    return spm.SentencePieceProcessor(model_proto=bytes(out_bytes))


def piece_type(sp, i):
    if sp.is_unknown(i):
        return 2
    if sp.is_control(i):
        return 3
    if sp.is_unused(i):
        return 5
    if sp.is_byte(i):
        return 6
    # sentencepiece's Python API has no is_user_defined; tell USER_DEFINED from NORMAL by the trainer's list
    return 4 if sp.id_to_piece(i) in USER_DEFINED else 1


USER_DEFINED = ["[|Human|]", "[|AI|]"]


def fnv1a32(data):
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def piece_hash(sp, i):
    return fnv1a32(sp.id_to_piece(i).encode("utf-8") + b"\0" + bytes([piece_type(sp, i)]) +
                   struct.pack("<f", sp.get_score(i)))


def write_golden(path, sp, cases):
    out = bytearray()
    out += GOLDEN_MAGIC + struct.pack("<3I", GOLDEN_VERSION, sp.get_piece_size(), len(cases))
    for i in range(sp.get_piece_size()):
        out += struct.pack("<I", piece_hash(sp, i))
    for kind, text, ids, decoded in cases:
        t = text.encode("utf-8")
        d = decoded.encode("utf-8")
        out += struct.pack("<II", kind, len(t)) + t
        out += struct.pack("<I", len(ids)) + struct.pack("<%di" % len(ids), *ids)
        out += struct.pack("<I", len(d)) + d
    with open(path, "wb") as f:
        f.write(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "spm"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from importlib.metadata import version
    print(f"sentencepiece {version('sentencepiece')}")

    # ---- bpe2000: the tokenizer test model
    model = bytearray()
    sp = train(spm_corpus.lines(), model, model_type="bpe", vocab_size=2000, byte_fallback=True,
               character_coverage=0.9995, normalization_rule_name="identity", remove_extra_whitespaces=False,
               split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=3, user_defined_symbols=USER_DEFINED)
    path = os.path.join(args.out, "bpe2000.model")
    with open(path, "wb") as f:
        f.write(model)
    types = [piece_type(sp, i) for i in range(sp.get_piece_size())]
    print(f"wrote {os.path.relpath(path, REPO)} ({len(model)} bytes): {sp.get_piece_size()} pieces, "
          + ", ".join(f"{n} {name}" for name, n in
                      (("normal", types.count(1)), ("unknown", types.count(2)), ("control", types.count(3)),
                       ("user-defined", types.count(4)), ("byte", types.count(6)))))
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    assert sp.id_to_piece(6) == "<0x00>" and sp.id_to_piece(261) == "<0xFF>"

    cases, readable, seen = [], [], set()
    n_bytes_used = 0
    for kind, lines in ((KIND_EXACT, EXACT + spm_corpus.lines() + random_lines(sp)), (KIND_PROBE, PROBE)):
        for text in lines:
            ids = sp.encode(text)
            decoded = sp.decode(ids)
            if kind == KIND_EXACT:
                # identity normalization is lossless, except that a literal U+2581 in the text is
                # indistinguishable from an escaped space and decodes as one
                assert decoded == text or "\u2581" in text, (text, decoded)
            n_bytes_used += sum(1 for i in ids if sp.is_byte(i))
            cases.append((kind, text, ids, decoded))
            if (text not in EXACT and text not in PROBE) or text in seen:
                continue  # the training lines and the random lines are in the binary golden only
            seen.add(text)
            readable.append({"kind": "exact" if kind == KIND_EXACT else "probe", "text": text, "ids": ids,
                             "pieces": [sp.id_to_piece(i) for i in ids], "decoded": decoded})
    n_ids = sum(len(c[2]) for c in cases)
    n_exact = sum(1 for c in cases if c[0] == KIND_EXACT)
    print(f"corpus: {n_exact} exact lines ({len(EXACT)} written for the test, {len(spm_corpus.lines())} training "
          f"lines, {n_exact - len(EXACT) - len(spm_corpus.lines())} random piece strings) + {len(PROBE)} probe lines, "
          f"{n_ids} ids ({n_bytes_used} byte-fallback)")
    gpath = os.path.join(args.out, "bpe2000.golden")
    write_golden(gpath, sp, cases)
    print(f"wrote {os.path.relpath(gpath, REPO)} ({os.path.getsize(gpath)} bytes)")
    jpath = os.path.join(args.out, "bpe2000.corpus.json")
    with open(jpath, "w", encoding="utf-8") as f:
        json.dump(readable, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(jpath, REPO)} ({os.path.getsize(jpath)} bytes)")

    # ---- bpe380: the small models' tokenizer (English only, so that few pieces hold every character)
    model = bytearray()
    sp = train(spm_corpus.ENGLISH, model, model_type="bpe", vocab_size=380, byte_fallback=True,
               character_coverage=1.0, normalization_rule_name="identity", remove_extra_whitespaces=False,
               split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=3)
    path = os.path.join(args.out, "bpe380.model")
    with open(path, "wb") as f:
        f.write(model)
    print(f"wrote {os.path.relpath(path, REPO)} ({len(model)} bytes): {sp.get_piece_size()} pieces")

    # ---- a unigram model, to be refused
    model = bytearray()
    sp = train(spm_corpus.ENGLISH, model, model_type="unigram", vocab_size=150, byte_fallback=False,
               character_coverage=1.0, normalization_rule_name="identity")
    path = os.path.join(args.out, "unigram.model")
    with open(path, "wb") as f:
        f.write(model)
    print(f"wrote {os.path.relpath(path, REPO)} ({len(model)} bytes): {sp.get_piece_size()} pieces")


if __name__ == "__main__":
    main()
