"""The released optimisation recipe: loss, parameter groups, schedule.

- Loss: BCE-with-logits over the per-frame logits of a batch, pos_weight = min(5, sqrt(#neg / max(1, #pos)))
  computed per batch (per process micro-batch, as the original computes it per device).
- AdamW, weight decay 0, lr 2e-5 for the LLM and projector, 2e-4 for the head (`out_proj`), the vision tower
  frozen; cosine schedule with 5% linear warmup (HF `get_cosine_schedule_with_warmup`); HF's default gradient
  clipping at norm 1.0 (the training script does not override it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

HEAD_PREFIX = "out_proj."
TOWER_PREFIX = "model.vision_tower."


def pos_weight(labels: torch.Tensor, cap: float = 5.0) -> float:
    """min(cap, sqrt(#neg / max(1, #pos))) over all frames of the batch."""
    pos = int((labels > 0.5).sum())
    neg = int(labels.numel()) - pos
    return min(cap, math.sqrt(neg / max(1, pos)))


def grounding_loss(logits: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Mean BCE over every frame of the batch (flattened), with the per-batch pos_weight."""
    x = torch.cat([lg.float().reshape(-1) for lg in logits])
    y = torch.cat([lb.float().reshape(-1) for lb in labels]).to(x.device)
    pw = pos_weight(y)
    loss = F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor(pw, device=x.device))
    return loss, pw


def frame_labels(num_frames: int, positives: Sequence[int]) -> torch.Tensor:
    """label = zeros(T); label[clip_num] = 1 (the released construction)."""
    y = torch.zeros(num_frames)
    if len(positives):
        y[torch.as_tensor(list(positives), dtype=torch.long)] = 1.0
    return y


def set_trainable(model: nn.Module, train_vision: bool = False) -> None:
    """LLM, projector and head train; the SigLIP tower stays frozen unless asked (from-scratch toy runs)."""
    for name, p in model.named_parameters():
        p.requires_grad_(train_vision or not name.startswith(TOWER_PREFIX))


def param_groups(
    model: nn.Module, lr: float, head_lr: float, weight_decay: float = 0.0, vision_lr: float | None = None
) -> list[dict]:
    head, body, tower = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(HEAD_PREFIX):
            head.append(p)
        elif name.startswith(TOWER_PREFIX):
            tower.append(p)
        else:
            body.append(p)
    groups = [
        {"name": "llm+projector", "params": body, "lr": lr, "weight_decay": weight_decay},
        {"name": "head", "params": head, "lr": head_lr, "weight_decay": weight_decay},
    ]
    if tower:
        groups.append({"name": "vision", "params": tower, "lr": vision_lr or lr, "weight_decay": weight_decay})
    return [g for g in groups if g["params"]]


def cosine_with_warmup(total_steps: int, warmup_ratio: float = 0.05):
    """The multiplier of HF's cosine schedule: linear 0 -> 1 over ceil(ratio * total), then half a cosine to 0."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return f
