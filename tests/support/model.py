"""Tiny, deterministic test fixtures: the tiny config preset and a random tiny checkpoint in the released layout
(embedded tower, tiny tokenizer; `videoitg.train.tiny_tokenizer.build_tiny_checkpoint`, which the benchmarks use
too). Nothing is downloaded."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from videoitg.config import VideoITGConfig, preset
from videoitg.model.checkpoint import save_checkpoint
from videoitg.model.variant_b import model_class
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch thread inside, the process's count restored after: the machine is shared, and one thread per test
    process is faster than two fighting over two cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def tiny_config(vocab_size: int = 512, **overrides: Any) -> VideoITGConfig:
    return preset("tiny", vocab_size=vocab_size, **overrides)


# The real-shape tier: the released widths, heads and head dims with few layers. SigLIP-so400m/14 at 384 px (1152 wide,
# 16 heads of 72, MLP 4304: google/siglip-so400m-patch14-384's config.json) and Qwen2-7B (3584 wide, 28 query and 4
# key-value heads of 128, MLP 18944, RMSNorm eps 1e-6, RoPE theta 1e6: Qwen/Qwen2-7B's config.json), the released
# token budget (16384 visual tokens) and length (20480): `preset("videoitg-7b")`. Two SigLIP layers (select layer -2
# runs, and the checkpoint holds, the first), one Qwen2 layer (233M parameters), the tiny tokenizer's 413 tokens:
# 268M parameters, 0.54 GB on disk in bf16 as released.
REAL_SHAPE_VISION_LAYERS, REAL_SHAPE_TEXT_LAYERS = 2, 1


def real_shape_config(vocab_size: int = 512, **overrides: Any) -> VideoITGConfig:
    """The released model's shapes with REAL_SHAPE_*_LAYERS layers and a `vocab_size`-token vocabulary."""
    cfg = preset("videoitg-7b", vocab_size=vocab_size, **overrides)
    cfg.vision = dataclasses.replace(cfg.vision, num_hidden_layers=REAL_SHAPE_VISION_LAYERS)
    cfg.text = dataclasses.replace(cfg.text, num_hidden_layers=REAL_SHAPE_TEXT_LAYERS)
    return dataclasses.replace(cfg)  # its checks again, on the new layer counts


def build_real_shape_checkpoint(out: Path, seed: int = 0) -> Path:
    """A random checkpoint of `real_shape_config` with the tiny tokenizer, in bf16 (the released checkpoint's
    dtype) and the released layout (embedded tower)."""
    tokenizer = build_tiny_tokenizer()
    cfg = real_shape_config(len(tokenizer))
    torch.manual_seed(seed)
    model = model_class(cfg)(cfg)
    model.reset_head()
    return save_checkpoint(model.to(torch.bfloat16), out, tokenizer)


def plain_writer_checkpoint(tmp_path: Path, tiny: Any, external_tower: bool) -> Path:
    """A checkpoint written by other code: only safetensors + json, in the documented layout."""
    d = tmp_path / "plain"
    d.mkdir()
    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    cfg = tiny.config.to_json_dict(embed_vision_config=not external_tower)
    if external_tower:
        tower = tmp_path / "siglip"
        tower.mkdir()
        # a full HF SiglipVisionModel checkpoint: includes the last layer and post_layernorm the model skips
        tw = {k.removeprefix("model.vision_tower.vision_tower."): sd.pop(k) for k in list(sd)
              if k.startswith("model.vision_tower.")}
        n = tiny.config.vision.num_hidden_layers
        for k in [k for k in tw if k.startswith("vision_model.encoder.layers.0.")]:
            tw[k.replace("layers.0.", f"layers.{n - 1}.")] = tw[k].clone()
        tw["vision_model.post_layernorm.weight"] = torch.ones(tiny.config.vision.hidden_size)
        save_file(tw, str(tower / "model.safetensors"))
        (tower / "config.json").write_text(json.dumps(tiny.config.vision.to_hf_dict()))
        cfg["mm_vision_tower"] = str(tower)
    save_file(sd, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg))
    build_tiny_tokenizer().save_pretrained(str(d))
    return d


# ---- a reference from transformers' own SiglipVisionModel and Qwen2Model ----------------------------------------
def hf_reference(model: Any):
    # transformers' model classes load in seconds: here, not when a test module imports this one
    from transformers import Qwen2Config, Qwen2Model, SiglipVisionConfig, SiglipVisionModel

    cfg = model.config
    v = cfg.vision
    sig = SiglipVisionModel(SiglipVisionConfig(
        image_size=v.image_size, patch_size=v.patch_size, hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size, num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads, layer_norm_eps=v.layer_norm_eps,
        attn_implementation="eager",
    )).eval()
    t = cfg.text
    qwen = Qwen2Model(Qwen2Config(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads, rms_norm_eps=t.rms_norm_eps, rope_theta=t.rope_theta,
        max_position_embeddings=t.max_position_embeddings, attn_implementation="eager",
    )).eval()
    # Random HF weights become the truth; copy them into our model (the unused last layer stays HF-only).
    sd = model.state_dict()
    ours = {k.removeprefix("model.vision_tower.vision_tower."): k for k in sd
            if k.startswith("model.vision_tower.")}
    for k, val in sig.state_dict().items():
        k = k if k.startswith("vision_model.") else "vision_model." + k  # transformers 5 drops the prefix
        if k in ours:
            sd[ours[k]] = val.clone()
    for k, val in qwen.state_dict().items():
        sd["model." + k] = val.clone()
    model.load_state_dict(sd)
    return sig, qwen


def reference_logits(model, sig, qwen, pixel_values, ids):
    cfg = model.config
    T = pixel_values.shape[0]
    feats = sig(pixel_values, output_hidden_states=True).hidden_states[cfg.mm_vision_select_layer]  # [T, g², Cv]
    g = cfg.vision.grid
    hw = min(int((cfg.vision_token_num / T) ** 0.5), g)
    x = feats.transpose(1, 2).reshape(T, -1, g, g)
    if hw < g:
        x = F.interpolate(x, size=(hw, hw), mode="bilinear", align_corners=False)
    x = x.flatten(2).transpose(1, 2)
    mlp = model.model.mm_projector.out_projection
    x = mlp[2](F.gelu(mlp[0](x)))  # exact (erf) GELU
    seq = torch.cat([x.reshape(-1, x.shape[-1]), qwen.embed_tokens(ids)])[None]
    L = seq.shape[1]
    full = torch.zeros(1, 1, L, L)  # additive mask of zeros = every token attends to every token
    h = qwen(inputs_embeds=seq, attention_mask=full).last_hidden_state[0]
    pooled = h[: T * hw * hw].view(T, hw * hw, -1).mean(1)
    return model.out_proj(pooled)[:, 0]
