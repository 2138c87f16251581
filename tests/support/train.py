"""Small fixtures for the training and evaluation tests: a very small model config and dataset."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from videoitg.model.checkpoint import save_checkpoint
from videoitg.synthetic.task import write_dataset
from videoitg.train.trainer import TrainConfig, init_model

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
    return write_dataset(root, videos, seed=seed, instructions_per_video=per_video, fps=2, width=64, height=64,
                         duration_s=(8, 10), num_objects=(2, 3))


def small_config(data: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(data=[str(data)], out=str(out), init="tiny", tiny_overrides=SMALL_MODEL,
                                lr=3e-3, head_lr=3e-3, progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@functools.lru_cache(maxsize=1)
def eval_setup() -> tuple[Path, Path]:
    """The evaluation tests' data, built once per test session (they only read it): 2 videos x 3 instructions
    (`small_dataset`) and an untrained small checkpoint. Returns (annotation path, checkpoint directory)."""
    root = Path(tempfile.mkdtemp(prefix="videoitg-eval-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    data = small_dataset(root / "data", videos=2, per_video=3)
    model, tok = init_model(small_config(data, root / "unused"))
    return data, save_checkpoint(model, root / "ckpt", tok)


def as_qvhighlights(data: Path, out: Path) -> Path:
    """The synthetic records as QVHighlights lines: vid without extension, windows, 2-s clip saliency."""
    lines = []
    for qid, r in enumerate(json.loads(data.read_text())):
        duration = r["num_frames"] / r["fps"]
        clips = sorted({int(t // 2) for a, b in r["segments"] for t in range(int(a), int(b))})
        lines.append({"qid": qid, "query": r["question"], "vid": Path(r["video"]).stem, "duration": duration,
                      "relevant_windows": r["segments"], "relevant_clip_ids": clips,
                      "saliency_scores": [[4, 3, 2]] * len(clips)})
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out
