"""The Triton backend: client actors that send rows to running VideoITG servers.

This is the seam to `videoitg.serving.client` (the serving package's client). Each Ray actor owns
one client per endpoint and keeps at most `max_in_flight` requests outstanding, so N actors put at
most N * max_in_flight requests on the servers. Rows of one video are sent back to back so the
server's visual-feature cache sees them together (its hit rate, not ours, is what grouping buys here).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from videoitg.batch.backends import BackendSpec, Outcome, error_record
from videoitg.batch.manifest import Row
from videoitg.errors import InputError


def _load_client_module():
    try:
        from videoitg.serving import client  # type: ignore[attr-defined]
    except ImportError as e:
        raise InputError(
            "--server needs videoitg.serving.client (the Triton client of the serving package), "
            "which is not part of this build"
        ) from e
    return client


class TritonBackend:
    def __init__(self, spec: BackendSpec) -> None:
        if not spec.servers:
            raise InputError("the Triton backend needs at least one --server HOST:PORT")
        client = _load_client_module()
        self.clients = [client.GroundingClient(url) for url in spec.servers]
        self.spec = spec
        self.pool = ThreadPoolExecutor(max_workers=max(1, spec.max_in_flight))
        self._rr = itertools.cycle(range(len(self.clients)))

    def _one(self, client: Any, row: Row) -> Outcome:
        try:
            result = client.score(row.video, row.instruction, num_frames=self.spec.num_frames,
                                  target_fps=self.spec.target_fps)
        except Exception as e:  # noqa: BLE001 -- per-row failure, the unit goes on
            return Outcome(row.row_id, False, error_record(row, "server", e))
        rec = result.to_record(doc_id=row.doc_id, video_path=row.video, top_k=self.spec.top_k, row_id=row.row_id)
        return Outcome(row.row_id, True, rec)

    def score_unit(self, rows: list[Row]) -> list[Outcome]:
        client = self.clients[next(self._rr)]  # one endpoint per unit keeps a video on one server's cache
        return list(self.pool.map(lambda r: self._one(client, r), rows))
