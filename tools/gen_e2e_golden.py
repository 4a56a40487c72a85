#!/usr/bin/env python3
"""gen_e2e_golden.py — end-to-end golden data for the `tiny` and `mid` presets, from independent references.

One image and one question go through the whole pipeline, built from implementations that share
no code with bluelmv:

  preprocessing  the paper's Algorithm 1 (relaxed aspect-ratio matching, written here from the
                 pseudocode in docs/paper-notes.md §2.2) picks the grid; then LLaVA-NeXT's
                 resize_and_pad_image / divide_to_patches with Pillow (BICUBIC, centred on black),
                 the thumbnail image.resize((S, S)) first, and transformers' SiglipImageProcessor
                 (rescale 1/255, mean = std = 0.5) for the normalization;
  vision         transformers' SiglipVisionModel (eager, float32), L + 1 layers of which the first L
                 are used (select-layer -2: hidden_states[L], no post-LN);
  projector      a PyTorch transcription of VILA's mlp_downsample (NVlabs/VILA
                 llava/model/multimodal_projector/base_projector.py): DownSampleBlock.flat_square,
                 nn.LayerNorm(4D), nn.Linear(4D, H), nn.GELU(), nn.Linear(H, H);
  tokenizer      a SentencePiece-BPE encoder written here from the algorithm (score-driven merges
                 of adjacent symbols, byte fallback), applied as llama.cpp's `llama` vocabulary
                 does (special-token partition first, dummy-prefix space on the first text
                 fragment and on every fragment that follows a special token);
  language model transformers' LlamaForCausalLM (eager, float32); greedy generate().

Presets (--preset):
  tiny  (default; tests/data/e2e/)     tile 60, patch 8 (7x7 patches: an ODD grid, the downsampler
        zero-pads), ViT D 64, 2 of 3 layers, 4 heads, MLP 172; projector 256 -> 64 -> 64; LLM hidden
        64, 2 layers, 4/2 heads, FFN 172, eps 1e-5, theta 1e4; all weights F32; a 150x90 image that
        is upscaled onto a 3:2 grid (max_grid 4).
  mid   (tests/data/e2e_mid/)          tile 112, patch 14 (8x8 patches: an EVEN grid, no padding),
        ViT D 128, 4 of 5 layers, 4 heads, MLP 344, LayerNorm eps 1e-4; projector 512 -> 192 -> 192
        (LayerNorm eps 1e-6); LLM hidden 192, 4 layers, 6/2 heads (head_dim 32: a Q8_0 KV cache
        fits), FFN 512, eps 1e-6, theta 5e5; weights stored F16 (matrices; vectors and the position
        embedding F32, as bluelmv's HF converters write F16), the PyTorch models built from the
        F16-rounded weights in float32; a 372x120 image that is downscaled onto a 3:1 grid
        (max_grid 3 in the mmproj: with the default 4 it would be 4:2).

Outputs (tests/data/e2e/ for tiny; the same names in tests/data/e2e_mid/ with mid_ GGUF names):
  tiny_llm.gguf       llama-architecture GGUF (F32, llama.cpp Q/K permutation, tok512 vocabulary
                      + 4 user-defined tokens)
  tiny_mmproj.gguf    mmproj GGUF in vit.h's layout (F32) with the tiling policy and chat template
  receipt_150x90.png  the image (a crop of a CORD receipt photo; see LICENSE-donut and README.md)
  pixels.npy (N,3,S,S), patch_embed.npy, vit_block_K.npy, vit_out.npy (N,G*G,D) (vit_out is layer
  L-1's output, i.e. a dump's vit_block_{L-1}, not stored twice), merged.npy (N,T,4D),
  image_embeds.npy (N,T,H), tokens.npy (n,) int32 with -1 at image positions, llm_block_K.npy
  (n,H), logits.npy (n,516) at every input position, generated.npy (32,) int32
  meta.txt            the facts a C test needs (grid, geometry, counts, seeds, Pillow), key value
  README.md           written by this script

Self-checks (the script fails if one does not hold):
  * greedy robustness: top-1 - top-2 logit gap > MIN_REL_GAP * max|logit| at every input position
    and every generated step; neither BOS nor EOS is generated; cached generate() equals the argmax
    of an uncached forward pass over the input + generated tokens;
  * both GGUF files read back with gguf.GGUFReader reproduce every tensor exactly and carry the
    expected keys;
  * an independent float64 numpy forward pass of the vision side over the mmproj tensors
    (im2col, pre-LN blocks, the documented index formula of the downsampler, projector) matches;
  * an independent float64 numpy forward pass of the LLM over the GGUF tensors as stored
    (permuted Q/K, llama.cpp's adjacent-pair RoPE) matches HF's logits, with the same greedy tokens;
  * the token sequence decodes back to the template text; with a built ./bluelmv, its `tokenize`
    of the two text parts gives the same ids (printed only: bluelmv is not the reference);
  * landmarks for the comparison tolerances are printed and put into README.md: an F16 KV cache
    (numpy; mid also a Q8_0 KV cache), the tanh GELU in the projector, raster token order; for
    mid also what ignoring each eps / theta of the files (using tiny's value) would do.

Usage: python3 tools/gen_e2e_golden.py [--preset tiny|mid] [--out DIR] [--search]
  --search  if the LLM seed fails the robustness check, try the next seeds and report the first that
            passes (then put it into the preset's llm_seed by hand).
"""
import argparse
import math
import os
import shutil
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

import gguf
import PIL
import transformers
from PIL import Image
from transformers import LlamaConfig, LlamaForCausalLM, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK_PATH = os.path.join(REPO, "tests", "data", "stories260K", "tok512.bin")
SRC_IMAGE = "/work/shared/data/images/donut/sample_image_cord_test_receipt_00004.png"
SRC_LICENSE = "/work/shared/data/images/donut/LICENSE"
PRESETS = {
    "tiny": dict(
        out="tests/data/e2e",
        crop=(60, 530, 800, 974),       # the item and total lines of the receipt, 740 x 444 (5:3)
        image_size=(150, 90),           # downscaled with LANCZOS to this (width, height)
        image_what="the item and total lines",
        # tiling (bluelmv's relaxed default, tile size = the ViT input size)
        S=60, max_grid=4, alpha=0.1,
        vision=dict(image_size=60, patch_size=8, hidden_size=64, intermediate_size=172, num_hidden_layers=3,
                    num_attention_heads=4, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh"),
        vit_layers_used=2,              # select-layer -2: hidden_states[2]; the mmproj stores 2 blocks
        vit_seed=21, proj_seed=22, proj_eps=1e-5,
        llm=dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=512,
                 attention_bias=False, mlp_bias=False, hidden_act="silu", tie_word_embeddings=False,
                 bos_token_id=1, eos_token_id=2, pad_token_id=None),
        llm_seed=117,                   # the first seed from 1 that passes the robustness check (--search)
        llm_weight_std=0.3, llm_norm_std=0.1,
        f16=False),
    "mid": dict(
        out="tests/data/e2e_mid",
        crop=(60, 503, 804, 743),       # the three item lines of the receipt, 744 x 240 (3.1:1)
        image_size=(372, 120),          # downscaled with LANCZOS; a 3:1 grid downscales it again
        image_what="the three item lines",
        S=112, max_grid=3, alpha=0.1,   # max_grid 3 (the default 4 would give 4:2): read from the mmproj
        # ViT LayerNorm eps 1e-4: large enough that a reader using the default 1e-6 fails (README)
        vision=dict(image_size=112, patch_size=14, hidden_size=128, intermediate_size=344, num_hidden_layers=5,
                    num_attention_heads=4, layer_norm_eps=1e-4, hidden_act="gelu_pytorch_tanh"),
        vit_layers_used=4,              # select-layer -2: hidden_states[4]; the mmproj stores 4 blocks
        vit_seed=31, proj_seed=32, proj_eps=1e-6,
        llm=dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
                 num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=500000.0, max_position_embeddings=512,
                 attention_bias=False, mlp_bias=False, hidden_act="silu", tie_word_embeddings=False,
                 bos_token_id=1, eos_token_id=2, pad_token_id=None),
        llm_seed=20,                    # the first seed from 1 that passes the robustness check (--search)
        llm_weight_std=0.17,            # ~0.3·sqrt(64/192): per-layer gains as in tiny
        llm_norm_std=0.1,
        f16=True),
}
P = None                          # the chosen preset (a SimpleNamespace), set by use_preset()


def use_preset(name):
    global P
    P = SimpleNamespace(name=name, **PRESETS[name])
    P.image_name = f"receipt_{P.image_size[0]}x{P.image_size[1]}.png"
    P.llm_gguf, P.mmproj_gguf = f"{name}_llm.gguf", f"{name}_mmproj.gguf"
    assert P.vision["image_size"] == P.S
    return P


MIN_REL_GAP = 2e-3

EXTRA_TOKENS = ["[|Human|]:", "[|AI|]:", "<im_start>", "<im_end>"]    # ids 512..515, USER_DEFINED
EXTRA_SCORE = -1000.0             # what llama.cpp's converter gives added tokens
TEMPLATE = "[|Human|]:<im_start><image><im_end>{query}\n[|AI|]:"
QUERY = "What is in the picture?"
N_GEN = 32
IMAGE_MARK = "<image>"

SPACE = "\u2581"


# =============================================================================================
# preprocessing

def make_image():
    src = Image.open(SRC_IMAGE).convert("RGB")
    return src.crop(P.crop).resize(P.image_size, Image.Resampling.LANCZOS)


