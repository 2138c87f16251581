"""The soak's judgement (`benchmarks/serving/soak_judge.py`) on numbers: each goal met and each missed, so a soak's
verdict can be trusted without running one here (the soak takes 30 minutes; its record: benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.serving.soak import fixed_work_cpu_s
from benchmarks.serving.soak_judge import (
    Attempt,
    by_text,
    cpu_by_process,
    cpu_shares,
    during_repair,
    judge,
    memory_growth,
    p99_windows,
    window_median,
)

WINDOWS = [(300.0, 302.0), (600.0, 601.5)]


def ok(kind: str, sent: float, latency: float = 0.1) -> Attempt:
    return Attempt(kind, sent, sent + latency, "ok")


def flat(level: float = 100.0, end: float = 1800.0) -> list[tuple[float, float]]:
    return [(t, level) for t in range(0, int(end) + 1, 10)]


def steady(end: float = 1800.0) -> list[Attempt]:
    return [ok("cached http", float(t), 0.1 + (t % 100) / 1000) for t in range(0, int(end))]


def test_a_clean_soak_meets_every_goal() -> None:
    errors = [Attempt("cold grpc", 301.0, 301.2, "error", "videoitg_decode: StepUnavailableError: stub died"),
              Attempt("cached http", 299.5, 303.0, "error", "videoitg: the model's process died ...; try again")]
    v = judge(steady() + errors, 0, WINDOWS, {"front": flat(), "tritonserver": flat(2e9)}, 1800.0)
    assert v.met, v.goals
    assert v.figures["errors"] == 2 and abs(v.figures["p99_ratio"] - 1.0) < 0.01


def test_each_goal_can_be_missed() -> None:
    base = steady()
    assert not judge(base, 1, WINDOWS, {"f": flat()}, 1800.0).goals["nothing lost"]
    assert not judge(base + [Attempt("page", 5, 6, "wrong")], 0, WINDOWS, {"f": flat()}, 1800.0).goals[
        "nothing answered wrong"]
    late = Attempt("cold http", 700.0, 700.5, "error", "videoitg_vision: StepUnavailableError")
    assert not judge(base + [late], 0, WINDOWS, {"f": flat()}, 1800.0).goals["errors only during repairs"]
    unnamed = Attempt("cached grpc", 300.5, 300.6, "error", "[request id: <id_unknown>] Exceeds maximum queue size")
    v = judge(base + [unnamed], 0, WINDOWS, {"f": flat()}, 1800.0)
    assert not v.goals["each error names the step"] and v.goals["errors only during repairs"]
    # tritonserver named: enough only during a restart of tritonserver's, not during a stub's repair
    server = Attempt("cold grpc", 300.5, 300.6, "error", "server unavailable: tritonserver did not answer (...)")
    assert not judge(base + [server], 0, WINDOWS, {"f": flat()}, 1800.0).goals["each error names the step"]
    assert judge(base + [server], 0, WINDOWS, {"f": flat()}, 1800.0, WINDOWS[:1]).goals["each error names the step"]
    growing = [(t, 100.0 * (1 + t / 1800 * 0.2)) for t, _ in flat()]  # +20 % over the soak: ~13 % over 20 min
    assert not judge(base, 0, WINDOWS, {"f": flat(), "g": growing}, 1800.0).goals["memory flat"]
    slower = [ok("cached http", float(t), 0.1 if t < 1200 else 0.3) for t in range(1800)]
    assert not judge(slower, 0, WINDOWS, {"f": flat()}, 1800.0).goals["p99 steady"]


def test_the_rules_read_the_right_spans() -> None:
    assert during_repair(Attempt("x", 290.0, 300.5, "error"), WINDOWS)  # in flight when the stub was killed
    assert during_repair(Attempt("x", 306.5, 306.6, "error"), WINDOWS)  # sent within the grace after it
    assert not during_repair(Attempt("x", 308.0, 308.1, "error"), WINDOWS)
    # growth over the last 20 minutes only: a warm-up in the first 10 does not count
    warm = [(t, 50.0 if t < 300 else 100.0) for t, _ in flat()]
    assert memory_growth(warm, 1800.0) == 0.0 and memory_growth(flat(end=600), 600.0) is None
    assert by_text([Attempt("x", 1, 2, "error", "[request id: 7] Exceeds maximum queue size")] * 2) == {
        "Exceeds maximum queue size": 2}


def test_a_process_started_again_is_judged_life_by_life() -> None:
    """Catches: a stub killed late in the soak began again small, so its role read as flat (or shrinking) over the
    last 20 minutes though the process before it grew: each life is read apart, its own growth scaled to the span."""
    grew = [(t, 100.0 * (1 + max(0, t - 600) / 900 * 0.10), 1) for t in range(0, 1500, 10)]  # +10 % in 15 min
    fresh = [(t, 60.0, 2) for t in range(1500, 1801, 10)]  # started again at 25 min: 5 minutes of life, not read
    assert memory_growth([s[:2] for s in grew + fresh], 1800.0) < 0  # read as one process: it shrank
    growth = memory_growth(grew + fresh, 1800.0)
    assert growth is not None and 0.10 < growth < 0.16, growth  # about 13 % over 20 minutes
    assert not judge(steady(), 0, WINDOWS, {"stub": grew + fresh}, 1800.0).goals["memory flat"]
    # a life started during the span is read after its warm-up (its cache filling), and a steady one is flat
    warming = [(t, 50.0, 1) for t in range(0, 900, 10)] + [(t, 50.0 + min(t - 900, 300) / 10, 2)
                                                           for t in range(900, 1801, 10)]
    assert memory_growth(warming, 1800.0) == 0.0


def test_the_record_counts_errors_by_their_10_seconds_and_text() -> None:
    from benchmarks.serving.soak import errors_per_10s

    attempts = [Attempt("cold http", 301.0, 301.5, "error", "videoitg: server busy: 8 requests (max_in_flight=8)"),
                Attempt("cold grpc", 305.0, 309.9, "error", "videoitg: server busy: 8 requests (max_in_flight=8)"),
                Attempt("cold grpc", 305.0, 310.0, "error", "videoitg_grounding: StepUnavailableError"),
                ok("cached http", 305.0)]
    assert errors_per_10s(attempts) == {300: {"videoitg: server busy: N requests (max_in_flight=N)": 2},
                                        310: {"videoitg_grounding: StepUnavailableError": 1}}


class Refusing:
    """Stands in for the server side of `soak.Soak`: refuses each request's first try, answers the second; notes
    when each try came."""

    def __init__(self) -> None:
        import threading

        self.came: dict[int, list[float]] = {}
        self.lock = threading.Lock()

    def one(self, kind: str, n: int) -> tuple[str, str]:
        import time

        with self.lock:
            self.came.setdefault(n, []).append(time.monotonic())
            first = len(self.came[n]) == 1
        time.sleep(0.01)
        return ("error", "videoitg: OverloadedError: server busy") if first else ("ok", "")


def test_the_traffic_keeps_its_arrivals_while_many_requests_wait_to_be_tried_again() -> None:
    """Catches: a request waiting out its retry held one of the soak's 64 senders, so once 64 waited the arrivals
    queued behind them and their waits counted as the server's latency (the soak's p99 of 55.8 s); and the retries of
    requests refused together came back together."""
    import threading
    import time

    import numpy as np

    from benchmarks.serving import soak

    server = Refusing()
    run = soak.Run(server, time.monotonic())  # type: ignore[arg-type]
    n = soak.traffic(server, run, rate=400.0, duration_s=1.0, stop=threading.Event())
    assert n == 400 and run.lost == 0 and {len(c) for c in server.came.values()} == {2}
    first = [a for a in run.attempts if a.outcome == "error"]
    assert len(first) == 400 and max(a.latency for a in first) < 0.5  # sent on arrival, not once a sender was free
    gaps = np.array([c[1] - c[0] for c in server.came.values()])
    assert 0.5 <= gaps.min() and gaps.max() < 1.6  # BACKOFF_S[0] = 1 s, spread over [0.5, 1.5)
    assert gaps.std() > 0.15  # spread, not all at once


class Filling:
    """Stands in for `soak.Soak`'s cold requests and cache gauges: each request adds `entry` bytes; every 7th is
    answered wrong."""

    def __init__(self, entry: float) -> None:
        import threading

        self.entry, self.held, self.entries, self.wrong = entry, 0.0, 0, 0
        self.kinds: set[str] = set()
        self.lock = threading.Lock()

    def one(self, kind: str, n: int) -> tuple[str, str]:
        with self.lock:
            self.held += self.entry
            self.entries += 1
            self.kinds.add(kind)
            self.wrong += n % 7 == 6
        return ("wrong", "") if n % 7 == 6 else ("ok", "")

    def cache_gauges(self) -> tuple[float, float]:
        with self.lock:
            return self.held, float(self.entries)


def test_the_cache_is_filled_before_the_traffic_and_the_record_says_how_full() -> None:
    """Catches: the traffic started with the cache a third full, so the first p99 window held its filling."""
    from benchmarks.serving import soak

    server = Filling(entry=1000.0)
    filled = soak.fill_cache(server, workers=3, bound=100_000.0, give_up_s=30.0,  # type: ignore[arg-type]
                             look_s=0.001)
    assert filled["took_s"] < 30.0  # stopped by the gauge, not by the give-up
    assert server.kinds == {"cold http", "cold grpc"}
    assert filled["share"] >= soak.FILLED and filled["bytes"] <= server.held
    assert filled["requests"] == server.entries and filled["wrong"] == server.wrong >= 1
    assert not filled["errors"]
    stopped = soak.fill_cache(Filling(entry=0.0), workers=2, bound=100.0, give_up_s=0.05,  # type: ignore[arg-type]
                              look_s=0.001)
    assert stopped["share"] == 0.0 and stopped["took_s"] >= 0.05 and stopped["requests"] > 0


def test_the_p99_windows_are_read_apart_by_kind_and_away_from_repairs() -> None:
    """Where the two windows of the p99 goal differ: a kind slower late shows in its own row, and slow requests
    during a repair (and its 30 s after) are left out of the row away from repairs."""
    attempts = [ok("page", float(t), 0.1 if t < 1200 else 0.3) for t in range(1800)]
    attempts += [ok("cold http", float(t), 0.05) for t in range(1800)]
    attempts += [ok("cold http", 1500.0 + t / 10, 5.0) for t in range(100)]  # a repair's backlog
    w = p99_windows(attempts, [(1495.0, 1500.0)], 1800.0)
    assert w["by_kind"]["page"] == pytest.approx([0.1, 0.3]) and w["by_kind"]["cold http"][0] == pytest.approx(0.05)
    assert w["by_kind"]["cold http"][1] == pytest.approx(5.0)  # the backlog in the last window
    first, last = w["outside_repairs"]["all"]
    assert first <= 0.1 + 1e-9 and last <= 0.3 + 1e-9  # without it: each window's slowest steady kind


def test_the_machines_cpu_is_read_per_window() -> None:
    """/proc/stat's cumulative jiffies: the busy and stolen shares between two times."""
    samples = [(float(t), 50.0 * t, 10.0 * t if t >= 600 else 0.0, 200.0 * t) for t in range(0, 1801, 10)]
    assert cpu_shares(samples, 0, 590) == pytest.approx({"busy": 0.25, "steal": 0.0})
    assert cpu_shares(samples, 1200, 1800) == pytest.approx({"busy": 0.25, "steal": 0.05})
    assert cpu_shares(samples, 5, 9) == {}


