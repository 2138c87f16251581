"""Resource limits of one deployment, in one place, each refused with a typed error that names the bound.

    limits = Limits.from_env()                       # VIDEOITG_MAX_* environment variables over the defaults
    limits.check_sampling(params)                    # InputError: more sampled frames than allowed
    text = limits.instruction_text(raw)              # InputError: not UTF-8, over the byte bound, blank
    limits.check_instruction_tokens(n_tokens, cfg)   # InstructionTooLongError (tokens, model budget); both at once,
                                                     # with the tokenising between: videoitg.text.instruction_ids
    decode_video(src, limits=limits.decode, time_budget_s=limits.decode_time_budget_s)
    with limits.gate():                              # OverloadedError past max_in_flight
        ...

The video bounds (encoded bytes, duration, decoded resolution, frames in the stream) are the decode layer's
`DecodeLimits`, held here rather than repeated, so the decoder checks exactly what the deployment configured.
Defaults and the environment variables are listed in docs/limits.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from videoitg.config import VideoITGConfig
from videoitg.decode.structs import DecodeLimits
from videoitg.errors import InputError, VideoITGError
from videoitg.sampling import SamplingParams

# Characters that show nothing although Unicode does not class them as controls, format characters or spaces:
# Hangul fillers, the braille blank, the combining grapheme joiner and the variation selectors.
_SHOW_NOTHING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f" + "".join(map(chr, range(0xFE00, 0xFE10)))
                          + "".join(map(chr, range(0xE0100, 0xE01F0))))
# Unicode categories of characters that carry no text: controls (NUL...), format characters (zero-width space and
# joiners, word joiner, BOM, soft hyphen, bidi marks, embeddings and isolates, tags) and separators.
_NO_TEXT_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """Nothing but whitespace, controls, zero-width, bidi and other characters that show nothing: an instruction
    made only of these is empty."""
    import unicodedata

    return all(c.isspace() or c in _SHOW_NOTHING or unicodedata.category(c) in _NO_TEXT_CATEGORIES for c in text)


EMPTY_INSTRUCTION = "instruction is empty (only whitespace, control, zero-width or bidi characters)"


class InstructionTooLongError(InputError):
    """The instruction is over a byte or token limit, or does not fit the model's length after the video."""


class OverloadedError(VideoITGError):
    """More requests in flight than `Limits.max_in_flight`: not the client's input, retry later."""


# Field of Limits (or "decode.<field>" of DecodeLimits) -> environment variable / CLI flag stem.
_KNOBS: dict[str, str] = {
    "decode.max_bytes": "MAX_VIDEO_BYTES",
    "decode.max_duration_s": "MAX_DURATION_S",
    "decode.max_width": "MAX_WIDTH",
    "decode.max_height": "MAX_HEIGHT",
    "decode.max_pixels": "MAX_PIXELS",
    "decode.max_frames": "MAX_STREAM_FRAMES",
    "decode.max_decode_pixels_per_byte": "MAX_DECODE_PIXELS_PER_BYTE",
    "max_reference_bytes": "MAX_REFERENCE_BYTES",
    "max_sampled_frames": "MAX_SAMPLED_FRAMES",
    "max_instruction_tokens": "MAX_INSTRUCTION_TOKENS",
    "max_instruction_bytes": "MAX_INSTRUCTION_BYTES",
    "max_in_flight": "MAX_IN_FLIGHT",
    "decode_time_budget_s": "DECODE_TIME_BUDGET_S",
}
ENV_PREFIX = "VIDEOITG_"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


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
        InputError / InstructionTooLongError otherwise; the token bounds need the tokenizer (`videoitg.text`)."""
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
        for path, stem in _KNOBS.items():
            raw = values.get(prefix + stem)
            if raw is None or str(raw).strip() == "":
                continue
            changes[path.split(".")[-1]] = _parse(prefix + stem, str(raw), _kind(path))
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
        for path, stem in _KNOBS.items():
            obj: Any = self.decode if path.startswith("decode.") else self
            out[stem] = repr(getattr(obj, path.split(".")[-1]))
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: Limits | None = None) -> Limits:
        """Flags added by `add_arguments`, over the environment, over the defaults."""
        limits = cls.from_env(base=base)
        values = {stem: getattr(args, _dest(stem), None) for stem in _KNOBS.values()}
        return cls.from_mapping({k: None if v is None else str(v) for k, v in values.items()}, limits)


# A served upload is copied into the python backend's shared memory several times and, with the decode, costs about
# 8x its size while it runs (RELIABILITY.md: 256 MiB -> +1.3 GB of process memory, +0.8 GB of /dev/shm); the
# top-level model runs batches of 8. 64 MiB keeps a full batch near 4 GiB. Files decoded in-process have no such
# copies and keep the decode library's 4 GiB bound.
SERVED_MAX_VIDEO_BYTES = 64 << 20


def served_defaults() -> Limits:
    """The defaults of a served repository (`videoitg serve`, `videoitg repo build`): smaller uploads."""
    return Limits().replace(max_bytes=SERVED_MAX_VIDEO_BYTES)


class InFlightGate:
    """Non-blocking admission: `with gate:` enters or raises OverloadedError at once (queueing would only hold
    memory for requests whose clients may already have timed out)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._sem = threading.BoundedSemaphore(capacity)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.refused = 0

    def __enter__(self) -> InFlightGate:
        if not self._sem.acquire(blocking=False):
            with self._lock:
                self.refused += 1
            raise OverloadedError(f"server busy: {self.capacity} requests already in flight "
                                  f"(max_in_flight={self.capacity}); retry later")
        with self._lock:
            self.in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.in_flight -= 1
        self._sem.release()


