"""The grounding sequence, in one place: which tokens go in, in what order, and which positions make each frame's
logit. The torch model, the ONNX / TensorRT graphs, the TensorRT-LLM runtime, `verify` and the length limits all
build their inputs from here.

    Variant C (released): [visual tokens, frame-major: T x n] [instruction + "\\n": N]
                          logit_t = pooled over frame t's n tokens
    Variant B (anchors):  [visual tokens: T x n] [instruction: N] [anchor_1 .. anchor_T]
                          logit_t = at anchor_t

Positions are 0..L-1 (plain 1-D RoPE), no BOS, no template (as released). `segment_ids` gives, per position, the frame
whose logit it feeds (TEXT_SEGMENT for positions that feed none, PAD_SEGMENT for padding): Variant C pools every
visual token of a frame, Variant B reads one anchor per frame, and both are the same segment mean.

The head: `out_proj` is linear, so mean_t(w·h_t) + b == w·mean_t(h_t) + b. The released head (mean-pool each
frame's tokens, then Linear(H, 1)) equals a per-token 1-label score followed by a segment mean and `+ b`, so engines
never output hidden states. The mean is a one-hot comparison (segment_ids == frame_ids) rather than a scatter, so
ONNX export and TensorRT see only static-rank ops with dynamic sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from videoitg.config import VideoITGConfig
from videoitg.errors import InputError

TEXT_SEGMENT = -1  # positions that feed no frame's logit (instruction tokens; Variant B's visual tokens)
PAD_SEGMENT = -2  # padding positions of a right-padded batch


class SequenceTooLongError(InputError):
    """The visual tokens plus the instruction do not fit the model's length budget."""


@dataclass(frozen=True)
class SequenceLayout:
    """One request's sequence: T frames of n visual tokens each, N instruction tokens, and (Variant B) T anchors."""

    num_frames: int  # T
    tokens_per_frame: int  # n = HW²
    num_text: int  # N
    anchors: bool = False  # Variant B

    @classmethod
    def for_video(cls, config: VideoITGConfig, num_frames: int, num_text: int = 0) -> SequenceLayout:
        """The model's own layout for T sampled frames: HW² tokens per frame by the inference rule, anchors when
        the checkpoint is Variant B (`config.attention == "causal"`)."""
        return cls(num_frames, config.tokens_per_side(num_frames) ** 2, num_text, config.attention == "causal")

    @property
    def num_visual(self) -> int:
        return self.num_frames * self.tokens_per_frame

    @property
    def fixed(self) -> int:
        """Tokens that do not depend on the instruction: the visual tokens and the anchors."""
        return self.num_visual + (self.num_frames if self.anchors else 0)

    @property
    def length(self) -> int:
        return self.fixed + self.num_text

    @property
    def anchor_start(self) -> int:
        return self.num_visual + self.num_text

    def segment_ids(self, pad_to: int | None = None) -> torch.Tensor:
        """[L] (or [pad_to]) int64: the frame each position's score is pooled into."""
        T, n, N = self.num_frames, self.tokens_per_frame, self.num_text
        frames = torch.arange(T, dtype=torch.int64)
        if self.anchors:
            parts = [torch.full((T * n + N,), TEXT_SEGMENT, dtype=torch.int64), frames]
        else:
            parts = [frames.repeat_interleave(n), torch.full((N,), TEXT_SEGMENT, dtype=torch.int64)]
        if pad_to is not None:
            if pad_to < self.length:
                raise ValueError(f"pad_to={pad_to} is shorter than the sequence ({self.length})")
            parts.append(torch.full((pad_to - self.length,), PAD_SEGMENT, dtype=torch.int64))
        return torch.cat(parts)

    def check(self, limit: int) -> None:
        """Refuse a sequence over the model's `tokenizer_model_max_length`, naming the budget."""
        if self.length > limit:
            extra = f" + {self.num_frames} anchors" if self.anchors else ""
            raise SequenceTooLongError(
                f"sequence of {self.num_visual} visual{extra} + {self.num_text} instruction tokens exceeds the model's "
                f"length budget of {limit} tokens: shorten the instruction (at most {max(0, limit - self.fixed)} "
                "tokens fit with this video)")


def fit_instruction(ids: torch.Tensor, layout_without_text: SequenceLayout, limit: int, truncate: bool) -> torch.Tensor:
    """The instruction ids that enter the sequence. The released model truncates an over-long sequence to
    `tokenizer_model_max_length` (cutting the instruction's tail, "\\n" included); we refuse by default, and
    `truncate=True` reproduces the released behaviour. A video whose visual tokens alone exceed the budget is refused
    either way (the released model would cut into the visual tokens and fail in the per-frame reshape)."""
    room = limit - layout_without_text.fixed
    if truncate and room >= 1 and len(ids) > room:
        return ids[:room]
    SequenceLayout(layout_without_text.num_frames, layout_without_text.tokens_per_frame, len(ids),
                   layout_without_text.anchors).check(limit)
    return ids


def build_inputs(visual: torch.Tensor, text_embeds: torch.Tensor, anchors: bool) -> torch.Tensor:
    """One request's input embeddings [L, H]: visual [T, n, H] frame-major, then the instruction's embeddings [N, H],
    then (Variant B) one anchor per frame, the mean of that frame's visual tokens."""
    v = visual.to(text_embeds.dtype)
    parts = [v.flatten(0, 1), text_embeds]
    if anchors:
        parts.append(v.mean(dim=1))
    return torch.cat(parts)


def frame_mean_logits(
    token_scores: torch.Tensor, segment_ids: torch.Tensor, frame_ids: torch.Tensor, bias: torch.Tensor | float
) -> torch.Tensor:
    """token_scores [B, L] (w·h per position), segment_ids [B, L], frame_ids [T] (0..T-1; carries the frame count
    as a dynamic size) -> logits [B, T].

    Pooling runs in fp32 whatever the model dtype (a 729-token sum in fp16 loses digits). A frame with no
    positions in a batch row (a shorter video padded into the batch) gets logit `bias`; callers slice [:T_i]."""
    onehot = (segment_ids.unsqueeze(-1) == frame_ids.view(1, 1, -1)).to(torch.float32)  # [B, L, T]
    sums = torch.bmm(token_scores.to(torch.float32).unsqueeze(1), onehot).squeeze(1)  # [B, T]
    counts = onehot.sum(dim=1).clamp_min(1.0)
    return sums / counts + bias