def test_a_running_soak_says_each_minutes_answers_errors_and_p99() -> None:
    from benchmarks.serving.soak import progress_line

    minute = [ok("cached http", 60.0 + t / 10, 0.1) for t in range(99)] + [ok("cold grpc", 100.0, 2.0)]
    errors = [Attempt("cold grpc", 70.0, 71.0, "error", "videoitg_decode: ... repaired"),
              Attempt("page", 80.0, 81.0, "wrong")]
    line = progress_line(minute + errors, 60.0, 120.0, lost=2)
    assert line == "02:00 100 answered (1.7/s), 1 errors, 1 wrong, p99 0.119 s; 2 lost so far", line


def test_each_processs_cpu_is_read_per_window_life_by_life_and_the_rest_is_the_machines() -> None:
    """Cores used on average: a process steady at half a core; a stub killed at 1500 s whose new life used 30 s
    from its birth (its start is the repair's cost); what the machine was busy with beside them."""
    front = [(float(t), 0.5 * t, 7) for t in range(0, 1801, 10)]
    stub = [(float(t), 0.1 * t, 8) for t in range(0, 1500, 10)] + [(float(t), 30.0 + 0.1 * (t - 1500), 9)
                                                                  for t in range(1500, 1801, 10)]
    machine = [(float(t), 100.0 * t, 0.0, 200.0 * t) for t in range(0, 1801, 10)]  # 1 core busy, 10 ms a jiffy
    first = cpu_by_process({"front": front, "stub": stub}, machine, 0, 600, 0.01)
    last = cpu_by_process({"front": front, "stub": stub}, machine, 1200, 1800, 0.01)
    assert first == pytest.approx({"front": 0.5, "stub": 0.1, "rest of the machine": 0.4})
    assert last == pytest.approx({"front": 0.5, "stub": 0.1 + 30 / 600 - 1 / 600, "rest of the machine":
                                  0.4 - 30 / 600 + 1 / 600})
    short = [(float(t), 0.5 * t, 7) for t in range(0, 131, 10)]  # a soak shorter than the window: its own span
    assert cpu_by_process({"front": short}, machine[:14], 0, 600, 0.01)["front"] == pytest.approx(0.5)


