"""Tiny, deterministic test fixtures: the tiny config preset and a random tiny checkpoint in the released layout
(embedded tower, tiny tokenizer). Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer

from videoitg.config import VideoITGConfig, preset


def tiny_config(vocab_size: int = 512, **overrides: Any) -> VideoITGConfig:
    return preset("tiny", vocab_size=vocab_size, **overrides)


def build_tiny_checkpoint(out: str | Path, seed: int = 0, cfg: VideoITGConfig | None = None) -> Path:
    """A random tiny checkpoint (embedded tower, tiny tokenizer) written in the released layout."""
    from videoitg.checkpoint import save_checkpoint
    from videoitg.model import model_class

    tokenizer = build_tiny_tokenizer()
    cfg = cfg or tiny_config(vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = model_class(cfg)(cfg)
    model.reset_head()
    return save_checkpoint(model, out, tokenizer)


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
