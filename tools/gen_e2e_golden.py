#!/usr/bin/env python3
"""gen_e2e_golden.py — end-to-end golden data for the `tiny` preset, from independent references.

One image and one question go through the whole pipeline, built from implementations that share
no code with bluelmv:

  preprocessing  the paper's Algorithm 1 (relaxed aspect-ratio matching, written here from the
                 pseudocode in docs/paper-notes.md §2.2) picks the grid; then LLaVA-NeXT's
                 resize_and_pad_image / divide_to_patches with Pillow (BICUBIC, centred on black),
                 the thumbnail image.resize((S, S)) first, and transformers' SiglipImageProcessor
                 (rescale 1/255, mean = std = 0.5) for the normalization;
  vision         transformers' SiglipVisionModel (eager, float32), 3 layers of which the first 2
                 are used (select-layer -2: hidden_states[2], no post-LN);
  projector      a PyTorch transcription of VILA's mlp_downsample (NVlabs/VILA
                 llava/model/multimodal_projector/base_projector.py): DownSampleBlock.flat_square,
                 nn.LayerNorm(256), nn.Linear(256, 64), nn.GELU(), nn.Linear(64, 64);
  tokenizer      a SentencePiece-BPE encoder written here from the algorithm (score-driven merges
                 of adjacent symbols, byte fallback), applied as llama.cpp's `llama` vocabulary
                 does (special-token partition first, dummy-prefix space on the first text
                 fragment and on every fragment that follows a special token);
  language model transformers' LlamaForCausalLM (eager, float32); greedy generate().

Outputs (tests/data/e2e/):
  tiny_llm.gguf       llama-architecture GGUF (F32, llama.cpp Q/K permutation, tok512 vocabulary
                      + 4 user-defined tokens)
  tiny_mmproj.gguf    mmproj GGUF in vit.h's layout (F32) with the tiling policy and chat template
  receipt_150x90.png  the image (a crop of a CORD receipt photo; see LICENSE-donut and README.md)
  pixels.npy (N,3,60,60), patch_embed.npy, vit_block_0.npy, vit_out.npy (N,49,64) (vit_out is layer
  1's output, i.e. a dump's vit_block_1, not stored twice), merged.npy (N,16,256), image_embeds.npy
  (N,16,64), tokens.npy (n,) int32 with -1 at image positions, llm_block_0.npy, llm_block_1.npy
  (n,64), logits.npy (n,516) at every input position, generated.npy (32,) int32
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
    (numpy), the tanh GELU in the projector, raster token order.

Usage: python3 tools/gen_e2e_golden.py [--out DIR] [--search]
  --search  if the LLM seed fails the robustness check, try the next seeds and report the first that
            passes (then put it into LLM_SEED by hand).
"""
import argparse
import math
import os
import shutil
import struct
import subprocess
import sys

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
CROP = (60, 530, 800, 974)        # the item and total lines of the receipt, 740 x 444 (5:3)
IMAGE_SIZE = (150, 90)            # downscaled with LANCZOS to this (width, height)
IMAGE_NAME = "receipt_150x90.png"

# tiling (bluelmv's relaxed default, tile size = the ViT input size)
S = 60
MAX_GRID = 4
ALPHA = 0.1

# vision (the `tiny` preset)
VISION = dict(image_size=S, patch_size=8, hidden_size=64, intermediate_size=172, num_hidden_layers=3,
              num_attention_heads=4, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
VIT_LAYERS_USED = 2               # select-layer -2: hidden_states[2]; the mmproj stores 2 blocks
VIT_SEED = 21
PROJ_SEED = 22
PROJ_EPS = 1e-5

# language model (the `tiny` preset)
LLM = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=512,
           attention_bias=False, mlp_bias=False, hidden_act="silu", tie_word_embeddings=False,
           bos_token_id=1, eos_token_id=2, pad_token_id=None)
LLM_SEED = 117                    # the first seed from 1 that passes the robustness check (--search)
LLM_WEIGHT_STD = 0.3
LLM_NORM_STD = 0.1
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
    return src.crop(CROP).resize(IMAGE_SIZE, Image.Resampling.LANCZOS)


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
    grid = relaxed_grid(image.size[0], image.size[1], S, MAX_GRID, ALPHA)
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

