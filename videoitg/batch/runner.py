"""The batch driver: manifest -> units -> Ray Data actor pool -> atomic shards -> merged outputs. Only the driver
writes files (workers return records through Ray's object store): no shared file system is needed, and the
exactly-once argument stays short (`store.py`)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from videoitg.batch.ray_env import RayOptions, init_ray
from videoitg.batch.scorers import ScorerSpec, UnitScorer, score_unit
from videoitg.batch.store import SUMMARY, OutputStore, atomic_write_json, jsonl_line
from videoitg.manifest.grouping import make_units
from videoitg.manifest.rows import Manifest, Rejected, Row
from videoitg.outputs import DEFAULT_RANKING_RULE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOptions:
    out_dir: str
    scorer: ScorerSpec
    ray: RayOptions = field(default_factory=RayOptions)
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    group_by_video: bool = True
    max_group_rows: int = 64
    shard_rows: int = 256  # flush a shard after this many finished rows ...
    flush_seconds: float = 10.0  # ... or this long after the oldest unflushed row
    retry_errors: bool = False  # rerun rows that failed in an earlier session
    force: bool = False  # accept an --out written with a different configuration
    progress: bool = True


def make_scorer(spec: ScorerSpec) -> UnitScorer:
    """The scorer `spec` names (`ScorerSpec` refuses any other kind). Imported here: an in-process scorer loads
    torch and the model, a Triton one the client libraries; an actor loads only its own."""
    if spec.kind == "triton":
        from videoitg.batch.servers import TritonScorer

        return TritonScorer(spec)
    from videoitg.batch.inprocess import InProcessScorer

    return InProcessScorer(spec)


class ScoreActor:
    """One per worker (GPU or CPU slot): loads the model once, then scores units for its lifetime."""

    def __init__(self, spec: ScorerSpec) -> None:
        if spec.kind == "inprocess":
            import torch  # in-process actors only (see make_scorer)

            torch.set_num_threads(max(1, spec.torch_threads))
        self.scorer = make_scorer(spec)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"  # pids alone collide across cluster nodes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        out: list[str] = []
        for unit_json in batch["unit"]:
            rows = [Row.from_json(r) for r in json.loads(unit_json)]
            for o in score_unit(self.scorer, rows):
                # jsonl_line: Ray's Arrow blocks hold UTF-8 strings only (a row may carry a non-UTF-8 file name)
                out.append(jsonl_line({"row_id": o.row_id, "ok": o.ok, "hit": o.cache_hit, "worker": self.worker,
                                       "prepare_s": o.prepare_s, "score_s": o.score_s, "record": o.record}))
        return {"out": out}


def fingerprint(opts: BatchOptions) -> dict[str, Any]:
    """What must match for results from two sessions to belong in one output file."""
    b = opts.scorer
    fp: dict[str, Any] = {"scorer": b.kind, "num_frames": b.num_frames, "target_fps": b.target_fps,
                          "rule": b.rule, "dtype": b.dtype, **_selection(b)}
    if b.truncate:  # only when asked for: folders written without the option keep their fingerprint
        fp["truncate_instruction"] = True
    if b.kind == "inprocess" and b.checkpoint:
        from videoitg.model.files import checkpoint_identity

        fp["checkpoint"] = checkpoint_identity(b.checkpoint)  # contents, not path: moved weights still match
    elif b.kind == "triton":
        # Sampling and weights are the servers' configuration; the endpoints stand in for them.
        fp = {"scorer": b.kind, "servers": sorted(b.servers), **_selection(b)}
    return fp


def _selection(b: ScorerSpec) -> dict[str, Any]:
    """The run's selection options in its fingerprint: top_k (None: not named), the rule the records are ranked by
    (the one asked for, else the engine's default: a server's own), and any other option it names."""
    given = b.options.given()
    rule = given.pop("ranking_rule", None) or ("server default" if b.kind == "triton" else DEFAULT_RANKING_RULE)
    return {"top_k": given.pop("top_k", None), "ranking_rule": rule, **given}


def _rejected_record(r: Rejected) -> dict[str, Any]:
    return {"row_id": r.row_id if r.row_id is not None else f"line-{r.line}", "line": r.line,
            "stage": "manifest", "error_type": r.error_type, "reason": r.reason, "row": r.raw}


class StopRequested(BaseException):
    """SIGINT or SIGTERM reached the driver. A BaseException, so no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalStop:
    """The driver's own SIGINT/SIGTERM handling (a Kubernetes or Slurm stop sends SIGTERM): the first signal stops
    taking work by raising `StopRequested` in the main thread, at once or, if a shard is being written, right after
    it; the driver then writes the rows it already has and exits. Later signals are ignored, so that last write is
    not cut short. Handlers are restored on exit. `ray.init` installs Ray's own SIGTERM handler (it aborts the
    process), so the runner calls `install()` again once Ray is up."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferred = 0
        self._raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalStop:
        self._old = {s: signal.getsignal(s) for s in self.SIGNALS}
        return self.install()

    def install(self) -> SignalStop:
        for s in self.SIGNALS:
            signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            return  # already stopping
        self.signum = signum
        if not self._deferred:
            self._raised = True
            raise StopRequested(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal during the block is raised when it ends (a shard write is never interrupted)."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if not self._deferred and self.signum is not None and not self._raised:
            self._raised = True
            raise StopRequested(self.signum)


class _Flusher:
    """Buffers finished rows on the driver and writes them as atomic shards."""

    def __init__(self, store: OutputStore, shard_rows: int, flush_seconds: float,
                 stop: SignalStop | None = None) -> None:
        self.store, self.shard_rows, self.flush_seconds = store, shard_rows, flush_seconds
        self.stop = stop
        self.results: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.oldest: float | None = None

    def add(self, ok: bool, record: dict[str, Any]) -> None:
        (self.results if ok else self.errors).append(record)
        if self.oldest is None:
            self.oldest = time.monotonic()
        if (len(self.results) + len(self.errors) >= self.shard_rows
                or time.monotonic() - self.oldest >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        with self.stop.deferred() if self.stop is not None else contextlib.nullcontext():
            self.store.write_shard(self.results, self.errors)
            self.results, self.errors, self.oldest = [], [], None


# A rate needs time to be one: results arrive in bursts (a unit's rows at once, a block of units at once), so rows
# per second are measured only once MIN_RATE_SPAN_S have passed since the first result, and the rows of the first
# burst (those within BURST_S of it) are not counted: they finished during start-up, not after it.
MIN_RATE_SPAN_S = 2.0
BURST_S = 0.25


@dataclass
class _Tally:
    """What the driver learns from the result stream."""

    ok: int = 0
    failed: int = 0
    hits: int = 0
    prepare_s: float = 0.0
    score_s: float = 0.0
    workers: set[str] = field(default_factory=set)
    t_first: float | None = None  # first / last finished row: start-up (Ray + model load) vs steady rate
    t_last: float | None = None
    first_burst: int = 0  # rows that arrived with the first result

    def add(self, msg: dict[str, Any]) -> None:
        self.t_last = time.perf_counter()
        if self.t_first is None:
            self.t_first = self.t_last
        if self.t_last - self.t_first <= BURST_S:
            self.first_burst += 1
        self.ok += msg["ok"]
        self.failed += not msg["ok"]
        self.hits += msg["hit"]
        self.prepare_s += msg.get("prepare_s", 0.0)
        self.score_s += msg.get("score_s", 0.0)
        self.workers.add(msg["worker"])

    def steady_rate(self, now: float | None = None) -> float | None:
        """Rows per second after start-up: rows that finished after the first result's burst, over the time from
        the first result to `now` (default: the last result). None while that span is under MIN_RATE_SPAN_S or no
        row came after the burst: too short to be a rate (a resumed run with a few rows left, one burst)."""
        if self.t_first is None or self.t_last is None:
            return None
        span = (self.t_last if now is None else now) - self.t_first
        rows = self.ok + self.failed - self.first_burst
        return rows / span if span >= MIN_RATE_SPAN_S and rows > 0 else None


class _Progress:
    """The driver's progress bar (tqdm on stderr): what the run is waiting for before the first row (Ray start-up,
    the workers loading the model), then rows done, ok / failed and the steady rate with the time left once it can
    be measured. The elapsed time keeps moving while nothing arrives. Lines printed meanwhile (Ray forwards the
    workers' output to the driver's stdout and stderr) go above the bar instead of through it."""

    TICK_S = 1.0

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self._stderr, self._stdout = sys.stderr, sys.stdout
        self.bar = tqdm(total=total, unit="row", desc="batch", disable=not enabled, dynamic_ncols=True,
                        file=self._stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                        "[{elapsed}{postfix}]")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            sys.stdout = _AboveBar(self._stdout, self._stderr)
            sys.stderr = _AboveBar(self._stderr, self._stderr)
            self._ticker = threading.Thread(target=self._tick, name="videoitg-batch-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.enabled:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = self._stdout, self._stderr
        self.bar.close()

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK_S):
            self.bar.refresh()

    def phase(self, text: str) -> None:
        """What the run is doing before its first row."""
        self.bar.set_postfix_str(text)

    def row(self, tally: _Tally) -> None:
        left = (self.bar.total or 0) - (tally.ok + tally.failed)
        rate = tally.steady_rate(time.perf_counter())
        pace = (f"{rate:.2f} rows/s, {_clock(left / rate)} left" if rate else
                f"rate after {MIN_RATE_SPAN_S:g} s of results")
        self.bar.set_postfix_str(f"ok {tally.ok}, failed {tally.failed}; {pace}", refresh=False)
        self.bar.update(1)  # after the counts: the line drawn shows them with this row


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _AboveBar(io.TextIOBase):
    """A text stream whose whole lines are written to `target` with the progress bar (on `bar_stream`) cleared
    first and drawn again after, so a line printed while the bar shows does not land inside it."""

    def __init__(self, target: Any, bar_stream: Any) -> None:
        self.target, self.bar_stream = target, bar_stream
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            self._pending += s
            if "\n" not in self._pending:
                return len(s)
            lines, _, self._pending = self._pending.rpartition("\n")
        with tqdm.external_write_mode(file=self.bar_stream):
            self.target.write(lines + "\n")
            self.target.flush()
        return len(s)

    def flush(self) -> None:
        with self._lock:
            rest, self._pending = self._pending, ""
        if rest:
            with tqdm.external_write_mode(file=self.bar_stream):
                self.target.write(rest)
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.target, "encoding", "utf-8")


def run_batch(manifest: Manifest, opts: BatchOptions, stop: SignalStop | None = None) -> dict[str, Any]:
    """Score every not-yet-finished row of `manifest`; returns the summary (also in summary.json). With `stop`,
    a signal ends the run with `StopRequested` after the finished rows are written."""
    store = OutputStore(opts.out_dir, fingerprint(opts), force=opts.force)
    try:
        return _run(manifest, opts, store, stop)
    finally:
        store.close()


def _run(manifest: Manifest, opts: BatchOptions, store: OutputStore, stop: SignalStop | None = None
         ) -> dict[str, Any]:
    t_start = time.perf_counter()
    current = {r.row_id: r.input_hash for r in manifest.rows}  # a row changed under its id is not done
    state = store.scan(current)
    done = state.done(opts.retry_errors)
    todo = [r for r in manifest.rows if r.row_id not in done]
    if state.changed:
        log.warning("%d row(s) changed since they were scored (instruction, video file or passed-through fields "
                    "under the same id): scoring them again; their earlier records are dropped", len(state.changed))
    units = make_units(todo, opts.group_by_video, opts.max_group_rows)
    summary: dict[str, Any] = {
        "manifest": str(manifest.path), "out": str(store.dir), "session": store.session,
        "rows_in_manifest": len(manifest.rows) + len(manifest.rejected),
        "rows_rejected_by_manifest": len(manifest.rejected),
        "rows_already_done": len(manifest.rows) - len(todo),
        "rows_changed": len(state.changed),
        "rows_todo": len(todo), "units": len(units), "videos": len({r.video for r in todo}),
        "workers": opts.workers, "group_by_video": opts.group_by_video,
    }
    tally = _Tally()
    t_work = time.perf_counter()
    if units:
        flusher = _Flusher(store, opts.shard_rows, opts.flush_seconds, stop)
        progress = _Progress(len(todo), opts.progress)
        progress.phase("joining Ray" if opts.ray.address is not None else "starting Ray")
        try:
            with progress:
                # (tests replace _stream with a two-argument stand-in; only a real run passes the signal handler)
                stream = _stream(units, opts) if stop is None else _stream(units, opts, stop=stop,
                                                                            phase=progress.phase)
                for line in stream:
                    # A signal while a received row is being recorded takes effect once it is in the buffer.
                    with stop.deferred() if stop is not None else contextlib.nullcontext():
                        msg = json.loads(line)
                        tally.add(msg)
                        flusher.add(msg["ok"], msg["record"])
                        progress.row(tally)
        finally:
            # Also on Ctrl-C / errors: what finished is kept, the rest is redone on resume.
            flusher.flush()
    t_end = time.perf_counter()
    merged = store.merge([r.row_id for r in manifest.rows], [_rejected_record(r) for r in manifest.rejected],
                         current)
    scored = tally.ok + tally.failed
    t_first = tally.t_first
    summary.update({
        "rows_ok": tally.ok, "rows_failed": tally.failed, "cache_hits": tally.hits,
        "cache_hit_rate": round(tally.hits / scored, 4) if scored else 0.0,
        "workers_used": len(tally.workers),
        "work_seconds": round(t_end - t_work, 3),
        "startup_seconds": round(t_first - t_work, 3) if t_first is not None else None,
        "rows_per_second": round(scored / (t_end - t_work), 3) if scored else 0.0,
        # Rows after the first result's burst, over the time after it (Ray and model start-up excluded); null when
        # the results span under MIN_RATE_SPAN_S: too few to measure a rate.
        "steady_rows_per_second": round(steady, 3) if (steady := tally.steady_rate()) is not None else None,
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        # Worker seconds summed over all workers: where the time goes (decode + vision vs the LLM half).
        "worker_seconds": {"prepare": round(tally.prepare_s, 3), "score": round(tally.score_s, 3)},
        "merged": merged, "options": _jsonable(opts),
    })
    atomic_write_json(store.dir / SUMMARY, summary)
    return summary


def _jsonable(opts: BatchOptions) -> dict[str, Any]:
    d = asdict(opts)
    d["scorer"]["servers"] = list(opts.scorer.servers)
    return d


def _stream(units: list[list[Row]], opts: BatchOptions, stop: SignalStop | None = None,
            phase: Callable[[str], None] | None = None):
    """Yield one JSON message per row as workers finish them (Ray Data streaming execution). `phase` is told what
    the run waits for before the first row."""
    import ray.data  # optional dependency (extra 'batch'), and slow to import: only a run needs it

    init_ray(_ray_resources(opts))
    if stop is not None:
        stop.install()  # over the handlers ray.init installed
    if phase is not None:
        workers = f"{opts.workers} workers" if opts.workers > 1 else "the worker"
        phase(f"Ray is up; starting {workers} (each loads the model before the first row)")
    items = [{"unit": jsonl_line([r.to_json() for r in u])} for u in units]
    # One unit per block up to a cap: blocks are what Ray hands to actors, so small blocks balance load
    # and bring results back early; the cap bounds per-block overhead for very large manifests.
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), 2000))
    ds = ds.map_batches(
        ScoreActor,
        fn_constructor_args=(opts.scorer,),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=opts.workers),
        num_cpus=opts.cpus_per_worker,
        num_gpus=opts.gpus_per_worker or None,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        for line in batch["out"]:
            yield str(line)


def _ray_resources(opts: BatchOptions) -> RayOptions:
    r = opts.ray
    if r.address is not None or r.num_cpus is not None:
        return r
    # A private local Ray: exactly the slots the pool needs (plus what the machine has, if more).
    need = int(np.ceil(opts.workers * opts.cpus_per_worker))
    cpus = max(need, os.cpu_count() or 1)
    gpus = int(np.ceil(opts.workers * opts.gpus_per_worker)) if opts.gpus_per_worker else r.num_gpus
    return dataclasses.replace(r, num_cpus=cpus, num_gpus=gpus)