def relaxed_grid(w0, h0, s, max_grid, alpha):
    """The paper's Algorithm 1 (docs/paper-notes.md §2.2): candidates m:n (m = width multiplier)
    for m, n in 1..max_grid in descending order; accept >alpha more effective resolution, or
    within alpha of it with less waste."""
    best, re_max, rw_min = None, 0, math.inf
    for m, n in sorted(((m, n) for m in range(1, max_grid + 1) for n in range(1, max_grid + 1)), reverse=True):
        W, H = s * m, s * n
        scale = min(W / w0, H / h0)
        re = min(int(w0 * scale) * int(h0 * scale), w0 * h0)
        rw = W * H - re
        if (re - re_max) > alpha * re_max or ((re_max - re) < alpha * re_max and rw < rw_min):
            best, re_max, rw_min = (m, n), re, rw
    return best


def resize_and_pad(image, target):
    """LLaVA-NeXT llava/mm_utils.py resize_and_pad_image (paraphrased)."""
    ow, oh = image.size
    tw, th = target
    sw, sh = tw / ow, th / oh
    if sw < sh:
        nw, nh = tw, min(math.ceil(oh * sw), th)
    else:
        nh, nw = th, min(math.ceil(ow * sh), tw)
    resized = image.resize((nw, nh), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    px, py = (tw - nw) // 2, (th - nh) // 2
    canvas.paste(resized, (px, py))
    return canvas, (nw, nh, px, py)


def preprocess(image):
    S = P.S
    grid = relaxed_grid(image.size[0], image.size[1], S, P.max_grid, P.alpha)
    canvas, geom = resize_and_pad(image, (grid[0] * S, grid[1] * S))
    tiles = [canvas.crop((x, y, x + S, y + S)) for y in range(0, canvas.size[1], S) for x in range(0, canvas.size[0], S)]
    images = ([image.resize((S, S), Image.Resampling.BICUBIC)] if len(tiles) > 1 else []) + tiles
    proc = SiglipImageProcessor(do_resize=False, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                image_mean=[0.5] * 3, image_std=[0.5] * 3)
    pixels = np.stack([proc(im, return_tensors="np")["pixel_values"][0] for im in images]).astype(np.float32)
    # the processor's arithmetic, spelled out: float32(u8 * (1/255)), then (x - 0.5) / 0.5 in float32
    u8 = np.stack([np.asarray(im).transpose(2, 0, 1) for im in images])
    manual = ((u8 * (1 / 255)).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
    assert np.array_equal(pixels, manual), "SiglipImageProcessor arithmetic changed"
    return grid, geom, pixels


def pillow_orders(sw, sh, dw, dh):
    """Which pass goes first in each Pillow's bicubic resize (tile.h, TilePillow)."""
    both = dw != sw and dh != sh
    p13 = "vertical" if both and dh < sh and sh - dh > 2 * (sw - dw) else "horizontal"
    p122 = "vertical" if both and sh > 100 * sw and dh < sh else "horizontal"
    return p13, p122, "horizontal"


# =============================================================================================
# vision: SiglipVisionModel + VILA mlp_downsample

def round_f16(p):
    """A parameter that the GGUF stores as F16: rounded to float16 in place (the reference then uses
    exactly the weights the file holds)."""
    p.copy_(p.half().float())


def build_vision():
    cfg = SiglipVisionConfig(num_channels=3, attention_dropout=0.0, vision_use_head=False,
                             attn_implementation="eager", **P.vision)
    torch.manual_seed(0)
    model = SiglipVisionModel(cfg).eval().float()
    g = torch.Generator().manual_seed(P.vit_seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "layer_norm" in name or "post_layernorm" in name:
                p.copy_(1 + 0.1 * r if name.endswith("weight") else 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            else:                                   # conv, linear weights and the position embedding
                p.copy_(0.2 * r)
            if P.f16 and p.dim() >= 2 and "position_embedding" not in name:   # F16 in the mmproj
                round_f16(p)
    assert model.config._attn_implementation == "eager"
    return model, cfg


class DownSampleBlock(nn.Module):
    """VILA's DownSampleBlock, transcribed (base_projector.py)."""

    def forward(self, x):
        vit_embeds = x
        h = w = int(vit_embeds.shape[1] ** 0.5)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], h, w, -1)
        vit_embeds = self.flat_square(vit_embeds)
        vit_embeds = vit_embeds.reshape(vit_embeds.shape[0], -1, vit_embeds.shape[-1])
        return vit_embeds

    def flat_square(self, x):
        n, w, h, c = x.size()
        if w % 2 == 1:
            x = torch.concat([x, torch.zeros((n, 1, h, c), dtype=x.dtype).to(x.device)], dim=1).contiguous()
            n, w, h, c = x.size()
        if h % 2 == 1:
            x = torch.concat([x, torch.zeros((n, w, 1, c), dtype=x.dtype).to(x.device)], dim=2).contiguous()
            n, w, h, c = x.size()
        x = x.view(n, w, int(h / 2), int(c * 2))
        x = x.permute(0, 2, 1, 3).contiguous()
        x = x.view(n, int(h / 2), int(w / 2), int(c * 4))
        return x


def build_projector(dim, proj_dim):
    """VILA mm_projector_type "mlp_downsample" after the DownSampleBlock."""
    proj = nn.Sequential(nn.LayerNorm(4 * dim, eps=P.proj_eps), nn.Linear(4 * dim, proj_dim), nn.GELU(),
                         nn.Linear(proj_dim, proj_dim))
    scales = {"0.weight": lambda r: 1 + 0.1 * r, "0.bias": lambda r: 0.1 * r,
              "1.weight": lambda r: 0.1 * r, "1.bias": lambda r: 0.1 * r,
              "3.weight": lambda r: 0.15 * r, "3.bias": lambda r: 0.1 * r}
    g = torch.Generator().manual_seed(P.proj_seed)
    with torch.no_grad():
        for name, p in sorted(proj.named_parameters()):
            p.copy_(scales[name](torch.randn(p.shape, generator=g, dtype=torch.float32)))
            if P.f16 and p.dim() >= 2:              # the two Linear weights: F16 in the mmproj
                round_f16(p)
    return proj.eval()


def run_vision(model, proj, pixels):
    caps = {}
    hooks = [layer.register_forward_hook(lambda mod, inp, out, k=k: caps.__setitem__(k, out[0] if isinstance(out, tuple) else out))
             for k, layer in enumerate(model.encoder.layers)]
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(pixels), output_hidden_states=True)
    for h in hooks:
        h.remove()
    hs = [h.float().numpy().copy() for h in out.hidden_states]
    for k in range(P.vision["num_hidden_layers"]):
        assert np.array_equal(hs[k + 1], caps[k].numpy()), f"hidden_states[{k + 1}] is not layer {k}'s output"
    vit_out = hs[P.vit_layers_used]                    # select-layer -2, no post-LN
    with torch.no_grad():
        merged = DownSampleBlock()(torch.from_numpy(vit_out))
        embeds = proj(merged)
    return dict(patch_embed=hs[0], vit_blocks=[hs[k + 1] for k in range(P.vit_layers_used)], vit_out=vit_out,
                merged=merged.numpy().copy(), image_embeds=embeds.numpy().copy())


# =============================================================================================
# tokenizer: vocabulary and an independent SentencePiece-BPE encoder

def read_vocab():
    """tok512.bin (llama2.c export) as GGUF pieces, plus the 4 user-defined chat tokens."""
    data = open(TOK_PATH, "rb").read()
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
            piece = piece.replace(b" ", SPACE.encode())   # llama2.c's export turned U+2581 into ' '
        tokens.append(piece)
        scores.append(score)
        types.append(int(ttype))
    assert len(tokens) == 512
    for t in EXTRA_TOKENS:
        tokens.append(t.encode())
        scores.append(EXTRA_SCORE)
        types.append(int(gguf.TokenType.USER_DEFINED))
    assert len(set(tokens)) == len(tokens) == 516
    return tokens, scores, types


class SpmBpe:
    """SentencePiece BPE encoding as described by the algorithm (not a port of bluelmv or llama.cpp):
    text → UTF-8 characters → repeatedly merge the adjacent pair whose concatenation is a piece with
    the highest score (the leftmost such pair on equal scores) → each remaining symbol is its piece,
    or, if it is not one, its bytes as <0xNN> pieces."""

    def __init__(self, tokens, scores, types):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.tokens, self.scores, self.types = tokens, scores, types
        self.byte_id = [self.ids[b"<0x%02X>" % b] for b in range(256)]
        special = (int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED), int(gguf.TokenType.UNKNOWN))
        self.specials = sorted((t.decode() for t, ty in zip(tokens, types) if ty in special), key=len, reverse=True)

    def encode_piece_text(self, text):
        sym = [c.encode() for c in text]
        while True:
            best, best_score = None, None
            for i in range(len(sym) - 1):
                tid = self.ids.get(sym[i] + sym[i + 1])
                if tid is not None and (best is None or self.scores[tid] > best_score):
                    best, best_score = i, self.scores[tid]
            if best is None:
                break
            sym[best:best + 2] = [sym[best] + sym[best + 1]]
        out = []
        for s in sym:
            out += [self.ids[s]] if s in self.ids else [self.byte_id[b] for b in s]
        return out

    def partition(self, text, parse_control):
        """Cut text at special-token texts (longest first). User-defined tokens always match;
        control/unknown ones (<s>, </s>, <unk>) only with parse_control, as llama.cpp's
        parse_special. Returns a list of str (raw text) and int (token id)."""
        parts = [text]
        for sp in self.specials:
            tid = self.ids[sp.encode()]
            if self.types[tid] != int(gguf.TokenType.USER_DEFINED) and not parse_control:
                continue
            nxt = []
            for p in parts:
                if isinstance(p, int):
                    nxt.append(p)
                    continue
                pieces = p.split(sp)
                for k, q in enumerate(pieces):
                    if k:
                        nxt.append(tid)
                    if q:
                        nxt.append(q)
            parts = nxt
        return parts

    def encode(self, text, add_bos, add_space_prefix=True, parse_control=False):
        out = [1] if add_bos else []
        prev_special = True              # the dummy prefix goes on the first text fragment ...
        for p in self.partition(text, parse_control):
            if isinstance(p, int):
                out.append(p)
                prev_special = True      # ... and on every fragment that follows a special token
            else:
                s = p.replace(" ", SPACE)
                if add_space_prefix and prev_special:
                    s = SPACE + s
                out += self.encode_piece_text(s)
                prev_special = False
        return out

    def decode(self, ids, errors="strict"):
        """ids → text (image positions -1 become IMAGE_MARK; the dummy prefix after BOS removed)."""
        out, prev = [], None
        for i in ids:
            if i < 0:
                if prev is None or prev >= 0:
                    out.append(IMAGE_MARK.encode())
            elif self.types[i] == int(gguf.TokenType.BYTE):
                out.append(bytes([int(self.tokens[i][3:5], 16)]))
            elif self.types[i] == int(gguf.TokenType.CONTROL):
                pass
            else:
                t = self.tokens[i].replace(SPACE.encode(), b" ")
                if self.types[i] == int(gguf.TokenType.NORMAL) and (prev is None or prev == 1) and t.startswith(b" "):
                    t = t[1:]
                out.append(t)
            prev = i
        return b"".join(out).decode("utf-8", errors=errors)