def build_vision():
    cfg = SiglipVisionConfig(num_channels=3, attention_dropout=0.0, vision_use_head=False,
                             attn_implementation="eager", **VISION)
    torch.manual_seed(0)
    model = SiglipVisionModel(cfg).eval().float()
    g = torch.Generator().manual_seed(VIT_SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "layer_norm" in name or "post_layernorm" in name:
                p.copy_(1 + 0.1 * r if name.endswith("weight") else 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            else:                                   # conv, linear weights and the position embedding
                p.copy_(0.2 * r)
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
    proj = nn.Sequential(nn.LayerNorm(4 * dim, eps=PROJ_EPS), nn.Linear(4 * dim, proj_dim), nn.GELU(),
                         nn.Linear(proj_dim, proj_dim))
    scales = {"0.weight": lambda r: 1 + 0.1 * r, "0.bias": lambda r: 0.1 * r,
              "1.weight": lambda r: 0.1 * r, "1.bias": lambda r: 0.1 * r,
              "3.weight": lambda r: 0.15 * r, "3.bias": lambda r: 0.1 * r}
    g = torch.Generator().manual_seed(PROJ_SEED)
    with torch.no_grad():
        for name, p in sorted(proj.named_parameters()):
            p.copy_(scales[name](torch.randn(p.shape, generator=g, dtype=torch.float32)))
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
    for k in range(VISION["num_hidden_layers"]):
        assert np.array_equal(hs[k + 1], caps[k].numpy()), f"hidden_states[{k + 1}] is not layer {k}'s output"
    vit_out = hs[VIT_LAYERS_USED]                      # select-layer -2, no post-LN
    with torch.no_grad():
        merged = DownSampleBlock()(torch.from_numpy(vit_out))
        embeds = proj(merged)
    return dict(patch_embed=hs[0], vit_blocks=[hs[k + 1] for k in range(VIT_LAYERS_USED)], vit_out=vit_out,
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
    cfg = LlamaConfig(vocab_size=516, num_hidden_layers=LLM["num_hidden_layers"], attn_implementation="eager",
                      initializer_range=LLM_WEIGHT_STD, **{k: v for k, v in LLM.items() if k != "num_hidden_layers"})
    cfg.dtype = torch.float32
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.copy_(1.0 + LLM_NORM_STD * r if name.endswith("norm.weight") else LLM_WEIGHT_STD * r)
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


def write_llm_gguf(path, cfg, tensors, vocab):
    hd = cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name("bluelmv e2e tiny LLM (random weights)")
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
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
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
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def mmproj_tensors(model, proj):
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    D, P = VISION["hidden_size"], VISION["patch_size"]
    t = {"v.patch_embd.weight": sd["embeddings.patch_embedding.weight"].reshape(D, 3 * P * P),  # (c, ky, kx)
         "v.patch_embd.bias": sd["embeddings.patch_embedding.bias"],
         "v.position_embd.weight": sd["embeddings.position_embedding.weight"]}
    for l in range(VIT_LAYERS_USED):
        p, b = f"encoder.layers.{l}.", f"v.blk.{l}."
        t[b + "ln1.weight"] = sd[p + "layer_norm1.weight"]
        t[b + "ln1.bias"] = sd[p + "layer_norm1.bias"]
        for ours, hf in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_out", "out_proj")):
            t[b + ours + ".weight"] = sd[p + "self_attn." + hf + ".weight"]
            t[b + ours + ".bias"] = sd[p + "self_attn." + hf + ".bias"]
        t[b + "ln2.weight"] = sd[p + "layer_norm2.weight"]
        t[b + "ln2.bias"] = sd[p + "layer_norm2.bias"]
        t[b + "ffn_up.weight"] = sd[p + "mlp.fc1.weight"]          # F32: no padding (Fp = F = 172)
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


MMPROJ_KV = {
    "clip.has_vision_encoder": True,
    "clip.projector_type": "bluelmv",
    "clip.vision.image_size": S,
    "clip.vision.patch_size": VISION["patch_size"],
    "clip.vision.embedding_length": VISION["hidden_size"],
    "clip.vision.feed_forward_length": VISION["intermediate_size"],
    "clip.vision.block_count": VIT_LAYERS_USED,
    "clip.vision.attention.head_count": VISION["num_attention_heads"],
    "clip.vision.attention.layer_norm_epsilon": VISION["layer_norm_eps"],
    "clip.vision.projection_dim": LLM["hidden_size"],
    "clip.vision.projector.scale_factor": 2,
    "clip.use_gelu": True,
    "bluelmv.merge.order": "vila",
    "bluelmv.vision.post_ln": False,
    "bluelmv.projector.layer_norm_epsilon": PROJ_EPS,
    "bluelmv.tiling.algo": "relaxed",
    "bluelmv.tiling.max_grid": MAX_GRID,
    "bluelmv.tiling.alpha": ALPHA,
    "bluelmv.tiling.thumbnail": True,
    "bluelmv.chat_template": TEMPLATE,
}


def write_mmproj(path, tensors):
    w = gguf.GGUFWriter(path, arch="clip")
    w.add_name("bluelmv e2e tiny mmproj (random weights)")
    w.add_description("SigLIP-shaped vision tower (2 of 3 layers) and VILA mlp_downsample projector, "
                      "random weights, for bluelmv's end-to-end test")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for k, v in MMPROJ_KV.items():
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
        tensors[t.name] = np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape.tolist())])
    kv = {name: f.contents() for name, f in r.fields.items()}
    return kv, tensors


