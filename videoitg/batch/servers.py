"""The batch scorer against running VideoITG servers: every row of a video goes to the server that ranks first for
its digest (`videoitg.client.routing.ServerPool`), the first alone (it fills the feature cache), the rest together;
when no server answers for about a minute (`client.routing.BACKOFF_S`) the job stops and the rows stay for the rerun."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from videoitg.batch.scorers import Outcome, ScorerSpec, error_record, row_options
from videoitg.client import routing
from videoitg.client.kserve import KeyRefusedError
from videoitg.client.routing import ServerPool, ServerUnavailableError, routing_key
from videoitg.contract.access import ClientAccess
from videoitg.errors import InputError
from videoitg.manifest.grouping import group_by_video
from videoitg.manifest.rows import Row
from videoitg.paths import open_resolved
from videoitg.request.options import records_picks

log = logging.getLogger(__name__)
__all__ = ["TritonScorer", "ServerUnavailableError"]

READY_TIMEOUT_S = 30.0


def read_checked(video: str) -> bytes:
    """The bytes of the file the manifest checked: opened once and checked as opened (`videoitg.paths`)."""
    fd = open_resolved(video)
    with os.fdopen(fd, "rb") as f:
        return f.read()


class TritonScorer:
    def __init__(self, spec: ScorerSpec) -> None:
        if not spec.servers:
            raise InputError("scoring against Triton servers needs at least one --server HOST:PORT")
        self.spec = spec
        access = ClientAccess.of(api_key_file=spec.api_key_file, ca_file=spec.ca_file, tls=spec.tls)
        self.servers = ServerPool(spec.servers, protocol=spec.protocol, backoff_s=routing.BACKOFF_S,
                                  access=access)  # about a minute in all, then the job stops: the rows stay
        # Fail at actor start, not on every row, when no server is up; one that is down now is probed later.
        ready = self.servers.wait_ready(READY_TIMEOUT_S)
        if len(ready) < len(self.servers.servers):
            log.warning("Triton servers not ready at start (tried again later): %s",
                        ", ".join(u for u in self.servers.servers if u not in ready))
        self.pool = ThreadPoolExecutor(max_workers=max(1, spec.max_in_flight))

    def _one(self, data: bytes, key: str, row: Row) -> Outcome:
        try:
            options = row_options(self.spec.options, row)
            served, _ = self.servers.infer(data, row.instruction, options, key=key, path=row.video)
        except (ServerUnavailableError, KeyRefusedError):
            raise  # the servers' trouble, or a key they refuse: stop the job, the row stays unfinished for a rerun
        except Exception as e:  # the pool re-sends server failures; what is left is the row's own
            return Outcome(row.row_id, False, error_record(row, "server", e))
        result = served.result
        picked = served.picked() if records_picks(options) else None
        rec = result.to_record(doc_id=row.doc_id, video_path=row.video, picked=picked, row_id=row.row_id,
                               **({"extra": row.extra} if row.extra else {}))
        return Outcome(row.row_id, True, rec, cache_hit=served.cache_hit)

    def score_unit(self, rows: list[Row]) -> list[Outcome]:
        out: list[Outcome] = []
        for video, vrows in group_by_video(rows).items():
            try:
                data = read_checked(video)
            except (OSError, InputError) as e:
                out += [Outcome(r.row_id, False, error_record(r, "video", e)) for r in vrows]
                continue
            key = routing_key(data)
            # The first request fills the server's feature cache; sent together, they would all miss it.
            out.append(self._one(data, key, vrows[0]))
            out += list(self.pool.map(lambda r, d=data, k=key: self._one(d, k, r), vrows[1:]))
        return out
