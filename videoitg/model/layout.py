"""The grounding head as engines compute it: a 1-label score per token, then a per-frame segment mean.

`out_proj` is linear, so mean_t(w·h_t) + b == w·mean_t(h_t) + b: the released head (mean-pool each frame's
tokens, then Linear(H, 1)) equals a per-token 1-label head followed by a segment mean and `+ b`. Engines
therefore never output hidden states. The mean is written with a one-hot comparison (segment_ids == frame_ids)
rather than a scatter so that ONNX export and TensorRT see only static-rank ops with dynamic sizes.
"""

from __future__ import annotations

import torch

TEXT_SEGMENT = -1  # segment id of instruction tokens (not pooled)
PAD_SEGMENT = -2  # segment id of padding positions


def frame_mean_logits(
    token_scores: torch.Tensor, segment_ids: torch.Tensor, frame_ids: torch.Tensor, bias: torch.Tensor | float
) -> torch.Tensor:
    """token_scores [B, L] (w·h per token), segment_ids [B, L] (frame index of each visual token,
    TEXT_SEGMENT / PAD_SEGMENT otherwise), frame_ids [T] (0..T-1; carries the frame count as a dynamic size)
    -> logits [B, T].

    Pooling runs in fp32 whatever the model dtype (a 729-token sum in fp16 loses digits). A frame with no
    tokens in a batch row (a shorter video padded into the batch) gets logit `bias`; callers slice [:T_i]."""
    onehot = (segment_ids.unsqueeze(-1) == frame_ids.view(1, 1, -1)).to(torch.float32)  # [B, L, T]
    sums = torch.bmm(token_scores.to(torch.float32).unsqueeze(1), onehot).squeeze(1)  # [B, T]
    counts = onehot.sum(dim=1).clamp_min(1.0)
    return sums / counts + bias


def segment_ids_for(num_frames: int, tokens_per_frame: int, num_text: int, pad_to: int | None = None) -> torch.Tensor:
    """Segment ids of one sequence laid out as [T * n visual tokens][text][padding] (the released layout)."""
    vis = torch.arange(num_frames, dtype=torch.int64).repeat_interleave(tokens_per_frame)
    ids = torch.cat([vis, torch.full((num_text,), TEXT_SEGMENT, dtype=torch.int64)])
    if pad_to is not None:
        if pad_to < len(ids):
            raise ValueError(f"pad_to={pad_to} is shorter than the sequence ({len(ids)})")
        ids = torch.cat([ids, torch.full((pad_to - len(ids),), PAD_SEGMENT, dtype=torch.int64)])
    return ids
