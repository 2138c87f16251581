"""What `videoitg batch` shows while it runs: what it waits for before the first row, counts that match the bar,
lines from workers above the bar instead of inside it, and rates only where there is enough time to measure one."""

from __future__ import annotations

import io
import re
import sys
import time

import pytest

from videoitg.batch import runner
from videoitg.batch.runner import MIN_RATE_SPAN_S, _Progress, _Tally
from videoitg.commands.batch import _print_summary


class Terminal(io.StringIO):
    """A stream tqdm draws on as on a terminal (it rewrites the line with carriage returns)."""

    def isatty(self) -> bool:
        return True


def _row(ok: bool = True) -> dict:
    return {"ok": ok, "hit": False, "worker": "w"}


def _drawn(text: str) -> list[str]:
    """Each state of the bar as drawn: the pieces between carriage returns that are a bar."""
    return [p for p in re.split(r"[\r\n]", text) if "|" in p and "/" in p]


def test_steady_rate_needs_time_and_leaves_the_first_burst_out(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock[0])
    t = _Tally()
    for _ in range(5):  # a unit's rows arrive at once
        t.add(_row())
    assert t.first_burst == 5 and t.steady_rate() is None
    clock[0] += 0.5
    t.add(_row())
    assert t.steady_rate() is None  # 1 row in 0.5 s is no rate (it would read 2 rows/s, or 1000 for 1 ms)
    clock[0] += MIN_RATE_SPAN_S
    for _ in range(4):
        t.add(_row(ok=False))
    assert t.steady_rate() == pytest.approx(5 / (0.5 + MIN_RATE_SPAN_S))  # the 5 rows after the burst
    assert t.steady_rate(now=clock[0] + 2.5) == pytest.approx(5 / (3 + MIN_RATE_SPAN_S))  # it falls while idle


def test_the_bar_says_what_it_waits_for_and_its_counts_match(monkeypatch: pytest.MonkeyPatch) -> None:
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(_Progress, "TICK_S", 0.05)
    tally = _Tally()
    progress = _Progress(6, enabled=True)
    progress.bar.mininterval, progress.bar.miniters = 0, 1  # draw on every row, as a slow run does
    progress.phase("starting Ray")
    with progress:
        time.sleep(1.3)  # start-up: nothing arrives, the elapsed time still moves
        for ok in (True, True, False, True, True, True):
            tally.add(_row(ok))
            progress.row(tally)
    bars = _drawn(term.getvalue())
    waiting = [b for b in bars if "starting Ray" in b]
    assert len(waiting) >= 5 and "[00:00, starting Ray]" in waiting[0] and "[00:01, starting Ray]" in waiting[-1]
    for b in bars:
        m = re.search(r"(\d+)/6 \[[^,\]]*, ok (\d+), failed (\d+)", b)
        if m:  # every drawn state: ok + failed is the number of rows the bar shows done
            assert int(m[2]) + int(m[3]) == int(m[1]), b
    assert re.search(r"6/6 \[[^,\]]*, ok 5, failed 1; rate after", bars[-1])
    assert sum(bool(re.search(r" [1-6]/6 \[[^,\]]*, ok ", b)) for b in bars) >= 6  # each row was drawn
    assert "rows/s" not in term.getvalue()  # all within 2 s: no rate is shown


def test_lines_printed_meanwhile_go_above_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Ray forwards from the workers (print to the driver's stdout or stderr) is written on its own line after
    the bar is cleared, and the bar is drawn again below it."""
    term, out = Terminal(), Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(sys, "stdout", out)
    tally = _Tally()
    with _Progress(3, enabled=True) as progress:
        tally.add(_row())
        progress.row(tally)
        print("(ScoreActor pid=1) a worker's warning", file=sys.stderr)
        print("(ScoreActor pid=2) a worker's output")  # stdout
        tally.add(_row())
        progress.row(tally)
    assert sys.stderr is term and sys.stdout is out  # restored
    text = term.getvalue()
    before, line, after = text.partition("(ScoreActor pid=1) a worker's warning\n")
    assert line, text
    assert re.search(r"\r\s*\r$", before)  # the bar was cleared: the line starts at the line's beginning
    assert "1/3" in _drawn(after)[0]  # and the bar comes back under it
    assert out.getvalue() == "(ScoreActor pid=2) a worker's output\n"


def test_the_summary_says_why_there_is_no_steady_rate(capsys: pytest.CaptureFixture[str]) -> None:
    base = {"rows_ok": 2, "rows_failed": 0, "rows_already_done": 18, "rows_changed": 0, "rows_rejected_by_manifest": 0,
            "videos": 2, "units": 2, "cache_hit_rate": 0.0, "rows_per_second": 0.17, "work_seconds": 11.5,
            "workers_used": 2, "merged": {"results": 20, "errors": 0, "duplicates_dropped": 0, "missing": 0},
            "options": {}}
    _print_summary({**base, "rows_todo": 2, "startup_seconds": 11.4, "steady_rows_per_second": None})
    err = capsys.readouterr().err
    assert "steady rate not measured" in err and "rows/s after" not in err
    _print_summary({**base, "rows_todo": 40, "startup_seconds": 11.4, "steady_rows_per_second": 3.5})
    assert "steady 3.50 rows/s after 11.4 s start-up" in capsys.readouterr().err
    _print_summary({**base, "rows_todo": 0, "startup_seconds": None, "steady_rows_per_second": None})
    assert "every row already done" in capsys.readouterr().err
