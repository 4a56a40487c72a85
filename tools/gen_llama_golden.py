#!/usr/bin/env python3
"""gen_llama_golden.py — golden data from Hugging Face `LlamaForCausalLM` for bluelmv's C tests.

Builds two small random-weight Llama models with transformers (an independent reference
implementation), records their logits on a fixed prompt and their greedy continuation, and writes
each model as a llama.cpp-style GGUF file (PyPI `gguf.GGUFWriter`, the writer llama.cpp's
convert_hf_to_gguf.py uses, with the same keys, tensor names and Q/K row permutation as its
`LlamaModel`), plus a small binary `.golden` file the C test reads without Python.

Outputs (tests/data/hf_llama/):
    llama_gqa.gguf   llama_gqa.golden     2 layers, 4 heads / 2 KV heads, separate output matrix
    llama_tied.gguf  llama_tied.golden    1 layer, tie_word_embeddings (no output.weight)
    README.md                             config, versions, file format, how to regenerate

Self-checks (the script fails if any does not hold):
  * greedy decoding is robust: the smallest top-1/top-2 logit gap over every prompt position and
    every generation step is > MIN_REL_GAP relative to the largest |logit|; no BOS/EOS generated;
  * greedy tokens from generate() (KV cache) equal the argmax of one uncached forward pass;
  * the GGUF read back with gguf.GGUFReader, with Q/K un-permuted, loaded into a fresh HF model,
    gives bit-identical logits;
  * an independent numpy forward pass that reads the GGUF tensors as they are stored (permuted
    Q/K, rotating adjacent pairs (2i, 2i+1) by pos * base^(-2i/head_dim), i.e. llama.cpp's
    "NORMAL" rope) matches HF's logits.

Usage: python3 tools/gen_llama_golden.py [--out DIR] [--search]
  --search  if a variant's seed fails the robustness criteria, try the following seeds and report
            the first that passes (then put it into VARIANTS by hand); without it the script fails.
"""
import argparse
import os
import struct
import sys

import numpy as np
import torch

import gguf
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK_PATH = os.path.join(REPO, "tests", "data", "stories260K", "tok512.bin")

GOLDEN_MAGIC = 0x4C4C4730   # bytes "0GLL" on disk (little-endian u32)
GOLDEN_VERSION = 1

N_PROMPT = 24
N_GEN = 64
PROMPT_SEED = 1234
WEIGHT_STD = 0.3            # std of every matrix (also written as initializer_range)
NORM_STD = 0.1              # RMSNorm weights are 1 + NORM_STD * randn
MIN_REL_GAP = 2e-3          # required: min top1-top2 gap / max |logit|

COMMON = dict(
    vocab_size=512, hidden_size=64, intermediate_size=172,
    num_attention_heads=4, num_key_value_heads=2,
    rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=256,
    attention_bias=False, mlp_bias=False, hidden_act="silu",
    initializer_range=WEIGHT_STD,
    bos_token_id=1, eos_token_id=2, pad_token_id=None,
)

VARIANTS = [
    dict(name="llama_gqa", seed=16, num_hidden_layers=2, tie_word_embeddings=False,
         desc="bluelmv test Llama (random, GQA 4/2 heads, 2 layers)"),
    dict(name="llama_tied", seed=8, num_hidden_layers=1, tie_word_embeddings=True,
         desc="bluelmv test Llama (random, GQA 4/2 heads, 1 layer, tied output)"),
]


# ---------------------------------------------------------------------------------------------
# model

def make_config(v):
    cfg = LlamaConfig(num_hidden_layers=v["num_hidden_layers"],
                      tie_word_embeddings=v["tie_word_embeddings"],
                      attn_implementation="eager", **COMMON)
    cfg.dtype = torch.float32
    return cfg


