#!/usr/bin/env python3
"""gen_vit_golden.py — golden data for bluelmv's vision side (vit.c) from independent references.

References:
  * the ViT: Hugging Face transformers' `SiglipVisionModel` (eager attention, float32);
  * the downsampler + projector: a PyTorch transcription of VILA's `mlp_downsample` projector
    (NVlabs/VILA llava/model/multimodal_projector/base_projector.py: DownSampleBlock.flat_square,
    then nn.LayerNorm(4D), nn.Linear(4D, H), nn.GELU(), nn.Linear(H, H)).

Outputs (tests/data/vit/):
  siglip_a.gguf     the small model's first L-1 = 2 layers, no post-LN, padded (Kp = 160, Fp = 192):
                    the production layout (DESIGN.md: the last ViT layer is dropped)
  siglip_b.gguf     all L = 3 layers + post-LN, unpadded (Kp = K = 147, Fp = F = 172)
  *.npy             golden tensors (float32 unless noted), named <file>_<stage>:
      a_patch_embed (5, 49, 64)        HF embeddings(pixel_values)       = hidden_states[0]
      a_vit_block_0 (5, 49, 64)        after encoder layer 0             = hidden_states[1]
      a_vit_out     (5, 49, 64)        after encoder layer 1             = hidden_states[2]
      a_merged_vila (5, 16, 256)       VILA DownSampleBlock(a_vit_out), before the LayerNorm
      a_image_embeds_vila (5, 16, 64)  the whole projector, VILA token order
      a_image_embeds_raster (5, 16, 64) the same tokens in raster order
      b_vit_out     (5, 49, 64)        last_hidden_state (3 layers + post_layernorm)
      b_image_embeds_vila (5, 16, 64)
      so400m_vit_out_rows (21, 1152)   SigLIP-so400m shape, 2 layers: rows 0, 37, ..., 703, 728
      so400m_patch_embed_rows (21, 1152)
      so400m_vit_out_sumsq (1,) f64    sum of squares of the whole (729, 1152) output
      so400m_image_embeds_vila (196, 64)
  README.md is written by hand (see the description there).

Inputs and the so400m-shape weights are not stored: both this script and the C test compute them
from a counter-based hash (`hash_uniform` below: splitmix64 of seed + i·golden-ratio, top 24 bits
→ exact float32 in [-1, 1)), seeded by the FNV-1a 64 hash of a name, and scaled by powers of two,
so every value is bit-identical on both sides.

Self-checks (the script fails if any does not hold):
  * flat_square's output order equals the documented index formula (token t = j·G2 + i, channels
    [x(2i,2j), x(2i,2j+1), x(2i+1,2j), x(2i+1,2j+1)]);
  * an independent numpy float64 forward pass over the GGUF tensors read back with
    gguf.GGUFReader (im2col with the padded weight, padded MLP, index-formula downsampler)
    matches HF + the transcription, for both files.

Usage: python3 tools/gen_vit_golden.py [--out DIR]
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn

import gguf
import transformers
from transformers import SiglipVisionConfig, SiglipVisionModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------
# deterministic values shared with tests/test_vit.c

MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def fnv1a64(name):
    h = 0xcbf29ce484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def hash_uniform(name, n):
    """n float32 values in [-1, 1): element i = top 24 bits of splitmix64_mix(seed + (i+1)·φ64),
    seed = fnv1a64(name), mapped as k·2^-23 - 1 (exact)."""
    seed = np.uint64(fnv1a64(name))
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = seed + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    k = (z >> np.uint64(40)).astype(np.float32)
    return k * np.float32(2.0 ** -23) - np.float32(1.0)


# ---------------------------------------------------------------------------------------------
# the small model

SMALL = dict(image_size=52, patch_size=7, hidden_size=64, intermediate_size=172, num_hidden_layers=3,
             num_attention_heads=4, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
N_TILES = 5
PROJ_DIM = 64
WEIGHT_SEED = 7
PROJ_SEED = 11
PIXELS_NAME = "vit.small.pixels"     # pixels = hash_uniform(PIXELS_NAME, N·3·S·S).reshape(N, 3, S, S)


def siglip(cfg_kwargs, layers):
    cfg = SiglipVisionConfig(num_channels=3, attention_dropout=0.0, vision_use_head=False,
                             attn_implementation="eager", **dict(cfg_kwargs, num_hidden_layers=layers))
    torch.manual_seed(0)
    model = SiglipVisionModel(cfg).eval().float()
    return model, cfg


def redraw_small(model):
    """Every parameter redrawn (sorted names) so that everything matters: matrices 0.15·randn,
    biases 0.1·randn, LayerNorm weights 1 + 0.2·randn and biases 0.2·randn, positions 0.3·randn."""
    g = torch.Generator().manual_seed(WEIGHT_SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "layer_norm" in name or "post_layernorm" in name:
                p.copy_(1 + 0.2 * r if name.endswith("weight") else 0.2 * r)
            elif "position_embedding" in name:
                p.copy_(0.3 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            else:
                p.copy_(0.15 * r)


class VilaDownSample(nn.Module):
    """Transcription of VILA's DownSampleBlock (reshape to (n, h, w, c), flat_square, flatten)."""

    def forward(self, x):
        n_tok = x.shape[1]
        h = w = int(n_tok ** 0.5)
        x = x.reshape(x.shape[0], h, w, -1)
        x = self.flat_square(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])

    @staticmethod
    def flat_square(x):
        n, w, h, c = x.size()
        if w % 2 == 1:
            x = torch.concat([x, torch.zeros((n, 1, h, c), dtype=x.dtype)], dim=1).contiguous()
            n, w, h, c = x.size()
        if h % 2 == 1:
            x = torch.concat([x, torch.zeros((n, w, 1, c), dtype=x.dtype)], dim=2).contiguous()
            n, w, h, c = x.size()
        x = x.view(n, w, int(h / 2), int(c * 2))
        x = x.permute(0, 2, 1, 3).contiguous()
        x = x.view(n, int(h / 2), int(w / 2), int(c * 4))
        return x


