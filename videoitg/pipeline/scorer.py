"""In-process scoring: video -> sampled frames -> visual features -> per-frame scores.

    from videoitg import Scorer
    scorer = Scorer.default()                      # the embedded tiny demo checkpoint
    scorer = Scorer.from_pretrained("VideoITG-8B")  # a real checkpoint directory (docs/checkpoints.md)
    result = scorer.score("clip.mp4", "When does the dog jump?")
    results = scorer.score_many("clip.mp4", ["...", "..."])  # one decode, one vision pass

The split steps are public because servers and batch jobs run them separately: decode and visual features once
per video (cacheable: they do not depend on the instruction), then `score_visual` per instruction.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from videoitg.decode import decode_video, stream_video
from videoitg.decode.structs import SampledFrames
from videoitg.defaults import DEMO_NOTICE, default_checkpoint, is_demo_checkpoint
from videoitg.engines.runtimes import prove_grounding, prove_vision, require_finite
from videoitg.errors import InputError
from videoitg.model.checkpoint import load_identified
from videoitg.model.files import checkpoint_identity
from videoitg.model.hotpath import prepare_inference
from videoitg.model.layout import SequenceLayout, fit_instruction
from videoitg.moments import frames_duration
from videoitg.outputs import DEFAULT_RANKING_RULE, GroundingResult
from videoitg.paths import local_video
from videoitg.pipeline.features import VideoFeatures
from videoitg.precision import default_dtype_name, resolve_dtype, resolve_precision
from videoitg.preprocess import pixel_values
from videoitg.request.limits import Limits
from videoitg.request.options import NO_OPTIONS, RequestOptions
from videoitg.request.text import instruction_ids
from videoitg.sampling import SamplingParams
from videoitg.synthetic.sample import is_sample_video

log = logging.getLogger(__name__)

def _dtype_option(dtype: str | torch.dtype | None) -> str | None:
    return str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype


def default_dtype(device: str) -> torch.dtype:
    """`videoitg.precision.default_dtype_name` as torch's dtype: fp16 on a GPU (as released), fp32 on CPU."""
    return getattr(torch, default_dtype_name(device))


def parse_dtype(name: str | torch.dtype | None, device: str) -> torch.dtype:
    """torch's dtype for every entry point's dtype option (`videoitg.precision.resolve_dtype`)."""
    return getattr(torch, resolve_dtype(_dtype_option(name), device))


def parse_precision(precision: str | None, dtype: str | torch.dtype | None, device: str
                    ) -> tuple[torch.dtype, str | None]:
    """(the model's dtype, what `prepare_inference` takes): `videoitg.precision.resolve_precision` with torch's
    dtype."""
    name, prec = resolve_precision(precision, _dtype_option(dtype), device)
    return getattr(torch, name), prec


def dtype_name(name: str | torch.dtype | None, device: str) -> str:
    """`parse_dtype` as the name a config records ("float16", "bfloat16", "float32")."""
    return resolve_dtype(_dtype_option(name), device)


