"""How close a backend's per-frame logits are to the PyTorch reference.

- max |logit difference|: the fp32 criterion (ONNX fp32 target <= 1e-4).
- top-k overlap: |topk(ref) ∩ topk(other)| / k with k = min(32, T). Downstream consumers keep the top 32
  frames, so this is the criterion that matters in reduced precision (fp16/bf16 >= 0.97, fp8 >= 0.90).
- Spearman rank correlation over all T frames (average ranks for ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TARGETS = {  # precision -> (metric, threshold)
    "fp32": ("max_abs_diff", 1e-4),
    "fp16": ("topk_overlap", 0.97),
    "bf16": ("topk_overlap", 0.97),
    "fp8": ("topk_overlap", 0.90),
}


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    # average the ranks of tied values
    uniq, inv = np.unique(x, return_inverse=True)
    if len(uniq) < len(x):
        sums = np.bincount(inv, weights=ranks)
        counts = np.bincount(inv)
        ranks = (sums / counts)[inv]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(f"spearman: lengths differ ({len(a)} vs {len(b)})")
    if len(a) < 2:
        return 1.0
    ra, rb = _ranks(a), _ranks(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb else 0.0
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


def topk_overlap(ref: np.ndarray, other: np.ndarray, k: int = 32) -> float:
    ref, other = np.asarray(ref).ravel(), np.asarray(other).ravel()
    k = min(k, len(ref))
    if k == 0:
        return 1.0
    a = set(np.argsort(-ref, kind="stable")[:k].tolist())
    b = set(np.argsort(-other, kind="stable")[:k].tolist())
    return len(a & b) / k


@dataclass
class Parity:
    max_abs_diff: float
    topk_overlap: float
    spearman: float
    num_frames: int

    def meets(self, precision: str) -> bool:
        metric, thr = TARGETS[precision]
        v = getattr(self, metric)
        return v <= thr if metric == "max_abs_diff" else v >= thr


def compare(ref: np.ndarray, other: np.ndarray, k: int = 32) -> Parity:
    ref, other = np.asarray(ref, np.float64).ravel(), np.asarray(other, np.float64).ravel()
    if ref.shape != other.shape:
        raise ValueError(f"logit shapes differ: {ref.shape} vs {other.shape}")
    return Parity(
        max_abs_diff=float(np.max(np.abs(ref - other))) if len(ref) else 0.0,
        topk_overlap=topk_overlap(ref, other, k),
        spearman=spearman(ref, other),
        num_frames=len(ref),
    )


def merge(parts: list[Parity]) -> Parity:
    """Worst case over several inputs (a backend passes only if it passes on every one)."""
    return Parity(
        max_abs_diff=max(p.max_abs_diff for p in parts),
        topk_overlap=min(p.topk_overlap for p in parts),
        spearman=min(p.spearman for p in parts),
        num_frames=sum(p.num_frames for p in parts),
    )