def vila_to_raster(merged):
    """VILA's token t = j·G2 + i → raster t = i·G2 + j."""
    n, t, c = merged.shape
    g2 = int(round(t ** 0.5))
    return merged.reshape(n, g2, g2, c).transpose(1, 2).reshape(n, t, c)


def make_projector(dim, proj_dim, seed, scales):
    """nn.LayerNorm(4D) → nn.Linear(4D, H) → nn.GELU() → nn.Linear(H, H), weights redrawn."""
    proj = nn.Sequential(nn.LayerNorm(4 * dim), nn.Linear(4 * dim, proj_dim), nn.GELU(), nn.Linear(proj_dim, proj_dim))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(proj.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.copy_(scales[name](r))
    return proj.eval()


SMALL_PROJ_SCALES = {
    "0.weight": lambda r: 1 + 0.2 * r, "0.bias": lambda r: 0.2 * r,
    "1.weight": lambda r: 0.1 * r, "1.bias": lambda r: 0.1 * r,
    "3.weight": lambda r: 0.15 * r, "3.bias": lambda r: 0.1 * r,
}


def run_projector(proj, vit_out):
    merged = VilaDownSample()(vit_out)
    with torch.no_grad():
        embeds = proj(merged)
    return merged, embeds


# ---------------------------------------------------------------------------------------------
# GGUF

def round32(n):
    return (n + 31) // 32 * 32


def mmproj_tensors(model, cfg, n_layers, post_ln, proj, pad):
    """GGUF name → numpy array (numpy shape = GGUF dims reversed)."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    D, F, P = cfg.hidden_size, cfg.intermediate_size, cfg.patch_size
    K = 3 * P * P
    Kp, Fp = (round32(K), round32(F)) if pad else (K, F)
    t = {}
    conv = sd["embeddings.patch_embedding.weight"].reshape(D, K)      # (c, ky, kx) order
    t["v.patch_embd.weight"] = np.pad(conv, ((0, 0), (0, Kp - K)))
    t["v.patch_embd.bias"] = sd["embeddings.patch_embedding.bias"]
    t["v.position_embd.weight"] = sd["embeddings.position_embedding.weight"]
    for l in range(n_layers):
        p = f"encoder.layers.{l}."
        b = f"v.blk.{l}."
        t[b + "ln1.weight"] = sd[p + "layer_norm1.weight"]
        t[b + "ln1.bias"] = sd[p + "layer_norm1.bias"]
        for ours, hf in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_out", "out_proj")):
            t[b + ours + ".weight"] = sd[p + "self_attn." + hf + ".weight"]
            t[b + ours + ".bias"] = sd[p + "self_attn." + hf + ".bias"]
        t[b + "ln2.weight"] = sd[p + "layer_norm2.weight"]
        t[b + "ln2.bias"] = sd[p + "layer_norm2.bias"]
        t[b + "ffn_up.weight"] = np.pad(sd[p + "mlp.fc1.weight"], ((0, Fp - F), (0, 0)))
        t[b + "ffn_up.bias"] = np.pad(sd[p + "mlp.fc1.bias"], (0, Fp - F))
        t[b + "ffn_down.weight"] = np.pad(sd[p + "mlp.fc2.weight"], ((0, 0), (0, Fp - F)))
        t[b + "ffn_down.bias"] = sd[p + "mlp.fc2.bias"]
    if post_ln:
        t["v.post_ln.weight"] = sd["post_layernorm.weight"]
        t["v.post_ln.bias"] = sd["post_layernorm.bias"]
    psd = {k: v.detach().numpy().astype(np.float32) for k, v in proj.state_dict().items()}
    t["mm.input_norm.weight"] = psd["0.weight"]
    t["mm.input_norm.bias"] = psd["0.bias"]
    t["mm.0.weight"] = psd["1.weight"]
    t["mm.0.bias"] = psd["1.bias"]
    t["mm.2.weight"] = psd["3.weight"]
    t["mm.2.bias"] = psd["3.bias"]
    return t


def write_mmproj(path, cfg, n_layers, post_ln, proj_dim, tensors, desc):
    w = gguf.GGUFWriter(path, arch="clip")       # writes general.architecture = "clip"
    w.add_name(desc)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "bluelmv")
    w.add_uint32("clip.vision.image_size", cfg.image_size)
    w.add_uint32("clip.vision.patch_size", cfg.patch_size)
    w.add_uint32("clip.vision.embedding_length", cfg.hidden_size)
    w.add_uint32("clip.vision.feed_forward_length", cfg.intermediate_size)
    w.add_uint32("clip.vision.block_count", n_layers)
    w.add_uint32("clip.vision.attention.head_count", cfg.num_attention_heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", cfg.layer_norm_eps)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    w.add_uint32("clip.vision.projection_dim", proj_dim)
    w.add_uint32("clip.vision.projector.scale_factor", 2)
    w.add_bool("clip.use_gelu", True)
    w.add_string("bluelmv.merge.order", "vila")
    w.add_bool("bluelmv.vision.post_ln", post_ln)
    w.add_float32("bluelmv.projector.layer_norm_epsilon", 1e-5)
    for name, arr in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_mmproj(path):
    r = gguf.GGUFReader(path)
    tensors = {t.name: np.array(t.data).reshape([int(d) for d in reversed(t.shape)]).astype(np.float64)
               for t in r.tensors}
    kv = {}
    for f in r.fields.values():
        if f.types and f.types[0] == gguf.GGUFValueType.STRING:
            kv[f.name] = bytes(f.parts[f.data[0]]).decode()
        elif f.types and f.types[0] != gguf.GGUFValueType.ARRAY:
            kv[f.name] = f.parts[f.data[0]][0].item()
    return kv, tensors


# ---------------------------------------------------------------------------------------------
# independent float64 forward pass over the stored tensors (self-check)

def np_layernorm(x, w, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def np_forward(path, pixels):
    kv, t = read_mmproj(path)
    S, P = kv["clip.vision.image_size"], kv["clip.vision.patch_size"]
    D, L = kv["clip.vision.embedding_length"], kv["clip.vision.block_count"]
    nh = kv["clip.vision.attention.head_count"]
    eps = kv["clip.vision.attention.layer_norm_epsilon"]
    G, hd = S // P, D // nh
    Kp = t["v.patch_embd.weight"].shape[1]
    n = pixels.shape[0]
    x = pixels.astype(np.float64)
    cols = np.zeros((n, G * G, Kp))
    for py in range(G):
        for px in range(G):
            cols[:, py * G + px, :3 * P * P] = x[:, :, py * P:(py + 1) * P, px * P:(px + 1) * P].reshape(n, -1)
    h = cols @ t["v.patch_embd.weight"].T + t["v.patch_embd.bias"] + t["v.position_embd.weight"]
    gelu_tanh = lambda u: 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
    for l in range(L):
        b = f"v.blk.{l}."
        a = np_layernorm(h, t[b + "ln1.weight"], t[b + "ln1.bias"], eps)
        q, k, v = (a @ t[b + m + ".weight"].T + t[b + m + ".bias"] for m in ("attn_q", "attn_k", "attn_v"))
        q, k, v = (z.reshape(n, G * G, nh, hd).transpose(0, 2, 1, 3) for z in (q, k, v))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(0, 2, 1, 3).reshape(n, G * G, D)
        h = h + o @ t[b + "attn_out.weight"].T + t[b + "attn_out.bias"]
        a = np_layernorm(h, t[b + "ln2.weight"], t[b + "ln2.bias"], eps)
        f = gelu_tanh(a @ t[b + "ffn_up.weight"].T + t[b + "ffn_up.bias"])
        h = h + f @ t[b + "ffn_down.weight"].T + t[b + "ffn_down.bias"]
    if kv.get("bluelmv.vision.post_ln"):
        h = np_layernorm(h, t["v.post_ln.weight"], t["v.post_ln.bias"], eps)
    merged = index_formula_merge(h, G)
    y = np_layernorm(merged, t["mm.input_norm.weight"], t["mm.input_norm.bias"], kv["bluelmv.projector.layer_norm_epsilon"])
    y = y @ t["mm.0.weight"].T + t["mm.0.bias"]
    from math import erf
    y = 0.5 * y * (1 + np.vectorize(erf)(y / np.sqrt(2)))
    y = y @ t["mm.2.weight"].T + t["mm.2.bias"]
    return h, merged, y


def index_formula_merge(h, G):
    """The documented DownSampleBlock semantics, written as indices: token t = j·G2 + i holds
    [x(2i,2j), x(2i,2j+1), x(2i+1,2j), x(2i+1,2j+1)] (zero outside the grid)."""
    n, _, D = h.shape
    G2 = (G + 1) // 2
    out = np.zeros((n, G2 * G2, 4 * D), dtype=h.dtype)
    for i in range(G2):
        for j in range(G2):
            for part in range(4):
                r, c = 2 * i + part // 2, 2 * j + part % 2
                if r < G and c < G:
                    out[:, j * G2 + i, part * D:(part + 1) * D] = h[:, r * G + c]
    return out


# ---------------------------------------------------------------------------------------------
# the SigLIP-so400m shape (2 layers), with hash-derived weights the C test can rebuild

SO400M = dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304, num_hidden_layers=2,
              num_attention_heads=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
SO400M_PROJ_DIM = 64
SO400M_PIXELS_NAME = "vit.so400m.pixels"
SO400M_ROWS = list(range(0, 729, 37)) + [728]


def so400m_values(name, shape, kind):
    """The value rule shared with tests/test_vit.c (so400m_tensor there). u = hash_uniform(name):
    'w16': u/16 rounded to f16 (matrices, stored F16)     'b': u/16      'pos': u/4
    'lnw': 1 + u/4     'lnb': u/8     'mm0': u/32 rounded to f16     'mm2': u/8 rounded to f16"""
    n = int(np.prod(shape))
    u = hash_uniform(name, n).reshape(shape)
    f32 = np.float32
    if kind == "w16":
        return (u * f32(1 / 16)).astype(np.float16)
    if kind == "mm0":
        return (u * f32(1 / 32)).astype(np.float16)
    if kind == "mm2":
        return (u * f32(1 / 8)).astype(np.float16)
    if kind == "b":
        return u * f32(1 / 16)
    if kind == "pos":
        return u * f32(1 / 4)
    if kind == "lnw":
        return f32(1) + u * f32(0.25)
    if kind == "lnb":
        return u * f32(0.125)
    raise ValueError(kind)


def so400m_plan(cfg, n_layers, H):
    D, F, K, G = cfg.hidden_size, cfg.intermediate_size, 3 * cfg.patch_size ** 2, cfg.image_size // cfg.patch_size
    plan = [("v.patch_embd.weight", (D, K), "w16"), ("v.patch_embd.bias", (D,), "b"),
            ("v.position_embd.weight", (G * G, D), "pos")]
    for l in range(n_layers):
        b = f"v.blk.{l}."
        plan += [(b + "ln1.weight", (D,), "lnw"), (b + "ln1.bias", (D,), "lnb")]
        for m in ("attn_q", "attn_k", "attn_v", "attn_out"):
            plan += [(b + m + ".weight", (D, D), "w16"), (b + m + ".bias", (D,), "b")]
        plan += [(b + "ln2.weight", (D,), "lnw"), (b + "ln2.bias", (D,), "lnb"),
                 (b + "ffn_up.weight", (F, D), "w16"), (b + "ffn_up.bias", (F,), "b"),
                 (b + "ffn_down.weight", (D, F), "w16"), (b + "ffn_down.bias", (D,), "b")]
    plan += [("mm.input_norm.weight", (4 * D,), "lnw"), ("mm.input_norm.bias", (4 * D,), "lnb"),
             ("mm.0.weight", (H, 4 * D), "mm0"), ("mm.0.bias", (H,), "b"),
             ("mm.2.weight", (H, H), "mm2"), ("mm.2.bias", (H,), "b")]
    return plan


def so400m_golden():
    model, cfg = siglip(SO400M, SO400M["num_hidden_layers"])
    vals = {name: torch.from_numpy(so400m_values(name, shape, kind).astype(np.float32))
            for name, shape, kind in so400m_plan(cfg, cfg.num_hidden_layers, SO400M_PROJ_DIM)}
    D, P = cfg.hidden_size, cfg.patch_size
    hf = {"embeddings.patch_embedding.weight": vals["v.patch_embd.weight"].reshape(D, 3, P, P),
          "embeddings.patch_embedding.bias": vals["v.patch_embd.bias"],
          "embeddings.position_embedding.weight": vals["v.position_embd.weight"]}
    for l in range(cfg.num_hidden_layers):
        p, b = f"encoder.layers.{l}.", f"v.blk.{l}."
        hf[p + "layer_norm1.weight"] = vals[b + "ln1.weight"]
        hf[p + "layer_norm1.bias"] = vals[b + "ln1.bias"]
        for ours, theirs in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_out", "out_proj")):
            hf[p + "self_attn." + theirs + ".weight"] = vals[b + ours + ".weight"]
            hf[p + "self_attn." + theirs + ".bias"] = vals[b + ours + ".bias"]
        hf[p + "layer_norm2.weight"] = vals[b + "ln2.weight"]
        hf[p + "layer_norm2.bias"] = vals[b + "ln2.bias"]
        hf[p + "mlp.fc1.weight"] = vals[b + "ffn_up.weight"]
        hf[p + "mlp.fc1.bias"] = vals[b + "ffn_up.bias"]
        hf[p + "mlp.fc2.weight"] = vals[b + "ffn_down.weight"]
        hf[p + "mlp.fc2.bias"] = vals[b + "ffn_down.bias"]
    missing, unexpected = model.load_state_dict(hf, strict=False)
    assert not unexpected, unexpected
    assert all(m.startswith("post_layernorm") for m in missing), missing
    S = cfg.image_size
    pixels = torch.from_numpy(hash_uniform(SO400M_PIXELS_NAME, 3 * S * S).reshape(1, 3, S, S))
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    hs = out.hidden_states
    vit_out = hs[cfg.num_hidden_layers]
    proj = nn.Sequential(nn.LayerNorm(4 * D), nn.Linear(4 * D, SO400M_PROJ_DIM), nn.GELU(),
                         nn.Linear(SO400M_PROJ_DIM, SO400M_PROJ_DIM)).eval()
    with torch.no_grad():
        proj[0].weight.copy_(vals["mm.input_norm.weight"])
        proj[0].bias.copy_(vals["mm.input_norm.bias"])
        proj[1].weight.copy_(vals["mm.0.weight"])
        proj[1].bias.copy_(vals["mm.0.bias"])
        proj[3].weight.copy_(vals["mm.2.weight"])
        proj[3].bias.copy_(vals["mm.2.bias"])
    _, embeds = run_projector(proj, vit_out)
    vo = vit_out[0].numpy()
    return {
        "so400m_vit_out_rows": vo[SO400M_ROWS].astype(np.float32),
        "so400m_patch_embed_rows": hs[0][0].numpy()[SO400M_ROWS].astype(np.float32),
        "so400m_vit_out_sumsq": np.array([np.sum(vo.astype(np.float64) ** 2)], dtype=np.float64),
        "so400m_image_embeds_vila": embeds[0].numpy().astype(np.float32),
    }


# ---------------------------------------------------------------------------------------------

def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def nmse(a, ref):
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.sum((a - ref) ** 2) / np.sum(ref ** 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "vit"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"numpy {np.__version__}")

    # --- flat_square order check
    G = 7
    probe = torch.arange(2 * G * G * 3, dtype=torch.float64).reshape(2, G * G, 3)
    assert np.array_equal(VilaDownSample()(probe).numpy(), index_formula_merge(probe.numpy(), G)), "flat_square order"
    print("flat_square order == index formula (t = j*G2 + i): ok")

    # --- the small model
    L = SMALL["num_hidden_layers"]
    model, cfg = siglip(SMALL, L)
    redraw_small(model)
    S = cfg.image_size
    pixels = torch.from_numpy(hash_uniform(PIXELS_NAME, N_TILES * 3 * S * S).reshape(N_TILES, 3, S, S))
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == L + 1
    proj = make_projector(cfg.hidden_size, PROJ_DIM, PROJ_SEED, SMALL_PROJ_SCALES)

    a_out = hs[L - 1]                   # DESIGN.md default: drop the last layer, no post-LN
    a_merged, a_embeds = run_projector(proj, a_out)
    b_out = out.last_hidden_state       # all layers + post_layernorm
    _, b_embeds = run_projector(proj, b_out)
    proj_raster = lambda m: proj(vila_to_raster(m))
    with torch.no_grad():
        a_embeds_raster = proj_raster(a_merged)
    assert max_abs(a_embeds_raster, vila_to_raster(a_embeds)) < 1e-6   # token-wise: order only permutes

    files = {
        "siglip_a.gguf": (L - 1, False, True, "bluelmv test SigLIP (random): first 2 of 3 layers, padded"),
        "siglip_b.gguf": (L, True, False, "bluelmv test SigLIP (random): 3 layers + post-LN, unpadded"),
    }
    for fname, (n_layers, post_ln, pad, desc) in files.items():
        path = os.path.join(args.out, fname)
        write_mmproj(path, cfg, n_layers, post_ln, PROJ_DIM, mmproj_tensors(model, cfg, n_layers, post_ln, proj, pad), desc)
        h, merged, y = np_forward(path, pixels.numpy())
        ref_h = a_out if fname == "siglip_a.gguf" else b_out
        ref_y = a_embeds if fname == "siglip_a.gguf" else b_embeds
        e1, e2 = max_abs(h, ref_h), max_abs(y, ref_y)
        print(f"{fname}: {os.path.getsize(path)} bytes; numpy float64 over the stored tensors vs HF: "
              f"vit_out max|d| {e1:.3g} (NMSE {nmse(h, ref_h):.3g}), image_embeds max|d| {e2:.3g} "
              f"(NMSE {nmse(y, ref_y):.3g})")
        assert e1 < 1e-4 and e2 < 1e-4, fname
        if fname == "siglip_a.gguf":
            assert max_abs(merged, a_merged) < 1e-4

    golden = {
        "a_patch_embed": hs[0], "a_vit_block_0": hs[1], "a_vit_out": a_out,
        "a_merged_vila": a_merged, "a_image_embeds_vila": a_embeds, "a_image_embeds_raster": a_embeds_raster,
        "b_vit_out": b_out, "b_image_embeds_vila": b_embeds,
    }
    golden = {k: v.detach().numpy().astype(np.float32) for k, v in golden.items()}
    golden.update(so400m_golden())
    total = 0
    for name, arr in golden.items():
        path = os.path.join(args.out, name + ".npy")
        np.save(path, np.ascontiguousarray(arr))
        total += os.path.getsize(path)
        print(f"{name}.npy {arr.dtype} {tuple(arr.shape)} max|x| {float(np.max(np.abs(arr))):.3g}")
    print(f"golden .npy total {total} bytes")


if __name__ == "__main__":
    main()
