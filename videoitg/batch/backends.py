"""What a batch worker computes with: the in-process engine or a Triton endpoint.

Every backend turns one unit (a video and some of its instructions) into one outcome per row (`Backend.score_unit`);
a failure of the video fails its rows, a failure of one instruction fails only that row, and the unit goes on. The
in-process backend follows `prepare_then_score`: prepare the video once (decode + visual features), then score each
instruction against it; the Triton backend sends the first request alone (it fills the server's feature cache) and
the rest together.

Backends are built inside the Ray actor from a plain, picklable `BackendSpec`, so the model is
loaded once per actor and never shipped through the object store.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from videoitg.batch.manifest import Row
from videoitg.errors import InputError, VideoITGError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    kind: str = "inprocess"  # "inprocess" | "triton"
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
    protocol: str = "grpc"  # Triton: "grpc" | "http"

    def __post_init__(self) -> None:
        if self.kind == "triton":
            if self.truncate:
                raise InputError("instruction truncation is an in-process option: a server always refuses an "
                                 "over-long instruction (docs/fidelity.md)")
            if self.dtype in (None, "auto"):
                object.__setattr__(self, "dtype", "server")
            return
        from videoitg.pipeline import dtype_name

        object.__setattr__(self, "dtype", dtype_name(self.dtype, self.device))


@dataclass
class Outcome:
    row_id: str
    ok: bool
    record: dict[str, Any]  # results.jsonl record, or errors.jsonl record
    cache_hit: bool = False  # scored from visual features prepared for an earlier row
    prepare_s: float = 0.0  # decode + visual features (charged to the row that paid for them)
    score_s: float = 0.0  # the instruction-dependent half


class Backend(Protocol):
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


def prepare_then_score(prepare: Callable[[str], Any], score: Callable[[Any, Row], dict[str, Any]],
                       rows: list[Row]) -> list[Outcome]:
    """Each video of the unit prepared once (`prepare`), then each row scored against it (`score`)."""
    out: list[Outcome] = []
    by_video: dict[str, Any] = {}
    for row in rows:
        hit = row.video in by_video
        t0 = time.perf_counter()
        if not hit:
            try:
                by_video[row.video] = ("ok", prepare(row.video))
            except Exception as e:  # noqa: BLE001 -- one bad video must not stop the run
                _log_unexpected(e)
                by_video[row.video] = ("error", e)
        t1 = time.perf_counter()
        status, prepared = by_video[row.video]
        if status == "error":
            out.append(Outcome(row.row_id, False, error_record(row, "video", prepared), prepare_s=t1 - t0))
            continue
        try:
            rec, ok = score(prepared, row), True
        except Exception as e:  # noqa: BLE001
            _log_unexpected(e)
            rec, ok = error_record(row, "score", e), False
        out.append(Outcome(row.row_id, ok, rec, cache_hit=hit, prepare_s=t1 - t0,
                           score_s=time.perf_counter() - t1))
    return out
