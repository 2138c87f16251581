"""`python -m benchmarks.answer.answer_memory` runs end to end on small videos and prints one row for each case (about
10 s on a quiet machine, most of it two processes importing: the benchmark and the front it measures)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import ROOT

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")


def test_the_memory_benchmark_runs_each_case() -> None:
    small = ["--file-mb", "4", "--data-mb", "2", "--refused-mb", "24", "--video-bound-mib", "4", "--settle-s", "0.1"]
    p = subprocess.run([sys.executable, "-m", "benchmarks.answer.answer_memory", *small], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = dict(re.findall(r"^\| ([\w-]+) \| ([\d ]+) \|", p.stdout, re.MULTILINE))
    assert rows == {"file": "200 200", "data": "200", "data-twice": "200 200", "data-refused-server": "400 400 400",
                    "data-over-bound": "400", "data-380": "413"}, p.stdout
