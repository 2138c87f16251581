"""The model's token arithmetic: how many of its sequence's tokens a video of T sampled frames takes, which bounds
what is left for the instruction (`Limits.instruction_token_limit`)."""

from __future__ import annotations

from videoitg.config import VideoITGConfig


def visual_tokens(config: VideoITGConfig, num_frames: int) -> int:
    """Visual tokens the model builds for `num_frames` sampled frames: T x HW² (HW: `tokens_per_side`)."""
    return num_frames * config.tokens_per_side(num_frames) ** 2


def max_visual_tokens(config: VideoITGConfig, max_frames: int) -> int:
    """Most visual tokens any video of 1..max_frames sampled frames can need (T x HW² is not monotonic in T)."""
    return max(visual_tokens(config, t) for t in range(1, max_frames + 1))


def fixed_tokens(config: VideoITGConfig, num_frames: int) -> int:
    """Tokens of the model's sequence that are not the instruction (visual tokens, plus Variant B's anchors):
    `videoitg.model.layout.SequenceLayout.fixed`."""
    from videoitg.model.layout import SequenceLayout  # here: the model package imports torch; the CLI's --help not

    return SequenceLayout.for_video(config, num_frames).fixed


def max_fixed_tokens(config: VideoITGConfig, max_frames: int) -> int:
    """Most non-instruction tokens any video of 1..max_frames sampled frames can need."""
    return max(fixed_tokens(config, t) for t in range(1, max_frames + 1))
