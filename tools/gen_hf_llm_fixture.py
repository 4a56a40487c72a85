#!/usr/bin/env python3
"""gen_hf_llm_fixture.py — Hugging Face language-model checkpoints and golden data for bluelmv's
convert_hf_llm.c (tests/test_hfllm.c).

Builds two small random-weight models with transformers (the independent reference), saves them with
`save_pretrained` as a user would download them, and records transformers' logits on a fixed prompt at
every position and its 16-token greedy continuation. Also writes, with PyPI `gguf` (the writer
llama.cpp's convert_hf_to_gguf.py uses), a `llama` GGUF of the first model's weights quantized to
Q8_0 by gguf-py's own quantizer, and a llama.cpp-style file holding a Q4_K tensor.

Outputs (tests/data/hfllm/):
  llama_f32/            LlamaForCausalLM, float32, one model.safetensors; config.json as transformers
                        5 writes it (rope_parameters); tokenizer.model (tests/data/spm/bpe380.model) and
                        a tokenizer_config.json with added_tokens_decoder (4 added tokens: ids 380..383)
  llama_bf16_sharded/   the same weights in bfloat16, save_pretrained(max_shard_size="100KB") -> shards
                        + model.safetensors.index.json; here the added tokens are in a minimal
                        tokenizer.json ("added_tokens" only, the part bluelmv reads) and
                        tokenizer_config.json has no added_tokens_decoder
  llama.golden          transformers' logits for the prompt (F32 weights) + greedy tokens
  bluelm_f16/           a BlueLM-style model: LlamaForCausalLM plus BlueLM's "stable embedding"
                        (model.embed_layer_norm = nn.LayerNorm(hidden, eps=rms_norm_eps) applied to the
                        token embeddings before layer 0, as vivo-ai-lab/BlueLM's BlueLMModel does when
                        use_stable_embedding), saved in float16 by save_pretrained, with a config.json
                        written in BlueLM-7B's key set (architectures ["BlueLMForCausalLM"], model_type
                        "BlueLM", use_stable_embedding true, rope_theta, rope_scaling null, pad 3)
  bluelm.golden         its logits and greedy tokens
  llama_pypi_q8_0.gguf  the llama model as a `llama` GGUF written by gguf.GGUFWriter: llama.cpp's keys
                        and tensor names, Q/K rows permuted by llama.cpp's LlamaModel.permute, matrices
                        quantized to Q8_0 by gguf.quants.quantize, norms F32; vocabulary built from
                        sentencepiece's Python API (not from bluelmv's reader) by llama.cpp's
                        _create_vocab_sentencepiece rules
  llama_q4k.gguf        a tiny `llama` GGUF (hidden 32, FFN 256) whose blk.0.ffn_down.weight is Q4_K
                        (raw bytes of the right size: gguf-py cannot quantize K-quants), which bluelmv
                        must refuse by name
  README.md             written by hand: what is here and why

Config of both models: vocab 384, hidden 64, 2 layers, 4 heads / 2 KV heads (GQA), FFN 128 (every
matrix row a multiple of 32, so Q8_0/Q4_0 apply everywhere), RMSNorm eps 1e-6, RoPE theta 10000,
max_position_embeddings 256, untied output. Weights: every parameter redrawn in sorted-name order from
a seeded generator (token embedding N(0, 1) as nn.Embedding; other matrices randn / sqrt(fan_in); norm
weights 1 + 0.1·randn; LayerNorm bias 0.1·randn), then rounded to bfloat16 (llama) or float16
(bluelm) and kept as float32, so the files of other dtypes hold exactly the numbers the golden was
computed with. The prompt is BOS + the first 23 ids bpe380 gives for a sentence of A Tale of Two
Cities; the seeds were found with --search (the first seed from 300 / 400 that passes the robustness
check).

Self-checks (the script fails if one does not hold): greedy decoding is robust (top1-top2 gap >
MIN_REL_GAP · max|logit| at every prompt position and generation step); cached greedy == argmax of an
uncached forward; the BlueLM hook equals feeding LayerNorm(embedding) as inputs_embeds; every saved
checkpoint reloads (safetensors) to exactly the golden's weights; the PyPI GGUF read back with
gguf.GGUFReader, dequantized and un-permuted into a fresh LlamaForCausalLM, stays close to the
golden logits.

Usage: python3 tools/gen_hf_llm_fixture.py [--out DIR] [--search]
"""
import argparse
import copy
import glob
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch
from torch import nn

