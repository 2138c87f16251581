"""Agreement between two score vectors of the same request (e.g. FP8 vs bf16, baseline vs ours)."""

from __future__ import annotations

import torch
from videoitg.engine_build.parity import spearman


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int = 32) -> float:
    """|top-k(a) & top-k(b)| / k, with k clipped to the number of frames (what a top-K consumer would see)."""
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"expected two 1-D score vectors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    k = min(k, a.numel())
    if k == 0:
        return 1.0
    ia = set(torch.topk(a.float(), k).indices.tolist())
    ib = set(torch.topk(b.float(), k).indices.tolist())
    return len(ia & ib) / k


def score_agreement(ref: torch.Tensor, other: torch.Tensor, k: int = 32) -> dict[str, float]:
    """Max |difference| of the logits, the spread of the reference logits, the top-k overlap and Spearman."""
    r, o = ref.detach().float().cpu(), other.detach().float().cpu()
    return {
        "max_abs_diff": float((r - o).abs().max()) if r.numel() else 0.0,
        "ref_std": float(r.std()) if r.numel() > 1 else 0.0,
        f"top{k}_overlap": topk_overlap(r, o, k),
        "spearman": spearman(r.numpy(), o.numpy()),
    }

