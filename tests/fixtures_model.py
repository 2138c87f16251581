"""Tiny, deterministic test fixtures: the tiny config preset and a random tiny checkpoint in the released layout
(embedded tower, tiny tokenizer). Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
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
