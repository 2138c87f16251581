"""What keeps a launched server serving: `supervise` starts a tritonserver that exited on its own again, and the
stub watchdog reloads a model whose python-backend stub died (Triton 2.51 leaves it dead while the model still
reports ready, failing every request it gets)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from videoitg.launch.ports import ServerError
from videoitg.launch.procfs import stub_pids

RELOAD_TRIES = 5  # per model, with exponential backoff (1, 2, 4, 8 s between tries); then the model stays unloaded


class Launched(Protocol):
    """What supervision needs of a launched server (`server.TritonServer`)."""

    restarts: int

    @property
    def pid(self) -> int | None: ...

    @property
    def running(self) -> bool: ...

    @property
    def exited(self) -> str: ...

    @property
    def exit_code(self) -> int | None: ...

    def reload(self, model: str) -> None: ...

    def restart(self, timeout_s: float = 180.0, max_s: float | None = None) -> object: ...

    def note(self, msg: str, who: str = "watchdog") -> None: ...


class StubWatchdog:
    """Every `interval_s`, a model one of whose stubs is gone is unloaded (readiness says false) and loaded again,
    with bounded retries and exponential backoff."""

    def __init__(self, server: Launched, interval_s: float):
        self.server, self.interval_s = server, interval_s
        self.restarts = 0  # models reloaded
        self.given_up: set[str] = set()  # models that could not be reloaded within RELOAD_TRIES
        self._stop = threading.Event()
        # The stubs are known before the thread starts: a stub that dies the moment the server is ready is missed.
        self._thread = threading.Thread(target=self._watch, args=(stub_pids(server.pid),),
                                        name="triton-stub-watchdog", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _watch(self, expected: dict[str, set[int]]) -> None:
        tries: Counter[str] = Counter()
        next_try: dict[str, float] = {}
        while not self._stop.wait(self.interval_s):
            if not self.server.running:
                return
            try:
                expected = self._heal(expected, tries, next_try)
            except Exception as e:  # never die silently: the server would lose its only repair path
                self.server.note(f"watchdog error: {type(e).__name__}: {e}")

    def _heal(self, expected: dict[str, set[int]], tries: Counter[str],
              next_try: dict[str, float]) -> dict[str, set[int]]:
        """Reload each model one of whose known stubs is gone; returns the updated expectation.

        By process id, not by count: Triton 2.51 may start a replacement stub for a dead one on the next request
        (the count is whole again) while the model keeps failing requests for many seconds. Only the launcher
        holds the key of the model-control API, so a stub that is replaced without a reload of ours has died."""
        now = stub_pids(self.server.pid)
        for model in [m for m, pids in expected.items() if pids - now.get(m, set()) and m not in self.given_up]:
            if time.monotonic() < next_try.get(model, 0.0):
                continue
            tries[model] += 1
            self.server.note(f"python-backend stub of '{model}' died; reloading the model (try {tries[model]})")
            try:
                self.server.reload(model)
            except (OSError, ServerError) as e:
                detail = e
                if tries[model] >= RELOAD_TRIES:
                    self.given_up.add(model)
                    self.server.note(f"reloading '{model}' failed {tries[model]} times ({detail}); giving up: "
                                     "it stays unloaded and the server not ready")
                else:
                    next_try[model] = time.monotonic() + 2.0 ** (tries[model] - 1)
                    self.server.note(f"reloading '{model}' failed ({detail}); next try in "
                                     f"{2 ** (tries[model] - 1)} s")
                continue
            self.restarts += 1
            tries.pop(model, None)
            next_try.pop(model, None)
            expected[model] = stub_pids(self.server.pid).get(model, set())
        # Healthy models: follow their current stubs (a model loaded later, more instances); a model waiting for
        # its next try keeps its old expectation, so it is still seen as broken.
        now = stub_pids(self.server.pid)
        for model, pids in now.items():
            if model not in expected or not (expected[model] - pids):
                expected[model] = pids
        return expected


@dataclass
class RestartPolicy:
    """When `supervise` starts a server that exited on its own again. A server that had been ready is started again
    at once, every time: a crash caused by a request must not end the service. A restart that does not become
    ready is tried again after 1, 2, 4, 8 s, and `max_failed_starts` of those in a row end the supervision (a
    repository or machine that can no longer start a server)."""

    max_failed_starts: int = 5
    failed_starts: int = 0

    def after_failed_start(self) -> float | None:
        """Seconds to wait before the next try, or None: give up."""
        self.failed_starts += 1
        if self.failed_starts >= self.max_failed_starts:
            return None
        return float(2 ** (self.failed_starts - 1))

    def after_ready(self) -> None:
        self.failed_starts = 0


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def supervise(server: Launched, stop_requested: Callable[[], bool], say: Callable[[str], None],
              policy: RestartPolicy | None = None, poll_s: float = 0.2, start_timeout_s: float = 180.0) -> bool:
    """Keep a started `server` serving until `stop_requested()`: a server that exits on its own is started again on
    the same ports (`RestartPolicy`), each time said through `say`, written to the server log and counted in
    `server.restarts`. Returns True when a stop was requested (the caller stops the server), False when the
    policy gave up (the server is down)."""
    policy = policy or RestartPolicy()
    while not stop_requested():
        if server.running:
            time.sleep(poll_s)
            continue
        say(f"{server.exited or 'the server'} exited unexpectedly ({describe_exit(server.exit_code)}); restarting "
            f"it on the same ports (restart {server.restarts + 1})")
        delay: float | None = 0.0
        while True:
            deadline = time.monotonic() + (delay or 0.0)
            while time.monotonic() < deadline:
                if stop_requested():
                    return True
                time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            t0 = time.monotonic()
            try:
                server.restart(start_timeout_s)
            except ServerError as e:
                delay = policy.after_failed_start()
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                if delay is None:
                    say(f"restart {server.restarts} failed ({first}); giving up after {policy.failed_starts} "
                        "failed starts in a row")
                    return False
                say(f"restart {server.restarts} failed ({first}); next try in {delay:.0f} s")
                continue
            policy.after_ready()
            say(f"tritonserver ready again after {time.monotonic() - t0:.1f} s (restart {server.restarts})")
            break
    return True