def build_model(cfg, seed):
    """Random model: every parameter re-drawn explicitly from a seeded generator (in sorted name
    order), so the weights do not depend on transformers' own init order."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())   # tied lm_head shares embed_tokens: listed once
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if name.endswith("norm.weight"):
                p.copy_(1.0 + NORM_STD * torch.randn(p.shape, generator=g, dtype=torch.float32))
            else:
                p.copy_(WEIGHT_STD * torch.randn(p.shape, generator=g, dtype=torch.float32))
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.config._attn_implementation == "eager"
    return model


def prompt_ids():
    rng = np.random.default_rng(PROMPT_SEED)
    return [1] + [int(x) for x in rng.integers(3, 512, size=N_PROMPT - 1)]


def top_gap(logits):
    """logits (..., V) -> top1 - top2 per row."""
    s = np.sort(logits, axis=-1)
    return s[..., -1] - s[..., -2]


def run_reference(model, ids):
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        logits = model(x).logits[0].float().numpy().copy()          # (n_prompt, V)
        out = model.generate(x, max_new_tokens=N_GEN, min_new_tokens=N_GEN, do_sample=False,
                             num_beams=1, use_cache=True, pad_token_id=0, eos_token_id=None,
                             output_logits=True, return_dict_in_generate=True)
    seq = out.sequences[0].tolist()
    assert seq[:len(ids)] == ids
    gen = seq[len(ids):]
    assert len(gen) == N_GEN, f"generation stopped early: {len(gen)} tokens"
    gen_logits = torch.cat([l.float() for l in out.logits], 0).numpy()  # (N_GEN, V)
    assert [int(a) for a in gen_logits.argmax(-1)] == gen
    # uncached forward over prompt + generated tokens: must agree with the cached generation
    with torch.no_grad():
        full = model(torch.tensor([seq[:-1]], dtype=torch.long)).logits[0].float().numpy()
    assert [int(a) for a in full[len(ids) - 1:].argmax(-1)] == gen, "cached != uncached greedy"
    assert np.allclose(full[:len(ids)], logits, atol=1e-4)
    gaps = np.concatenate([top_gap(logits), top_gap(gen_logits)])
    max_abs = float(max(np.abs(logits).max(), np.abs(gen_logits).max()))
    return logits, gen, gen_logits, full, float(gaps.min()), max_abs


def robust(gen, min_gap, max_abs):
    return min_gap > MIN_REL_GAP * max_abs and 1 not in gen and 2 not in gen


# ---------------------------------------------------------------------------------------------
# GGUF (as llama.cpp's convert_hf_to_gguf.py LlamaModel writes it)

def permute(w, n_head, n_head_kv):
    """llama.cpp LlamaModel.permute: HF rotate-half row order -> GGML interleaved-pair order."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
             .swapaxes(1, 2)
             .reshape(w.shape))


def unpermute(w, n_head):
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
             .swapaxes(1, 2)
             .reshape(w.shape))


def read_tok512():
    data = open(TOK_PATH, "rb").read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, tokens, scores, types = 4, [], [], []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        piece = data[off:off + n]
        off += n
        i = len(tokens)
        if i == 0:
            assert piece == b"<unk>"
            ttype = gguf.TokenType.UNKNOWN
        elif i in (1, 2):
            assert piece == (b"\n<s>\n" if i == 1 else b"\n</s>\n")
            piece = b"<s>" if i == 1 else b"</s>"
            ttype = gguf.TokenType.CONTROL
        elif 3 <= i <= 258:
            assert piece == b"<0x%02X>" % (i - 3)
            ttype = gguf.TokenType.BYTE
        else:
            ttype = gguf.TokenType.NORMAL
            # llama2.c's export replaced SentencePiece's U+2581 with ' '; GGUF keeps U+2581
            piece = piece.replace(b" ", "\u2581".encode("utf-8"))
        tokens.append(piece)
        scores.append(score)
        types.append(int(ttype))
    assert len(tokens) == 512 and off == len(data)
    assert len(set(tokens)) == len(tokens)
    return tokens, scores, types


