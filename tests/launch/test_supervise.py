"""The stub watchdog's judgement (`supervise.StubWatchdog.verdicts`) and its repairs, on numbers and a stand-in server:
which model cannot answer and why, the stubs killed first, the backoff; no tritonserver needed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.support.server import wait_until
from videoitg.launch import supervise
from videoitg.launch.held import HELD_MAX
from videoitg.launch.ports import ServerError, StartCancelled
from videoitg.launch.procfs import Stub
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.launch.supervise import STOPPED_LOOKS, Liveness, Look, ProcessWatch, StubWatchdog


class StandIn:
    """A launched server as supervision sees it, with no process: what it was asked to do is recorded."""

    def __init__(self, fail_reloads: int = 0) -> None:
        self.restarts = 0
        self.pid = None
        self.running = True
        self.exited = ""
        self.exit_code = None
        self.notes: list[str] = []
        self.asked: list[tuple[str, str]] = []  # (what, model), in order
        self.fail_reloads = fail_reloads
        self.seen: dict[str, Look] = {}  # what `looks` answers

    @property
    def reloaded(self) -> list[str]:
        return [m for what, m in self.asked if what == "unload"]

    @property
    def loaded(self) -> list[str]:
        return [m for what, m in self.asked if what == "load"]

    def unload(self, model: str) -> None:
        self.asked.append(("unload", model))
        if len(self.reloaded) <= self.fail_reloads:
            raise ServerError(f"unload of '{model}' failed")

    def load(self, model: str) -> None:
        self.asked.append(("load", model))

    def requests_lost(self, model: str) -> None:
        self.asked.append(("lost", model))

    def replaced(self, pids: set[int]) -> None:
        self.asked.append(("replaced", ",".join(map(str, sorted(pids)))))

    def waiting(self) -> dict[str, int]:
        return {}

    def model_states(self) -> dict[str, str]:
        return {}

    def restart(self, timeout_s: float = 180.0, max_s: float | None = None,
                cancelled: Callable[[], bool] | None = None) -> object:
        raise AssertionError("not restarted here")

    def note(self, msg: str, who: str = "watchdog") -> None:
        self.notes.append(msg)

    def looks(self) -> dict[str, Look]:
        return dict(self.seen)

    def kill(self, name: str) -> None:
        self.asked.append(("kill", name))


@pytest.fixture()
def watchdog() -> Iterator[StubWatchdog]:
    """A watchdog whose own thread never looks (an hour between looks): each test looks itself."""
    w = StubWatchdog(StandIn(), interval_s=3600.0)
    yield w
    w.stop()


IDLE = Stub("S", 1.0)


def test_a_dead_stub_is_reloaded_and_nothing_killed(watchdog: StubWatchdog) -> None:
    v = watchdog.verdicts({"a": {10, 11}, "b": {20}}, {"a": {11: IDLE}, "b": {20: IDLE}}, {}, {}, now=0.0)
    assert list(v) == ["a"] and "died" in v["a"].cause and not v["a"].kill and not v["a"].unloaded


def test_a_stub_stopped_at_consecutive_looks_is_killed(watchdog: StubWatchdog) -> None:
    expected = {"a": {10}}
    stopped = {"a": {10: Stub("T", 1.0)}}
    for look in range(STOPPED_LOOKS - 1):
        assert watchdog.verdicts(expected, stopped, {}, {}, now=float(look)) == {}
    v = watchdog.verdicts(expected, stopped, {}, {}, now=float(STOPPED_LOOKS))
    assert v["a"].kill == {10} and "stopped" in v["a"].cause and "pid 10" in v["a"].cause


def test_a_stub_continued_between_looks_starts_its_count_again(watchdog: StubWatchdog) -> None:
    expected = {"a": {10}}
    for look, state in enumerate(["T", "S", "T", "R", "T", "S"]):  # never stopped at two looks in a row
        assert watchdog.verdicts(expected, {"a": {10: Stub(state, 1.0)}}, {}, {}, now=float(look)) == {}


def test_a_tracers_stop_is_left_alone(watchdog: StubWatchdog) -> None:
    """A debugger or a sampling profiler stops the stub it reads (state t): the operator's own doing."""
    expected = {"a": {10}}
    assert all(watchdog.verdicts(expected, {"a": {10: Stub("t", 1.0)}}, {}, {}, now=float(t)) == {}
               for t in range(5))


def test_requests_waiting_while_the_stubs_use_no_cpu_mean_wedged(watchdog: StubWatchdog) -> None:
    expected, found = {"a": {10, 11}}, {"a": {10: IDLE, 11: IDLE}}
    for t in (0.0, 2.0, watchdog.wedge_s - 0.1):
        assert watchdog.verdicts(expected, found, {"a": 2}, {}, now=t) == {}
    v = watchdog.verdicts(expected, found, {"a": 2}, {}, now=watchdog.wedge_s + 0.1)
    assert v["a"].kill == {10, 11} and "2 request(s) waited" in v["a"].cause and "wedged" in v["a"].cause


