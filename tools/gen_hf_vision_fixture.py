#!/usr/bin/env python3
"""gen_hf_vision_fixture.py — fixtures for the Hugging Face reading layer (json.c, safetensors.c,
convert_hf.c), written by independent code: PyPI `safetensors`, `transformers`' save_pretrained, and
torch/numpy for expected values.

    python3 tools/gen_hf_vision_fixture.py [OUT_DIR]      # default tests/data/hfio

Writes (see tests/data/hfio/README.md for the full description):
  st_dtypes.safetensors        F32/F16/BF16 tensors (edge values), a 0-d and an empty tensor, an I64
  st_dtypes.expected.txt       their float32 values as bit patterns, computed by numpy/torch
  st_sharded/                  model.safetensors.index.json + 2 shards (safetensors + HF-style index)
  siglip_f32/                  SiglipVisionModel, float32, one model.safetensors, no pooling head
  siglip_bf16_sharded/         the same weights in bfloat16, sharded by save_pretrained, with head
  siglip_full/                 a full SiglipModel (tiny text tower + the same vision weights), bfloat16
  mm_projector/                VILA mlp_downsample projector as VILA saves it (keys layers.N.*), float32
  projector_prefixed.safetensors  the same projector with keys mm_projector.layers.N.*, bfloat16
  vit_golden.safetensors       one input and transformers' outputs for it (float32 model)

Deterministic: fixed seeds, one thread, deterministic algorithms.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipVisionConfig, SiglipVisionModel

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# The vision tower: patch 7 on a 52-pixel image gives a 7x7 grid and drops 3 pixels per side, as
# SigLIP-so400m's patch 14 on 384 pixels drops 6 (27x27 grid); 3*7*7 = 147 and the MLP width 86
# are not multiples of 32, so the converter's zero-padding paths run.
VISION = dict(image_size=52, patch_size=7, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
              intermediate_size=86, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", num_channels=3)
LLM_HIDDEN = 64   # projector output width (the tiny preset's LLM hidden size)
SEED = 1234


def redraw(model, seed):
    """Redraws every parameter so that every tensor matters (HF's init leaves biases near 0 and
    LayerNorm weights at 1, which would hide a swapped bias or norm). Values are rounded to bfloat16
    (and kept as float32), so the float32 and bfloat16 files of one model hold identical numbers and
    must convert to identical GGUF files."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias") or p.dim() < 2:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "position_embedding" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def bits(values):
    return " ".join("%08x" % b for b in np.asarray(values, dtype=np.float32).reshape(-1).view(np.uint32))


def write_dtypes(out):
    f32 = np.array([[0.0, -0.0, 1.0, -1.5, 3.1415927],
                    [1e-40, -1e-45, 3.4028235e38, -3.4028235e38, 1.1754944e-38],
                    [np.inf, -np.inf, 0.1, 123456.789, -2.5e-20]], dtype=np.float32)
    f16 = np.array([0.0, -0.0, 65504.0, -65504.0, 2.0 ** -24, 2.0 ** -14, 1.0 / 3.0, np.inf, -np.inf, 0.099976],
                   dtype=np.float16)
    bf = torch.tensor([[[0.0, -0.0, 1.0, -2.0], [3.3895314e38, -1e-39, 9.2e-41, 1.0 / 3.0],
                        [float("inf"), -float("inf"), 65536.5, -0.00123]],
                       [[1.5, 2.5, 3.5, 4.5], [-7.0, 8e10, -9e-10, 0.2],
                        [100.0, 200.0, 300.0, 400.0]]], dtype=torch.float32).to(torch.bfloat16)
    tensors = {
        "f32_matrix": torch.from_numpy(f32),
        "f16_vector": torch.from_numpy(f16),
        "bf16_cube": bf,
        "scalar": torch.tensor(42.5, dtype=torch.float32),
        "empty": torch.zeros((0, 4), dtype=torch.float32),
        "position_ids": torch.arange(4, dtype=torch.int64),
    }
    save_file(tensors, os.path.join(out, "st_dtypes.safetensors"), metadata={"format": "pt", "note": "bluelmv fixture"})
    with open(os.path.join(out, "st_dtypes.expected.txt"), "w") as fp:
        fp.write("# name dtype shape(comma-separated, '-' for 0-d) then the float32 bit patterns, computed by\n")
        fp.write("# numpy (F16 -> float32) and torch (BF16 -> float32), not by bluelmv\n")
        for name in ["f32_matrix", "f16_vector", "bf16_cube", "scalar", "empty"]:
            t = tensors[name]
            as_f32 = t.to(torch.float32).numpy() if t.dtype == torch.bfloat16 else t.numpy().astype(np.float32)
            dt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[t.dtype]
            shape = ",".join(str(d) for d in t.shape) or "-"
            fp.write("%s %s %s %d\n%s\n" % (name, dt, shape, as_f32.size, bits(as_f32)))


