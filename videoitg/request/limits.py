"""The bounds of one deployment, in one frozen `Limits` (each refused with a typed error that names the bound),
and how they are configured: defaults, `VIDEOITG_*` variables, flags, Triton parameters
(`videoitg.request.limit_names`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from videoitg.admission import InFlightGate
from videoitg.blank_text import EMPTY_INSTRUCTION, is_blank
from videoitg.config import VideoITGConfig
from videoitg.decode.structs import DecodeLimits
from videoitg.errors import InputError
from videoitg.model.token_budget import fixed_tokens, max_fixed_tokens
from videoitg.request.limit_names import ENV_PREFIX, KNOBS, flag_dest, parse_knob
from videoitg.sampling import SamplingParams

HITS_PER_COLD_SLOT = 4  # `Limits.requests_at_once`


class InstructionTooLongError(InputError):
    """The instruction is over a byte or token limit, or does not fit the model's length after the video."""


@dataclass(frozen=True)
class Limits:
    """Every bound a request is checked against. Frozen: share one instance between threads."""

    # Encoded bytes, duration, decoded width/height/pixels and frames in the stream (see DecodeLimits' defaults:
    # 4 GiB, 4 h, 4096x4096 and 4096x2160 pixels, 4 h at 120 fps).
    decode: DecodeLimits = field(default_factory=DecodeLimits)
    # Encoded bytes of a video a served request names by reference (VIDEO_URI, under a --media-root): it is read
    # from the file where it lies, with none of an upload's copies, so it keeps the decode library's 4 GiB bound
    # whatever the served max_video_bytes. Every other video bound applies to it as to bytes.
    max_reference_bytes: int = 4 << 30
    # Frames a request may ask the model to see (SamplingParams.num_frames). 512 is the released model's setting;
    # decoded frames cost 3*S*S*4 bytes each (1.8 MB at S=384), so this also bounds a request's memory.
    max_sampled_frames: int = 512
    # Instruction tokens. The effective bound is also the model's `tokenizer_model_max_length` minus the video's
    # visual (and anchor) tokens (`VideoITG.layout`): see `instruction_token_limit`.
    max_instruction_tokens: int = 1024
    # Refused before tokenising, so a huge string costs nothing. A byte-level BPE token is at least one UTF-8
    # byte, so any text within max_instruction_tokens bytes can never be refused by this check alone.
    max_instruction_bytes: int = 64 * 1024
    # Requests admitted at once (decoding, encoding or scoring); the next one gets OverloadedError. The server
    # counts cold videos (decoding or encoding) against it, so cache hits are still admitted while it is full.
    max_in_flight: int = 8
    # Wall-clock seconds one video decode may take (slow or stalled inputs stop with DecodeTimeoutError).
    decode_time_budget_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.decode, DecodeLimits):
            raise TypeError(f"Limits.decode must be a DecodeLimits, got {type(self.decode).__name__}")
        for name in ("max_reference_bytes", "max_sampled_frames", "max_instruction_tokens", "max_instruction_bytes",
                     "max_in_flight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Limits.{name} must be an int >= 1, got {v!r}")
        b = self.decode_time_budget_s
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b < float("inf"):
            raise ValueError(f"Limits.decode_time_budget_s must be a finite number > 0, got {b!r}")

    # ---- checks ----------------------------------------------------------------------------------------------
    def check_sampling(self, params: SamplingParams) -> SamplingParams:
        if params.num_frames > self.max_sampled_frames:
            raise InputError(f"num_frames={params.num_frames} is over the limit of {self.max_sampled_frames} "
                             "sampled frames per request")
        return params

    def instruction_token_limit(self, config: VideoITGConfig, num_frames: int | None = None) -> int:
        """Instruction tokens allowed: max_instruction_tokens, and what the model's length budget leaves after
        the visual tokens of `num_frames` sampled frames (None: the worst case up to max_sampled_frames, for a
        check before the video is decoded)."""
        if num_frames is None:
            fixed = max_fixed_tokens(config, self.max_sampled_frames)
        else:
            fixed = fixed_tokens(config, num_frames)
        return max(0, min(self.max_instruction_tokens, config.tokenizer_model_max_length - fixed))

    def instruction_text(self, value: Any) -> str:
        """The instruction as it enters (a request, `Scorer`, a step): a string, or UTF-8 bytes, within
        `max_instruction_bytes` (checked before decoding, so a huge value costs nothing), with some visible text.
        InputError / InstructionTooLongError otherwise; the token bounds need the tokenizer
        (`videoitg.request.text`)."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            self._check_bytes(len(raw))
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"instruction is not valid UTF-8 ({e.reason} at byte {e.start})") from None
        elif isinstance(value, str):
            try:
                self._check_bytes(len(value.encode("utf-8")))
            except UnicodeEncodeError as e:  # lone surrogates: no UTF-8 form, the tokenizer would choke on them
                raise InputError(f"instruction holds a character with no UTF-8 form at index {e.start}") from None
        else:
            raise InputError(f"instruction must be a string, got {type(value).__name__}")
        if is_blank(value):
            raise InputError(EMPTY_INSTRUCTION)
        return value

    def check_instruction_tokens(self, num_tokens: int, config: VideoITGConfig, num_frames: int | None = None) -> None:
        """InstructionTooLongError past `instruction_token_limit` (None frames: the worst-case video)."""
        limit = self.instruction_token_limit(config, num_frames)
        if num_tokens > limit:
            visual = "the worst-case video" if num_frames is None else f"{num_frames} sampled frames"
            raise InstructionTooLongError(
                f"instruction has {num_tokens} tokens, over the limit of {limit} (max_instruction_tokens="
                f"{self.max_instruction_tokens}; the model's {config.tokenizer_model_max_length}-token budget "
                f"after the visual tokens of {visual})")

    def _check_bytes(self, n: int) -> None:
        if n > self.max_instruction_bytes:
            raise InstructionTooLongError(f"instruction is {n} bytes, over the limit of "
                                          f"{self.max_instruction_bytes} bytes (max_instruction_bytes)")

    def check_model(self, config: VideoITGConfig) -> None:
        """Refuse a configuration in which some admitted video would leave no room for any instruction."""
        if self.instruction_token_limit(config) < 2:  # at least one token plus the "\n" the format appends
            raise ValueError(
                f"max_sampled_frames={self.max_sampled_frames} can need "
                f"{max_fixed_tokens(config, self.max_sampled_frames)} visual (and anchor) tokens, leaving no room "
                f"for an instruction in the model's {config.tokenizer_model_max_length}-token budget")

    def reference_decode(self) -> DecodeLimits:
        """The decode bounds of a video named by reference: max_reference_bytes instead of max_video_bytes."""
        return dataclasses.replace(self.decode, max_bytes=self.max_reference_bytes)

    @property
    def requests_at_once(self) -> int:
        """Requests the served top-level model works on at once: HITS_PER_COLD_SLOT per cold slot, so that cache
        hits are neither queued nor refused behind decodes."""
        return HITS_PER_COLD_SLOT * self.max_in_flight

    def gate(self) -> InFlightGate:
        """A fresh admission gate of `max_in_flight` slots (keep one per server process)."""
        return InFlightGate(self.max_in_flight)

    # ---- configuration ---------------------------------------------------------------------------------------
    def replace(self, **values: Any) -> Limits:
        """A copy with some knobs changed; DecodeLimits fields are accepted by name (max_bytes, max_width...)."""
        decode_names = {f.name for f in dataclasses.fields(DecodeLimits)}
        dec = {k: values.pop(k) for k in list(values) if k in decode_names}
        new_decode = dataclasses.replace(self.decode, **dec) if dec else self.decode
        return dataclasses.replace(self, decode=new_decode, **values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str | None], base: Limits | None = None,
                     prefix: str = "") -> Limits:
        """Read knobs named `prefix + STEM` (see docs/limits.md) from a string mapping over `base`."""
        base = base or cls()
        changes: dict[str, Any] = {}
        for path, stem in KNOBS.items():
            raw = values.get(prefix + stem)
            if raw is None or str(raw).strip() == "":
                continue
            changes[path.split(".")[-1]] = parse_knob(prefix + stem, str(raw), _kind(path))
        try:
            return base.replace(**changes)
        except ValueError as e:
            raise InputError(f"invalid limit: {e}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, base: Limits | None = None) -> Limits:
        """Defaults overridden by VIDEOITG_MAX_VIDEO_BYTES, VIDEOITG_MAX_IN_FLIGHT, ... (docs/limits.md)."""
        return cls.from_mapping(os.environ if environ is None else environ, base, ENV_PREFIX)

    def to_parameters(self) -> dict[str, str]:
        """String form of every knob (e.g. Triton model-config parameters); `from_mapping` reads it back."""
        out = {}
        for path, stem in KNOBS.items():
            obj: Any = self.decode if path.startswith("decode.") else self
            out[stem] = repr(getattr(obj, path.split(".")[-1]))
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: Limits | None = None) -> Limits:
        """Flags added by `add_arguments`, over the environment, over the defaults."""
        limits = cls.from_env(base=base)
        values = {stem: getattr(args, flag_dest(stem), None) for stem in KNOBS.values()}
        return cls.from_mapping({k: None if v is None else str(v) for k, v in values.items()}, limits)


# A served upload is copied into the python backend's shared memory several times and, with the decode, costs about
# 8x its size while it runs (benchmarks/RESULTS.md, "Server memory": 256 MiB -> +1.3 GB of process memory, +0.8 GB
# of /dev/shm); the top-level model runs batches of 8. 64 MiB keeps a full batch near 4 GiB. Files decoded
# in-process have no such copies and keep the decode library's 4 GiB bound.
SERVED_MAX_VIDEO_BYTES = 64 << 20


def served_defaults() -> Limits:
    """The defaults of a served repository (`videoitg serve`, `videoitg repo build`): smaller uploads."""
    return Limits().replace(max_bytes=SERVED_MAX_VIDEO_BYTES)


def _kind(path: str) -> type:
    obj: Any = DecodeLimits if path.startswith("decode.") else Limits
    name = path.split(".")[-1]
    default = {f.name: f.default for f in dataclasses.fields(obj)}[name]
    return float if isinstance(default, float) else int
