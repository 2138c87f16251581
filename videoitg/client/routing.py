"""Several servers behind one client: each request goes to the server that holds its video's features (rendezvous
hashing of the video digest), and moves on to the video's next live server when a server dies."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoitg.client.kserve import NO_OPTIONS, RemoteError, ServedResult, UnavailableError, VideoITGClient
from videoitg.contract.access import ClientAccess
from videoitg.digest import video_digest, video_file_digest
from videoitg.errors import InputError, VideoITGError
from videoitg.outputs import GroundingResult
from videoitg.request.options import RequestOptions

# Seconds between rounds when every server is down: about a minute in all, then give up (a rerun resumes). Each
# wait is spread by `retry_wait`.
BACKOFF_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def retry_wait(base_s: float) -> float:
    """A wait of `base_s` on average, spread over [0.5, 1.5) times it: clients refused together come back apart. A
    wave of retries that all return at once is refused again as a whole by a server that is back, and it keeps it
    refusing."""
    return base_s * random.uniform(0.5, 1.5)


class ServerUnavailableError(VideoITGError):
    """No server answered: not the request's fault, so it must not be recorded as the request's error."""


def is_transient(e: BaseException) -> bool:
    """True when `e` says the server is away (down, restarting, a dead stub), not that the request was bad.

    Only positive evidence counts: a transport error (refused, reset, closed; the client keeps it as the context of
    its `RemoteError`) or the client's `UnavailableError` (gRPC UNAVAILABLE / HTTP 503, a step whose python-backend
    stub is not healthy). Anything else, including an error raised while building the request, is the request's own
    outcome."""
    if isinstance(e, UnavailableError):
        return True
    transport = (OSError, http.client.HTTPException)  # geventhttpclient's "connection closed" is an HTTPException
    inner = e.__context__ if isinstance(e, RemoteError) else None
    return isinstance(e, transport) or isinstance(inner, transport)


def routing_key(video: bytes) -> str:
    return video_digest(video)


def file_routing_key(path: str | Path) -> str:
    """`routing_key` of a file's content, hashed where it lies (a long video is not read into memory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise InputError(f"cannot read video {path}: {e.strerror or e}") from None
    try:
        return video_file_digest(fd)
    finally:
        os.close(fd)


def rank(servers: Sequence[str], key: str) -> list[str]:
    """Servers in preference order for `key` (rendezvous hashing): stable, and removing one server moves only
    the keys it ranked first."""
    def weight(url: str) -> bytes:
        return hashlib.blake2b(f"{url}\0{key}".encode(), digest_size=8).digest()

    return sorted(servers, key=weight, reverse=True)


@dataclass
class ServerState:
    url: str
    down: bool = False
    next_probe: float = 0.0  # monotonic time of the next readiness probe while down
    last_error: str = ""
    answered: int = 0  # requests this server answered (successes and the requests' own errors)
    failed_over: int = 0  # requests that failed here for the server's sake and were re-sent


