"""A request's options: one declared row each (`OPTIONS`), the `RequestOptions` a request carries, and `select`, the
one place the options pick frames from a result.

Every edge is generated from the rows: the KServe input specs and the ensemble map (`videoitg.contract.protocol`),
the BLS model's reading of its inputs (python_backend/request.py), the chat request's `videoitg` object
(`videoitg.answer.chat`), the command-line flags (`add_flags`, `from_args`), a batch manifest's option columns and
lmms-eval's model_args. An option keeps its name everywhere: `top_k` in Python, JSON, a manifest and model_args,
`TOP_K` on the wire, `--top-k` on the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from videoitg.errors import InputError
from videoitg.outputs import DEFAULT_TOP_K, RANKING_RULES, SelectionOptions

if TYPE_CHECKING:
    from videoitg.outputs import GroundingResult

MAX_TOP_K = 2**31 - 1  # TOP_K travels as INT32; a K over a video's sampled frames picks them all
FRAME_FORMATS = ("jpeg", "uint8")
MAX_FRAME_SIZE = 4096  # the frames' longer side in pixels: the decoder's default width and height bound
WIRE_TYPES = {int: "INT32", float: "FP64", str: "STRING"}  # an option's KServe input type, by its kind


@dataclass(frozen=True)
class Option:
    """One option: an int or a float within [low, high], or a str among `choices`. `default` says what applies when
    neither the request nor the deployment names it; `frames`: it shapes the frames a request asks for as images
    (the BLS model only), not the selection; `chat`: a chat request's `videoitg` object may set it."""

    name: str
    kind: type
    meaning: str
    default: str
    low: float = 0
    high: float = 0
    choices: tuple[str, ...] = ()
    frames: bool = False
    chat: bool = False

    @property
    def wire(self) -> str:
        """The KServe input it travels in."""
        return self.name.upper()

    @property
    def wire_type(self) -> str:
        return WIRE_TYPES[self.kind]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, label: str) -> Any:
        """`value` as this option's type; InputError naming `label` (how the edge calls the option) otherwise."""
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise InputError(f"{label} must be one of {', '.join(self.choices)}, got {_shown(value)} "
                                 f"({self.meaning})")
            return value
        number = (int,) if self.kind is int else (int, float)
        if (isinstance(value, bool) or not isinstance(value, number)
                or (isinstance(value, float) and not math.isfinite(value)) or not self.low <= value <= self.high):
            what = "an integer" if self.kind is int else "a number"
            raise InputError(f"{label} must be {what} from {_bound(self.low)} to {_bound(self.high)}, got "
                             f"{_shown(value)} ({self.meaning})")
        return self.kind(value)


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _shown(value: Any) -> str:
    """A refused value as an error shows it: short, whatever the client sent."""
    if isinstance(value, (dict, list, tuple)):
        return type(value).__name__
    try:
        return json.dumps(value)[:32]
    except (TypeError, ValueError):
        return type(value).__name__


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("top_k", int, "frames to pick", f"the deployment's, {DEFAULT_TOP_K} unless it says", 1, MAX_TOP_K,
           chat=True),
    Option("ranking_rule", str, "the ranking rule: how frames are ranked", "the deployment's, released unless it says",
           choices=RANKING_RULES),
    Option("min_score", float, "of the top_k frames, only those whose score reaches it (the best one always)", "off",
           0, 1, chat=True),
    Option("coverage", float, "of the top_k frames, the fewest best whose share of all frames' summed scores reaches "
           "it", "off", 0, 1, chat=True),
    Option("frames", str, "the picked frames as images too", "none", choices=FRAME_FORMATS, frames=True),
    Option("frame_size", int, "the frames' longer side in pixels, 0 the video's own size", "the video's own size",
           0, MAX_FRAME_SIZE, frames=True, chat=True),
)}


@dataclass(frozen=True, kw_only=True)  # by name: a new option never moves another
class RequestOptions:
    """The options of one request, each checked against its row; None: not named (the deployment's default applies:
    its top-K and ranking rule; no frames; frames at the video's own size)."""

    top_k: int | None = None
    ranking_rule: str | None = None
    min_score: float | None = None
    coverage: float | None = None
    frames: str | None = None
    frame_size: int | None = None

    def __post_init__(self) -> None:
        for name, option in OPTIONS.items():
            if (value := getattr(self, name)) is not None:
                object.__setattr__(self, name, option.check(value, name))
        _check_together(self, {})

    @classmethod
    def labelled(cls, values: Mapping[str, Any], labels: Mapping[str, str]) -> RequestOptions:
        """The options of `values` (name -> value, None: absent), each error naming the option as the edge calls it
        (`labels`: name -> label, e.g. "top_k" -> "TOP_K")."""
        checked = {name: None if v is None else OPTIONS[name].check(v, labels.get(name, name))
                   for name, v in values.items()}
        _check_together(checked, labels)
        return cls(**checked)

    @classmethod
    def from_object(cls, obj: Any, allowed: Sequence[str], where: str,
                    defaults: Mapping[str, Any] | None = None) -> RequestOptions:
        """The options of a JSON object (the chat request's `videoitg` extension): only `allowed` names, each
        error naming `where.name`; `defaults` for the names it leaves out."""
        if not isinstance(obj, dict):
            shape = ", ".join(f'"{n}": ...' for n in allowed)
            raise InputError(f"'{where}' must be an object ({{{shape}}})")
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise InputError(f"'{where}' has no field {unknown[0][:32]!r} (it takes {', '.join(allowed)})")
        values = {**(defaults or {}), **obj}
        return cls.labelled(values, {n: f"{where}.{n}" for n in values})

    def with_defaults(self, selection: SelectionOptions) -> RequestOptions:
        """The options a deployment applies: its top-K and ranking rule where the request names none."""
        return dataclasses.replace(
            self, top_k=selection.default_top_k if self.top_k is None else self.top_k,
            ranking_rule=selection.ranking_rule if self.ranking_rule is None else self.ranking_rule)

    @classmethod
    def from_text(cls, values: Mapping[str, Any], where: str) -> RequestOptions:
        """The options of `values` as text gives them (lmms-eval's model_args, a CSV manifest's columns): a number
        written as text is read as its option's kind, "" and "None" are absent; each error names `where name`."""
        return cls.labelled({name: _from_text(OPTIONS[name], v) for name, v in values.items()},
                            {name: f"{where} {name}" for name in values})

    def given(self) -> dict[str, Any]:
        """The options this request names (name -> value), in declaration order."""
        return {name: value for name in OPTIONS if (value := getattr(self, name)) is not None}