def test_a_busy_or_idle_model_is_not_wedged(watchdog: StubWatchdog) -> None:
    expected = {"busy": {10}, "idle": {20}}
    for t in range(30):  # the busy one's CPU time moves at every look; nothing waits for the idle one
        found = {"busy": {10: Stub("R", 1.0 + t)}, "idle": {20: IDLE}}
        assert watchdog.verdicts(expected, found, {"busy": 3, "idle": 0}, {}, now=float(t)) == {}


def test_requests_stranded_in_a_replaced_model_do_not_count(watchdog: StubWatchdog) -> None:
    """Requests queued behind a wedged instance stay counted in tritonserver's pending gauge after the model is
    replaced, and are never run: the new instance is judged by the requests beyond them."""
    watchdog._stranded["a"] = 1  # as `_heal` records at a repair
    expected, found = {"a": {10}}, {"a": {10: IDLE}}
    assert all(watchdog.verdicts(expected, found, {"a": 1}, {}, now=float(t)) == {} for t in range(0, 30, 5))
    assert watchdog.verdicts(expected, found, {"a": 2}, {}, now=30.0) == {}  # a new request: the spell starts
    assert "1 request(s) waited" in watchdog.verdicts(expected, found, {"a": 2}, {}, now=36.0)["a"].cause
    watchdog.verdicts(expected, found, {"a": 0}, {}, now=40.0)  # the stranded one released: none left to ignore
    assert watchdog._stranded["a"] == 0


def test_a_model_that_is_not_loaded_is_loaded(watchdog: StubWatchdog) -> None:
    states = {"a": "UNAVAILABLE", "b": "READY", "c": "LOADING", "d": "UNLOADING", "e": "", "f": "UNAVAILABLE"}
    watchdog.given_up.add("f")
    v = watchdog.verdicts({}, {}, {}, states, now=0.0)
    assert sorted(v) == ["a", "e"] and all(x.unloaded and not x.kill for x in v.values())
    assert "state UNAVAILABLE" in v["a"].cause and "never loaded" in v["e"].cause
    # an operator's own control mode (--model-control-mode among the extra arguments): what it left unloaded stays so
    theirs = StubWatchdog(watchdog.server, interval_s=3600.0, loads_unloaded=False)
    assert theirs.verdicts({}, {}, {}, states, now=0.0) == {}
    assert TritonServer("repo", ServerOptions())._loads_every_model
    assert not TritonServer("repo", ServerOptions(extra_args=("--model-control-mode=poll",)))._loads_every_model


def test_repairs_kill_first_then_reload_with_backoff_and_bounded_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    server = StandIn(fail_reloads=10)
    monkeypatch.setattr(supervise, "RELOAD_TRIES", 3)
    w = StubWatchdog(server, interval_s=3600.0)
    w.stop()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not w._repair("a", supervise.Verdict("stopped", {victim.pid}))
        assert victim.wait(timeout=10) == -9  # killed before the reload was asked for
    finally:
        if victim.poll() is None:
            victim.kill()
    assert w._next_try["a"] > 0 and "next try in 1 s" in server.notes[-1]
    assert not w._repair("a", supervise.Verdict("stopped"))
    assert "next try in 2 s" in server.notes[-1]
    assert not w._repair("a", supervise.Verdict("stopped"))
    assert w.given_up == {"a"} and "giving up" in server.notes[-1]
    assert server.reloaded == ["a"] * 3 and w.restarts == 0
    assert w._repair("b", supervise.Verdict("not loaded", unloaded=True))
    assert server.loaded == ["b"] and w.repaired == [("b", "not loaded")] and w.restarts == 1


def test_the_requests_a_repaired_model_held_are_said_lost_once_it_is_unloaded() -> None:
    """Catches: a request held by the public model's stub when it died was never answered (tritonserver 2.51 drops
    it, even after the reload), so its client waited for the front's 300 s bound. Every repair that unloads a model
    (its stub dead, stopped or wedged: killed) says so between the unload and the load, even when the unload
    fails; loading a model that was not loaded loses nothing."""
    server = StandIn(fail_reloads=1)
    w = StubWatchdog(server, interval_s=3600.0)
    w.stop()
    assert not w._repair("a", supervise.Verdict("its python-backend stub died"))  # the unload fails: lost all the same
    assert w._repair("a", supervise.Verdict("its python-backend stub died"))
    assert w._repair("b", supervise.Verdict("wedged", {2 ** 22 + 1}))  # no such process: the kill is a no-op
    assert w._repair("c", supervise.Verdict("not loaded", unloaded=True))
    assert server.asked == [("unload", "a"), ("lost", "a"), ("unload", "a"), ("lost", "a"), ("load", "a"),
                            ("unload", "b"), ("lost", "b"), ("load", "b"), ("load", "c")]


