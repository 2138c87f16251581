"""`python -m benchmarks.answer.answer_parse` runs end to end on a small body and prints one row for each step."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import ROOT


def test_the_parse_benchmark_times_each_step_and_the_loops_wait() -> None:
    p = subprocess.run([sys.executable, "-m", "benchmarks.answer.answer_parse", "--video-mb", "0.5", "--reps", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \|$", p.stdout, re.MULTILINE)
    assert [r[0] for r in rows] == ["load_body", "video_source", "http_request_body"], p.stdout
