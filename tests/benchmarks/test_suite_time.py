"""The suite-timing benchmark, run on a real pytest run of one small module (the whole suite is the benchmark's own
job, not a test's): pytest's summary read back, the process tree's CPU time, the census of the processes it started
and the speed reference recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.suite import suite_time

MODULE = "tests/test_support_compare.py"


def test_a_reading_of_a_real_pytest_run(tmp_path: Path) -> None:
    out = tmp_path / "reading.json"
    command = f"{sys.executable} -m pytest -p no:cacheprovider -p no:xdist --noconftest -q {MODULE}"
    reading = suite_time.main(["--command", command, "--json", str(out), "--log", str(tmp_path / "log.txt")])
    assert reading == json.loads(out.read_text())
    assert reading["returncode"] == 0 and set(reading["counts"]) == {"passed"} and reading["counts"]["passed"] >= 1
    assert 0 < reading["pytest_s"] <= reading["wall_s"]
    assert reading["cpu_s"] > 0 and reading["cores_busy"] > 0  # the child interpreter's own CPU time at least
    assert all(s > 0 for s in reading["reference_s"].values())
    assert reading["machine"]["cores"] >= 1 and (tmp_path / "log.txt").read_text().count(" passed in ") == 1
    census = reading["census"]  # the child interpreter, started during the run, is in it
    assert census["processes"] >= 1 and census["cpu_s"] > 0 and census["cpu_s_by_kind"].get("other", 0) > 0
    assert abs(sum(census["cpu_s_by_kind"].values()) - census["cpu_s"]) <= 0.05 * (len(census["cpu_s_by_kind"]) + 1)
    assert census["other_by_command"].get("-m pytest", 0) > 0  # what the "other" kind ran


def test_the_census_kinds() -> None:
    kind = suite_time.Census.kind
    assert kind("triton_python_b", "/x/triton_python_backend_stub /repo/videoitg_decode/1/model.py") == \
        "tritonserver python stubs"
    assert kind("tritonserver", "/x/bin/tritonserver --model-repository=/r") == "tritonserver"
    assert kind("raylet", "/x/ray/core/src/ray/raylet/raylet") == "ray"
    assert kind("python", "/v/bin/python /v/lib/site-packages/ray/_private/workers/default_worker.py") == "ray"
    assert kind("python", "/v/bin/python -u -c import sys;exec(eval(sys.stdin.readline()))") == "test workers"
    assert kind("ray::MapWorker(", "ray::MapWorker(ScoreActor)") == "ray"  # an actor, renamed
    assert kind("python", "/v/bin/python --node-ip-address=127.0.0.1 --node-manager-port=1 --object-store-name=x") == \
        "ray"  # a worker before its rename
    assert kind("python", "/v/bin/python -m videoitg batch m.jsonl") == "other"


def test_the_census_commands() -> None:
    command = suite_time.Census.command
    assert command("python", "/v/bin/python -m videoitg batch m.jsonl --out o") == "-m videoitg batch"
    assert command("python", "/v/bin/python -u -m videoitg.front {\"host\": 1}") == "-m videoitg.front"
    assert command("python", "/v/bin/python /v/bin/transformers serve /tmp/m --port 1") == "transformers serve"
    assert command("python3.11", "/l/bin/python3.11 -c import json") == "python -c"
    assert command("bash", "bash -c exec x") == "bash"


def test_the_census_names_the_test_module_a_process_was_started_under() -> None:
    module = suite_time.Census.module
    env = b"PATH=/bin\0PYTEST_CURRENT_TEST=tests/batch/test_runner_ray.py::test_kill[2] (call)\0HOME=/root\0"
    assert module(env) == "tests/batch/test_runner_ray.py"
    assert module(b"PATH=/bin\0HOME=/root\0") == ""


def test_the_summary_line_with_and_without_rules() -> None:
    got = suite_time.pytest_summary("x\n===== 1283 passed, 9 skipped in 771.43s (0:12:51) =====\n")
    assert got == {"pytest_s": 771.43, "counts": {"passed": 1283, "skipped": 9}}
    assert suite_time.pytest_summary("1 failed, 2 passed in 3.00s") == {"pytest_s": 3.0,
                                                                       "counts": {"failed": 1, "passed": 2}}
    assert suite_time.pytest_summary("no summary here") == {}
