"""In-process scoring: video -> sampled frames -> visual features -> per-frame scores.

The split steps are public because servers and batch jobs run them separately: decode and visual features once
per video (cacheable: they do not depend on the instruction), then `score_visual` per instruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videoitg.checkpoint import checkpoint_identity, load_checkpoint
from videoitg.errors import InputError
from videoitg.limits import Limits
from videoitg.outputs import GroundingResult
from videoitg.preprocess import pixel_values
from videoitg.sampling import SamplingParams

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(name: str | torch.dtype | None, device: str) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name is None or name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


@dataclass
class VideoFeatures:
    """The instruction-independent half of a request."""

    visual: torch.Tensor  # [T, hw², H]
    frame_indices: list[int]
    timestamps: list[float]


class Scorer:
    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        sampling: SamplingParams | None = None,
        decoder: str = "auto",
        chunk_frames: int = 64,
        vision_tower: str | Path | None = None,
        limits: Limits | None = None,
    ):
        self.device = device
        self.dtype = parse_dtype(dtype, device)
        if model is None:
            if checkpoint is None:
                raise InputError("Scorer needs a checkpoint directory or a model + tokenizer")
            model, tokenizer = load_checkpoint(checkpoint, device, self.dtype, vision_tower)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.identity = checkpoint_identity(checkpoint) if checkpoint is not None else f"model-{id(model):x}"
        self.sampling, self.decoder, self.chunk_frames = sampling or SamplingParams(), decoder, chunk_frames
        self.limits = limits or Limits.from_env()  # VIDEOITG_MAX_* overrides; defaults in docs/limits.md
        self.limits.check_sampling(self.sampling)

    @property
    def config(self):
        return self.model.config

    def _decode_args(self) -> dict[str, Any]:
        # device: a CUDA scorer lets "auto" pick NVDEC and keeps the frames on the GPU. uint8 frames: a quarter
        # of the bytes to move; `pixel_values` normalises them where the model runs.
        return dict(image_size=self.config.vision.image_size, params=self.sampling, decoder=self.decoder,
                    device=self.device, limits=self.limits.decode, time_budget_s=self.limits.decode_time_budget_s,
                    output="uint8")

    def load_video(self, source: str | Path | bytes):
        from videoitg.decode import decode_video

        return decode_video(source, **self._decode_args())

    @torch.inference_mode()
    def video_features(self, frames) -> VideoFeatures:
        pv = pixel_values(frames.pixel_values.to(self.device, non_blocking=True), self.dtype)
        visual = self.model.visual_features(pv, chunk_frames=self.chunk_frames)
        return VideoFeatures(visual, list(frames.frame_indices), list(frames.timestamps))

    @torch.inference_mode()
    def stream_features(self, source: str | Path | bytes) -> VideoFeatures:
        """`video_features(load_video(source))` with decode and vision tower overlapped: the tower runs on each
        `chunk_frames` chunk as soon as it is decoded while the next ones decode. Same chunks, same numbers."""
        from videoitg.decode import stream_video

        stream = stream_video(source, **self._decode_args())
        t = len(stream)  # known once the video is indexed, before any frame is decoded
        feats = [self.model.encode_frames(pixel_values(c.to(self.device, non_blocking=True), self.dtype),
                                          self.chunk_frames)
                 for c in stream.chunks(self.chunk_frames)]
        frames = stream.result()
        visual = self.model.project(torch.cat(feats), self.config.tokens_per_side(t))
        return VideoFeatures(visual, list(frames.frame_indices), list(frames.timestamps))

    def encode(self, instruction: str) -> torch.Tensor:
        """Token ids of a valid instruction: non-empty, within the byte and token limits and the model's length
        budget (checked against the worst-case video here; `check_length` re-checks the actual one)."""
        return self.limits.check_instruction(self.tokenizer, instruction, self.config)

    @torch.inference_mode()
    def score_visual(self, items: list[tuple[VideoFeatures, str]], video: str = "",
                     ids: list[torch.Tensor] | None = None) -> list[GroundingResult]:
        """Score a batch of (features, instruction) pairs in one padded forward. `ids`: the instructions' token ids
        when the caller already has them from `encode`."""
        if ids is None:
            ids = [self.encode(text) for _, text in items]
        logits = self.model.score_features([f.visual for f, _ in items], ids)
        return [GroundingResult(lg.cpu().tolist(), f.frame_indices, f.timestamps, text, video)
                for lg, (f, text) in zip(logits, items, strict=True)]

    def score(self, video: str | Path | bytes, instruction: str) -> GroundingResult:
        ids = self.encode(instruction)  # reject a bad instruction before spending a decode on it
        feats = self.stream_features(video)
        name = str(video) if not isinstance(video, bytes) else ""
        return self.score_visual([(feats, instruction)], video=name, ids=[ids])[0]