def test_a_repaired_model_follows_its_new_stubs_and_the_replaced_versions_are_said(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A model of two instances loses one stub: after the reload its new stubs are followed, and the one of the
    replaced version still running (it exits when that version unloads, or is kept: `held`) is not: its end is not
    another death to repair. The server hears which stubs the repair replaced."""
    server = StandIn()
    w = StubWatchdog(server, interval_s=3600.0)
    w.stop()
    # each look: the stubs found (with their state), then the stubs after the repairs of that look
    looks = iter([({"a": {11: IDLE}}, {"a": {11, 20, 21}}),  # stub 10 died; 11 of the replaced version still runs
                  ({"a": {20: IDLE, 21: IDLE}}, {"a": {20, 21}})])  # the replaced version unloaded: 11 ended
    now: list[dict[str, set[int]]] = []

    def found(pid: int | None) -> dict[str, dict[int, Stub]]:
        stubs, after = next(looks)
        now[:] = [after]
        return stubs

    monkeypatch.setattr(supervise, "stubs", found)
    monkeypatch.setattr(supervise, "stub_pids", lambda pid: now[0])
    assert w._heal({"a": {10, 11}}) == {"a": {20, 21}}
    assert server.loaded == ["a"] and ("replaced", "10,11") in server.asked
    assert w._heal({"a": {20, 21}}) == {"a": {20, 21}} and server.loaded == ["a"]  # no second repair


def test_supervision_goes_on_through_a_failed_start_of_any_kind_and_ends_a_start_on_a_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart that fails with an OSError (a full disk) is a failed start, not a traceback; a stop asked for while
    a restart waits ends the supervision as a stop."""
    said: list[str] = []
    outcomes: list[BaseException] = [OSError(28, "No space left on device"), StartCancelled("a stop was asked for")]
    server = StandIn()
    server.running = False

    def restart(timeout_s: float = 180.0, max_s: float | None = None,
                cancelled: Callable[[], bool] | None = None) -> object:
        assert cancelled is not None  # the wait for the start can be ended
        raise outcomes.pop(0)

    server.restart = restart  # type: ignore[method-assign]
    monkeypatch.setattr(supervise.time, "sleep", lambda s: None)
    assert supervise.supervise(server, lambda: False, said.append) is True
    assert "No space left on device" in said[1] and "next try in 1 s" in said[1], said


# ---- tritonserver and the front: stopped, hung ------------------------------------------------------------------
def test_a_process_stopped_at_consecutive_looks_or_silent_for_hung_s_cannot_answer() -> None:
    live = Liveness(hung_s=15.0)
    well, silent = Look("S", True), Look("S", False)
    assert live.judge({"front": Look("T", False), "tritonserver": well}, 0.0) == {}
    assert live.judge({"front": Look("T", False), "tritonserver": well}, 1.0) == {
        "front": "cannot answer: it is stopped (SIGSTOP)"}
    assert live.judge({"front": well, "tritonserver": silent}, 2.0) == {}  # continued: its count starts again
    assert live.judge({"front": Look("T", False), "tritonserver": silent}, 16.0) == {
        "tritonserver": "cannot answer: its ports answered nothing for 15 s (hung)"}
    assert live.judge({"front": well, "tritonserver": well}, 17.0) == {}  # an answer: well again
    assert live.judge({"tritonserver": silent}, 31.0) == {}  # 14 s after its last answer
    traced = Liveness(hung_s=15.0)
    assert [traced.judge({"front": Look("t", False)}, float(t)) for t in range(0, 60, 10)] == [{}] * 6  # a debugger's


def test_a_crash_its_log_reported_means_it_cannot_answer_at_once() -> None:
    live = Liveness(hung_s=15.0)
    assert live.judge({"tritonserver": Look("S", True, 11)}, 0.0) == {
        "tritonserver": "cannot answer: it crashed (signal 11, said in its log) and has not exited"}
    assert live.judge({"tritonserver": Look("S", True)}, 1.0) == {}  # the next look reads only what came after


def test_a_tritonserver_keeping_held_max_replaced_instances_is_restarted() -> None:
    live = Liveness(hung_s=15.0)
    assert live.judge({"tritonserver": Look("S", True, held=HELD_MAX - 1)}, 0.0) == {}
    assert live.judge({"tritonserver": Look("S", True, held=HELD_MAX)}, 1.0) == {"tritonserver": (
        f"keeps {HELD_MAX} replaced model instances whose stubs died with requests in them (only its exit frees them)")}


def test_the_process_watch_kills_what_cannot_answer_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "LOOK_S", 0.01)
    server, said = StandIn(), []
    server.seen = {"front": Look("T", False), "tritonserver": Look("S", True)}
    watch = ProcessWatch(server, said.append).start()
    try:
        assert wait_until(lambda: ("kill", "front") in server.asked, 10)
    finally:
        watch.stop()
    assert said[0] == "front cannot answer: it is stopped (SIGSTOP); killing it to start it again"
    assert ("kill", "tritonserver") not in server.asked