def hf_to_gguf_tensors(model, cfg):
    """[(gguf_name, numpy float32 array in numpy (out, in) shape)] in llama.cpp's naming."""
    sd = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    out = [("token_embd.weight", sd["model.embed_tokens.weight"])]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        out += [
            (f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"]),
            (f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], n_head, n_head)),
            (f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], n_head, n_kv)),
            (f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"]),
            (f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"]),
            (f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"]),
            (f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"]),
            (f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"]),
            (f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"]),
        ]
    out.append(("output_norm.weight", sd["model.norm.weight"]))
    if not cfg.tie_word_embeddings:
        out.append(("output.weight", sd["lm_head.weight"]))
    return [(n, np.ascontiguousarray(a, dtype=np.float32)) for n, a in out]


def write_gguf(path, model, cfg, desc):
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(path, arch="llama")     # writes general.architecture = "llama"
    w.add_name(desc)
    # TextModel.set_gguf_parameters + LlamaModel.set_gguf_parameters
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_key_length(head_dim)                  # config.json carries head_dim
    w.add_value_length(head_dim)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(head_dim)
    # _set_vocab_sentencepiece
    tokens, scores, types = read_tok512()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, arr in hf_to_gguf_tensors(model, cfg):
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_gguf(path):
    r = gguf.GGUFReader(path)
    tensors = {}
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))   # GGUF dims -> numpy shape
        tensors[t.name] = np.array(t.data, dtype=np.float32).reshape(shape)
    kv = {}
    for name, f in r.fields.items():
        if name.startswith("tokenizer.ggml.") and name not in (
                "tokenizer.ggml.model", "tokenizer.ggml.pre"):
            continue
        kv[name] = f.contents()
    return kv, tensors


# ---------------------------------------------------------------------------------------------
# self-checks

def check_roundtrip(path, model, cfg, ids, ref_logits):
    """GGUF -> un-permute -> fresh HF model -> identical logits."""
    kv, t = read_gguf(path)
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head
    expect = {
        "general.architecture": "llama", "general.file_type": 0,
        "llama.context_length": cfg.max_position_embeddings,
        "llama.embedding_length": cfg.hidden_size, "llama.block_count": cfg.num_hidden_layers,
        "llama.feed_forward_length": cfg.intermediate_size,
        "llama.rope.dimension_count": head_dim,
        "llama.attention.head_count": n_head, "llama.attention.head_count_kv": n_kv,
        "llama.vocab_size": cfg.vocab_size, "tokenizer.ggml.model": "llama",
    }
    for k, v in expect.items():
        assert kv[k] == v, (k, kv.get(k), v)
    assert abs(kv["llama.rope.freq_base"] - 10000.0) == 0
    assert abs(kv["llama.attention.layer_norm_rms_epsilon"] - cfg.rms_norm_eps) < 1e-12
    assert ("output.weight" in t) == (not cfg.tie_word_embeddings)

    sd = {"model.embed_tokens.weight": t["token_embd.weight"],
          "model.norm.weight": t["output_norm.weight"],
          "lm_head.weight": t["output.weight"] if "output.weight" in t else t["token_embd.weight"]}
    for i in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        sd[p + "input_layernorm.weight"] = t[b + "attn_norm.weight"]
        sd[p + "self_attn.q_proj.weight"] = unpermute(t[b + "attn_q.weight"], n_head)
        sd[p + "self_attn.k_proj.weight"] = unpermute(t[b + "attn_k.weight"], n_kv)
        sd[p + "self_attn.v_proj.weight"] = t[b + "attn_v.weight"]
        sd[p + "self_attn.o_proj.weight"] = t[b + "attn_output.weight"]
        sd[p + "post_attention_layernorm.weight"] = t[b + "ffn_norm.weight"]
        sd[p + "mlp.gate_proj.weight"] = t[b + "ffn_gate.weight"]
        sd[p + "mlp.up_proj.weight"] = t[b + "ffn_up.weight"]
        sd[p + "mlp.down_proj.weight"] = t[b + "ffn_down.weight"]
    fresh = LlamaForCausalLM(cfg).to(torch.float32).eval()
    missing, unexpected = fresh.load_state_dict(
        {k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    with torch.no_grad():
        logits = fresh(torch.tensor([ids], dtype=torch.long)).logits[0].float().numpy()
    diff = float(np.abs(logits - ref_logits).max())
    assert np.array_equal(logits, ref_logits), f"round-trip logits differ by {diff}"
    return t, diff


def numpy_forward(t, cfg, ids, neox=False):
    """Independent float64 forward pass on GGUF-layout tensors (permuted Q/K, interleaved RoPE).
    neox=True rotates (i, i + hd/2) instead — the wrong convention for these tensors, used as a
    negative control to show the check is sensitive to the RoPE layout."""
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // n_head
    eps, base = cfg.rms_norm_eps, 10000.0
    T = {k: v.astype(np.float64) for k, v in t.items()}

    def rmsnorm(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    n = len(ids)
    pos = np.arange(n, dtype=np.float64)
    theta = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)      # (hd/2,)
    ang = pos[:, None] * theta[None, :]                                # (n, hd/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):   # x (n, heads, hd): rotate pairs (2i, 2i+1) by ang[:, i]
        if neox:
            x0, x1 = x[..., :hd // 2], x[..., hd // 2:]
            return np.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    x = T["token_embd.weight"][ids]                                    # (n, d)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg.num_hidden_layers):
        b = f"blk.{i}."
        h = rmsnorm(x, T[b + "attn_norm.weight"])
        q = rope((h @ T[b + "attn_q.weight"].T).reshape(n, n_head, hd))
        k = rope((h @ T[b + "attn_k.weight"].T).reshape(n, n_kv, hd))
        v = (h @ T[b + "attn_v.weight"].T).reshape(n, n_kv, hd)
        att = np.empty((n, n_head, hd))
        for hh in range(n_head):
            kvh = hh // (n_head // n_kv)
            s = q[:, hh] @ k[:, kvh].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            att[:, hh] = s @ v[:, kvh]
        x = x + att.reshape(n, -1) @ T[b + "attn_output.weight"].T
        h = rmsnorm(x, T[b + "ffn_norm.weight"])
        g = h @ T[b + "ffn_gate.weight"].T
        u = h @ T[b + "ffn_up.weight"].T
        x = x + (g / (1.0 + np.exp(-g)) * u) @ T[b + "ffn_down.weight"].T
    x = rmsnorm(x, T["output_norm.weight"])
    out = T["output.weight"] if "output.weight" in T else T["token_embd.weight"]
    return x @ out.T


# ---------------------------------------------------------------------------------------------

def write_golden(path, ids, logits, gen, min_gap):
    n_prompt, n_vocab = logits.shape
    with open(path, "wb") as f:
        f.write(struct.pack("<5I", GOLDEN_MAGIC, GOLDEN_VERSION, n_prompt, n_vocab, len(gen)))
        f.write(np.asarray(ids, dtype="<i4").tobytes())
        f.write(np.ascontiguousarray(logits, dtype="<f4").tobytes())
        f.write(np.asarray(gen, dtype="<i4").tobytes())
        f.write(struct.pack("<f", min_gap))


def check_golden(path, ids, logits, gen, min_gap):
    d = open(path, "rb").read()
    magic, ver, n_p, n_v, n_g = struct.unpack_from("<5I", d, 0)
    assert d[:4] == b"0GLL" and magic == GOLDEN_MAGIC and ver == GOLDEN_VERSION
    o = 20
    assert np.frombuffer(d, "<i4", n_p, o).tolist() == list(ids); o += 4 * n_p
    assert np.array_equal(np.frombuffer(d, "<f4", n_p * n_v, o).reshape(n_p, n_v), logits)
    o += 4 * n_p * n_v
    assert np.frombuffer(d, "<i4", n_g, o).tolist() == list(gen); o += 4 * n_g
    assert struct.unpack_from("<f", d, o)[0] == np.float32(min_gap); o += 4
    assert o == len(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "hf_llama"))
    ap.add_argument("--search", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"numpy {np.__version__}, gguf {gguf_version()}")

    ids = prompt_ids()
    print("prompt ids:", ids)
    for v in VARIANTS:
        cfg = make_config(v)
        seed = v["seed"]
        while True:
            model = build_model(cfg, seed)
            logits, gen, gen_logits, full, min_gap, max_abs = run_reference(model, ids)
            ok = robust(gen, min_gap, max_abs)
            print(f"[{v['name']}] seed {seed}: min top1-top2 gap {min_gap:.6g} "
                  f"(max |logit| {max_abs:.4g}, relative {min_gap / max_abs:.3g}) "
                  f"{'ok' if ok else 'NOT ROBUST'}")
            if ok:
                break
            if not args.search:
                sys.exit(f"{v['name']}: seed {seed} fails the robustness check; "
                         "rerun with --search and update VARIANTS")
            seed += 1
        if seed != v["seed"]:
            print(f"[{v['name']}] --search: use seed={seed} in VARIANTS")
        print(f"[{v['name']}] generated:", gen)

        gguf_path = os.path.join(args.out, v["name"] + ".gguf")
        write_gguf(gguf_path, model, cfg, v["desc"])
        t, rt_diff = check_roundtrip(gguf_path, model, cfg, ids, logits)
        print(f"[{v['name']}] GGUF round-trip -> HF logits: max abs diff {rt_diff:.3g} (exact)")

        # numpy forward over prompt + generated tokens vs HF (uncached) on the same sequence
        seq = ids + gen
        np_logits = numpy_forward(t, cfg, seq[:-1])
        d_prompt = float(np.abs(np_logits[:len(ids)] - logits).max())
        d_all = float(np.abs(np_logits - full).max())
        np_greedy = [int(a) for a in np_logits[len(ids) - 1:].argmax(-1)]
        print(f"[{v['name']}] numpy interleaved-RoPE forward vs HF: max abs diff "
              f"{d_prompt:.3g} (prompt logits), {d_all:.3g} (all {len(seq) - 1} positions); "
              f"greedy tokens {'match' if np_greedy == gen else 'DIFFER'}")
        tol = 1e-5 * max(1.0, max_abs)
        assert d_prompt < tol and d_all < tol, (d_prompt, d_all, tol)
        assert np_greedy == gen
        d_neox = float(np.abs(numpy_forward(t, cfg, ids, neox=True) - logits).max())
        print(f"[{v['name']}] negative control, NEOX (half-split) RoPE on the same tensors: "
              f"max abs diff {d_neox:.3g} (must be large)")
        assert d_neox > 1e-2

        golden_path = os.path.join(args.out, v["name"] + ".golden")
        write_golden(golden_path, ids, logits, gen, min_gap)
        check_golden(golden_path, ids, logits, gen, min_gap)
        for p in (gguf_path, golden_path):
            print(f"wrote {os.path.relpath(p, REPO)} ({os.path.getsize(p)} bytes)")


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
