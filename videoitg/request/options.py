"""What a request asks of the selection beside its video and instruction, declared once: each option's name, type,
bounds and meaning. Every edge (the CLI, the Python API, KServe inputs, the chat `videoitg` object) builds one
`RequestOptions`, and it is carried whole to the ranking and the frames answered."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from videoitg.errors import InputError
from videoitg.outputs import RANKING_RULES, SelectionOptions

MAX_TOP_K = 2**31 - 1  # TOP_K travels as INT32; a K over a video's sampled frames picks them all
FRAME_FORMATS = ("jpeg", "uint8")
MAX_FRAME_SIZE = 4096  # the frames' longer side in pixels: the decoder's default width and height bound


@dataclass(frozen=True)
class Option:
    """One option: an int within [low, high], or a str among `choices`."""

    name: str
    kind: type
    meaning: str
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()

    def check(self, value: Any, label: str) -> Any:
        """`value` as this option's type; InputError naming `label` (how the edge calls the option) otherwise."""
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
                raise InputError(f"{label} must be an integer from {self.low} to {self.high}, got {_shown(value)} "
                                 f"({self.meaning})")
            return int(value)
        if not isinstance(value, str) or value not in self.choices:
            raise InputError(f"{label} must be one of {', '.join(self.choices)}, got {_shown(value)} ({self.meaning})")
        return value


def _shown(value: Any) -> str:
    """A refused value as an error shows it: short, whatever the client sent."""
    if isinstance(value, (dict, list, tuple)):
        return type(value).__name__
    try:
        return json.dumps(value)[:32]
    except (TypeError, ValueError):
        return type(value).__name__


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("top_k", int, "frames to pick", 1, MAX_TOP_K),
    Option("ranking_rule", str, "how frames are ranked", choices=RANKING_RULES),
    Option("frames", str, "the top-K frames as images too", choices=FRAME_FORMATS),
    Option("frame_size", int, "the frames' longer side in pixels, 0 the video's own size", 0, MAX_FRAME_SIZE),
)}


@dataclass(frozen=True)
class RequestOptions:
    """None: the deployment's default (its top-K and ranking rule; no frames; frames at the video's own size)."""

    top_k: int | None = None
    ranking_rule: str | None = None
    frames: str | None = None
    frame_size: int | None = None

    def __post_init__(self) -> None:
        for name, option in OPTIONS.items():
            if (value := getattr(self, name)) is not None:
                object.__setattr__(self, name, option.check(value, name))
        if self.frame_size is not None and self.frames is None:
            raise InputError("frame_size sizes the frames frames asks for: send frames too")

    @classmethod
    def labelled(cls, values: Mapping[str, Any], labels: Mapping[str, str]) -> RequestOptions:
        """The options of `values` (name -> value, None: absent), each error naming the option as the edge calls it
        (`labels`: name -> label, e.g. "top_k" -> "TOP_K")."""
        checked = {name: None if v is None else OPTIONS[name].check(v, labels.get(name, name))
                   for name, v in values.items()}
        if checked.get("frame_size") is not None and checked.get("frames") is None:
            size, frames = labels.get("frame_size", "frame_size"), labels.get("frames", "frames")
            raise InputError(f"{size} sizes the frames {frames} asks for: send {frames} too")
        return cls(**checked)

    @classmethod
    def from_object(cls, obj: Any, allowed: tuple[str, ...], where: str,
                    defaults: Mapping[str, Any] | None = None) -> RequestOptions:
        """The options of a JSON object (the chat request's `videoitg` extension): only `allowed` names, each
        error naming `where.name`; `defaults` for the names it leaves out."""
        if not isinstance(obj, dict):
            shape = ", ".join(f'"{n}": ...' for n in allowed)
            raise InputError(f"'{where}' must be an object ({{{shape}}})")
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise InputError(f"'{where}' has no field {unknown[0][:32]!r} (it takes {' and '.join(allowed)})")
        values = {**(defaults or {}), **obj}
        return cls.labelled(values, {n: f"{where}.{n}" for n in values})

    def with_defaults(self, selection: SelectionOptions) -> RequestOptions:
        """The options a deployment applies: its top-K and ranking rule where the request names none."""
        return dataclasses.replace(
            self, top_k=selection.default_top_k if self.top_k is None else self.top_k,
            ranking_rule=selection.ranking_rule if self.ranking_rule is None else self.ranking_rule)

    def given(self) -> dict[str, Any]:
        """The options this request names (name -> value), in declaration order."""
        return {name: value for name in OPTIONS if (value := getattr(self, name)) is not None}