def check_gguf(path, tensors, expect_kv):
    kv, t = read_gguf(path)
    assert list(t) == list(tensors), (list(t), list(tensors))
    for name, arr in tensors.items():
        assert t[name].shape == arr.shape and np.array_equal(t[name], arr), name
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
    S_, P = kv["clip.vision.image_size"], kv["clip.vision.patch_size"]
    D, L = kv["clip.vision.embedding_length"], kv["clip.vision.block_count"]
    nh, eps = kv["clip.vision.attention.head_count"], kv["clip.vision.attention.layer_norm_epsilon"]
    G, hd = S_ // P, D // nh
    T = {k: v.astype(np.float64) for k, v in t.items()}
    x = pixels.astype(np.float64)
    n = x.shape[0]
    cols = np.zeros((n, G * G, 3 * P * P))
    for py in range(G):
        for px in range(G):
            cols[:, py * G + px] = x[:, :, py * P:(py + 1) * P, px * P:(px + 1) * P].reshape(n, -1)
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


def np_llm(kv, t, x0, kv_f16=False):
    """Float64 forward over input embeddings x0 (n, d) with the GGUF tensors as stored: permuted
    Q/K, rotating adjacent pairs (2i, 2i+1) by pos·θ^(-2i/hd) (llama.cpp's NORMAL rope).
    kv_f16: round K (after RoPE) and V to float16, as an F16 KV cache stores them."""
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
        att = np.empty((n, nh, hd))
        for hh in range(nh):
            kvh = hh // (nh // nkv)
            s = q[:, hh] @ k[:, kvh].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "e2e"))
    ap.add_argument("--search", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    versions = (f"Python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
                f"numpy {np.__version__}, Pillow {PIL.__version__}, gguf {gguf_version()}")
    print(versions)
    out = lambda name: os.path.join(args.out, name)

    # ---- image and preprocessing
    image = make_image()
    image.save(out(IMAGE_NAME), optimize=False)
    image = Image.open(out(IMAGE_NAME)).convert("RGB")      # exactly what the C side decodes
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

    # ---- vision
    vit, vcfg = build_vision()
    proj = build_projector(VISION["hidden_size"], LLM["hidden_size"])
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
    seed = LLM_SEED
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
            sys.exit(f"LLM seed {seed} fails the robustness check; rerun with --search and update LLM_SEED")
        seed += 1
    if seed != LLM_SEED:
        print(f"--search: use LLM_SEED = {seed}")
    gen = R["gen"]
    print("generated:", gen)
    print("generated text: %r" % tok.decode([1] + gen, errors="replace"))

    # ---- GGUF files and their checks
    lt = llm_tensors(model, cfg)
    write_llm_gguf(out("tiny_llm.gguf"), cfg, lt, vocab)
    kv_l, t_l = check_gguf(out("tiny_llm.gguf"), lt, {
        "general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
        "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2, "llama.vocab_size": 516,
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.add_space_prefix": True,
        "llama.rope.freq_base": 10000.0, "llama.attention.layer_norm_rms_epsilon": 1e-5})
    assert [bytes(s, "utf-8") if isinstance(s, str) else s for s in kv_l["tokenizer.ggml.tokens"]][512:] == \
        [t.encode() for t in EXTRA_TOKENS]
    assert list(kv_l["tokenizer.ggml.token_type"])[512:] == [4] * 4
    mt = mmproj_tensors(vit, proj)
    write_mmproj(out("tiny_mmproj.gguf"), mt)
    kv_m, t_m = check_gguf(out("tiny_mmproj.gguf"), mt, dict(MMPROJ_KV, **{"general.architecture": "clip"}))
    print(f"GGUF read back: {len(lt)} LLM tensors and {len(mt)} mmproj tensors identical, keys as written")

    # ---- independent numpy forward passes
    outs, merged_np, embeds_np = np_vision(kv_m, t_m, pixels)
    vchecks = [("patch_embed", outs[0], V["patch_embed"])] + \
              [(f"vit_block_{k}", outs[k + 1], V["vit_blocks"][k]) for k in range(VIT_LAYERS_USED)] + \
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

    # ---- golden tensors
    npy = {"pixels": pixels, "patch_embed": V["patch_embed"], "vit_out": V["vit_out"], "merged": V["merged"],
           "image_embeds": V["image_embeds"], "logits": R["logits"]}
    for k in range(VIT_LAYERS_USED - 1):          # the last block's output is vit_out (no post-LN)
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
        "# tests/data/e2e/meta.txt -- written by tools/gen_e2e_golden.py; 'key value...' per line",
        f"image {IMAGE_NAME}",
        f"image_size {image.size[0]} {image.size[1]}",
        f"tile_size {S}",
        f"tiling relaxed max_grid {MAX_GRID} alpha {ALPHA} thumbnail first",
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
        f"seeds vit {VIT_SEED} projector {PROJ_SEED} llm {seed}",
        f"query {QUERY}",
    ]
    with open(out("meta.txt"), "w") as f:
        f.write("\n".join(meta) + "\n")

    write_readme(out("README.md"), dict(
        versions=versions, grid=grid, geom=geom, n_images=n_images, n_tok_img=n_tok_img, seq=seq,
        ids_before=ids_before, ids_after=ids_after, pieces_before=[vocab[0][i].decode() for i in ids_before],
        pieces_after=[vocab[0][i].decode() for i in ids_after], gen=gen, R=R, seed=seed, orders=orders,
        order_matters=order_matters, image=image, d_in=d_in, d_all=d_all, vchecks=[(nm, nmse(a, r)) for nm, a, r in vchecks],
        gen_text=tok.decode([1] + gen, errors="replace"), out=args.out, nm_f16=nm_f16, nm_tanh=nm_tanh,
        ma_tanh=ma_tanh, ma_ok=ma_ok, nm_raster=nm_raster))

    # ---- for information: bluelmv's own tokenizer on the two text parts
    for part, ids, bos in ((before, ids_before, True), (after, ids_after, False)):
        c = bluelmv_tokenize(out("tiny_llm.gguf"), part, bos)
        if c is not None:
            print(f"./bluelmv tokenize {part!r}: {c}   (python: {ids})")

    total = 0
    for name in sorted(os.listdir(args.out)):
        size = os.path.getsize(out(name))
        total += size
        print(f"  {name:22s} {size:9d} bytes")
    print(f"total {total} bytes")


