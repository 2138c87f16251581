"""The python-backend stub watchdog.

Triton 2.51 leaves a python-backend stub that died (OOM kill, crash) dead while the model still reports ready,
failing every request it gets. Every `interval_s` the watchdog looks for a model whose stub is gone, unloads it (so
readiness says false) and loads it again, with bounded retries and exponential backoff.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any

RELOAD_TRIES = 5  # per model, with exponential backoff (1, 2, 4, 8 s between tries); then the model stays unloaded


def stub_pids(pid: int | None) -> dict[str, set[int]]:
    """Live python-backend stubs of the server `pid` per model (its own children only, from /proc)."""
    out: dict[str, set[int]] = {}
    for p in Path("/proc").iterdir():
        if pid is None or not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if argv and argv[0].endswith(b"triton_python_backend_stub") and len(argv) > 1:
            model = Path(argv[1].decode(errors="replace")).parent.parent.name  # <model>/<ver>/model.py
            out.setdefault(model, set()).add(int(p.name))
    return out


class StubWatchdog:
    def __init__(self, server: Any, interval_s: float):
        """`server`: a started `TritonServer` (its pid, `running`, `reload(model)` and log)."""
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
            except OSError as e:
                detail = e.read().decode(errors="replace") if isinstance(e, urllib.error.HTTPError) else e
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
