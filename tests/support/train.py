"""Small fixtures for the training tests and examples: a very small model config and dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# 28x28 frames in 14-px patches (a 2x2 grid), a 1-layer-used tower and a 2-layer 32-wide LLM: a training step
# on a few samples takes milliseconds.
SMALL_MODEL: dict[str, Any] = {
    "vision": {"image_size": 28, "patch_size": 14, "hidden_size": 16, "intermediate_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 2},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2},
    "vision_token_num": 64,
}


def small_dataset(root: Path, videos: int = 3, seed: int = 0, per_video: int = 2) -> Path:
    """Short clips (8-10 s at 2 fps, 64x64) in the VideoITG-40K layout; returns the annotation path."""
    from videoitg.synthetic import write_dataset

    return write_dataset(root, videos, seed=seed, instructions_per_video=per_video, fps=2, width=64, height=64,
                         duration_s=(8, 10), num_objects=(2, 3))


def small_config(data: Path, out: Path, **kw: Any):
    from videoitg.train.trainer import TrainConfig

    base: dict[str, Any] = dict(data=[str(data)], out=str(out), init="tiny", tiny_overrides=SMALL_MODEL,
                                lr=3e-3, head_lr=3e-3, progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)