import gguf
import sentencepiece as spm
import transformers
from gguf import quants
from transformers import LlamaConfig, LlamaForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPM_MODEL = os.path.join(REPO, "tests", "data", "spm", "bpe380.model")

GOLDEN_MAGIC = 0x4C4C4730   # "0GLL", the format of tools/gen_llama_golden.py
GOLDEN_VERSION = 1
N_PROMPT = 24
N_GEN = 16
WEIGHT_STD = 1.0           # matrices: WEIGHT_STD / sqrt(fan_in) * randn (PyTorch-like scale)
NORM_STD = 0.1
MIN_REL_GAP = 2e-3
PROMPT_TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
               "foolishness")

N_SPM = 380
ADDED = [  # (id, content, special) as transformers writes added_tokens_decoder
    (380, "[|Human|]", False), (381, "[|AI|]", False), (382, "<im_start>", True), (383, "<im_end>", True),
]
COMMON = dict(
    vocab_size=N_SPM + len(ADDED), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0,
    max_position_embeddings=256, attention_bias=False, mlp_bias=False, hidden_act="silu",
    initializer_range=0.02, bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False,
)
VARIANTS = {"llama": 300, "bluelm": 404}   # seeds (found with --search)


class BlueLMStyle(LlamaForCausalLM):
    """LlamaForCausalLM + BlueLM's stable embedding: hidden = LayerNorm(embed_tokens(ids)) before layer 0
    (vivo-ai-lab/BlueLM BlueLMModel: `self.embed_layer_norm = nn.LayerNorm(config.hidden_size,
    eps=config.rms_norm_eps)`; forward: `hidden_states = self.embed_layer_norm(self.embed_tokens(ids))`).
    The module lives at model.embed_layer_norm, so state_dict names it model.embed_layer_norm.weight/.bias."""

    def __init__(self, config):
        super().__init__(config)
        self.model.embed_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.model.embed_tokens.register_forward_hook(lambda mod, args, out: self.model.embed_layer_norm(out))


def make_config():
    cfg = LlamaConfig(attn_implementation="eager", **COMMON)
    cfg.dtype = torch.float32
    return cfg


def build_model(cfg, seed, bluelm, round_dtype):
    torch.manual_seed(seed)
    model = (BlueLMStyle if bluelm else LlamaForCausalLM)(cfg).to(torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if name.endswith("norm.weight"):
                v = 1.0 + NORM_STD * torch.randn(p.shape, generator=g)
            elif name.endswith(".bias"):
                v = NORM_STD * torch.randn(p.shape, generator=g)
            elif name == "model.embed_tokens.weight":
                v = torch.randn(p.shape, generator=g)                      # nn.Embedding's N(0, 1)
            else:
                v = WEIGHT_STD * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5   # fan-in scaled
            p.copy_(v.to(round_dtype).to(torch.float32))
    if bluelm:
        assert "model.embed_layer_norm.weight" in params and "model.embed_layer_norm.bias" in params
    return model


def prompt_ids():
    sp = spm.SentencePieceProcessor(model_file=SPM_MODEL)
    ids = [1] + sp.encode(PROMPT_TEXT)
    assert len(ids) >= N_PROMPT, len(ids)
    return ids[:N_PROMPT]


def top_gap(x):
    s = np.sort(x, axis=-1)
    return s[..., -1] - s[..., -2]


def run_reference(model, ids):
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].float().numpy().copy()
        out = model.generate(x, max_new_tokens=N_GEN, min_new_tokens=N_GEN, do_sample=False, num_beams=1,
                             use_cache=True, pad_token_id=0, eos_token_id=None, output_logits=True,
                             return_dict_in_generate=True)
    seq = out.sequences[0].tolist()
    gen = seq[len(ids):]
    assert seq[:len(ids)] == ids and len(gen) == N_GEN
    gen_logits = torch.cat([l.float() for l in out.logits], 0).numpy()
    assert [int(a) for a in gen_logits.argmax(-1)] == gen
    with torch.no_grad():
        full = model(torch.tensor([seq[:-1]])).logits[0].float().numpy()
    assert [int(a) for a in full[len(ids) - 1:].argmax(-1)] == gen, "cached != uncached greedy"
    gaps = np.concatenate([top_gap(logits), top_gap(gen_logits)])
    max_abs = float(max(np.abs(logits).max(), np.abs(gen_logits).max()))
    return logits, gen, float(gaps.min()), max_abs