def prompt_sequence(tok, n_image_tokens):
    """The template cut at <image>: the part before is tokenized with BOS, the part after without;
    each part as llama.cpp tokenizes a text (special tokens first, dummy prefix on the first raw
    fragment and after each special token). -1 marks each image-embedding position."""
    text = TEMPLATE.format(query=QUERY)
    before, after = text.split(IMAGE_MARK)
    a = tok.encode(before, add_bos=True)
    b = tok.encode(after, add_bos=False)
    return a + [-1] * n_image_tokens + b, (before, after, a, b)


# =============================================================================================
# language model

def build_llm(seed):
    cfg = LlamaConfig(vocab_size=516, num_hidden_layers=P.llm["num_hidden_layers"], attn_implementation="eager",
                      initializer_range=P.llm_weight_std, **{k: v for k, v in P.llm.items() if k != "num_hidden_layers"})
    assert float(cfg.rope_parameters["rope_theta"]) == P.llm["rope_theta"] and cfg.rms_norm_eps == P.llm["rms_norm_eps"]
    cfg.dtype = torch.float32
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.copy_(1.0 + P.llm_norm_std * r if name.endswith("norm.weight") else P.llm_weight_std * r)
            if P.f16 and p.dim() >= 2:              # every matrix is F16 in the GGUF (norms F32)
                round_f16(p)
    assert model.config._attn_implementation == "eager"
    return model, cfg


def input_embeddings(model, seq, image_embeds):
    emb = model.model.embed_tokens.weight.detach().numpy()
    img = image_embeds.reshape(-1, image_embeds.shape[-1])
    assert sum(1 for t in seq if t < 0) == img.shape[0]
    rows, k = [], 0
    for t in seq:
        if t < 0:
            rows.append(img[k])
            k += 1
        else:
            rows.append(emb[t])
    return np.stack(rows).astype(np.float32)


def top_gap(logits):
    s = np.sort(logits, axis=-1)
    return s[..., -1] - s[..., -2]