def visual_tokens(config: VideoITGConfig, num_frames: int) -> int:
    """Visual tokens the model builds for `num_frames` sampled frames: T x HW² (HW: `tokens_per_side`)."""
    return num_frames * config.tokens_per_side(num_frames) ** 2


def max_visual_tokens(config: VideoITGConfig, max_frames: int) -> int:
    """Most visual tokens any video of 1..max_frames sampled frames can need (T x HW² is not monotonic in T)."""
    return max(visual_tokens(config, t) for t in range(1, max_frames + 1))


def fixed_tokens(config: VideoITGConfig, num_frames: int) -> int:
    """Tokens of the model's sequence that are not the instruction (visual tokens, plus Variant B's anchors):
    `videoitg.model.layout.SequenceLayout.fixed`."""
    from videoitg.model.layout import SequenceLayout  # here: the CLI's --help must not import torch

    return SequenceLayout.for_video(config, num_frames).fixed


def max_fixed_tokens(config: VideoITGConfig, max_frames: int) -> int:
    return max(fixed_tokens(config, t) for t in range(1, max_frames + 1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--max-video-bytes 512M`, `--max-in-flight 4`, ...: one flag per knob (default: environment, then built-in)."""
    g = parser.add_argument_group("limits", "request limits (default: $VIDEOITG_<NAME>, else docs/limits.md)")
    for path, stem in _KNOBS.items():
        g.add_argument("--" + stem.lower().replace("_", "-"), dest=_dest(stem), default=None, metavar="N",
                       help=f"{path} (env {ENV_PREFIX}{stem})")


def _dest(stem: str) -> str:
    return "limit_" + stem.lower()


def _kind(path: str) -> type:
    obj: Any = DecodeLimits if path.startswith("decode.") else Limits
    name = path.split(".")[-1]
    default = {f.name: f.default for f in dataclasses.fields(obj)}[name]
    return float if isinstance(default, float) else int


def _parse(name: str, raw: str, kind: type) -> int | float:
    """Ints accept a binary size suffix (512M, 2GiB); floats are plain numbers."""
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise InputError(f"{name}={raw!r} is not a number") from None
    m = _SIZE.match(raw)
    if not m:
        raise InputError(f"{name}={raw!r} is not a whole number (suffixes K, M, G, T allowed)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value != int(value):
        raise InputError(f"{name}={raw!r} is not a whole number")
    return int(value)
