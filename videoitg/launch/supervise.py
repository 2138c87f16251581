"""What keeps a launched server serving: `supervise` starts a tritonserver or a front that exited on its own again
(each alone where the other runs: a front keeping its ports, tritonserver its models), kills one that is stopped or
hung, or a tritonserver keeping `HELD_MAX` replaced model instances, so that it is started again (`ProcessWatch`),
and waits out a public port another process took; the stub watchdog judges every python-backend model by whether it
can answer: a model whose stub died, is stopped or takes no request (Triton 2.51 leaves such a
model "ready" while it fails or holds every request it gets), or that is no longer loaded, is reloaded, a stopped or
wedged stub killed first. Nothing here depends on a log write: a note that cannot be written goes to stderr
(`TritonServer.note`)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from videoitg.errors import VideoITGError
from videoitg.launch.held import HELD_MAX
from videoitg.launch.ports import PortBusyError, StartCancelled
from videoitg.launch.procfs import Stub, stub_pids, stubs

RELOAD_TRIES = 5  # per model, with exponential backoff (1, 2, 4, 8 s between tries); then the model stays unloaded
STOPPED_LOOKS = 2  # a stub seen stopped at this many looks in a row is killed (a second or more at the default)
# Requests waiting in a model's queue while its stubs use no CPU time for this long: the model takes no request (a
# decode step blocked for ever in a send to a requester that died, an event loop that hangs). A model at work uses
# CPU time; an idle one has nothing waiting.
WEDGE_S = 5.0
# Model states of tritonserver's repository index that are not a fault: loaded, or a load or unload in progress.
SETTLED = frozenset({"READY", "LOADING", "UNLOADING"})


# A process of the server (tritonserver, the front) whose own ports answer nothing for this long, though it runs, is
# hung: killed and started again. Its ports answer in milliseconds when it is well, under load too (its metrics port
# is served apart from its inference).
HUNG_S = 15.0
LOOK_S = 1.0  # between two looks at the server's processes
PORT_RETRY_S = 2.0  # between two tries of a restart whose public port another process holds
PORT_SAY_S = 60.0  # a port still held is said again after this long


@dataclass(frozen=True)
class Look:
    """One look at a process of the server: its state letter (`procfs.state`), whether its own ports answered, the
    fatal signal its log reported since the last look (tritonserver's, `ServerLog.fatal_signal`), and the replaced
    model instances it keeps (tritonserver's, `held.HeldInstances`)."""

    state: str
    answered: bool
    fatal: int | None = None
    held: int = 0


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

    def unload(self, model: str) -> None: ...

    def load(self, model: str) -> None: ...

    def requests_lost(self, model: str) -> None: ...

    def replaced(self, pids: set[int]) -> None: ...

    def waiting(self) -> dict[str, int]: ...

    def model_states(self) -> dict[str, str]: ...

    def restart(self, timeout_s: float = 180.0, max_s: float | None = None,
                cancelled: Callable[[], bool] | None = None) -> object: ...

    def note(self, msg: str, who: str = "watchdog") -> None: ...

    def looks(self) -> dict[str, Look]: ...

    def kill(self, name: str) -> None: ...


@dataclass
class Verdict:
    """Why a model is repaired, and the stubs to kill first (a stopped or wedged one would hold its requests)."""

    cause: str
    kill: set[int] = field(default_factory=set)
    unloaded: bool = False  # not loaded: loaded again, nothing to unload first


@dataclass
class _Quiet:
    """A model's stubs' CPU time, and since when it has not moved while requests waited for the model."""

    cpu_s: float
    since: float


class StubWatchdog:
    """Every `interval_s`, each python-backend model is judged by whether it can answer, and repaired when it cannot:
    - a stub that died: the model is reloaded;
    - a stub stopped (SIGSTOP, SIGTSTP; not a tracer's stop) at `STOPPED_LOOKS` looks in a row: the stub is
      killed, the model reloaded;
    - requests waiting for the model while its stubs used no CPU time for `wedge_s`: its stubs are killed, the model
      reloaded;
    - a model of the repository not loaded (unloaded, or a load that failed): it is loaded.
    The reload unloads the model first, so readiness says false until it answers again; once it is unloaded the
    server is told that the requests the model held are lost (`Launched.requests_lost`: for the public model, the
    front answers them). A repair that fails is tried again after 1, 2, 4, 8 s; after `RELOAD_TRIES` the model stays
    unloaded and the server not ready."""

    def __init__(self, server: Launched, interval_s: float, wedge_s: float = WEDGE_S, loads_unloaded: bool = True):
        self.server, self.interval_s, self.wedge_s = server, interval_s, wedge_s
        # Whether a model found unloaded is loaded: only where the launcher loads every model (explicit control,
        # --load-model=*), not where an operator chose another control mode or which models load
        self.loads_unloaded = loads_unloaded
        self.restarts = 0  # models repaired
        self.repaired: list[tuple[str, str]] = []  # (model, cause) of each repair, in order
        self.given_up: set[str] = set()  # models that could not be repaired within RELOAD_TRIES
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._tries: Counter[str] = Counter()
        self._next_try: dict[str, float] = {}
        self._stopped: Counter[int] = Counter()  # stub pid -> looks in a row it was seen stopped
        self._quiet: dict[str, _Quiet] = {}
        # Requests that waited for a model when it was repaired: tritonserver 2.51 keeps those queued behind a wedged
        # instance in the replaced model for ever (counted in its pending gauge, never run), so they are not the new
        # instance's to take.
        self._stranded: Counter[str] = Counter()
        self._replaced: set[int] = set()  # stubs of versions a repair replaced, while they run: not followed
        # The stubs are known before the thread starts: a stub that dies the moment the server is ready is missed.
        self._thread = threading.Thread(target=self._watch, args=(stub_pids(server.pid),),
                                        name="triton-stub-watchdog", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _watch(self, expected: dict[str, set[int]]) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.server.running:
                return
            try:
                expected = self._heal(expected)
            except Exception as e:  # never die silently: the server would lose its only repair path
                self.server.note(f"watchdog error: {type(e).__name__}: {e}")

    def verdicts(self, expected: dict[str, set[int]], found: dict[str, dict[int, Stub]], waiting: dict[str, int],
                 states: dict[str, str], now: float) -> dict[str, Verdict]:
        """The models that cannot answer, and why, from one look: `expected`, the stubs each model had; `found`, its
        stubs now; `waiting`, requests in each model's queue; `states`, the repository index's model states."""
        out: dict[str, Verdict] = {}
        stopped_now = {pid for live in found.values() for pid, stub in live.items() if stub.stopped}
        for pid in list(self._stopped):
            if pid not in stopped_now:
                del self._stopped[pid]
        for pid in stopped_now:
            self._stopped[pid] += 1
        for model, pids in expected.items():
            if model in self.given_up:
                continue
            self._stranded[model] = min(self._stranded[model], waiting.get(model, 0))  # those that left
            queued = waiting.get(model, 0) - self._stranded[model]
            live = found.get(model, {})
            stopped = {pid for pid in live if self._stopped[pid] >= STOPPED_LOOKS}
            cpu = sum(stub.cpu_s for stub in live.values())
            quiet = self._quiet.get(model)
            if pids - live.keys():
                out[model] = Verdict("its python-backend stub died")
            elif stopped:
                out[model] = Verdict(f"its python-backend stub is stopped (pid {', '.join(map(str, sorted(stopped)))}"
                                     "; SIGSTOP)", stopped)
            elif queued <= 0:
                self._quiet.pop(model, None)  # nothing waits: nothing to judge
            elif quiet is None or quiet.cpu_s != cpu:
                self._quiet[model] = _Quiet(cpu, now)  # a spell starts: requests wait, no CPU time used since
            elif now - quiet.since >= self.wedge_s:
                out[model] = Verdict(f"{queued} request(s) waited {now - quiet.since:.0f} s for it while its stub "
                                     "used no CPU time (wedged)", set(live))
        for model, state in states.items() if self.loads_unloaded else ():
            if state not in SETTLED and model not in out and model not in self.given_up:
                out[model] = Verdict(f"it is not loaded (state {state or 'never loaded'})", unloaded=True)
        return out

    def _heal(self, expected: dict[str, set[int]]) -> dict[str, set[int]]:
        """Repair each model that cannot answer; returns the updated expectation.

        Stubs are known by process id, not by count: Triton 2.51 may start a replacement stub for a dead one on the
        next request (the count is whole again) while the model keeps failing requests for many seconds. Only the
        launcher holds the key of the model-control API, so a stub that is replaced without a reload of ours has
        died."""
        now = time.monotonic()
        found, waiting = stubs(self.server.pid), self.server.waiting()
        due = [(model, verdict) for model, verdict in
               self.verdicts(expected, found, waiting, self.server.model_states(), now).items()
               if now >= self._next_try.get(model, 0.0)]
        for model, _ in due:
            self._stranded[model] = waiting.get(model, 0)
        repaired: list[bool] = []
        if due:  # models repaired at once (every stub killed together: back in the time of the slowest load)
            with ThreadPoolExecutor(len(due), thread_name_prefix="triton-stub-repair") as pool:
                repaired = list(pool.map(lambda d: self._repair(*d), due))
        done = [model for (model, _), ok in zip(due, repaired, strict=True) if ok]
        for model in done:  # the stubs of the version it replaced: still exiting, or kept (`held`)
            self._replaced |= expected.get(model, set())
            self.server.replaced(expected.get(model, set()))
            self._quiet.pop(model, None)
        current = stub_pids(self.server.pid)
        self._replaced &= {pid for pids in current.values() for pid in pids}
        current = {model: pids - self._replaced for model, pids in current.items()}
        for model in done:  # repaired: follow its new stubs
            expected[model] = current.get(model, set())
        # Healthy models: follow their current stubs (a model loaded later, more instances); a model waiting for
        # its next try keeps its old expectation, so it is still seen as broken.
        for model, pids in current.items():
            if model not in expected or not (expected[model] - pids):
                expected[model] = pids
        return expected

    def _repair(self, model: str, verdict: Verdict) -> bool:
        """Kill what the verdict names, then reload (or load) the model; whether it answers again. Runs beside the
        repairs of other models: what it counts is counted under the lock."""
        tries = self._tries[model] = self._tries[model] + 1
        what = "loading it" if verdict.unloaded else "killing its stub, reloading the model" if verdict.kill else \
            "reloading the model"
        self.server.note(f"'{model}' cannot answer: {verdict.cause}; {what} (try {tries})")
        for pid in verdict.kill:  # the server's own children (procfs.stubs): a stopped process dies of SIGKILL too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            if not verdict.unloaded:
                # Unloaded first, so readiness says false until it answers again (a plain load of a loaded model
                # would keep the broken instance "ready" until its replacement is up).
                try:
                    self.server.unload(model)
                finally:  # its stub is dead or killed: what it held is never answered by tritonserver 2.51
                    self.server.requests_lost(model)
            self.server.load(model)
        except (OSError, VideoITGError) as e:
            if tries >= RELOAD_TRIES:
                self.given_up.add(model)
                self._next_try.pop(model, None)
                self.server.note(f"repairing '{model}' failed {tries} times ({e}); giving up: it stays unloaded and "
                                 "the server not ready")
            else:
                self._next_try[model] = time.monotonic() + 2.0 ** (tries - 1)
                self.server.note(f"repairing '{model}' failed ({e}); next try in {2 ** (tries - 1)} s")
            return False
        with self._lock:
            self.restarts += 1
            self.repaired.append((model, verdict.cause))
        self._tries.pop(model, None)
        self._next_try.pop(model, None)
        return True


class Liveness:
    """Whether tritonserver and the front can still answer, judged on looks (`judge`): a process whose log reported a
    crash, stopped by a signal at STOPPED_LOOKS looks in a row, or whose own ports answered nothing for `hung_s`
    while it runs, cannot (a tracer's stop is the operator's own: left alone). A crashed tritonserver is killed at
    once: its handler of the signal prints a stack trace before it dies, and in a damaged heap that can hang. A
    tritonserver that keeps `HELD_MAX` replaced model instances is restarted too: only its exit frees them
    (`held`)."""

    def __init__(self, hung_s: float = HUNG_S) -> None:
        self.hung_s = hung_s
        self._stopped: Counter[str] = Counter()
        self._answered: dict[str, float] = {}

    def judge(self, looks: dict[str, Look], now: float) -> dict[str, str]:
        """The processes to kill and start again, and why ("cannot answer: ...", "keeps ...")."""
        out: dict[str, str] = {}
        for name, look in looks.items():
            self._stopped[name] = self._stopped[name] + 1 if look.state == "T" else 0
            if look.answered or look.state in ("T", "t"):
                self._answered[name] = now  # a stopped one is judged by its stop
            quiet = now - self._answered.setdefault(name, now)
            if look.fatal is not None:
                out[name] = f"cannot answer: it crashed (signal {look.fatal}, said in its log) and has not exited"
            elif self._stopped[name] >= STOPPED_LOOKS:
                out[name] = "cannot answer: it is stopped (SIGSTOP)"
            elif quiet >= self.hung_s:
                out[name] = f"cannot answer: its ports answered nothing for {quiet:.0f} s (hung)"
            elif look.held >= HELD_MAX:
                out[name] = (f"keeps {look.held} replaced model instances whose stubs died with requests in them "
                             "(only its exit frees them)")
        return out

    def reset(self) -> None:
        self._stopped.clear()
        self._answered.clear()


class ProcessWatch:
    """A thread that looks at the server's processes every `LOOK_S` while `watching` and kills one that cannot answer,
    or must be restarted (`Liveness`), said through `say`: `supervise` then starts it again."""

    def __init__(self, server: Launched, say: Callable[[str], None], hung_s: float = HUNG_S) -> None:
        self.server, self.say, self.liveness = server, say, Liveness(hung_s)
        self.watching = threading.Event()  # cleared while a restart runs: a starting server answers nothing yet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="videoitg-process-watch", daemon=True)

    def start(self) -> ProcessWatch:
        self.watching.set()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(LOOK_S):
            if not self.watching.is_set():
                self.liveness.reset()
                continue
            try:
                looks = self.server.looks() if self.server.running else {}
                for name, cause in self.liveness.judge(looks, time.monotonic()).items():
                    if self.watching.is_set() and not self._stop.is_set():
                        self.say(f"{name} {cause}; killing it to start it again")
                        self.server.kill(name)
                        self.liveness.reset()
            except Exception as e:  # never die silently: a hung process would stay so
                self.server.note(f"process watch error: {type(e).__name__}: {e}", who="supervisor")


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
              policy: RestartPolicy | None = None, poll_s: float = 0.2, start_timeout_s: float = 180.0,
              hung_s: float = HUNG_S) -> bool:
    """Keep a started `server` serving until `stop_requested()`: a process of it that exits on its own, or that
    `ProcessWatch` killed (stopped, hung for `hung_s`, keeping replaced instances), is started again on the same ports
    (`RestartPolicy`; each alone where the other runs), each time said through `say`, written to the server log and
    counted in `server.restarts`. A start that fails for any reason of the machine's (a full disk, a file it cannot
    write) is a failed start, not the end of the supervision; one whose public port another process holds is tried
    again every PORT_RETRY_S until the port is free, uncounted (nothing else can serve here); a stop requested while a
    start waits ends that wait. Returns True when a stop was requested (the caller stops the server), False when the
    policy gave up (the server is down)."""
    policy = policy or RestartPolicy()
    watch = ProcessWatch(server, say, hung_s).start()
    try:
        while not stop_requested():
            if server.running:
                time.sleep(poll_s)
                continue
            watch.watching.clear()
            outcome = _start_again(server, stop_requested, say, policy, poll_s, start_timeout_s)
            if outcome != "ready":
                return outcome == "stop"
            watch.watching.set()
        return True
    finally:
        watch.stop()


def _start_again(server: Launched, stop_requested: Callable[[], bool], say: Callable[[str], None],
                 policy: RestartPolicy, poll_s: float, start_timeout_s: float) -> str:
    """One exit of `server` answered (`supervise`): "ready" (it serves again), "stop" (a stop was requested
    meanwhile) or "gave up" (the policy did)."""
    what = server.exited or "the server"
    say(f"{what} exited unexpectedly ({describe_exit(server.exit_code)}); restarting it on the same ports (restart "
        f"{server.restarts + 1})")
    delay: float | None = 0.0
    busy_said = -PORT_SAY_S
    while True:
        deadline = time.monotonic() + (delay or 0.0)
        while time.monotonic() < deadline:
            if stop_requested():
                return "stop"
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        t0 = time.monotonic()
        try:
            server.restart(start_timeout_s, cancelled=stop_requested)
        except StartCancelled:
            return "stop"
        except PortBusyError as e:
            delay = PORT_RETRY_S
            if t0 - busy_said >= PORT_SAY_S:
                busy_said = t0
                say(f"restart {server.restarts + 1} waits: {e}; trying again every {PORT_RETRY_S:.0f} s")
            continue
        except (VideoITGError, OSError) as e:
            delay = policy.after_failed_start()
            first = (str(e).splitlines() or [""])[0] or type(e).__name__
            if delay is None:
                say(f"restart {server.restarts} failed ({first}); giving up after {policy.failed_starts} "
                    "failed starts in a row")
                return "gave up"
            say(f"restart {server.restarts} failed ({first}); next try in {delay:.0f} s")
            continue
        policy.after_ready()
        who = "the front" if what == "front" else "tritonserver"
        say(f"{who} ready again after {time.monotonic() - t0:.1f} s (restart {server.restarts})")
        return "ready"