def run_llm(model, x):
    n = x.shape[0]
    E = torch.from_numpy(x)[None]
    caps = {}
    hooks = [layer.register_forward_hook(lambda mod, inp, out, k=k: caps.__setitem__(k, out[0] if isinstance(out, tuple) else out))
             for k, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        logits = model(inputs_embeds=E).logits[0].float().numpy().copy()
    for h in hooks:
        h.remove()
    blocks = [caps[k][0].float().numpy().copy() for k in range(len(model.model.layers))]
    with torch.no_grad():
        out = model.generate(inputs_embeds=E, attention_mask=torch.ones(1, n, dtype=torch.long),
                             max_new_tokens=N_GEN, min_new_tokens=N_GEN, do_sample=False, num_beams=1,
                             use_cache=True, pad_token_id=0, eos_token_id=None, output_logits=True,
                             return_dict_in_generate=True)
    gen = out.sequences[0].tolist()
    assert len(gen) == N_GEN, f"generate returned {len(gen)} ids (transformers 5 returns only the new ones)"
    gen_logits = torch.cat([l.float() for l in out.logits], 0).numpy()
    assert [int(a) for a in gen_logits.argmax(-1)] == gen
    # uncached: input embeddings + the embeddings of the generated tokens (all but the last)
    emb = model.model.embed_tokens.weight.detach().numpy()
    full_x = np.concatenate([x, emb[gen[:-1]]], 0)
    with torch.no_grad():
        full = model(inputs_embeds=torch.from_numpy(full_x)[None]).logits[0].float().numpy()
    assert [int(a) for a in full[n - 1:].argmax(-1)] == gen, "cached != uncached greedy"
    assert np.allclose(full[:n], logits, atol=1e-4)
    gaps_in, gaps_gen = top_gap(logits), top_gap(gen_logits)
    max_abs = float(max(np.abs(logits).max(), np.abs(gen_logits).max()))
    return dict(logits=logits, blocks=blocks, gen=gen, gen_logits=gen_logits, full=full, full_x=full_x,
                min_gap_input=float(gaps_in.min()), min_gap_gen=float(gaps_gen.min()), max_abs=max_abs)


def robust(r):
    return (min(r["min_gap_input"], r["min_gap_gen"]) > MIN_REL_GAP * r["max_abs"]
            and 1 not in r["gen"] and 2 not in r["gen"])


# =============================================================================================
# GGUF files

def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf LlamaModel.permute: HF rotate-half rows → GGML adjacent pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llm_tensors(model, cfg):
    sd = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    t = {"token_embd.weight": sd["model.embed_tokens.weight"]}
    for i in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        t[b + "attn_norm.weight"] = sd[p + "input_layernorm.weight"]
        t[b + "attn_q.weight"] = permute(sd[p + "self_attn.q_proj.weight"], nh)
        t[b + "attn_k.weight"] = permute(sd[p + "self_attn.k_proj.weight"], nkv)
        t[b + "attn_v.weight"] = sd[p + "self_attn.v_proj.weight"]
        t[b + "attn_output.weight"] = sd[p + "self_attn.o_proj.weight"]
        t[b + "ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        t[b + "ffn_gate.weight"] = sd[p + "mlp.gate_proj.weight"]
        t[b + "ffn_up.weight"] = sd[p + "mlp.up_proj.weight"]
        t[b + "ffn_down.weight"] = sd[p + "mlp.down_proj.weight"]
    t["output_norm.weight"] = sd["model.norm.weight"]
    t["output.weight"] = sd["lm_head.weight"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in t.items()}


def stored(name, arr):
    """The array as the GGUF stores it: F16 for the matrices of an F16 preset (not the position
    embedding, which bluelmv's converter keeps F32 like every vector), else F32. The weights were
    rounded when drawn, so the conversion is exact."""
    if P.f16 and arr.ndim == 2 and name != "v.position_embd.weight":
        h = arr.astype(np.float16)
        assert np.array_equal(h.astype(np.float32), arr), f"{name} is not F16-representable"
        return h
    return arr


def write_llm_gguf(path, cfg, tensors, vocab):
    hd = cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name(f"bluelmv e2e {P.name} LLM (random weights)")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if P.f16 else gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(hd)
    tokens, scores, types = vocab
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
    w.add_add_space_prefix(True)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, arr in tensors.items():
        w.add_tensor(name, stored(name, arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def mmproj_tensors(model, proj):
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    D, Pz = P.vision["hidden_size"], P.vision["patch_size"]
    t = {"v.patch_embd.weight": sd["embeddings.patch_embedding.weight"].reshape(D, 3 * Pz * Pz),  # (c, ky, kx)
         "v.patch_embd.bias": sd["embeddings.patch_embedding.bias"],
         "v.position_embd.weight": sd["embeddings.position_embedding.weight"]}
    for l in range(P.vit_layers_used):
        p, b = f"encoder.layers.{l}.", f"v.blk.{l}."
        t[b + "ln1.weight"] = sd[p + "layer_norm1.weight"]
        t[b + "ln1.bias"] = sd[p + "layer_norm1.bias"]
        for ours, hf in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_out", "out_proj")):
            t[b + ours + ".weight"] = sd[p + "self_attn." + hf + ".weight"]
            t[b + ours + ".bias"] = sd[p + "self_attn." + hf + ".bias"]
        t[b + "ln2.weight"] = sd[p + "layer_norm2.weight"]
        t[b + "ln2.bias"] = sd[p + "layer_norm2.bias"]
        t[b + "ffn_up.weight"] = sd[p + "mlp.fc1.weight"]          # a float file: no padding (Fp = F)
        t[b + "ffn_up.bias"] = sd[p + "mlp.fc1.bias"]
        t[b + "ffn_down.weight"] = sd[p + "mlp.fc2.weight"]
        t[b + "ffn_down.bias"] = sd[p + "mlp.fc2.bias"]
    psd = {k: v.detach().numpy().astype(np.float32) for k, v in proj.state_dict().items()}
    t["mm.input_norm.weight"] = psd["0.weight"]
    t["mm.input_norm.bias"] = psd["0.bias"]
    t["mm.0.weight"] = psd["1.weight"]
    t["mm.0.bias"] = psd["1.bias"]
    t["mm.2.weight"] = psd["3.weight"]
    t["mm.2.bias"] = psd["3.bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in t.items()}


def mmproj_kv():
    return {
        "clip.has_vision_encoder": True,
        "clip.projector_type": "bluelmv",
        "clip.vision.image_size": P.S,
        "clip.vision.patch_size": P.vision["patch_size"],
        "clip.vision.embedding_length": P.vision["hidden_size"],
        "clip.vision.feed_forward_length": P.vision["intermediate_size"],
        "clip.vision.block_count": P.vit_layers_used,
        "clip.vision.attention.head_count": P.vision["num_attention_heads"],
        "clip.vision.attention.layer_norm_epsilon": P.vision["layer_norm_eps"],
        "clip.vision.projection_dim": P.llm["hidden_size"],
        "clip.vision.projector.scale_factor": 2,
        "clip.use_gelu": True,
        "bluelmv.merge.order": "vila",
        "bluelmv.vision.post_ln": False,
        "bluelmv.projector.layer_norm_epsilon": P.proj_eps,
        "bluelmv.tiling.algo": "relaxed",
        "bluelmv.tiling.max_grid": P.max_grid,
        "bluelmv.tiling.alpha": P.alpha,
        "bluelmv.tiling.thumbnail": True,
        "bluelmv.chat_template": TEMPLATE,
    }


def write_mmproj(path, tensors):
    w = gguf.GGUFWriter(path, arch="clip")
    w.add_name(f"bluelmv e2e {P.name} mmproj (random weights)")
    w.add_description(f"SigLIP-shaped vision tower ({P.vit_layers_used} of {P.vision['num_hidden_layers']} layers) "
                      "and VILA mlp_downsample projector, random weights, for bluelmv's end-to-end test")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if P.f16 else gguf.LlamaFileType.ALL_F32)
    for k, v in mmproj_kv().items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_string(k, v)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    for name, arr in tensors.items():
        w.add_tensor(name, stored(name, arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_gguf(path):
    r = gguf.GGUFReader(path)
    tensors = {}
    types = {}
    for t in r.tensors:
        assert t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16), t.name
        tensors[t.name] = np.array(t.data).astype(np.float32).reshape([int(d) for d in reversed(t.shape.tolist())])
        types[t.name] = t.tensor_type
    kv = {name: f.contents() for name, f in r.fields.items()}
    return kv, tensors, types


def check_gguf(path, tensors, expect_kv):
    kv, t, types = read_gguf(path)
    assert list(t) == list(tensors), (list(t), list(tensors))
    for name, arr in tensors.items():
        assert t[name].shape == arr.shape and np.array_equal(t[name], arr), name
        want = gguf.GGMLQuantizationType.F16 if stored(name, arr).dtype == np.float16 else gguf.GGMLQuantizationType.F32
        assert types[name] == want, (name, types[name])
    for k, v in expect_kv.items():
        got = kv[k]
        ok = abs(got - v) <= 1e-7 * abs(v) if isinstance(v, float) else got == v
        assert ok, (k, got, v)
    return kv, t


# =============================================================================================
# independent float64 numpy forward passes over the GGUF tensors

def np_layernorm(x, w, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def np_vision(kv, t, pixels):
    S_, Pz = kv["clip.vision.image_size"], kv["clip.vision.patch_size"]
    D, L = kv["clip.vision.embedding_length"], kv["clip.vision.block_count"]
    nh, eps = kv["clip.vision.attention.head_count"], kv["clip.vision.attention.layer_norm_epsilon"]
    G, hd = S_ // Pz, D // nh
    T = {k: v.astype(np.float64) for k, v in t.items()}
    x = pixels.astype(np.float64)
    n = x.shape[0]
    cols = np.zeros((n, G * G, 3 * Pz * Pz))
    for py in range(G):
        for px in range(G):
            cols[:, py * G + px] = x[:, :, py * Pz:(py + 1) * Pz, px * Pz:(px + 1) * Pz].reshape(n, -1)
    h = cols @ T["v.patch_embd.weight"].T + T["v.patch_embd.bias"] + T["v.position_embd.weight"]
    outs = [h]
    gelu_tanh = lambda u: 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
    for l in range(L):
        b = f"v.blk.{l}."
        a = np_layernorm(h, T[b + "ln1.weight"], T[b + "ln1.bias"], eps)
        q, k, v = (a @ T[b + m + ".weight"].T + T[b + m + ".bias"] for m in ("attn_q", "attn_k", "attn_v"))
        q, k, v = (z.reshape(n, G * G, nh, hd).transpose(0, 2, 1, 3) for z in (q, k, v))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(0, 2, 1, 3).reshape(n, G * G, D)
        h = h + o @ T[b + "attn_out.weight"].T + T[b + "attn_out.bias"]
        a = np_layernorm(h, T[b + "ln2.weight"], T[b + "ln2.bias"], eps)
        h = h + gelu_tanh(a @ T[b + "ffn_up.weight"].T + T[b + "ffn_up.bias"]) @ T[b + "ffn_down.weight"].T \
            + T[b + "ffn_down.bias"]
        outs.append(h)
    # the downsampler by its documented index formula (paper-notes §1.2): token t = j·G2 + i holds
    # [x(2i,2j), x(2i,2j+1), x(2i+1,2j), x(2i+1,2j+1)], zero outside the grid
    G2 = (G + 1) // 2
    merged = np.zeros((n, G2 * G2, 4 * D))
    for i in range(G2):
        for j in range(G2):
            for part in range(4):
                r, c = 2 * i + part // 2, 2 * j + part % 2
                if r < G and c < G:
                    merged[:, j * G2 + i, part * D:(part + 1) * D] = h[:, r * G + c]
    y = np_layernorm(merged, T["mm.input_norm.weight"], T["mm.input_norm.bias"],
                     kv["bluelmv.projector.layer_norm_epsilon"])
    y = y @ T["mm.0.weight"].T + T["mm.0.bias"]
    y = 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
    y = y @ T["mm.2.weight"].T + T["mm.2.bias"]
    return outs, merged, y


def q8_0_split(z):
    """ggml's Q8_0 (quantize_row_q8_0_ref) over blocks of 32 along the last axis: the codes and the
    fp16 scales, as float64. d = max|x| / 127, q = round(x / d) (half away from zero, as roundf)."""
    z32 = z.astype(np.float32)
    b = z32.reshape(*z32.shape[:-1], -1, 32)
    d = (np.abs(b).max(-1, keepdims=True) / np.float32(127)).astype(np.float32)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    v = b * inv
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return q.reshape(z.shape).astype(np.float64), d[..., 0].astype(np.float16).astype(np.float64)


def q8_0_roundtrip(z):
    """ggml's Q8_0 and back: value = q · fp16(d)."""
    q, d = q8_0_split(z)
    return (q.reshape(*q.shape[:-1], -1, 32) * d[..., None]).reshape(z.shape)


def pv_int8(p, vq, dv):
    """The INT8 cache's P·V (bluelmv's ops.h, "decode attention over a Q8_0 cache"), in float64:
    p (nq, nk) unnormalised probabilities (0 where masked), vq (nk, hd) value codes, dv (nk, hd // 32)
    their scales. Per block of 16 positions and 32 dimensions, w = p·dv is quantized to 0..127 against
    the block's largest W (round half to even), and the integer sums are scaled by W / 127."""
    nq, nk = p.shape
    hd = vq.shape[1]
    out = np.zeros((nq, hd))
    for j0 in range(0, nk, 16):
        for b in range(hd // 32):
            w = p[:, j0:j0 + 16] * dv[j0:j0 + 16, b][None]
            W = w.max(1, keepdims=True)
            pq = np.rint(np.where(W > 0, w * 127 / np.where(W > 0, W, 1), 0))
            out[:, b * 32:(b + 1) * 32] += (pq @ vq[j0:j0 + 16, b * 32:(b + 1) * 32]) * (W / 127)
    return out


def np_llm(kv, t, x0, kv_f16=False, kv_q8=False, q_q8=False, p_q8=False):
    """Float64 forward over input embeddings x0 (n, d) with the GGUF tensors as stored: permuted
    Q/K, rotating adjacent pairs (2i, 2i+1) by pos·θ^(-2i/hd) (llama.cpp's NORMAL rope).
    kv_f16: round K (after RoPE) and V to float16, as an F16 KV cache stores them; kv_q8: pass them
    through Q8_0 (blocks of 32 along head_dim), as a Q8_0 KV cache stores them; q_q8: the query (after
    RoPE) through Q8_0 too, as llama.cpp (and bluelmv) score a Q8_0 key cache: Q8_0 · Q8_0 dots;
    p_q8 (with kv_q8): P·V as bluelmv computes it over a Q8_0 cache, the probabilities quantized too
    (pv_int8)."""
    nh, nkv = kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    d = kv["llama.embedding_length"]
    hd, eps, base = d // nh, kv["llama.attention.layer_norm_rms_epsilon"], kv["llama.rope.freq_base"]
    T = {k: v.astype(np.float64) for k, v in t.items()}
    rms = lambda x, w: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w
    n = x0.shape[0]
    ang = np.arange(n, dtype=np.float64)[:, None] * base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)[None]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(z):
        out = np.empty_like(z)
        out[..., 0::2] = z[..., 0::2] * cos - z[..., 1::2] * sin
        out[..., 1::2] = z[..., 0::2] * sin + z[..., 1::2] * cos
        return out

    x = x0.astype(np.float64)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    blocks = []
    for i in range(kv["llama.block_count"]):
        b = f"blk.{i}."
        h = rms(x, T[b + "attn_norm.weight"])
        q = rope((h @ T[b + "attn_q.weight"].T).reshape(n, nh, hd))
        k = rope((h @ T[b + "attn_k.weight"].T).reshape(n, nkv, hd))
        v = (h @ T[b + "attn_v.weight"].T).reshape(n, nkv, hd)
        if kv_f16:
            k = k.astype(np.float32).astype(np.float16).astype(np.float64)
            v = v.astype(np.float32).astype(np.float16).astype(np.float64)
        if kv_q8:
            vq, dv = q8_0_split(v)
            k, v = q8_0_roundtrip(k), q8_0_roundtrip(v)
        if q_q8:
            q = q8_0_roundtrip(q)
        att = np.empty((n, nh, hd))
        for hh in range(nh):
            kvh = hh // (nh // nkv)
            s = q[:, hh] @ k[:, kvh].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            if p_q8:
                att[:, hh] = pv_int8(s, vq[:, kvh], dv[:, kvh]) / s.sum(-1, keepdims=True)
            else:
                att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kvh]
        x = x + att.reshape(n, -1) @ T[b + "attn_output.weight"].T
        h = rms(x, T[b + "ffn_norm.weight"])
        g, u = h @ T[b + "ffn_gate.weight"].T, h @ T[b + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ T[b + "ffn_down.weight"].T
        blocks.append(x)
    return rms(x, T["output_norm.weight"]) @ T["output.weight"].T, blocks


def nmse(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(((a - ref) ** 2).sum() / (ref ** 2).sum())


# =============================================================================================

def bluelmv_tokenize(gguf_path, text, bos):
    """ids from a built ./bluelmv (for information only)."""
    exe = os.path.join(REPO, "bluelmv")
    if not os.path.exists(exe):
        return None
    try:
        r = subprocess.run([exe, "tokenize", "-m", gguf_path] + ([] if bos else ["--no-bos"]) + [text],
                           capture_output=True, text=True, timeout=30)
    except Exception:
        return None
    if r.returncode != 0:
        return "error: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return r.stdout.strip()


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "?"


def config_landmarks(pixels, seq, V, R, seed):
    """What the golden would look like if a reader ignored a configuration value of the files and used
    bluelmv's default (= tiny's) instead: NMSE of the first stage it reaches, against the golden."""
    saved = (P.vision, P.proj_eps, P.llm)
    res = []
    try:
        for what, change, stage in (
                ("clip.vision.attention.layer_norm_epsilon", "1e-6", ("vision", dict(layer_norm_eps=1e-6), None)),
                ("bluelmv.projector.layer_norm_epsilon", "1e-5", ("vision", None, 1e-5)),
                ("llama.attention.layer_norm_rms_epsilon", "1e-5", ("llm", dict(rms_norm_eps=1e-5), None)),
                ("llama.rope.freq_base", "10000", ("llm", dict(rope_theta=10000.0), None))):
            P.vision, P.proj_eps, P.llm = saved
            kind, upd, peps = stage
            if kind == "vision":
                if upd:
                    P.vision = dict(saved[0], **upd)
                if peps:
                    P.proj_eps = peps
                vit, _ = build_vision()
                proj = build_projector(P.vision["hidden_size"], P.llm["hidden_size"])
                e = nmse(run_vision(vit, proj, pixels)["image_embeds"], V["image_embeds"])
                res.append((what, change, "image_embeds", e))
            else:
                P.llm = dict(saved[2], **upd)
                model, _ = build_llm(seed)
                x = input_embeddings(model, seq, V["image_embeds"])
                with torch.no_grad():
                    logits = model(inputs_embeds=torch.from_numpy(x)[None]).logits[0].float().numpy()
                res.append((what, change, "logits", nmse(logits, R["logits"])))
    finally:
        P.vision, P.proj_eps, P.llm = saved
    for what, change, stage, e in res:
        print(f"config landmark: {what} = {change} instead of the file's value: {stage} NMSE {e:.2g}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--out", default=None, help="default: tests/data/e2e (tiny), tests/data/e2e_mid (mid)")
    ap.add_argument("--search", action="store_true")
    args = ap.parse_args()
    use_preset(args.preset)
    if args.out is None:
        args.out = os.path.join(REPO, *P.out.split("/"))
    S = P.S
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    versions = (f"Python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
                f"numpy {np.__version__}, Pillow {PIL.__version__}, gguf {gguf_version()}")
    print(f"preset {P.name}; {versions}")
    out = lambda name: os.path.join(args.out, name)

    # ---- image and preprocessing
    image = make_image()
    image.save(out(P.image_name), optimize=False)
    image = Image.open(out(P.image_name)).convert("RGB")    # exactly what the C side decodes
    shutil.copyfile(SRC_LICENSE, out("LICENSE-donut"))
    grid, geom, pixels = preprocess(image)
    n_images = pixels.shape[0]
    orders = [pillow_orders(image.size[0], image.size[1], geom[0], geom[1]),
              pillow_orders(image.size[0], image.size[1], S, S)]
    order_matters = any(len(set(o)) > 1 for o in orders)
    print(f"image {image.size[0]}x{image.size[1]} -> grid {grid[0]}:{grid[1]}, resized {geom[0]}x{geom[1]} at "
          f"({geom[2]}, {geom[3]}) in {grid[0] * S}x{grid[1] * S}, {n_images} images (thumbnail first); "
          f"Pillow pass orders (13, 12.2, 12.1): resize {orders[0]}, thumbnail {orders[1]}"
          f"{' -- THEY DIFFER' if order_matters else ' (all agree)'}")
    grid_default = relaxed_grid(image.size[0], image.size[1], S, 4, P.alpha)
    if P.max_grid != 4:
        print(f"with the default max_grid 4 the grid would be {grid_default[0]}:{grid_default[1]}")
        assert grid_default != grid, "max_grid does not change the grid: the test would not see it read"

    # ---- vision
    vit, vcfg = build_vision()
    proj = build_projector(P.vision["hidden_size"], P.llm["hidden_size"])
    V = run_vision(vit, proj, pixels)
    n_tok_img = V["image_embeds"].shape[1]
    print(f"vision: patch_embed {V['patch_embed'].shape}, vit_out {V['vit_out'].shape}, merged {V['merged'].shape}, "
          f"image_embeds {V['image_embeds'].shape} (std {V['image_embeds'].std():.3g})")

    # ---- tokens
    vocab = read_vocab()
    tok = SpmBpe(*vocab)
    seq, (before, after, ids_before, ids_after) = prompt_sequence(tok, n_images * n_tok_img)
    # decoding keeps the dummy-prefix space that the query got after <im_end> (as llama.cpp prints it)
    text = TEMPLATE.format(query=QUERY).replace("<im_end>", "<im_end> ")
    assert tok.decode(seq) == text, (tok.decode(seq), text)
    pieces = ["<image>x%d" % (n_images * n_tok_img) if i < 0 else vocab[0][i].decode() for i in seq]
    print(f"tokens ({len(seq)}): {ids_before} + [-1] x {n_images * n_tok_img} + {ids_after}")
    print("pieces:", [p for p in pieces if not p.startswith("<image>")])

    # ---- language model (seed search for robust greedy decoding)
    seed = P.llm_seed
    while True:
        model, cfg = build_llm(seed)
        x = input_embeddings(model, seq, V["image_embeds"])
        R = run_llm(model, x)
        ok = robust(R)
        print(f"LLM seed {seed}: min top1-top2 gap {R['min_gap_input']:.4g} (input positions), "
              f"{R['min_gap_gen']:.4g} (generated steps); max |logit| {R['max_abs']:.4g}; "
              f"relative {min(R['min_gap_input'], R['min_gap_gen']) / R['max_abs']:.3g} "
              f"{'ok' if ok else 'NOT ROBUST'}")
        if ok:
            break
        if not args.search:
            sys.exit(f"LLM seed {seed} fails the robustness check; rerun with --search and update llm_seed "
                     f"of the {P.name} preset")
        seed += 1
    if seed != P.llm_seed:
        print(f"--search: use llm_seed = {seed} in the {P.name} preset")
    gen = R["gen"]
    print("generated:", gen)
    print("generated text: %r" % tok.decode([1] + gen, errors="replace"))

    # ---- GGUF files and their checks
    lt = llm_tensors(model, cfg)
    write_llm_gguf(out(P.llm_gguf), cfg, lt, vocab)
    kv_l, t_l = check_gguf(out(P.llm_gguf), lt, {
        "general.architecture": "llama", "llama.block_count": P.llm["num_hidden_layers"],
        "llama.embedding_length": P.llm["hidden_size"], "llama.feed_forward_length": P.llm["intermediate_size"],
        "llama.attention.head_count": P.llm["num_attention_heads"],
        "llama.attention.head_count_kv": P.llm["num_key_value_heads"], "llama.vocab_size": 516,
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.add_space_prefix": True,
        "llama.rope.freq_base": P.llm["rope_theta"], "llama.attention.layer_norm_rms_epsilon": P.llm["rms_norm_eps"]})
    assert [bytes(s, "utf-8") if isinstance(s, str) else s for s in kv_l["tokenizer.ggml.tokens"]][512:] == \
        [t.encode() for t in EXTRA_TOKENS]
    assert list(kv_l["tokenizer.ggml.token_type"])[512:] == [4] * 4
    mt = mmproj_tensors(vit, proj)
    write_mmproj(out(P.mmproj_gguf), mt)
    kv_m, t_m = check_gguf(out(P.mmproj_gguf), mt, dict(mmproj_kv(), **{"general.architecture": "clip"}))
    print(f"GGUF read back: {len(lt)} LLM tensors and {len(mt)} mmproj tensors identical, keys as written")

    # ---- independent numpy forward passes
    outs, merged_np, embeds_np = np_vision(kv_m, t_m, pixels)
    vchecks = [("patch_embed", outs[0], V["patch_embed"])] + \
              [(f"vit_block_{k}", outs[k + 1], V["vit_blocks"][k]) for k in range(P.vit_layers_used)] + \
              [("merged", merged_np, V["merged"]), ("image_embeds", embeds_np, V["image_embeds"])]
    for name, a, ref in vchecks:
        e = nmse(a, ref)
        print(f"numpy float64 vision vs HF + VILA transcription, {name}: NMSE {e:.3g}, "
              f"max abs {np.abs(a - ref).max():.3g}")
        assert e < 1e-10, name
    x_gguf = t_l["token_embd.weight"][[i for i in seq if i >= 0]]
    x_np = input_embeddings(model, seq, V["image_embeds"])
    assert np.array_equal(x_np[[k for k, i in enumerate(seq) if i >= 0]], x_gguf)
    np_logits, np_blocks = np_llm(kv_l, t_l, R["full_x"])
    n = len(seq)
    d_in = float(np.abs(np_logits[:n] - R["logits"]).max())
    d_all = float(np.abs(np_logits - R["full"]).max())
    np_greedy = [int(a) for a in np_logits[n - 1:].argmax(-1)]
    print(f"numpy float64 LLM (GGUF tensors, adjacent-pair RoPE) vs HF: max abs {d_in:.3g} on the {n} input "
          f"logits (NMSE {nmse(R['logits'], np_logits[:n]):.3g}), {d_all:.3g} over all {len(R['full'])} positions; "
          f"greedy {'matches' if np_greedy == gen else 'DIFFERS'}")
    for k in range(len(np_blocks)):
        print(f"  llm_block_{k}: NMSE {nmse(R['blocks'][k], np_blocks[k][:n]):.3g}")
    assert d_in < 1e-5 * max(1, R["max_abs"]) and d_all < 1e-5 * max(1, R["max_abs"]) and np_greedy == gen

    # ---- what the compare tolerances have to separate: an F16 KV cache (acceptable) and two
    #      mistakes (tanh GELU in the projector; raster instead of VILA token order)
    f16_logits, _ = np_llm(kv_l, t_l, x_np, kv_f16=True)
    nm_f16 = nmse(f16_logits, R["logits"])
    nm_q8 = nm_q8q = nm_q8p = None
    if kv_l["llama.embedding_length"] // kv_l["llama.attention.head_count"] % 32 == 0:
        q8_logits, _ = np_llm(kv_l, t_l, x_np, kv_q8=True)
        nm_q8 = nmse(q8_logits, R["logits"])
        q8q_logits, _ = np_llm(kv_l, t_l, x_np, kv_q8=True, q_q8=True)
        nm_q8q = nmse(q8q_logits, R["logits"])
        q8p_logits, _ = np_llm(kv_l, t_l, x_np, kv_q8=True, q_q8=True, p_q8=True)
        nm_q8p = nmse(q8p_logits, R["logits"])
        print(f"tolerance landmark: logits with a Q8_0 KV cache (numpy) NMSE {nm_q8:.2g}; the query through Q8_0 "
              f"too NMSE {nm_q8q:.2g}; and the probabilities quantized in P·V NMSE {nm_q8p:.3g}")
    with torch.no_grad():
        mt_ = torch.from_numpy(V["merged"])
        y = proj[3](torch.nn.functional.gelu(proj[1](proj[0](mt_)), approximate="tanh")).numpy()
    nm_tanh, ma_tanh = nmse(y, V["image_embeds"]), float(np.abs(y - V["image_embeds"]).max())
    ma_ok = float(np.abs(embeds_np - V["image_embeds"]).max())
    G2 = int(round(n_tok_img ** 0.5))
    raster = V["image_embeds"].reshape(n_images, G2, G2, -1).transpose(0, 2, 1, 3).reshape(V["image_embeds"].shape)
    nm_raster = nmse(raster, V["image_embeds"])
    print(f"tolerance landmarks: logits with an F16 KV cache (numpy) NMSE {nm_f16:.2g}; image_embeds with tanh GELU "
          f"NMSE {nm_tanh:.2g} (max abs {ma_tanh:.2g}, float64 reference {ma_ok:.2g}); raster token order "
          f"NMSE {nm_raster:.2g}")
    cfg_marks = config_landmarks(pixels, seq, V, R, seed) if P.name != "tiny" else []

    # ---- golden tensors
    npy = {"pixels": pixels, "patch_embed": V["patch_embed"], "vit_out": V["vit_out"], "merged": V["merged"],
           "image_embeds": V["image_embeds"], "logits": R["logits"]}
    for k in range(P.vit_layers_used - 1):        # the last block's output is vit_out (no post-LN)
        npy[f"vit_block_{k}"] = V["vit_blocks"][k]
    assert np.array_equal(V["vit_blocks"][-1], V["vit_out"])
    for k in range(len(R["blocks"])):
        npy[f"llm_block_{k}"] = R["blocks"][k]
    for name, arr in npy.items():
        np.save(out(name + ".npy"), np.ascontiguousarray(arr, dtype=np.float32))
    np.save(out("tokens.npy"), np.asarray(seq, dtype=np.int32))
    np.save(out("generated.npy"), np.asarray(gen, dtype=np.int32))

    # ---- meta.txt
    meta = [
        f"# {P.out}/meta.txt -- written by tools/gen_e2e_golden.py; 'key value...' per line",
        f"image {P.image_name}",
        f"image_size {image.size[0]} {image.size[1]}",
        f"tile_size {S}",
        f"tiling relaxed max_grid {P.max_grid} alpha {P.alpha} thumbnail first",
        f"grid {grid[0]} {grid[1]}",
        f"resized {geom[0]} {geom[1]}",
        f"pad {geom[2]} {geom[3]}",
        f"n_images {n_images}",
        f"tokens_per_image {n_tok_img}",
        f"n_image_tokens {n_images * n_tok_img}",
        f"n_input {len(seq)}",
        f"n_gen {N_GEN}",
        f"ids_before {' '.join(map(str, ids_before))}",
        f"ids_after {' '.join(map(str, ids_after))}",
        f"min_gap_input {R['min_gap_input']:.6g}",
        f"min_gap_gen {R['min_gap_gen']:.6g}",
        f"max_abs_logit {R['max_abs']:.6g}",
        f"pillow {PIL.__version__}",
        f"pillow_pass_order_matters {int(order_matters)}",
        f"seeds vit {P.vit_seed} projector {P.proj_seed} llm {seed}",
        f"query {QUERY}",
    ]
    if P.name != "tiny":                          # (tiny's meta.txt predates the presets: kept as it was)
        meta[1:1] = [f"preset {P.name}", f"llm {P.llm_gguf}", f"mmproj {P.mmproj_gguf}",
                     f"weights {'f16' if P.f16 else 'f32'}"]
    with open(out("meta.txt"), "w") as f:
        f.write("\n".join(meta) + "\n")

    write_readme(out("README.md"), dict(
        versions=versions, grid=grid, geom=geom, n_images=n_images, n_tok_img=n_tok_img, seq=seq,
        ids_before=ids_before, ids_after=ids_after, pieces_before=[vocab[0][i].decode() for i in ids_before],
        pieces_after=[vocab[0][i].decode() for i in ids_after], gen=gen, R=R, seed=seed, orders=orders,
        order_matters=order_matters, image=image, d_in=d_in, d_all=d_all, vchecks=[(nm, nmse(a, r)) for nm, a, r in vchecks],
        gen_text=tok.decode([1] + gen, errors="replace"), out=args.out, nm_f16=nm_f16, nm_q8=nm_q8, nm_q8q=nm_q8q, nm_q8p=nm_q8p, nm_tanh=nm_tanh,
        ma_tanh=ma_tanh, ma_ok=ma_ok, nm_raster=nm_raster, grid_default=grid_default, cfg_marks=cfg_marks, merged_var=float(V["merged"].var(-1).mean())))

    # ---- for information: bluelmv's own tokenizer on the two text parts
    for part, ids, bos in ((before, ids_before, True), (after, ids_after, False)):
        c = bluelmv_tokenize(out(P.llm_gguf), part, bos)
        if c is not None:
            print(f"./bluelmv tokenize {part!r}: {c}   (python: {ids})")

    total = 0
    for name in sorted(os.listdir(args.out)):
        size = os.path.getsize(out(name))
        total += size
        print(f"  {name:22s} {size:9d} bytes")
    print(f"total {total} bytes")


def fmt_num(x):
    """1e-06 -> 1e-6, 10000.0 -> 10000 (as the README writes config values)."""
    if 0 < abs(x) < 1e-3:
        mant, ex = f"{x:e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(ex)}"
    return f"{x:g}"


def write_readme(path, d):
    R = d["R"]
    S, Vc, Lc = P.S, P.vision, P.llm
    files = sorted(f for f in os.listdir(d["out"]) if f != "README.md")
    sizes = {f: os.path.getsize(os.path.join(d["out"], f)) for f in files}
    total_size = sum(sizes.values())
    n = len(d["seq"])
    nimg = d["n_images"] * d["n_tok_img"]
    template_escaped = TEMPLATE.replace("\n", "\\n")
    tiny = P.name == "tiny"
    Pz, D, H, L = Vc["patch_size"], Vc["hidden_size"], Lc["hidden_size"], P.vit_layers_used
    G = S // Pz
    G2 = (G + 1) // 2
    nt = d["n_tok_img"]
    assert nt == G2 * G2
    n_tiles = d["grid"][0] * d["grid"][1]
    w0, h0 = d["image"].size
    rw, rh = d["geom"][0], d["geom"][1]
    scale_word = "an upscale" if rw > w0 else "a downscale"
    orders = d["orders"]
    if all(o == "horizontal" for oo in orders for o in oo):
        order_text = "Pillow 13, 12.2 and ≤ 12.1 all do the horizontal pass first"
    else:
        order_text = (f"Pillow 13, 12.2 and ≤ 12.1 do the {' / '.join(orders[0])} pass first for the resize and the "
                      f"{' / '.join(orders[1])} pass first for the thumbnail")
    pix_seen = (f"pixels {G * Pz}..{S - 1} never seen" if G * Pz < S else f"{S} = {G}·{Pz}: every pixel seen")
    cmd = "python3 tools/gen_e2e_golden.py" + " " * 10 if tiny else "python3 tools/gen_e2e_golden.py --preset mid"
    wdesc = "F32" if not P.f16 else "F16"
    if G % 2:
        ds_text = f"{G}×{G} → zero-padded {G + 1}×{G + 1} →\n{nt} tokens of {4 * D}"
    else:
        ds_text = f"{G}×{G}, an even grid: no zero-padding →\n{nt} tokens of {4 * D}"
    tile_order = ("in raster order (the top row left to right, then the next row)" if d["grid"][1] > 1
                  else "left to right (one row)")
    f16_par = "" if not P.f16 else f"""
Storage: **F16**. Every matrix is rounded to float16 right after it is drawn (`w.half().float()`):
the ViT's conv, attention and MLP weights, the projector's two Linear weights, all LLM matrices
including `token_embd` and `output`. The PyTorch models are built from those rounded values and
compute in float32; the GGUF files store exactly those values as F16, and the vectors (biases,
LayerNorm/RMSNorm weights) and the ViT position embedding as F32 (the layout bluelmv's HF
converters write for `--type f16`: K = {3 * Pz * Pz} and F = {Vc['intermediate_size']} unpadded). bluelmv's F16 × F32
path converts each weight to f32 exactly, so the comparison is still one between two float32
computations of the same arithmetic (summation order aside): the same NMSE ≤ 1e-8 applies as for
the F32 `tiny` golden.
"""
    lines = f"""# End-to-end golden data (`{P.name}` preset)

One image and one question through the whole BlueLM-V-3B pipeline of the `{P.name}` preset, computed
by implementations that share no code with bluelmv (Hugging Face `transformers`, a transcription
of VILA's projector, Pillow, and a SentencePiece-BPE encoder written in the script). Made by
`tools/gen_e2e_golden.py`; regenerate with

    {cmd}  # writes into {P.out}/

Deterministic (fixed seeds, `torch.set_num_threads(1)`, `torch.use_deterministic_algorithms(True)`):
two runs give byte-identical files. Versions used: {d['versions']}.
"""
    if not tiny:
        lines += f"""
Compared with `tiny` (tests/data/e2e/), everything that could be hard-wired differs: tile {S} and
patch {Pz} (an even {G}×{G} patch grid, so the downsampler's zero-padding is NOT used — `tiny`
covers the odd case), a patch vector of {3 * Pz * Pz} values, {L} ViT blocks, LayerNorm ε {fmt_num(Vc['layer_norm_eps'])} (ViT) and
{fmt_num(P.proj_eps)} (projector), an LLM with head_dim {H // Lc['num_attention_heads']} (a Q8_0 KV cache fits), rms ε {fmt_num(Lc['rms_norm_eps'])} and RoPE θ
{fmt_num(Lc['rope_theta'])}, `bluelmv.tiling.max_grid` {P.max_grid}, an image that is downscaled (both axes, with
the ceil rule deciding the height and an odd padding), a {d['grid'][0]}:{d['grid'][1]} grid, and F16 weights.
A reader that ignored one of these configuration values and used bluelmv's default (= `tiny`'s)
instead would move the golden by (computed by the script):

""" + "".join(f"- `{w}` = {c}: `{st}` NMSE {e:.2g} — {'caught' if e > 1e-8 else 'NOT caught'} at NMSE ≤ 1e-8;\n"
              for w, c, st, e in d["cfg_marks"]) + f"""- `bluelmv.tiling.max_grid` = 4: grid {d['grid_default'][0]}:{d['grid_default'][1]} instead of {d['grid'][0]}:{d['grid'][1]}, a different token count — caught.

(The projector's LayerNorm sees inputs of variance ~{d['merged_var']:.0f}, so its ε cannot show here; the
ViT's ε is 1e-4, larger than SigLIP's 1e-6, so that it does.)
"""
    lines += f"""
## The image

`{P.image_name}` ({w0}×{h0}): {P.image_what} of a receipt photo, cropped
(box {P.crop}) from `sample_image_cord_test_receipt_00004.png` of the donut repository's samples
and downscaled with Pillow's LANCZOS. The receipt is from the CORD dataset (Clova AI, CC BY 4.0);
the donut code and samples are MIT licensed (NAVER Corp.), see `LICENSE-donut`.

## Preprocessing

- Grid: the paper's Algorithm 1 (relaxed aspect-ratio matching, α = {P.alpha}, m, n ∈ 1..{P.max_grid} in
  descending order), tile size S = {S}: **{d['grid'][0]}:{d['grid'][1]}** ({d['grid'][0]} tiles across, {d['grid'][1]} down).
"""
    if P.max_grid != 4:
        lines += f"""  (`bluelmv.tiling.max_grid` = {P.max_grid} in the mmproj; with the default 4 the grid would be
  {d['grid_default'][0]}:{d['grid_default'][1]}, so a reader that ignored the key would fail.)
"""
    lines += f"""- LLaVA-NeXT `resize_and_pad_image`: Pillow BICUBIC resize to {rw}×{rh} (ceil rule),
  pasted at ({d['geom'][2]}, {d['geom'][3]}) on a black {d['grid'][0] * S}×{d['grid'][1] * S} canvas, cut into {n_tiles}
  tiles in raster order.
- Thumbnail: `image.resize(({S}, {S}), BICUBIC)` of the whole image, placed **first**.
  {d['n_images']} images in all.
- Normalization: `SiglipImageProcessor(do_resize=False)` (without torchvision installed, transformers
  uses its PIL backend, `SiglipImageProcessorPil`): float32(u8 · (1/255)), then (x − 0.5) / 0.5 in
  float32 (the script checks the processor's output against that formula, bit for bit).
- Pillow: {PIL.__version__}. The pass order of Pillow's two-pass bicubic resize differs between
  Pillow versions (tile.h, `TilePillow`); for these two resizes ({w0}×{h0} → {rw}×{rh}, {scale_word}, and
  → {S}×{S}) {order_text}
  ({'they DIFFER: set TilePolicy.pillow = TILE_PILLOW_13' if d['order_matters'] else 'they agree, so any TilePolicy.pillow reproduces `pixels.npy` exactly'}).

## Models

Vision: `SiglipVisionModel(SiglipVisionConfig(image_size={S}, patch_size={Pz}, hidden_size={D},
intermediate_size={Vc['intermediate_size']}, num_hidden_layers={Vc['num_hidden_layers']}, num_attention_heads={Vc['num_attention_heads']}, layer_norm_eps={fmt_num(Vc['layer_norm_eps'])},
hidden_act="gelu_pytorch_tanh"))`, eager attention. {G}×{G} patches ({pix_seen}); the
first {L} layers are used (select-layer −2: `hidden_states[{L}]`, no post-LayerNorm), so the mmproj
holds {L} blocks. Weights redrawn in sorted-name order from `torch.Generator().manual_seed({P.vit_seed})`:
matrices, conv and position embedding 0.2·randn, biases 0.1·randn, LayerNorm weights 1 + 0.1·randn,
LayerNorm biases 0.1·randn.

Projector: VILA `mlp_downsample`, transcribed from NVlabs/VILA
`llava/model/multimodal_projector/base_projector.py`: `DownSampleBlock` ({ds_text} in VILA's column-major order, token t = j·{G2} + i holding [x(2i,2j), x(2i,2j+1),
x(2i+1,2j), x(2i+1,2j+1)]), then `nn.LayerNorm({4 * D}, eps={fmt_num(P.proj_eps)})`, `nn.Linear({4 * D}, {H})`, `nn.GELU()`
(exact erf), `nn.Linear({H}, {H})`. Seed {P.proj_seed}: LayerNorm 1 + 0.1·randn / 0.1·randn,
Linear({4 * D}, {H}) 0.1·randn, Linear({H}, {H}) 0.15·randn, biases 0.1·randn.

LLM: `LlamaForCausalLM(LlamaConfig(vocab_size=516, hidden_size={H}, intermediate_size={Lc['intermediate_size']},
num_hidden_layers={Lc['num_hidden_layers']}, num_attention_heads={Lc['num_attention_heads']}, num_key_value_heads={Lc['num_key_value_heads']}, rms_norm_eps={fmt_num(Lc['rms_norm_eps'])},
rope_theta={fmt_num(Lc['rope_theta'])}, max_position_embeddings={Lc['max_position_embeddings']}, tie_word_embeddings=False))`, eager, float32.
Weights redrawn in sorted-name order from seed {d['seed']}: matrices {P.llm_weight_std}·randn, RMSNorm weights
1 + {P.llm_norm_std}·randn.
{f16_par}
## Vocabulary, template, tokens

Tokens 0..511: `tests/data/stories260K/tok512.bin` converted as `tools/gen_llama_golden.py` does
(`▁` for spaces, `<s>`/`</s>` CONTROL, `<0xNN>` BYTE, `<unk>` UNKNOWN). Appended as USER_DEFINED
(type 4, score {EXTRA_SCORE}): `[|Human|]:` 512, `[|AI|]:` 513, `<im_start>` 514, `<im_end>` 515.

Template (`bluelmv.chat_template` in the mmproj): `{template_escaped}`, query
`{QUERY}`. The template is cut at `<image>`; the part before is tokenized with BOS, the part
after without. Each part is tokenized as llama.cpp's `llama` vocabulary does: user-defined
token texts are matched first (longest first); every remaining text fragment gets spaces → `▁`
and a dummy-prefix `▁` when it is the first fragment or follows a special token; then
SentencePiece BPE (merge the adjacent pair whose concatenation is the highest-scoring piece,
leftmost on ties; unknown characters as `<0xNN>` bytes). So the query gets a leading `▁` (it
follows `<im_end>`), and `\\n` becomes `<0x0A>`.

Input sequence ({n} positions; −1 = an image embedding):

    {d['ids_before']} + [-1] × {nimg} + {d['ids_after']}

    pieces before: {d['pieces_before']}
    pieces after:  {d['pieces_after']}

The {nimg} image positions take `image_embeds` in order: the thumbnail's {nt} tokens, then the
{n_tiles} tiles {tile_order}, each tile's {nt} tokens
in VILA order.

Greedy continuation (`generate(inputs_embeds=..., max_new_tokens={N_GEN}, do_sample=False)`; in
transformers 5 the returned ids are only the new ones):

    {d['gen']}

Robustness: the smallest top-1 − top-2 logit gap is {R['min_gap_input']:.4g} over the {n} input
positions and {R['min_gap_gen']:.4g} over the {N_GEN} generated steps (max |logit| {R['max_abs']:.4g}; the
seed was chosen as the first with both gaps > {MIN_REL_GAP} × max |logit|). Neither BOS nor EOS is
generated, so a generator that stops at EOS produces all {N_GEN} tokens.

## Files

| file | shape / contents |
|---|---|
"""
    llm_desc = (f"the LLM: llama.cpp layout (as `tools/gen_llama_golden.py`: Q/K rows permuted to adjacent-pair RoPE), "
                f"{'F32' if not P.f16 else 'F16 matrices (RMSNorm weights F32)'}, vocabulary above, "
                f"`tokenizer.ggml.add_space_prefix` true")
    if not P.f16:
        mm_store = f"F32 (no padding needed: K = {3 * Pz * Pz}, F = {Vc['intermediate_size']} kept)"
    else:
        mm_store = (f"F16 matrices (vectors and the position embedding F32), K = {3 * Pz * Pz} and F = "
                    f"{Vc['intermediate_size']} kept unpadded (allowed for float files)")
    mm_desc = (f"the vision side in `vit.h`'s layout, {mm_store}, `bluelmv.tiling.*` = relaxed / {P.max_grid} / "
               f"{P.alpha} / true, `bluelmv.chat_template`")
    NP, nl = G * G, Lc["num_hidden_layers"]
    desc = {
        P.llm_gguf: llm_desc,
        P.mmproj_gguf: mm_desc,
        P.image_name: "the image",
        "LICENSE-donut": "the donut repository's MIT license (the image's source)",
        "pixels.npy": f"({d['n_images']}, 3, {S}, {S}) float32, normalized, thumbnail first",
        "patch_embed.npy": f"({d['n_images']}, {NP}, {D}) HF `hidden_states[0]`",
        "vit_out.npy": f"({d['n_images']}, {NP}, {D}) after ViT layer {L - 1} (`hidden_states[{L}]`), what the projector sees (no post-LN; a dump's `vit_block_{L - 1}` is the same tensor and is not stored twice)",
        "merged.npy": f"({d['n_images']}, {nt}, {4 * D}) DownSampleBlock output, before the LayerNorm",
        "image_embeds.npy": f"({d['n_images']}, {nt}, {H}) projector output",
        "tokens.npy": f"({n},) int32, the input sequence, −1 at image positions",
        "logits.npy": f"({n}, 516) logits at every input position (row p predicts position p+1)",
        "generated.npy": f"({N_GEN},) int32 greedy continuation",
        "meta.txt": "grid, geometry, counts, token ids, gaps, Pillow version, seeds as `key value` lines",
        "README.md": "this file",
    }
    for k in range(L - 1):
        desc[f"vit_block_{k}.npy"] = f"({d['n_images']}, {NP}, {D}) after ViT layer {k} (`hidden_states[{k + 1}]`)"
    for k in range(nl):
        desc[f"llm_block_{k}.npy"] = (f"({n}, {H}) residual stream after LLM layer {k} (forward hook)" if k < nl - 1 else
                                      f"({n}, {H}) after LLM layer {k}, before the final RMSNorm (forward hook)")
    for f in files + ["README.md"]:
        size = sizes.get(f)
        lines += f"| `{f}` ({size:,} B) | {desc.get(f, '')} |\n" if size is not None else f"| `{f}` | {desc.get(f, '')} |\n"
    f16_self = "" if not P.f16 else " (the F16 tensors equal to the\n   rounded weights the PyTorch models use)"
    f16_tol = "" if not P.f16 else " (the F16 weights are exact in float32,\nso storing them as F16 changes nothing here)"
    lines += f"""
All `.npy` files are C-order little-endian (`numpy.save`), named as DESIGN.md §Golden dumps, so
`bluelmv compare DUMP_DIR {P.out}` checks a `--dump` against them directly.

## Self-checks done by the script

1. Greedy robustness as above; `generate()` (KV cache) equals the argmax of one uncached forward
   pass over the input embeddings + the generated tokens' embeddings.
2. Both GGUF files read back with `gguf.GGUFReader`: every tensor identical, keys as written{f16_self}.
3. An independent float64 numpy forward pass of the vision side over the mmproj tensors (im2col,
   pre-LN blocks, the downsampler by its index formula, erf GELU) against HF + the VILA transcription:
   NMSE {', '.join(f'{nm} {e:.2g}' for nm, e in d['vchecks'])}.
4. An independent float64 numpy forward pass of the LLM over the GGUF tensors as stored (permuted
   Q/K, llama.cpp's adjacent-pair RoPE) against HF: max abs difference {d['d_in']:.2g} on the input
   logits and {d['d_all']:.2g} over all {n + N_GEN - 1} positions of input + continuation; same greedy tokens.
5. The token sequence decodes back to the template text (with `<image>` at the image positions and
   the dummy-prefix space before the query: `...<im_end> What is...`).

## Tolerances

`pixels`, `tokens` and `generated` should match exactly. The float stages are float32 computations
that differ from a correct float32 implementation only in summation order{f16_tol}: NMSE ~1e-13 (vision)
to ~1e-12 (logits), see the self-checks. Landmarks computed by the script:

- an F16 KV cache (K after RoPE and V rounded to float16, numpy): logits NMSE {d['nm_f16']:.2g} —
  {'inside' if d['nm_f16'] <= 1e-6 else 'OUTSIDE'} `bluelmv compare`'s default (NMSE ≤ 1e-6, top-1 agreement 1.0 on `logits`);
"""
    if d["nm_q8"] is not None:
        lines += f"""- a Q8_0 KV cache (K after RoPE and V through ggml's Q8_0, one block of 32 per head row,
  numpy): logits NMSE {d['nm_q8']:.2g}; with the query through Q8_0 as well (the scores as Q8_0 · Q8_0
  dot products, as llama.cpp and bluelmv compute them over a Q8_0 cache): {d['nm_q8q']:.2g}; and with
  P·V in integers as bluelmv computes it over a Q8_0 cache (the probabilities times the value scales
  quantized to 0..127 per 16 positions and 32 dimensions, `pv_int8`): {d['nm_q8p']:.2g};
"""
    lines += f"""- the tanh GELU instead of the erf GELU in the projector: `image_embeds` NMSE {d['nm_tanh']:.2g}, max abs
  {d['ma_tanh']:.2g} (a float64 evaluation of the right formula: {d['ma_ok']:.2g}) — a real mistake that only a
  strict float32 check finds: `bluelmv compare --tol-nmse 1e-9`;
- raster instead of VILA token order: `image_embeds` NMSE {d['nm_raster']:.2g}.

Total size {total_size / 1e6:.2f} MB, of which the two {wdesc} GGUF files are
{(sizes[P.llm_gguf] + sizes[P.mmproj_gguf]) / 1e6:.2f} MB.
"""
    with open(path, "w") as f:
        f.write(lines)


if __name__ == "__main__":
    main()