def _from_text(option: Option, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text in ("", "None"):
        return None
    try:
        return int(text) if option.kind is int else float(text) if option.kind is float else text
    except ValueError:
        return value  # the option's check names what is wrong with it


def _check_together(values: Any, labels: Mapping[str, str]) -> None:
    """What one option asks of another: a frame size sizes the frames a request asks for."""
    get = values.get if isinstance(values, dict) else lambda n: getattr(values, n)
    if get("frame_size") is not None and get("frames") is None:
        size, frames = labels.get("frame_size", "frame_size"), labels.get("frames", "frames")
        raise InputError(f"{size} sizes the frames {frames} asks for: send {frames} too")


NO_OPTIONS = RequestOptions()  # every option the deployment's (or the default)
SELECTION = tuple(name for name, o in OPTIONS.items() if not o.frames)  # the options `select` and ranking read
CHAT = tuple(name for name, o in OPTIONS.items() if o.chat)  # what a chat request's `videoitg` object may set


def select(result: GroundingResult, options: RequestOptions = NO_OPTIONS) -> list[int]:
    """The frames `options` pick from `result`, as positions into its per-frame lists, chronological: its `top_k`
    best under the result's ranking rule (DEFAULT_TOP_K when the request names none and no deployment applied its
    own); with `coverage`, only the fewest of those, best first, whose scores sum to that share of every frame's
    score; with `min_score`, only those whose score reaches it. At least one frame: the best."""
    import numpy as np  # here, not at the top: `videoitg --help` must not import numpy

    k = DEFAULT_TOP_K if options.top_k is None else options.top_k
    ranked = result.ranking[:k]
    if options.coverage is None and options.min_score is None:
        return sorted(ranked)
    scores = np.asarray(result.scores, dtype=np.float64)
    if options.coverage is not None:
        mass = np.cumsum(scores[ranked])
        reached = np.flatnonzero(mass >= options.coverage * scores.sum())
        ranked = ranked[:int(reached[0]) + 1 if reached.size else len(ranked)]
    if options.min_score is not None:
        ranked = [p for p in ranked if scores[p] >= options.min_score] or ranked[:1]
    return sorted(ranked)


def records_picks(options: RequestOptions) -> bool:
    """Whether a results.jsonl record of a request with `options` stores its picked frames (`top_k`): when they name
    a selection option beyond the ranking rule; else the record holds the ranking alone."""
    return bool(set(options.given()) & set(SELECTION) - {"ranking_rule"})


def recorded(result: GroundingResult, options: RequestOptions) -> list[int] | None:
    """The picked frames a results.jsonl record stores (`GroundingResult.to_record(picked=...)`), or None."""
    return select(result, options) if records_picks(options) else None


# ---- the command line ---------------------------------------------------------------------------------------------
def add_flags(parser: argparse.ArgumentParser, names: Sequence[str], defaults: Mapping[str, str] | None = None
              ) -> None:
    """A flag per named option (`--top-k`, `--ranking-rule`, ...), absent by default; `defaults` (name -> text)
    replaces what a flag's help says applies when it is left out."""
    for name in names:
        o = OPTIONS[name]
        kw: dict[str, Any] = {"choices": o.choices} if o.choices else {"type": o.kind, "metavar": name.upper()}
        parser.add_argument(o.flag, dest=name, default=None,
                            help=f"{o.meaning} (default: {(defaults or {}).get(name, o.default)})", **kw)


def from_args(args: argparse.Namespace, names: Sequence[str], labels: Mapping[str, str] | None = None,
              **set_here: Any) -> RequestOptions:
    """The options of the flags `add_flags` made for `names`, and `set_here` (name -> value) that a command sets
    itself; an error names the flag, or what `labels` calls an option the command sets its own way."""
    values = {name: getattr(args, name) for name in names} | set_here
    return RequestOptions.labelled(values, {**{name: OPTIONS[name].flag for name in names}, **(labels or {})})
