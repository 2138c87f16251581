"""Pretraining a from-scratch tiny vision tower on tagged frames: the stand-in for SigLIP's own pretraining.

The released recipe starts from a pretrained SigLIP and keeps it frozen. A tiny model trained from scratch has no
such tower, and training the tower end to end through the grounding loss plateaus: on the synthetic task every
variant tried (steps, learning rates, inits, patch sizes, batch make-up) stopped at held-out semantic recall@#pos
0.80-0.81, the level a scorer that only counts visible objects reaches (0.82), because the tower never learns to
tell colours and kinds apart from the grounding gradient alone (docs/training.md). With exact object labels
in place of the tower the same LLM reaches 1.0 within 300 steps.

So the synthetic benchmark follows the real pipeline's structure: first the tower learns to see, with SigLIP's
sigmoid loss between each frame and the names of the objects drawn in it (each name is a "caption" with a learnt
embedding; the sigmoid loss over frame x name pairs is a multi-label BCE), then the grounding recipe runs with the
tower frozen. The frame embedding is the mean of the tower's patch features, which is what the projector's
resize makes of a 2x2 grid at HW = 1.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from videoitg.errors import InputError
from videoitg.train.data import load_frames
from videoitg.train.recipe import cosine_with_warmup


@dataclass
class TaggedFrames:
    pixels: torch.Tensor  # [N, 3, S, S] float32, preprocessed like every other frame
    targets: torch.Tensor  # [N, C] 0/1: which of the C names are visible in the frame
    names: list[str]


def load_tagged_frames(
    video_root: Path, frame_objects: Path, names: Sequence[str], image_size: int, progress: bool = False
) -> TaggedFrames:
    """Decode the training-rule frames of every video listed in `frame_objects` (a JSON map video -> per-frame
    lists of visible names, as `videoitg.synthetic.task.write_dataset` writes) with their multi-hot targets."""
    tags: dict[str, list[list[str]]] = json.loads(Path(frame_objects).read_text())
    index = {n: i for i, n in enumerate(names)}
    pixels, targets = [], []
    items = sorted(tags.items())
    if progress:
        items = tqdm(items, desc="tower frames", unit="video")
    for video, per_frame in items:
        fr = load_frames(video_root / video, image_size)
        if fr.pixel_values.shape[0] != len(per_frame):
            raise InputError(f"{video}: {fr.pixel_values.shape[0]} sampled frames decoded but {len(per_frame)} "
                             f"tagged in {frame_objects}")
        y = torch.zeros(len(per_frame), len(names))
        for t, visible in enumerate(per_frame):
            for n in visible:
                y[t, index[n]] = 1.0
        pixels.append(fr.pixel_values)
        targets.append(y)
    return TaggedFrames(torch.cat(pixels), torch.cat(targets), list(names))


def frame_embedding(tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """[N, 3, S, S] -> [N, D]: the mean of the patch features."""
    return tower(pixels).mean(dim=1)


@torch.no_grad()
def mean_auc(tower: nn.Module, head: nn.Module, data: TaggedFrames, limit: int = 4000, chunk: int = 512) -> float:
    """Mean over names of the ROC AUC of the name's logit (positives ranked above negatives), on the first
    `limit` frames (the pairwise comparison is quadratic)."""
    pixels, targets = data.pixels[:limit], data.targets[:limit]
    logits = torch.cat([head(frame_embedding(tower, p)) for p in pixels.split(chunk)])
    aucs = []
    for c in range(logits.shape[1]):
        pos, neg = logits[targets[:, c] > 0.5, c], logits[targets[:, c] < 0.5, c]
        if len(pos) and len(neg):
            aucs.append(float((pos[:, None] > neg[None, :]).float().mean()))
    return sum(aucs) / max(1, len(aucs))


def pretrain_tower(
    tower: nn.Module,
    train: TaggedFrames,
    held_out: TaggedFrames | None = None,
    steps: int = 2000,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Train `tower` in place (AdamW, cosine schedule) on the tagged frames; returns loss and AUCs."""
    g = torch.Generator().manual_seed(seed)
    dim = tower(train.pixels[:1]).shape[-1]
    head = nn.Linear(dim, len(train.names))  # one learnt "caption" embedding (and bias) per name
    was = [p.requires_grad for p in tower.parameters()]
    tower.requires_grad_(True)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(steps, 0.05))
    bar = None
    if progress:
        bar = tqdm(total=steps, desc="pretrain tower", unit="step", dynamic_ncols=True)
    t0, loss_ema = time.time(), math.nan
    for _ in range(steps):
        idx = torch.randint(0, len(train.pixels), (batch,), generator=g)
        loss = F.binary_cross_entropy_with_logits(head(frame_embedding(tower, train.pixels[idx])), train.targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        lv = float(loss.detach())
        loss_ema = lv if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * lv
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.4f}", frames_per_s=f"{bar.n * batch / (time.time() - t0):.0f}")
    if bar is not None:
        bar.close()
    for p, w in zip(tower.parameters(), was, strict=True):
        p.requires_grad_(w)
    out = {"loss": loss_ema, "train_auc": mean_auc(tower, head, train), "seconds": time.time() - t0}
    if held_out is not None:
        out["held_out_auc"] = mean_auc(tower, head, held_out)
    return out
