"""The Triton backend: client actors that send rows to running VideoITG servers.

Uses the serving package's client (`videoitg.serving.client.VideoITGClient`). Each Ray actor sends a
unit's rows to one endpoint, so the server's visual-feature cache sees a video's instructions back to
back (its CACHE_HIT output is what we count as a hit), with at most `max_in_flight` requests outstanding
per actor: N actors put at most N * max_in_flight requests on the servers. The video file is read once
per unit and its bytes are sent with each request. Sampling is the server's configuration.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from videoitg.batch.backends import BackendSpec, Outcome, error_record
from videoitg.batch.manifest import Row
from videoitg.errors import InputError


def _client_class():
    try:
        from videoitg.serving.client import VideoITGClient
    except ImportError as e:
        raise InputError("--server needs videoitg.serving.client (the serving package's Triton client), "
                         "which is not part of this build") from e
    return VideoITGClient


# Seconds between retries of a request that failed for the server's sake (down, restarting, a dead stub):
# about a minute in all, then the job stops instead of recording good rows as failed.
TRANSIENT_BACKOFF_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
READY_TIMEOUT_S = 30.0
ROW_FAULT_STATUS = {"StatusCode.INVALID_ARGUMENT", "400"}  # the request itself was bad


class ServerUnavailableError(RuntimeError):
    """The Triton server stayed unreachable: not the row's fault, so it must not be written as a row error."""


def is_transient(e: Exception) -> bool:
    """Connection failures, UNAVAILABLE and dead python-backend stubs are the server's trouble; a bad request
    (INVALID_ARGUMENT / HTTP 400) and other server-side errors (INTERNAL) are the row's outcome."""
    status = str(getattr(e, "status", None) or "")
    if status in ROW_FAULT_STATUS:
        return False
    if not status or status in ("StatusCode.UNAVAILABLE", "503") or "not healthy" in str(e):
        return True
    return False


class TritonBackend:
    def __init__(self, spec: BackendSpec) -> None:
        if not spec.servers:
            raise InputError("the Triton backend needs at least one --server HOST:PORT")
        self.cls = _client_class()
        self.spec = spec
        self.protocol = spec.extra.get("protocol", "grpc")
        for url in spec.servers:  # fail at actor start, not on every row, when a server is down
            self._wait_ready(url)
        self.pool = ThreadPoolExecutor(max_workers=max(1, spec.max_in_flight))
        self._local = threading.local()  # one client per (thread, endpoint): no sharing across threads
        self._rr = itertools.cycle(spec.servers)

    def _wait_ready(self, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """A server that just (re)started, or a gRPC channel still in reconnect backoff after an outage (gRPC
        shares subchannels per address inside a process), needs a few seconds: poll before giving up."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.cls(url, protocol=self.protocol) as c:
                if c.is_ready():
                    return
            if time.monotonic() > deadline:
                raise InputError(f"Triton server {url} is not ready (or has no VideoITG model) after {timeout_s:g} s")
            time.sleep(0.5)

    def _client(self, url: str) -> Any:
        clients = self._local.__dict__.setdefault("clients", {})
        if url not in clients:
            clients[url] = self.cls(url, protocol=self.protocol)
        return clients[url]

    def _one(self, url: str, data: bytes, row: Row) -> Outcome:
        doc_id = row.doc_id if isinstance(row.doc_id, int) and not isinstance(row.doc_id, bool) else None
        for wait in (*TRANSIENT_BACKOFF_S, None):
            try:
                served = self._client(url).infer(data, row.instruction, top_k=self.spec.top_k, doc_id=doc_id,
                                                 ranking_rule=self.spec.ranking_rule)
                break
            except Exception as e:  # noqa: BLE001 -- classified below
                if not is_transient(e):
                    return Outcome(row.row_id, False, error_record(row, "server", e))  # the row's own fault
                if wait is None:  # the server stayed away: stop the job, the row stays unfinished for a rerun
                    raise ServerUnavailableError(f"{url}: server unavailable after {len(TRANSIENT_BACKOFF_S)} "
                                                 f"retries ({e}); finished rows are saved, rerun to resume") from e
                self._local.__dict__.pop("clients", None)  # reconnect on the next try
                time.sleep(wait)
        rec = served.result.to_record(doc_id=row.doc_id, video_path=row.video, top_k=self.spec.top_k,
                                      row_id=row.row_id, **({"extra": row.extra} if row.extra else {}))
        return Outcome(row.row_id, True, rec, cache_hit=served.cache_hit)

    def score_unit(self, rows: list[Row]) -> list[Outcome]:
        url = next(self._rr)
        out: list[Outcome] = []
        by_video: dict[str, list[Row]] = {}
        for r in rows:
            by_video.setdefault(r.video, []).append(r)
        for video, vrows in by_video.items():
            try:
                data = Path(video).read_bytes()
            except OSError as e:
                out += [Outcome(r.row_id, False, error_record(r, "video", e)) for r in vrows]
                continue
            out += list(self.pool.map(lambda r, d=data: self._one(url, d, r), vrows))
        return out