def write_readme(path, d):
    R = d["R"]
    files = sorted(f for f in os.listdir(d["out"]) if f != "README.md")
    sizes = {f: os.path.getsize(os.path.join(d["out"], f)) for f in files}
    total_size = sum(sizes.values())
    n = len(d["seq"])
    nimg = d["n_images"] * d["n_tok_img"]
    template_escaped = TEMPLATE.replace("\n", "\\n")
    lines = f"""# End-to-end golden data (`tiny` preset)

One image and one question through the whole BlueLM-V-3B pipeline of the `tiny` preset, computed
by implementations that share no code with bluelmv (Hugging Face `transformers`, a transcription
of VILA's projector, Pillow, and a SentencePiece-BPE encoder written in the script). Made by
`tools/gen_e2e_golden.py`; regenerate with

    python3 tools/gen_e2e_golden.py            # writes into tests/data/e2e/

Deterministic (fixed seeds, `torch.set_num_threads(1)`, `torch.use_deterministic_algorithms(True)`):
two runs give byte-identical files. Versions used: {d['versions']}.

## The image

`{IMAGE_NAME}` ({d['image'].size[0]}×{d['image'].size[1]}): the item and total lines of a receipt photo, cropped
(box {CROP}) from `sample_image_cord_test_receipt_00004.png` of the donut repository's samples
and downscaled with Pillow's LANCZOS. The receipt is from the CORD dataset (Clova AI, CC BY 4.0);
the donut code and samples are MIT licensed (NAVER Corp.), see `LICENSE-donut`.

## Preprocessing

- Grid: the paper's Algorithm 1 (relaxed aspect-ratio matching, α = {ALPHA}, m, n ∈ 1..{MAX_GRID} in
  descending order), tile size S = {S}: **{d['grid'][0]}:{d['grid'][1]}** ({d['grid'][0]} tiles across, {d['grid'][1]} down).
- LLaVA-NeXT `resize_and_pad_image`: Pillow BICUBIC resize to {d['geom'][0]}×{d['geom'][1]} (ceil rule),
  pasted at ({d['geom'][2]}, {d['geom'][3]}) on a black {d['grid'][0] * S}×{d['grid'][1] * S} canvas, cut into {d['grid'][0] * d['grid'][1]}
  tiles in raster order.
- Thumbnail: `image.resize(({S}, {S}), BICUBIC)` of the whole image, placed **first**.
  {d['n_images']} images in all.
- Normalization: `SiglipImageProcessor(do_resize=False)` (without torchvision installed, transformers
  uses its PIL backend, `SiglipImageProcessorPil`): float32(u8 · (1/255)), then (x − 0.5) / 0.5 in
  float32 (the script checks the processor's output against that formula, bit for bit).
- Pillow: {PIL.__version__}. The pass order of Pillow's two-pass bicubic resize differs between
  Pillow versions (tile.h, `TilePillow`); for these two resizes ({d['image'].size[0]}×{d['image'].size[1]} → {d['geom'][0]}×{d['geom'][1]}, an upscale, and
  → {S}×{S}) Pillow 13, 12.2 and ≤ 12.1 all do the horizontal pass first
  ({'they DIFFER: set TilePolicy.pillow = TILE_PILLOW_13' if d['order_matters'] else 'they agree, so any TilePolicy.pillow reproduces `pixels.npy` exactly'}).

## Models

Vision: `SiglipVisionModel(SiglipVisionConfig(image_size={S}, patch_size=8, hidden_size=64,
intermediate_size=172, num_hidden_layers=3, num_attention_heads=4, layer_norm_eps=1e-6,
hidden_act="gelu_pytorch_tanh"))`, eager attention. 7×7 patches (pixels 56..59 never seen); the
first 2 layers are used (select-layer −2: `hidden_states[2]`, no post-LayerNorm), so the mmproj
holds 2 blocks. Weights redrawn in sorted-name order from `torch.Generator().manual_seed({VIT_SEED})`:
matrices, conv and position embedding 0.2·randn, biases 0.1·randn, LayerNorm weights 1 + 0.1·randn,
LayerNorm biases 0.1·randn.

Projector: VILA `mlp_downsample`, transcribed from NVlabs/VILA
`llava/model/multimodal_projector/base_projector.py`: `DownSampleBlock` (7×7 → zero-padded 8×8 →
16 tokens of 256 in VILA's column-major order, token t = j·4 + i holding [x(2i,2j), x(2i,2j+1),
x(2i+1,2j), x(2i+1,2j+1)]), then `nn.LayerNorm(256, eps=1e-5)`, `nn.Linear(256, 64)`, `nn.GELU()`
(exact erf), `nn.Linear(64, 64)`. Seed {PROJ_SEED}: LayerNorm 1 + 0.1·randn / 0.1·randn,
Linear(256, 64) 0.1·randn, Linear(64, 64) 0.15·randn, biases 0.1·randn.

LLM: `LlamaForCausalLM(LlamaConfig(vocab_size=516, hidden_size=64, intermediate_size=172,
num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
rope_theta=10000, max_position_embeddings=512, tie_word_embeddings=False))`, eager, float32.
Weights redrawn in sorted-name order from seed {d['seed']}: matrices 0.3·randn, RMSNorm weights
1 + 0.1·randn.

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

The {nimg} image positions take `image_embeds` in order: the thumbnail's 16 tokens, then the
{d['grid'][0] * d['grid'][1]} tiles in raster order (the top row left to right, then the next row), each tile's 16 tokens
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
    desc = {
        "tiny_llm.gguf": "the LLM: llama.cpp layout (as `tools/gen_llama_golden.py`: Q/K rows permuted to adjacent-pair RoPE), F32, vocabulary above, `tokenizer.ggml.add_space_prefix` true",
        "tiny_mmproj.gguf": "the vision side in `vit.h`'s layout, F32 (no padding needed: K = 192, F = 172 kept), `bluelmv.tiling.*` = relaxed / 4 / 0.1 / true, `bluelmv.chat_template`",
        IMAGE_NAME: "the image",
        "LICENSE-donut": "the donut repository's MIT license (the image's source)",
        "pixels.npy": f"({d['n_images']}, 3, {S}, {S}) float32, normalized, thumbnail first",
        "patch_embed.npy": f"({d['n_images']}, 49, 64) HF `hidden_states[0]`",
        "vit_block_0.npy": f"({d['n_images']}, 49, 64) after ViT layer 0 (`hidden_states[1]`)",
        "vit_out.npy": f"({d['n_images']}, 49, 64) after ViT layer 1 (`hidden_states[2]`), what the projector sees (no post-LN; a dump's `vit_block_1` is the same tensor and is not stored twice)",
        "merged.npy": f"({d['n_images']}, 16, 256) DownSampleBlock output, before the LayerNorm",
        "image_embeds.npy": f"({d['n_images']}, 16, 64) projector output",
        "tokens.npy": f"({n},) int32, the input sequence, −1 at image positions",
        "llm_block_0.npy": f"({n}, 64) residual stream after LLM layer 0 (forward hook)",
        "llm_block_1.npy": f"({n}, 64) after LLM layer 1, before the final RMSNorm (forward hook)",
        "logits.npy": f"({n}, 516) logits at every input position (row p predicts position p+1)",
        "generated.npy": f"({N_GEN},) int32 greedy continuation",
        "meta.txt": "grid, geometry, counts, token ids, gaps, Pillow version, seeds as `key value` lines",
        "README.md": "this file",
    }
    for f in files + ["README.md"]:
        size = sizes.get(f)
        lines += f"| `{f}` ({size:,} B) | {desc.get(f, '')} |\n" if size is not None else f"| `{f}` | {desc.get(f, '')} |\n"
    lines += f"""