def test_the_machines_speed_is_the_median_of_its_fixed_work_per_window() -> None:
    """One slow probe (a busy moment) moves no window; probes 20 % slower through the last window move that one."""
    speed = [(float(t), 0.015) for t in range(0, 600, 10)] + [(300.0, 0.5)]
    speed += [(float(t), 0.018) for t in range(1200, 1801, 10)]
    assert window_median(speed, 0, 600) == pytest.approx(0.015)
    assert window_median(speed, 1200, 1800) == pytest.approx(0.018)
    assert math.isnan(window_median(speed, 700, 800))
    assert fixed_work_cpu_s() > 0


def test_a_records_picture_is_drawn_again_from_what_it_kept(tmp_path: Path) -> None:
    """`--redraw DIR`: soak.json and attempts.csv.gz are enough, the machine's panels included."""
    import gzip

    from benchmarks.serving.soak import redraw

    record = {"kills": [{"at_s": 30.0, "ready_s": 31.0}], "restarts": [],
              "memory": {"front": [[10.0, 2.0**26, 7], [20.0, 2.0**26, 7]],  # a record without thread counts
                         "tritonserver": [[10.0, 2.0**26, 8, 168], [20.0, 2.0**26, 8, 204]]},
              "feature_cache": {"samples": [[10.0, 2.0**20, 10.0]]},
              "machine_cpu": {"samples": [[0.0, 0.0, 0.0, 0.0], [10.0, 500.0, 0.0, 2000.0]]},
              "fixed_work": {"samples": [[0.0, 0.015], [10.0, 0.016]]}}
    (tmp_path / "soak.json").write_text(json.dumps(record))
    with gzip.open(tmp_path / "attempts.csv.gz", "wt") as f:
        f.write("kind,sent_s,done_s,outcome\ncached http,1.0,1.1,ok\ncold grpc,30.5,31.5,error\n")
    png = redraw(tmp_path)
    assert png == tmp_path / "soak.png" and png.stat().st_size > 10_000