def check_device(device: str) -> str:
    """A CUDA device that this machine has, or "cpu"; anything else is a clear error, not a torch traceback."""
    dev = str(device)
    if dev == "cpu":
        return dev
    if not dev.startswith("cuda"):
        raise InputError(f"unknown device {dev!r}: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise InputError(f"device {dev!r} was asked for, but {why} (torch {torch.__version__}); use --device cpu")
    index = dev.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise InputError(f"device {dev!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


class Scorer:
    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        precision: str | None = None,
        sampling: SamplingParams | None = None,
        decoder: str = "auto",
        chunk_frames: int = 64,
        vision_tower: str | Path | None = None,
        limits: Limits | None = None,
        truncate: bool = False,
    ):
        self.device = check_device(device)
        self.dtype, self.precision = parse_precision(precision, dtype, device)
        # An instruction over the length budget: refused (default), or cut to fit as the released model does.
        self.truncate = truncate
        identity = None  # of the weights loaded here (`load_identified`)
        if model is None:
            if checkpoint is None:
                raise InputError("Scorer needs a checkpoint directory or a model + tokenizer")
            model, tokenizer, identity = load_identified(checkpoint, device, self.dtype, vision_tower)
        # FP8 linear layers when asked; on a GPU, the layers compiled (they compile on the first call)
        self.model, self.tokenizer = prepare_inference(model.eval(), self.precision), tokenizer
        if checkpoint is not None and identity is not None:
            # A loaded checkpoint proves itself as it serves (finite out of each tower, else refused)
            m = self.model
            prove_vision(m.visual_features, m.config, self.device, self.dtype, checkpoint)
            prove_grounding(lambda v, i: m.score_features([v], [i])[0], m.config, tokenizer, self.device,
                            self.dtype, checkpoint)
        self.identity = identity or (checkpoint_identity(checkpoint, vision_tower) if checkpoint is not None
                                     else f"model-{id(model):x}")
        self.sampling, self.decoder, self.chunk_frames = sampling or SamplingParams(), decoder, chunk_frames
        self.limits = limits or Limits.from_env()  # VIDEOITG_MAX_* overrides; defaults in docs/limits.md
        self.limits.check_sampling(self.sampling)
        self._demo_noticed = not is_demo_checkpoint(checkpoint)

    @classmethod
    def default(cls, **kwargs: Any) -> Scorer:
        """The embedded tiny checkpoint: a pipeline demo trained on synthetic shapes, not a video model."""
        return cls(default_checkpoint(), **kwargs)

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, **kwargs: Any) -> Scorer:
        """A checkpoint directory in the released VideoITG layout (docs/checkpoints.md, "Checkpoint format"); keyword
        arguments as for `Scorer(...)`: device, dtype, sampling, decoder, vision_tower, limits."""
        if not Path(checkpoint).is_dir():
            raise InputError(f"checkpoint directory {checkpoint} does not exist (checkpoints load from local "
                             "directories only, never from a hub)")
        return cls(checkpoint, **kwargs)

    @property
    def config(self):
        return self.model.config

    def _decode_args(self) -> dict[str, Any]:
        # device: a CUDA scorer lets "auto" pick NVDEC and keeps the frames on the GPU. uint8 frames: a quarter
        # of the bytes to move; `pixel_values` normalises them where the model runs.
        return dict(image_size=self.config.vision.image_size, params=self.sampling, decoder=self.decoder,
                    device=self.device, limits=self.limits.decode, time_budget_s=self.limits.decode_time_budget_s,
                    output="uint8")

    def _source(self, source: str | Path | bytes) -> str | Path | bytes:
        source = local_video(source)  # a URL is refused: nothing is fetched
        if not self._demo_noticed and not is_sample_video(source):
            self._demo_noticed = True  # once per scorer: loud, not repeated for every row of a batch
            log.warning(DEMO_NOTICE)
        return source

    def load_video(self, source: str | Path | bytes):
        return decode_video(self._source(source), **self._decode_args())

    @torch.inference_mode()
    def video_features(self, frames: SampledFrames) -> VideoFeatures:
        pv = pixel_values(frames.pixel_values.to(self.device, non_blocking=True), self.dtype)
        visual = self.model.visual_features(pv, chunk_frames=self.chunk_frames)
        return VideoFeatures(visual, list(frames.frame_indices), list(frames.timestamps), frames_duration(frames))

    @torch.inference_mode()
    def stream_features(self, source: str | Path | bytes) -> VideoFeatures:
        """`video_features(load_video(source))` with decode and vision tower overlapped: the tower runs on each
        `chunk_frames` chunk as soon as it is decoded while the next ones decode. Same chunks, same numbers."""
        stream = stream_video(self._source(source), **self._decode_args())
        t = len(stream)  # known once the video is indexed, before any frame is decoded
        feats = [self.model.encode_frames(pixel_values(torch.as_tensor(c).to(self.device, non_blocking=True),
                                                       self.dtype), self.chunk_frames)
                 for c in stream.chunks(self.chunk_frames)]  # numpy chunks while PyAV decodes, not copied here
        frames = stream.result()
        visual = self.model.project(torch.cat(feats), self.config.tokens_per_side(t))
        return VideoFeatures(visual, list(frames.frame_indices), list(frames.timestamps), frames_duration(frames))

    def encode(self, instruction: str) -> torch.Tensor:
        """Token ids of a valid instruction: non-empty, within the byte and token limits and the model's length
        budget (checked against the worst-case video here; `VideoITG.layout` re-checks the actual one). With
        `truncate`, the token bounds are left to `score_visual`, which cuts the instruction to this video's room."""
        return instruction_ids(self.tokenizer, instruction, self.config, self.limits, check_tokens=not self.truncate)

    @torch.inference_mode()
    def score_visual(self, items: list[tuple[VideoFeatures, str]], video: str = "",
                     ids: list[torch.Tensor] | None = None, options: RequestOptions = NO_OPTIONS
                     ) -> list[GroundingResult]:
        """Score a batch of (features, instruction) pairs in one padded forward. `ids`: the instructions' token ids
        when the caller already has them from `encode`; `options.ranking_rule`: how the results rank frames
        (default released, `videoitg.outputs`)."""
        if ids is None:
            ids = [self.encode(text) for _, text in items]
        if self.truncate:
            limit = self.config.tokenizer_model_max_length
            ids = [fit_instruction(i, SequenceLayout.for_video(self.config, len(f.frame_indices)), limit, True)
                   for i, (f, _) in zip(ids, items, strict=True)]
        logits = [require_finite(lg, f"the model's logits ({str(self.dtype).removeprefix('torch.')} on {self.device})")
                  for lg in self.model.score_features([f.visual for f, _ in items], ids)]  # NonFiniteError
        rule = options.ranking_rule or DEFAULT_RANKING_RULE
        return [GroundingResult(lg.cpu().tolist(), f.frame_indices, f.timestamps, text, video, rule, f.duration)
                for lg, (f, text) in zip(logits, items, strict=True)]

    def score(self, video: str | Path | bytes, instruction: str, options: RequestOptions = NO_OPTIONS
              ) -> GroundingResult:
        """The result of one instruction, ranked under `options.ranking_rule`; the frames `options` pick:
        `videoitg.request.options.select(result, options)`."""
        return self.score_many(video, [instruction], options=options)[0]

    def score_many(self, video: str | Path | bytes, instructions: list[str], batch_size: int = 8,
                   options: RequestOptions = NO_OPTIONS) -> list[GroundingResult]:
        """Several instructions on one video: one decode and one vision pass, then the instructions in padded
        batches of `batch_size`. Every instruction is checked before the video is decoded."""
        if isinstance(instructions, str):
            raise InputError("score_many takes a list of instructions (use score() for one)")
        if not instructions:
            return []
        ids = [self.encode(text) for text in instructions]  # reject a bad instruction before spending a decode
        feats = self.stream_features(video)
        name = str(video) if not isinstance(video, bytes) else ""
        out: list[GroundingResult] = []
        bs = max(1, batch_size)
        for i in range(0, len(instructions), bs):
            out += self.score_visual([(feats, t) for t in instructions[i:i + bs]], video=name, ids=ids[i:i + bs],
                                     options=options)
        return out
