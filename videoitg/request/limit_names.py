"""How each limit is named outside Python (a `VIDEOITG_*` variable, a CLI flag, a Triton model parameter) and how
its string value parses; `videoitg.request.limits.Limits` reads and writes them."""

from __future__ import annotations

import argparse
import re

from videoitg.errors import InputError

# Field of Limits (or "decode.<field>" of DecodeLimits) -> environment variable / CLI flag / parameter stem.
KNOBS: dict[str, str] = {
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--max-video-bytes 512M`, `--max-in-flight 4`, ...: one flag per knob (default: environment, then built-in);
    `Limits.from_args` reads them."""
    g = parser.add_argument_group("limits", "request limits (default: $VIDEOITG_<NAME>, else docs/limits.md)")
    for path, stem in KNOBS.items():
        g.add_argument("--" + stem.lower().replace("_", "-"), dest=flag_dest(stem), default=None, metavar="N",
                       help=f"{path} (env {ENV_PREFIX}{stem})")


def flag_dest(stem: str) -> str:
    """The argparse destination of a knob's flag."""
    return "limit_" + stem.lower()


def parse_knob(name: str, raw: str, kind: type) -> int | float:
    """A knob's value: ints accept a binary size suffix (512M, 2GiB); floats are plain numbers. InputError names
    the knob otherwise."""
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
