"""What a grounding request returns: in memory (`GroundingResult`) and as `results.jsonl` in the schema VideoITG's
downstream consumers read as `frame_indices_jsonl`. Its served tensors: `videoitg.contract.tensors`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videoitg.errors import InputError, VideoITGError
from videoitg.jsonio import JSONProblem, loads, text_lines
from videoitg.moments import DEFAULT_PARAMS, Moment, MomentParams, find_moments, known_duration
from videoitg.writes import append_lines, write_whole

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# How frames are ranked (docs/fidelity.md, "Ranking"):
#   released: as the released evaluation wrapper ranks them. Its head runs in fp16, so each logit is an fp16
#             number; it sorts `logits.sigmoid()` of that fp16 tensor, which PyTorch computes in fp32 and rounds
#             to fp16. Key = fp16(sigmoid(fp16(logit))), descending; equal keys keep frame order (the CUDA sort
#             the wrapper runs keeps ties in index order at these sizes). fp16 has few values near 1 (every
#             logit above ~8.3 maps to 1.0), so a confident model produces ties and the earliest tied frames win.
#   exact:    by the logit itself, descending, ties to the earlier frame.
RANKING_RULES = ("released", "exact")
DEFAULT_RANKING_RULE = "released"
# Frames handed to a downstream video-LLM: the released selector's Top-32 ("ITG-32", what the paper evaluates its
# Video-LLMs with). One default for `score`, a served repository (`repo build` / `serve --top-k`) and the API.
DEFAULT_TOP_K = 32


def check_ranking_rule(rule: str) -> str:
    if rule not in RANKING_RULES:
        raise InputError(f"unknown ranking rule {rule[:64]!r}; choose one of {', '.join(RANKING_RULES)}")
    return rule


def sigmoid(logits: Sequence[float] | np.ndarray, dtype: Any = None) -> np.ndarray:
    """1 / (1 + exp(-x)) of each logit, computed in `dtype` (default float64): 0 or 1 where exp overflows, no
    warning. The one sigmoid of the project: relevance scores (in-process and served) and the released key."""
    import numpy as np  # here, not at the top: `videoitg --help` must not import numpy

    x = np.asarray(logits, dtype=np.float64 if dtype is None else dtype)
    with np.errstate(over="ignore"):
        return x.dtype.type(1.0) / (x.dtype.type(1.0) + np.exp(-x))


def released_scores(logits: Sequence[float] | np.ndarray) -> np.ndarray:
    """The released ranking key, float16: the logit rounded to fp16, its sigmoid computed in fp32, rounded to fp16
    (what `torch.sigmoid` does to an fp16 tensor). |logit| > 65504 is +-inf in fp16: the key is 1 or 0."""
    import numpy as np

    with np.errstate(over="ignore"):  # the cast to fp16 of a logit past its range
        half = np.asarray(logits, dtype=np.float64).astype(np.float16)
    return sigmoid(half, np.float32).astype(np.float16)


def rank_frames(logits: list[float] | np.ndarray, rule: str = DEFAULT_RANKING_RULE) -> list[int]:
    """Positions 0..T-1, most relevant first, under `rule` (RANKING_RULES); ties go to the earlier frame."""
    import numpy as np

    key = released_scores(logits) if check_ranking_rule(rule) == "released" else np.asarray(logits, np.float64)
    return np.argsort(-key, kind="stable").tolist()


@dataclass(frozen=True)
class SelectionOptions:
    """How a deployment picks frames from the scores when a request does not say: top-K, ranking rule, moment rule.
    Written into model parameters by `to_parameters` and read back, once, by `from_parameters`."""

    default_top_k: int = DEFAULT_TOP_K
    ranking_rule: str = DEFAULT_RANKING_RULE
    moment_params: MomentParams = DEFAULT_PARAMS

    def __post_init__(self) -> None:
        if isinstance(self.default_top_k, bool) or not isinstance(self.default_top_k, int) or self.default_top_k < 1:
            raise InputError(f"default_top_k must be an int >= 1, got {self.default_top_k!r}")
        check_ranking_rule(self.ranking_rule)

    def to_parameters(self) -> dict[str, str]:
        return {"default_top_k": str(self.default_top_k), "ranking_rule": self.ranking_rule,
                **self.moment_params.to_parameters()}

    @classmethod
    def from_parameters(cls, values: Mapping[str, str]) -> SelectionOptions:
        """`default_top_k`, `ranking_rule` and `moment_*` string parameters over the defaults (absent or empty: the
        default); InputError naming a bad one."""
        top_k = str(values.get("default_top_k") or "").strip()
        try:
            k = int(top_k) if top_k else cls.default_top_k
        except ValueError:
            raise InputError(f"default_top_k must be an int >= 1, got {top_k!r}") from None
        return cls(k, values.get("ranking_rule") or DEFAULT_RANKING_RULE, MomentParams.from_mapping(values))


@dataclass
class GroundingResult:
    """Per sampled frame, in chronological order: logit, original frame number, timestamp (seconds)."""

    logits: list[float]
    frame_indices: list[int]
    timestamps: list[float]
    instruction: str = ""
    video: str = ""
    ranking_rule: str = DEFAULT_RANKING_RULE  # how `ranking`, the top-K and the record order frames
    # The video's duration in seconds, from the container (None where it was not read): moments end by it.
    duration: float | None = None

    def __post_init__(self) -> None:
        if not len(self.logits) == len(self.frame_indices) == len(self.timestamps):
            raise ValueError("logits, frame_indices and timestamps must have one entry per sampled frame")
        check_ranking_rule(self.ranking_rule)
        self.duration = known_duration(self.duration)

    @property
    def scores(self) -> list[float]:
        """Sigmoid relevance in [0, 1]."""
        return sigmoid(self.logits).tolist()

    @property
    def ranking(self) -> list[int]:
        """Positions (0..T-1), most relevant first under `ranking_rule`; ties go to the earlier frame."""
        return rank_frames(self.logits, self.ranking_rule)

    @property
    def ranked_frame_indices(self) -> list[int]:
        return [self.frame_indices[i] for i in self.ranking]

    def top_k_positions(self, k: int) -> list[int]:
        """The k best positions, back in chronological order (what a downstream video-LLM is fed)."""
        return sorted(self.ranking[: max(0, k)])

    def top_k_frames(self, k: int) -> list[int]:
        return [self.frame_indices[i] for i in self.top_k_positions(k)]

    def positions(self, frames: Sequence[int]) -> list[int]:
        """The positions in the per-frame lists of sampled frame numbers `frames` (KeyError: one was not sampled)."""
        position = {n: i for i, n in enumerate(self.frame_indices)}
        return [position[n] for n in frames]

    @property
    def moments(self) -> list[Moment]:
        """Moments `(start_s, end_s, score)`, best first, by the default rule (`videoitg.moments`)."""
        return self.find_moments(DEFAULT_PARAMS)

    def find_moments(self, params: MomentParams = DEFAULT_PARAMS) -> list[Moment]:
        """The moments under `params`, inside [0, duration] when the duration is known."""
        return find_moments(self.scores, self.timestamps, params, self.duration)

    def to_record(self, doc_id: Any = None, video_path: str | None = None, picked: Sequence[int] | None = None,
                  moment_params: MomentParams = DEFAULT_PARAMS, **extra: Any) -> dict[str, Any]:
        """One results.jsonl object: the downstream keys first (`index` in ranking order, `logits` = sigmoid
        scores in that order rounded to 2 decimals, as the released wrapper writes them: the fp16 scores under
        the released rule), then our own fields (`scores` is the per-frame saliency; `moments` =
        [[start_s, end_s, score], ...], best first, inside [0, duration]; `duration` in seconds, or null where the
        container did not say; `top_k`, with `picked`: the picked frames' numbers, chronological, from positions
        such as `videoitg.request.options.select` gives)."""
        order = self.ranking
        scores = self.scores
        ranked = released_scores(self.logits).tolist() if self.ranking_rule == "released" else scores
        rec: dict[str, Any] = {
            "index": [self.frame_indices[i] for i in order],
            "logits": [round(ranked[i], 2) for i in order],
            "num_frames": 1,  # the released writer stores the number of visuals here, not a frame count
            "contexts": self.instruction,
            "video_path": record_video_path(video_path if video_path is not None else self.video),
            "doc_id": doc_id,
            "frame_indices": self.frame_indices,
            "timestamps": [round(t, 3) for t in self.timestamps],
            "scores": [round(s, 6) for s in scores],
            "ranking_rule": self.ranking_rule,
            "moments": [m.round() for m in find_moments(scores, self.timestamps, moment_params, self.duration)],
            "duration": None if self.duration is None else round(self.duration, 3),
        }
        if picked is not None:
            rec["top_k"] = [self.frame_indices[i] for i in picked]
        rec.update(extra)
        return rec


def record_video_path(video: str | os.PathLike) -> str:
    """`video_path` as every results.jsonl record stores it, whichever command wrote it (`score`, `batch`, the demo,
    the lmms-eval model): the absolute path with symlinks resolved, which is what a batch manifest's row resolves
    to, so two records of one file name it the same way wherever they were written from. A video given as bytes
    (no name) stays ""."""
    s = os.fspath(video)
    return os.path.realpath(s) if s else ""


def write_results_jsonl(path: str | Path, records: list[dict[str, Any]], append: bool = True) -> int:
    """Write `records` as JSON lines: appended after the file's last whole line (a torn tail is set aside in
    `<path>.torn`, `videoitg.writes.append_lines`), or (`append=False`) as the whole file. A record holding NaN or
    an infinity is not JSON: nothing is written (VideoITGError). Returns the bytes of a torn tail set aside."""
    try:
        lines = [json.dumps(r, allow_nan=False) for r in records]
    except ValueError as e:
        raise VideoITGError(f"a record for {path} holds a number that is not finite ({e}): nothing written") from None
    if append:
        return append_lines(path, lines)
    write_whole(path, "".join(line + "\n" for line in lines))
    return 0


def read_frame_indices_jsonl(path: str | Path) -> dict[Any, list[int]]:
    """Read results.jsonl the way the downstream consumers do: first line per doc_id wins, `index` only. A line that
    is not a JSON object (torn by a crash) is skipped and reported in the log."""
    out: dict[Any, list[int]] = {}
    skipped = 0
    for _, line, problem in text_lines(path):
        try:
            r = loads(line) if problem is None else None
        except JSONProblem:
            r = None
        if not isinstance(r, dict):
            skipped += 1
            continue
        if "doc_id" in r and isinstance(r.get("index"), list) and r["doc_id"] not in out:
            out[r["doc_id"]] = r["index"]
    if skipped:
        log.warning("%s: %d line(s) that are not JSON records skipped (a torn write?)", path, skipped)
    return out


def doc_id_problems(records: list[dict[str, Any]], path: str | Path | None = None) -> list[str]:
    """Why records written for lmms-eval's `frame_indices_jsonl` readers would be lost there. Those readers take
    `int(doc_id)` as the key and keep the first record per key, so a record without a doc_id, with one that is
    not an integer, or with one already in `path` (or earlier in `records`) is never read. Returns one warning
    per kind of problem (empty: none)."""
    seen: set[int] = set()
    if path is not None and Path(path).is_file():
        for _, line, problem in text_lines(path):
            try:
                r = loads(line) if problem is None else None
            except JSONProblem:  # a line no reader can use holds no doc_id
                continue
            key = _doc_key(r.get("doc_id")) if isinstance(r, dict) else None
            if key is not None:
                seen.add(key)
    missing, not_int, repeated = 0, [], []
    for r in records:
        d = r.get("doc_id")
        key = _doc_key(d)
        if d is None:
            missing += 1
        elif key is None:
            not_int.append(d)
        elif key in seen:
            repeated.append(d)
        else:
            seen.add(key)
    out = []
    if missing:
        out.append(f"{missing} record(s) have no doc_id: lmms-eval's frame_indices_jsonl readers key records by "
                   "doc_id and will not find them (pass the task's doc_id)")
    if not_int:
        out.append(f"doc_id {_some(not_int)} is not an integer: lmms-eval's readers key records by int(doc_id) "
                   "and will skip it")
    if repeated:
        where = f" in {path}" if path is not None else ""
        out.append(f"doc_id {_some(repeated)} already present{where}: lmms-eval's readers keep only the first "
                   "record per doc_id")
    return out


def _doc_key(d: Any) -> int | None:
    """The key lmms-eval's readers use: int(doc_id) ("3" and 3 are the same document), None if it has none."""
    if d is None or isinstance(d, bool):
        return None
    try:
        return int(d)
    except (TypeError, ValueError):
        return None


def _some(values: list[Any]) -> str:
    return ", ".join(repr(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")
