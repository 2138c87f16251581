"""`seq_mlp` projector: per-video spatial resize of each frame's patch grid, then a 2-layer MLP.

The resize comes *before* the MLP and uses bilinear, align_corners=False, no antialias, as the released
`MLPProjector` does; HW depends on the number of frames (VideoITGConfig.tokens_per_side), so T must be known
before projecting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_grid(feats: torch.Tensor, hw: int, chunk_frames: int = 512) -> torch.Tensor:
    """[T, g*g, C] -> [T, hw*hw, C], bilinear on the g x g patch grid (row-major tokens)."""
    T, n, C = feats.shape
    g = int(round(n**0.5))
    if hw == g:
        return feats
    out = []
    for c in feats.split(chunk_frames):  # chunked like the original: F.interpolate's temp is [chunk, C, g, g]
        x = c.transpose(1, 2).reshape(-1, C, g, g)
        x = F.interpolate(x, size=(hw, hw), mode="bilinear", align_corners=False, antialias=False)
        out.append(x.flatten(2).transpose(1, 2))
    return torch.cat(out, dim=0)


class SeqMLPProjector(nn.Module):
    def __init__(self, mm_hidden_size: int, hidden_size: int):
        super().__init__()
        # Named `out_projection.{0,2}` as in the released checkpoint (index 1 is the parameter-free GELU).
        self.out_projection = nn.Sequential(
            nn.Linear(mm_hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, feats: torch.Tensor, hw: int) -> torch.Tensor:
        # [T, g*g, Cv] -> [T, hw*hw, Cv] -> [T, hw*hw, H]
        return self.out_projection(resize_grid(feats, hw))