def write_golden(path, ids, logits, gen, min_gap):
    n_prompt, n_vocab = logits.shape
    with open(path, "wb") as f:
        f.write(struct.pack("<5I", GOLDEN_MAGIC, GOLDEN_VERSION, n_prompt, n_vocab, len(gen)))
        f.write(np.asarray(ids, dtype="<i4").tobytes())
        f.write(np.ascontiguousarray(logits, dtype="<f4").tobytes())
        f.write(np.asarray(gen, dtype="<i4").tobytes())
        f.write(struct.pack("<f", min_gap))


# ---------------------------------------------------------------------------------------------
# checkpoint directories

def tokenizer_config(with_decoder, pad_token):
    tc = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": pad_token,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 256,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
    }
    if with_decoder:
        dec = {}
        for i, text in ((0, "<unk>"), (1, "<s>"), (2, "</s>")) + tuple((a[0], a[1]) for a in ADDED):
            special = i < 3 or dict((a[0], a[2]) for a in ADDED)[i]
            dec[str(i)] = {"content": text, "lstrip": False, "normalized": not special, "rstrip": False,
                           "single_word": False, "special": special}
        tc["added_tokens_decoder"] = dec
    return tc


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def save_checkpoint(model, path, dtype, shard=None):
    if os.path.isdir(path):
        shutil.rmtree(path)
    m = copy.deepcopy(model).to(dtype)
    if shard:
        m.save_pretrained(path, max_shard_size=shard)
    else:
        m.save_pretrained(path)
    shutil.copyfile(SPM_MODEL, os.path.join(path, "tokenizer.model"))
    for f in os.listdir(path):   # save_pretrained writes shards 0600
        os.chmod(os.path.join(path, f), 0o644)


def bluelm_config(cfg, dtype_name):
    # the key set of BlueLM-7B-Base's config.json (BlueLMConfig in vivo-ai-lab/BlueLM), with this model's sizes
    return {
        "architectures": ["BlueLMForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_bluelm.BlueLMConfig",
                     "AutoModelForCausalLM": "modeling_bluelm.BlueLMForCausalLM"},
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "model_type": "BlueLM",
        "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_key_value_heads": cfg.num_key_value_heads,
        "pad_token_id": 3,
        "pretraining_tp": 1,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": dtype_name,
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_stable_embedding": True,
        "vocab_size": cfg.vocab_size,
    }


def load_bf16_file(path):
    """safetensors.numpy cannot represent bfloat16; read BF16 shards with torch instead."""
    from safetensors.torch import load_file as load_torch
    return {k: v.float().numpy() for k, v in load_torch(path).items()}


def check_reload_any(path, model):
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    loaded = {}
    for f in files:
        loaded.update(load_bf16_file(f))
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    assert set(loaded) == set(sd), (set(loaded) ^ set(sd))
    for k, v in loaded.items():
        assert np.array_equal(v, sd[k]), k
    return len(files)


# ---------------------------------------------------------------------------------------------
# the PyPI-gguf file

