"""What a batch worker computes with: the in-process engine or a Triton endpoint.

A backend turns one unit (a video and some of its instructions) into one outcome per row. The
shared loop (`score_unit`) owns the rules every backend follows: prepare the video once (decode +
visual features: the feature cache), then score each instruction against it; a failure of the
video fails its rows, a failure of one instruction fails only that row, and the unit goes on.

Backends are built inside the Ray actor from a plain, picklable `BackendSpec`, so the model is
loaded once per actor and never shipped through the object store.
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

from videoitg.batch.manifest import Row
from videoitg.errors import InputError, VideoITGError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    kind: str = "inprocess"  # "inprocess" | "triton" | "factory"
    checkpoint: str | None = None
    device: str = "cpu"
    # None / "auto": the one default (videoitg.pipeline.default_dtype: float16 on a GPU as released, float32 on
    # CPU), resolved here so the output folder's fingerprint records what ran; a Triton backend: the server's
    dtype: str | None = None
    num_frames: int = 512
    target_fps: float = 1.0
    rule: str = "eval"
    top_k: int | None = None
    ranking_rule: str | None = None  # videoitg.outputs.RANKING_RULES; None: "released" (a server's own default)
    truncate: bool = False  # in-process: cut an over-long instruction as the released model does (else refused)
    servers: tuple[str, ...] = ()
    max_in_flight: int = 4  # concurrent requests per Triton client actor
    torch_threads: int = 1
    factory: str | None = None  # "module:callable" -> Backend, for extensions
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sampling_options(self.num_frames, self.target_fps, self.rule, in_process=self.kind == "inprocess")
        if self.kind == "triton":
            if self.truncate:
                raise InputError("instruction truncation is an in-process option: a server always refuses an "
                                 "over-long instruction (docs/fidelity.md)")
            if self.dtype in (None, "auto"):
                object.__setattr__(self, "dtype", "server")
            return
        from videoitg.pipeline import dtype_name

        object.__setattr__(self, "dtype", dtype_name(self.dtype, self.device))


def check_sampling_options(num_frames: Any, target_fps: Any, rule: Any, in_process: bool) -> None:
    """InputError naming the option when the sampling options cannot run: not a valid `SamplingParams`, or (for
    the in-process engine) more frames than this environment's `max_sampled_frames` allows. Checked where the
    options are given, not first inside a worker after start-up."""
    from videoitg.sampling import SamplingParams

    try:
        params = SamplingParams(num_frames, target_fps, rule)
        if in_process:
            from videoitg.limits import Limits

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


class Backend(Protocol):
    def prepare(self, video: str) -> Any:
        """Instruction-independent work for one video (decode + visual features). `video` reaches the file the
        manifest checked (on Linux a /proc/self/fd path, valid during the call); records name `row.video`."""

    def score(self, prepared: Any, row: Row) -> dict[str, Any]:
        """The results.jsonl record of one row against a prepared video."""


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


def score_unit(backend: Backend, rows: list[Row]) -> list[Outcome]:
    """Rows of one unit all share a video (grouping) or the unit is a single row. Each record carries its row's
    `input_hash` (what it was made from), so a rerun can tell a row that changed under its id."""
    if hasattr(backend, "score_unit"):  # a backend with its own scheduling (e.g. concurrent client calls)
        out = backend.score_unit(rows)  # type: ignore[attr-defined]
    else:
        out = _score_unit(backend, rows)
    hashes = {r.row_id: r.input_hash for r in rows}
    for o in out:
        if hashes.get(o.row_id):
            o.record["input_hash"] = hashes[o.row_id]
    return out


def _prepare(backend: Backend, video: str) -> Any:
    """`backend.prepare` on the file the manifest checked: opened once here and checked as opened, and the decoder
    given a name that reaches that file (`videoitg.paths.pinned`), so a symlink swapped in later leads nowhere."""
    from videoitg.decode.errors import DecodeTimeoutError
    from videoitg.paths import pinned

    with pinned(video, leave_open_on=(DecodeTimeoutError,)) as source:
        try:
            return backend.prepare(source)
        except VideoITGError as e:
            if source == video:
                raise
            try:  # the same error, naming the row's path rather than the descriptor
                renamed = type(e)(str(e).replace(source, video))
            except Exception:  # noqa: BLE001 -- an error type with another constructor keeps its own words
                raise e from None
            raise renamed from None


def _score_unit(backend: Backend, rows: list[Row]) -> list[Outcome]:
    out: list[Outcome] = []
    by_video: dict[str, Any] = {}
    for row in rows:
        hit = row.video in by_video
        t0 = time.perf_counter()
        if not hit:
            try:
                by_video[row.video] = ("ok", _prepare(backend, row.video))
            except Exception as e:  # noqa: BLE001 -- one bad video must not stop the run
                _log_unexpected(e)
                by_video[row.video] = ("error", e)
        t1 = time.perf_counter()
        status, prepared = by_video[row.video]
        if status == "error":
            out.append(Outcome(row.row_id, False, error_record(row, "video", prepared), prepare_s=t1 - t0))
            continue
        try:
            rec, ok = backend.score(prepared, row), True
        except Exception as e:  # noqa: BLE001
            _log_unexpected(e)
            rec, ok = error_record(row, "score", e), False
        out.append(Outcome(row.row_id, ok, rec, cache_hit=hit, prepare_s=t1 - t0,
                           score_s=time.perf_counter() - t1))
    return out


def make_backend(spec: BackendSpec) -> Backend:
    if spec.kind == "inprocess":
        from videoitg.batch.engine_backend import InProcessBackend

        return InProcessBackend(spec)
    if spec.kind == "triton":
        from videoitg.batch.triton_backend import TritonBackend

        return TritonBackend(spec)
    if spec.kind == "factory":
        if not spec.factory or ":" not in spec.factory:
            raise InputError(f"backend factory must be 'module:callable', got {spec.factory!r}")
        mod, name = spec.factory.split(":", 1)
        return getattr(importlib.import_module(mod), name)(spec)
    raise InputError(f"unknown backend kind {spec.kind!r}")