All `.npy` files are C-order little-endian (`numpy.save`), named as DESIGN.md §Golden dumps, so
`bluelmv compare DUMP_DIR tests/data/e2e` checks a `--dump` against them directly.

## Self-checks done by the script

1. Greedy robustness as above; `generate()` (KV cache) equals the argmax of one uncached forward
   pass over the input embeddings + the generated tokens' embeddings.
2. Both GGUF files read back with `gguf.GGUFReader`: every tensor identical, keys as written.
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
that differ from a correct float32 implementation only in summation order: NMSE ~1e-13 (vision)
to ~1e-12 (logits), see the self-checks. Landmarks computed by the script:

- an F16 KV cache (K after RoPE and V rounded to float16, numpy): logits NMSE {d['nm_f16']:.2g} —
  inside `bluelmv compare`'s default (NMSE ≤ 1e-6, top-1 agreement 1.0 on `logits`);
- the tanh GELU instead of the erf GELU in the projector: `image_embeds` NMSE {d['nm_tanh']:.2g}, max abs
  {d['ma_tanh']:.2g} (a float64 evaluation of the right formula: {d['ma_ok']:.2g}) — a real mistake that only a
  strict float32 check finds: `bluelmv compare --tol-nmse 1e-9`;
- raster instead of VILA token order: `image_embeds` NMSE {d['nm_raster']:.2g}.

Total size {total_size / 1e6:.2f} MB, of which the two F32 GGUF files are
{(sizes['tiny_llm.gguf'] + sizes['tiny_mmproj.gguf']) / 1e6:.2f} MB.
"""
    with open(path, "w") as f:
        f.write(lines)


if __name__ == "__main__":
    main()