def permute(w, n_head, n_head_kv):
    """llama.cpp LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def does_token_look_special(t):
    """llama.cpp ModelBase.does_token_look_special."""
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<\uff5c") and t.endswith("\uff5c>")) or (t.startswith("<unused") and t.endswith(">")))


def sentencepiece_vocab(vocab_size, tc):
    """llama.cpp's _create_vocab_sentencepiece, from sentencepiece's own API, with bluelmv's one documented
    difference: a model piece listed again (same text, same id) in added_tokens_decoder keeps its type and
    score (llama.cpp would make <unk> CONTROL and score -1000)."""
    sp = spm.SentencePieceProcessor(model_file=SPM_MODEL)
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [5] * vocab_size
    for i in range(sp.vocab_size()):
        t = 1
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        tokens[i] = sp.id_to_piece(i).encode()
        scores[i] = sp.get_score(i)
        types[i] = t
    for key, data in tc.get("added_tokens_decoder", {}).items():
        i, text = int(key), data["content"]
        if i < sp.vocab_size() and tokens[i] == text.encode():
            continue
        if data.get("special") or does_token_look_special(text):
            types[i] = 3
        else:
            text = text.replace("\u2581", " ")
            types[i] = 4
        tokens[i] = text.encode()
        scores[i] = -1000.0
    return tokens, scores, types


def write_pypi_gguf(path, name, model, cfg, tc):
    sd = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    tokens, scores, types = sentencepiece_vocab(cfg.vocab_size, tc)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(3)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)

    def mat(name_, arr):
        q = quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name_, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def vec(name_, arr):
        w.add_tensor(name_, np.ascontiguousarray(arr, dtype=np.float32))

    mat("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        vec(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        mat(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], n_head, n_head))
        mat(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], n_head, n_kv))
        mat(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        mat(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        vec(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        mat(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        mat(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
        mat(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
    vec("output_norm.weight", sd["model.norm.weight"])
    mat("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check_pypi_gguf(path, cfg, ids, ref_logits):
    """Read back with GGUFReader, dequantize, un-permute, run in transformers: close to the golden."""
    r = gguf.GGUFReader(path)
    t = {}
    for ti in r.tensors:
        arr = quants.dequantize(ti.data, ti.tensor_type)
        t[ti.name] = np.asarray(arr, dtype=np.float32).reshape([int(d) for d in reversed(ti.shape.tolist())])
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    sd = {"model.embed_tokens.weight": t["token_embd.weight"], "model.norm.weight": t["output_norm.weight"],
          "lm_head.weight": t["output.weight"]}
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
    missing, unexpected = fresh.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    with torch.no_grad():
        logits = fresh(torch.tensor([ids])).logits[0].float().numpy()
    nmse = float(((logits - ref_logits) ** 2).sum() / (ref_logits ** 2).sum())
    return nmse


def write_q4k_file(path):
    """A tiny llama.cpp-style `llama` GGUF with one Q4_K tensor (blk.0.ffn_down.weight, 256 inputs)."""
    D, F, V, H, KV = 32, 256, 16, 4, 2
    hd = D // H
    rng = np.random.default_rng(5)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name("q4k-test")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(64)
    w.add_embedding_length(D)
    w.add_block_count(1)
    w.add_feed_forward_length(F)
    w.add_rope_dimension_count(hd)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(V)

    def f16(name_, shape):
        w.add_tensor(name_, (0.1 * rng.standard_normal(shape)).astype(np.float16))

    def q8(name_, shape):
        q = quants.quantize((0.1 * rng.standard_normal(shape)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name_, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    f16("token_embd.weight", (V, D))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(D, dtype=np.float32))
    f16("blk.0.attn_q.weight", (D, D))
    f16("blk.0.attn_k.weight", (KV * hd, D))
    f16("blk.0.attn_v.weight", (KV * hd, D))
    f16("blk.0.attn_output.weight", (D, D))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(D, dtype=np.float32))
    q8("blk.0.ffn_gate.weight", (F, D))
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q4_K]
    raw = rng.integers(0, 256, size=(D, F // block_elems * block_bytes), dtype=np.uint8)
    raw[:, 0:4] = np.frombuffer(np.array([0.01, 0.001], dtype=np.float16).tobytes(), dtype=np.uint8)  # d, dmin
    w.add_tensor("blk.0.ffn_down.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    q8("blk.0.ffn_up.weight", (F, D))
    w.add_tensor("output_norm.weight", np.ones(D, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = gguf.GGUFReader(path)
    t = {x.name: x for x in r.tensors}
    assert t["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_K
    assert [int(d) for d in t["blk.0.ffn_down.weight"].shape] == [F, D]


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "hfllm"))
    ap.add_argument("--search", action="store_true", help="try following seeds when a seed is not robust")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    from importlib.metadata import version
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}, "
          f"gguf {version('gguf')}, sentencepiece {version('sentencepiece')}, safetensors {version('safetensors')}")
    ids = prompt_ids()
    print("prompt ids:", ids)
    cfg = make_config()

    models = {}
    for name, seed in VARIANTS.items():
        bluelm = name == "bluelm"
        round_dtype = torch.float16 if bluelm else torch.bfloat16
        while True:
            model = build_model(cfg, seed, bluelm, round_dtype)
            logits, gen, min_gap, max_abs = run_reference(model, ids)
            ok = min_gap > MIN_REL_GAP * max_abs
            print(f"[{name}] seed {seed}: min top1-top2 gap {min_gap:.5g} (max |logit| {max_abs:.4g}, relative "
                  f"{min_gap / max_abs:.3g}) {'ok' if ok else 'NOT ROBUST'}")
            if ok:
                break
            if not args.search:
                sys.exit(f"{name}: seed {seed} is not robust; rerun with --search and update VARIANTS")
            seed += 1
        if seed != VARIANTS[name]:
            print(f"[{name}] --search: use seed {seed} in VARIANTS")
        print(f"[{name}] greedy:", gen)
        if bluelm:
            # the hook equals BlueLM's forward written out: inputs_embeds = LayerNorm(embed_tokens(ids))
            with torch.no_grad():
                emb = model.model.embed_layer_norm(model.model.embed_tokens.weight[torch.tensor(ids)])
                plain = LlamaForCausalLM(cfg).to(torch.float32).eval()
                plain.load_state_dict({k: v for k, v in model.state_dict().items() if "embed_layer_norm" not in k})
                via_embeds = plain(inputs_embeds=emb[None]).logits[0].numpy()
            assert np.array_equal(via_embeds, logits), float(np.abs(via_embeds - logits).max())
            print(f"[{name}] LayerNorm(embedding) as inputs_embeds gives the same logits: ok")
        write_golden(os.path.join(args.out, name + ".golden"), ids, logits, gen, min_gap)
        models[name] = (model, logits)

    # llama: F32 one file, BF16 sharded
    model, logits = models["llama"]
    d = os.path.join(args.out, "llama_f32")
    save_checkpoint(model, d, torch.float32)
    dump_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config(True, None))
    print(f"[llama] {d}: {check_reload_any(d, model)} safetensors file(s), reload exact")
    d = os.path.join(args.out, "llama_bf16_sharded")
    save_checkpoint(model, d, torch.bfloat16, shard="100KB")
    dump_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config(False, None))
    dump_json(os.path.join(d, "tokenizer.json"), {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": not s, "special": s} for i, c, s in
                         [(0, "<unk>", True), (1, "<s>", True), (2, "</s>", True)] + ADDED],
    })
    n = check_reload_any(d, model)
    assert n >= 3, n
    print(f"[llama] {d}: {n} shards, reload exact")
    pypi = os.path.join(args.out, "llama_pypi_q8_0.gguf")
    write_pypi_gguf(pypi, "llama_f32", model, cfg, tokenizer_config(True, None))
    nmse = check_pypi_gguf(pypi, cfg, ids, logits)
    print(f"[llama] {pypi}: GGUFReader -> dequantize -> transformers: NMSE {nmse:.3g} vs the F32 golden")
    assert nmse < 1e-3, nmse

    # bluelm: F16 one file, BlueLM's config.json
    model, logits = models["bluelm"]
    d = os.path.join(args.out, "bluelm_f16")
    save_checkpoint(model, d, torch.float16)
    dump_json(os.path.join(d, "config.json"), bluelm_config(cfg, "float16"))
    dump_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config(True, "<pad>"))
    print(f"[bluelm] {d}: {check_reload_any(d, model)} safetensors file(s), reload exact")

    write_q4k_file(os.path.join(args.out, "llama_q4k.gguf"))
    total = 0
    for root, _, files in os.walk(args.out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"wrote {os.path.relpath(args.out, REPO)}: {total} bytes in all")


if __name__ == "__main__":
    main()