def write_sharded(out):
    d = os.path.join(out, "st_sharded")
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    shard1 = {"a.weight": torch.randn(4, 3, generator=g), "a.bias": torch.randn(4, generator=g).to(torch.float16)}
    shard2 = {"b.weight": torch.randn(2, 5, generator=g).to(torch.bfloat16), "b.bias": torch.randn(2, generator=g)}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map, total = {}, 0
    for name, shard in zip(names, [shard1, shard2]):
        save_file(shard, os.path.join(d, name), metadata={"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as fp:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, fp, indent=2)
    with open(os.path.join(d, "expected.txt"), "w") as fp:
        for shard in [shard1, shard2]:
            for k, v in sorted(shard.items()):
                f = v.to(torch.float32).numpy()
                fp.write("%s %s %d\n%s\n" % (k, ",".join(str(x) for x in v.shape), f.size, bits(f)))


def vila_projector(D, H, seed):
    """VILA's mlp_downsample (llava/model/multimodal_projector/base_projector.py): nn.Sequential(
    DownSampleBlock(), LayerNorm(4D), Linear(4D, H), GELU(), Linear(H, H)) — parameters at 1, 2, 4."""
    layers = torch.nn.Sequential(torch.nn.Identity(), torch.nn.LayerNorm(4 * D), torch.nn.Linear(4 * D, H),
                                 torch.nn.GELU(), torch.nn.Linear(H, H))
    redraw(layers, seed)
    return layers


def vila_downsample(x):
    """VILA's DownSampleBlock.forward / flat_square, verbatim in behaviour: (n, L, c) -> (n, L/4, 4c)
    with odd sides zero-padded."""
    n, L, c = x.shape
    h = w = int(L ** 0.5)
    x = x.reshape(n, h, w, c)
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
    return x.reshape(n, -1, x.shape[-1])


def dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hfio")
    os.makedirs(out, exist_ok=True)
    for sub in ["siglip_f32", "siglip_bf16_sharded", "siglip_full", "mm_projector", "st_sharded"]:
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    write_dtypes(out)
    write_sharded(out)

    # One set of vision weights, saved three ways.
    torch.manual_seed(SEED)
    with_head = SiglipVisionModel(SiglipVisionConfig(vision_use_head=True, attn_implementation="eager", **VISION))
    redraw(with_head, SEED)
    with_head.eval()
    no_head = SiglipVisionModel(SiglipVisionConfig(vision_use_head=False, attn_implementation="eager", **VISION))
    no_head.load_state_dict({k: v for k, v in with_head.state_dict().items() if not k.startswith("head.")})
    no_head.eval()

    proc = SiglipImageProcessor(size={"height": VISION["image_size"], "width": VISION["image_size"]},
                                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    no_head.save_pretrained(os.path.join(out, "siglip_f32"), max_shard_size="100MB")
    proc.save_pretrained(os.path.join(out, "siglip_f32"))

    bf = os.path.join(out, "siglip_bf16_sharded")
    with_head.to(torch.bfloat16).save_pretrained(bf, max_shard_size="40KB")
    SiglipImageProcessor(image_mean=[0.48145466, 0.4578275, 0.40821073],
                         image_std=[0.26862954, 0.26130258, 0.27577711]).save_pretrained(bf)
    with_head.to(torch.float32)

    text = dict(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=8, projection_size=16)
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=dict(vision_use_head=False, **VISION)))
    redraw(full, SEED + 1)
    full.vision_model.load_state_dict(no_head.state_dict())
    full.to(torch.bfloat16).save_pretrained(os.path.join(out, "siglip_full"), max_shard_size="100MB")

    # VILA's projector: saved as VILA does (mm_projector/ with config.json and keys "layers.N.*"),
    # and once more with the "mm_projector." prefix that a full-model state dict carries.
    D = VISION["hidden_size"]
    proj = vila_projector(D, LLM_HIDDEN, SEED + 2).eval()
    pdir = os.path.join(out, "mm_projector")
    os.makedirs(pdir, exist_ok=True)
    save_file({"layers." + k: v.contiguous() for k, v in proj.state_dict().items()},
              os.path.join(pdir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(pdir, "config.json"), "w") as fp:
        json.dump({"architectures": ["MultimodalProjector"], "mm_projector_type": "mlp_downsample",
                   "model_type": "v2l_projector"}, fp, indent=2)
    save_file({"mm_projector.layers." + k: v.to(torch.bfloat16).contiguous() for k, v in proj.state_dict().items()},
              os.path.join(out, "projector_prefixed.safetensors"), metadata={"format": "pt"})

    # Golden: transformers' outputs for one input, from the float32 model. VILA feeds the projector
    # hidden_states[-2] (select layer -2: every layer but the last, no post-LayerNorm).
    S = VISION["image_size"]
    pixels = torch.rand((1, 3, S, S), generator=torch.Generator().manual_seed(99)) * 2 - 1
    with torch.no_grad():
        o = no_head(pixel_values=pixels, output_hidden_states=True)
        select = o.hidden_states[-2]
        merged = vila_downsample(select)
        projected = proj[4](proj[3](proj[2](proj[1](merged))))
    save_file({"pixel_values": pixels.contiguous(), "patch_embed": o.hidden_states[0].contiguous(),
               "select_layer": select.contiguous(), "last_hidden_state": o.last_hidden_state.contiguous(),
               "merged": merged.contiguous(), "image_embeds": projected.contiguous()},
              os.path.join(out, "vit_golden.safetensors"), metadata={"format": "pt"})

    total = 0
    for name in sorted(os.listdir(out)):
        size = dir_size(os.path.join(out, name))
        total += size
        print("%-36s %8d bytes" % (name, size))
    print("%-36s %8d bytes" % ("total", total))


if __name__ == "__main__":
    main()
