"""What a batch worker scores with (`ScorerSpec`: the in-process engine or Triton servers) and the per-unit loop
they share: one outcome per row, a failed video fails its rows, a failed instruction only its own."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from videoitg.decode.errors import DecodeTimeoutError
from videoitg.errors import InputError, VideoITGError
from videoitg.manifest.rows import Row
from videoitg.paths import pinned
from videoitg.precision import resolve_dtype
from videoitg.request.limits import Limits
from videoitg.request.options import NO_OPTIONS, SELECTION, RequestOptions
from videoitg.sampling import SamplingParams

log = logging.getLogger(__name__)


KINDS = ("inprocess", "triton")


@dataclass(frozen=True)
class ScorerSpec:
    """Plain and picklable: each Ray actor builds its scorer from it, so the model loads once per actor and never
    travels through the object store."""

    kind: str = "inprocess"  # KINDS
    checkpoint: str | None = None
    device: str = "cpu"
    # None / "auto": the one default (videoitg.pipeline.scorer.default_dtype: float16 on a GPU as released, float32 on
    # CPU), resolved here so the output folder's fingerprint records what ran; with kind "triton": the server's
    dtype: str | None = None
    num_frames: int = 512
    target_fps: float = 1.0
    rule: str = "eval"
    # the run's request options (--top-k, --ranking-rule, ...); a manifest row may name its own in columns of their
    # names (`row_options`). Unnamed: the engine's defaults (a server's own).
    options: RequestOptions = NO_OPTIONS
    truncate: bool = False  # in-process: cut an over-long instruction as the released model does (else refused)
    servers: tuple[str, ...] = ()
    max_in_flight: int = 4  # concurrent requests per Triton client actor
    torch_threads: int = 1
    protocol: str = "grpc"  # Triton: "grpc" | "http"
    # Triton: the servers' key (a file each worker reads: never the key itself, which the run's summary would hold;
    # None: $VIDEOITG_API_KEY) and TLS (a CA file, or the system's CAs)
    api_key_file: str | None = None
    ca_file: str | None = None
    tls: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown scorer kind {self.kind!r}: {' or '.join(KINDS)}")
        check_sampling_options(self.num_frames, self.target_fps, self.rule, in_process=self.kind == "inprocess")
        if self.kind == "triton":
            if self.truncate:
                raise InputError("instruction truncation is an in-process option: a server always refuses an "
                                 "over-long instruction (docs/fidelity.md)")
            if self.dtype in (None, "auto"):
                object.__setattr__(self, "dtype", "server")
            return
        object.__setattr__(self, "dtype", resolve_dtype(self.dtype, self.device))  # no torch: the driver has none


def check_sampling_options(num_frames: Any, target_fps: Any, rule: Any, in_process: bool) -> None:
    """InputError naming the option when the sampling options cannot run: not a valid `SamplingParams`, or (for
    the in-process engine) more frames than this environment's `max_sampled_frames` allows. Checked where the
    options are given, not first inside a worker after start-up."""
    try:
        params = SamplingParams(num_frames, target_fps, rule)
        if in_process:
            Limits.from_env().check_sampling(params)
    except InputError as e:
        raise InputError(f"sampling options (--num-frames, --target-fps, --sampling-rule): {e}") from None


@dataclass
class Outcome:
    row_id: str
    ok: bool
    record: dict[str, Any]  # results.jsonl record, or errors.jsonl record
    cache_hit: bool = False  # scored from visual features prepared for an earlier row
    prepare_s: float = 0.0  # decode + visual features (charged to the row that paid for them)
    score_s: float = 0.0  # the instruction-dependent half


class UnitScorer(Protocol):
    def score_unit(self, rows: list[Row]) -> list[Outcome]:
        """One outcome per row of a unit (rows that share a video, or a single row), in order."""


def error_record(row: Row, stage: str, exc: BaseException) -> dict[str, Any]:
    return {
        "row_id": row.row_id, "line": row.line, "stage": stage,
        "error_type": type(exc).__name__, "reason": str(exc) or repr(exc),
        "row": {"video": row.video, "instruction": row.instruction, "doc_id": row.doc_id, **row.extra},
    }


def _log_unexpected(exc: BaseException) -> None:
    # Typed errors are the row's fault; anything else may be a bug: keep the traceback in the worker log.
    if not isinstance(exc, VideoITGError):
        log.warning("unexpected error while scoring:\n%s", "".join(traceback.format_exception(exc)))


def score_unit(scorer: UnitScorer, rows: list[Row]) -> list[Outcome]:
    """`scorer.score_unit`, each record stamped with its row's `input_hash` (what it was made from), so a rerun can
    tell a row that changed under its id."""
    out = scorer.score_unit(rows)
    hashes = {r.row_id: r.input_hash for r in rows}
    for o in out:
        if hashes.get(o.row_id):
            o.record["input_hash"] = hashes[o.row_id]
    return out


def _prepare_pinned(prepare: Callable[[str], Any], video: str) -> Any:
    """`prepare` on the file the manifest checked: opened once here and checked as opened, and the decoder given a
    name that reaches that file (`videoitg.paths.pinned`), so a symlink swapped in later leads nowhere."""
    with pinned(video, leave_open_on=(DecodeTimeoutError,)) as source:
        try:
            return prepare(source)
        except VideoITGError as e:
            if source == video:
                raise
            try:  # the same error, naming the row's path rather than the descriptor
                renamed = type(e)(str(e).replace(source, video))
            except Exception:  # an error type with another constructor keeps its own words
                raise e from None
            raise renamed from None


def row_options(options: RequestOptions, row: Row) -> RequestOptions:
    """The options a row is scored with: the run's, and those the row names in columns of their own (`top_k`,
    `ranking_rule`, ...: `videoitg.request.options.SELECTION`; a CSV's text read as the option's kind)."""
    named = {k: v for k, v in row.extra.items() if k in SELECTION}
    if not named:
        return options
    return replace(options, **RequestOptions.from_text(named, f"manifest row {row.line}:").given())


def prepare_then_score(prepare: Callable[[str], Any], score: Callable[[Any, Row], dict[str, Any]],
                       rows: list[Row]) -> list[Outcome]:
    """Each video of the unit prepared once (`prepare`, on the file as checked), then each row scored against it."""
    out: list[Outcome] = []
    by_video: dict[str, Any] = {}
    for row in rows:
        hit = row.video in by_video
        t0 = time.perf_counter()
        if not hit:
            try:
                by_video[row.video] = ("ok", _prepare_pinned(prepare, row.video))
            except Exception as e:  # one bad video must not stop the run
                _log_unexpected(e)
                by_video[row.video] = ("error", e)
        t1 = time.perf_counter()
        status, prepared = by_video[row.video]
        if status == "error":
            out.append(Outcome(row.row_id, False, error_record(row, "video", prepared), prepare_s=t1 - t0))
            continue
        try:
            rec, ok = score(prepared, row), True
        except Exception as e:  # the row's failure, recorded
            _log_unexpected(e)
            rec, ok = error_record(row, "score", e), False
        out.append(Outcome(row.row_id, ok, rec, cache_hit=hit, prepare_s=t1 - t0,
                           score_s=time.perf_counter() - t1))
    return out
