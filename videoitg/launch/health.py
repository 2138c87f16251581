"""Whether a started tritonserver is ready: its readiness route (through the front) and its own metrics port answer,
it is the one started (`--id`), and how long its start may go on while it progresses (`StartProgress`)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

WATCH_TIMEOUT_S = 2.0  # a readiness, metrics or index request to a server that should answer in milliseconds


@dataclass
class StartProgress:
    """When a starting server counts as stalled: no growth of its log and no CPU time used by its processes for
    `stall_s` seconds (a 7B checkpoint takes minutes to load, a hung load shows neither), or `max_s` in all (None:
    no bound while it progresses)."""

    stall_s: float
    max_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    last_change: float = field(default=0.0)
    _seen: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        self.last_change = self.started

    def observe(self, log_bytes: int, cpu_s: float, now: float) -> None:
        seen = (log_bytes, round(cpu_s, 2))
        if self._seen is not None and seen != self._seen:
            self.last_change = now
        self._seen = seen

    def expired(self, now: float) -> str | None:
        """Why the wait ends (None: keep waiting)."""
        if self.max_s is not None and now - self.started >= self.max_s:
            return f"not ready after {self.max_s:.0f} s"
        if now - self.last_change >= self.stall_s:
            return f"not ready, and neither its log nor its CPU time moved for {self.stall_s:.0f} s"
        return None


def ready(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether `url` (a readiness route, or a metrics port) answers 200; `context`: an https URL's."""
    try:
        with urllib.request.urlopen(url, timeout=WATCH_TIMEOUT_S, context=context) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def answers(url: str, context: ssl.SSLContext | None = None, timeout_s: float = 1.0) -> bool:
    """Whether anything answers `url` with HTTP at all within `timeout_s` (an error status is an answer): a process
    that is alive, though perhaps not ready. `context`: an https URL's."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def answered_by(http_url: str, server_id: str, headers: Mapping[str, str] | None = None,
                context: ssl.SSLContext | None = None) -> bool:
    """Whether the server answering on `http_url` is `server_id` (`GET /v2` names it): another server on the port
    (an orphan of an earlier run) must not pass for it. `headers`: an API key; `context`: TLS."""
    scheme = "http" if context is None else "https"
    try:
        request = urllib.request.Request(f"{scheme}://{http_url}/v2", headers=dict(headers or {}))
        with urllib.request.urlopen(request, timeout=2, context=context) as r:
            return json.loads(r.read()).get("name") == server_id
    except (OSError, ValueError):
        return False