@dataclass
class ServerPool:
    """Clients to several servers of one deployment, with routing by video and failover. Thread-safe: each thread
    has its own client per server (tritonclient objects are not shared across threads).

    Routing is rendezvous (highest-random-weight) hashing of the video digest that the servers' feature cache keys
    on (`videoitg.digest.video_digest`; the rest of the cache key, sampling and model identity, is the same on every
    server of one deployment). Every instruction on one video ranks the servers in the same order, so all but the
    first are cache hits. When a server leaves, only its own videos move, each to its next server in rank; when it
    comes back, they return.

    Failover: a request that fails for the server's sake (connection refused or reset, gRPC UNAVAILABLE, HTTP 503,
    a dead python-backend stub) marks that server down and goes to the video's next live server; a down server is
    probed again (`is_ready`) at most every `probe_after_s` and rejoins when ready. A request that the server
    refused or failed for its own reasons (INVALID_ARGUMENT, INTERNAL) is that request's error and is not re-sent.
    With no server left the pool waits along `backoff_s`, probing, and then raises `ServerUnavailableError`. A
    request is answered once: one that is re-sent was not answered where it went first. `access`: the key and TLS
    of every server (None: each client's default, $VIDEOITG_API_KEY); a refused key is the request's error
    (`KeyRefusedError`), never a failover.

        pool = ServerPool(["10.0.0.1:8001", "10.0.0.2:8001"])
        served, url = pool.infer(Path("clip.mp4").read_bytes(), "When does the dog jump?")
    """

    servers: Sequence[str]
    protocol: str = "grpc"
    timeout_s: float = 600.0
    probe_after_s: float = 2.0
    backoff_s: tuple[float, ...] = BACKOFF_S
    client_factory: Callable[..., Any] = VideoITGClient
    access: ClientAccess | None = None
    state: dict[str, ServerState] = field(init=False)

    def __post_init__(self) -> None:
        urls = list(dict.fromkeys(s.split("://", 1)[-1] for s in self.servers))  # drop repeats, keep order
        if not urls:
            raise InputError("no server address given")
        self.servers = urls
        self.state = {u: ServerState(u) for u in urls}
        self._lock = threading.Lock()
        self._local = threading.local()

    # ---- clients and health -----------------------------------------------------------------------------------
    def _client(self, url: str) -> Any:
        clients = self._local.__dict__.setdefault("clients", {})
        if url not in clients:
            clients[url] = self.client_factory(url, protocol=self.protocol, timeout_s=self.timeout_s, **self._access)
        return clients[url]

    @property
    def _access(self) -> dict[str, Any]:
        return {} if self.access is None else {"access": self.access}

    def _drop_client(self, url: str) -> None:
        c = self._local.__dict__.get("clients", {}).pop(url, None)
        if c is not None:
            try:
                c.close()
            except Exception:  # a broken channel may fail to close; it is dropped either way
                pass

    def _probe(self, url: str) -> bool:
        """Readiness through a fresh client (an old gRPC channel may sit in reconnect backoff)."""
        with self.client_factory(url, protocol=self.protocol, timeout_s=self.timeout_s, **self._access) as c:
            return bool(c.is_ready())

    def mark_down(self, url: str, reason: str = "") -> None:
        with self._lock:
            st = self.state[url]
            st.down, st.last_error = True, reason
            st.next_probe = time.monotonic() + self.probe_after_s
        self._drop_client(url)

    def usable(self, url: str, force_probe: bool = False) -> bool:
        """Up, or down with a probe due that finds it ready again (one thread probes; the others skip it)."""
        with self._lock:
            st = self.state[url]
            if not st.down:
                return True
            now = time.monotonic()
            if now < st.next_probe and not force_probe:
                return False
            st.next_probe = now + self.probe_after_s
        if not self._probe(url):
            return False
        with self._lock:
            st.down = False
        return True

    def wait_ready(self, timeout_s: float) -> list[str]:
        """Wait until at least one server is ready; the ones that are not start as down (probed later).
        Returns the ready ones."""
        deadline = time.monotonic() + timeout_s
        while True:
            ready = [u for u in self.servers if self._probe(u)]
            if ready:
                for u in self.servers:
                    if u not in ready:
                        self.mark_down(u, "not ready at start")
                return ready
            if time.monotonic() > deadline:
                raise InputError(f"no Triton server of {', '.join(self.servers)} is ready (or serves the VideoITG "
                                 f"model) after {timeout_s:g} s")
            time.sleep(0.5)

    # ---- requests ---------------------------------------------------------------------------------------------
    def infer(self, video: bytes | str | Path, instruction: str, options: RequestOptions = NO_OPTIONS,
              key: str | None = None, path: str | Path | None = None) -> tuple[ServedResult, str]:
        """Send one request to the video's server, failing over as described above. Returns the result and the
        server that answered. Raises the server's `RemoteError` for the request's own errors. A file (`video` as
        a path, or `path`: where the bytes came from) goes by reference to a server that takes it from there."""
        if key is None and len(self.servers) > 1:  # one server: nothing to route, the client hashes what it sends
            key = routing_key(video) if isinstance(video, bytes) else file_routing_key(video)
        waits = iter(self.backoff_s)
        force_probe = False
        while True:
            last: BaseException | None = None
            for url in rank(self.servers, key) if key else self.servers:
                if not self.usable(url, force_probe):
                    continue
                try:
                    served = self._client(url).infer(video, instruction, options, digest=key, path=path)
                except Exception as e:  # classified: the server's trouble or the request's
                    if not is_transient(e):
                        with self._lock:
                            self.state[url].answered += 1
                        raise
                    with self._lock:
                        self.state[url].failed_over += 1
                    self.mark_down(url, str(e))
                    last = e
                    continue
                with self._lock:
                    self.state[url].answered += 1
                return served, url
            wait = next(waits, None)
            if wait is None:
                raise ServerUnavailableError(
                    f"no server answered ({', '.join(self.servers)}) after {len(self.backoff_s)} retries"
                    + (f": {last}" if last else ""))
            time.sleep(retry_wait(wait))
            force_probe = True  # after a wait, every down server is probed again

    def score(self, video: bytes | str | Path, instruction: str, options: RequestOptions = NO_OPTIONS
              ) -> GroundingResult:
        return self.infer(video, instruction, options)[0].result

    def close(self) -> None:
        for url in list(self._local.__dict__.get("clients", {})):
            self._drop_client(url)

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
