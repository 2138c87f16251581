"""`videoitg batch` handles SIGINT/SIGTERM itself (a Kubernetes or Slurm stop): it stops taking work, writes every
row it already received, exits non-zero with "rerun to resume", and the rerun finishes with each row exactly once.
Ray's own start-up messages go to OUT/ray-driver.log, not the terminal."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from videoitg.batch.runner import SignalStop, StopRequested
from videoitg.defaults import default_checkpoint


def test_first_signal_raises_once_later_ones_wait_for_the_write() -> None:
    with SignalStop() as stop:
        with pytest.raises(StopRequested) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        assert e.value.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # a second signal while stopping: ignored
    written = []
    with SignalStop() as stop:
        with pytest.raises(StopRequested):
            with stop.deferred():  # a shard write in progress is finished first
                os.kill(os.getpid(), signal.SIGINT)
                written.append("shard")
        assert written == ["shard"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


pytest.importorskip("ray.data", reason="ray[data] (the batch extra) is not installed")

from tests.support.batch import SAMPLING_ARGS, make_clip  # noqa: E402
from tests.support.ray import REPO, kill_session, ray_env, records, run_to_end  # noqa: E402

ROWS = 160


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sig")
    for v in range(4):
        make_clip(root / f"v{v}.mp4", v)
    m = root / "manifest.jsonl"
    m.write_text("".join(json.dumps({"video": f"v{i % 4}.mp4", "instruction": f"question number {i}", "doc_id": i})
                         + "\n" for i in range(ROWS)))
    return m


def _cmd(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "videoitg", "batch", str(manifest), "--out", str(out), "--checkpoint",
            str(default_checkpoint()), "--workers", "1", "--object-store-mb", "128", *SAMPLING_ARGS, *extra]


def test_sigterm_mid_run_keeps_every_finished_row(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Ungrouped (every row decodes its clip: slow enough to stop mid-way) and nothing flushed on its own: every
    # finished row is still in the driver's buffer when the signal comes.
    proc = subprocess.Popen(_cmd(manifest, out, "--no-group", "--shard-rows", "100000", "--flush-seconds", "100000"),
                            cwd=REPO, env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        deadline, seen = time.monotonic() + 240, 0
        while time.monotonic() < deadline and proc.poll() is None:
            done = [int(n) for n in re.findall(rf"(\d+)/{ROWS}", "".join(err))]
            seen = max(done, default=0)
            if seen >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None and seen >= 5, "the run ended before it could be stopped: " + "".join(err)[-2000:]
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        kill_session(proc.pid)
        proc.stdout.close()
    text = "".join(err)
    assert rc == 128 + signal.SIGTERM, text[-3000:]
    assert "stopped by SIGTERM" in text and "rerun the same command to resume" in text
    assert "Token authentication" not in text and "core_worker" not in text  # Ray's noise is in its log
    assert (out / "ray-driver.log").is_file()
    saved = records(sorted((out / "shards").glob("*.results.jsonl")))
    assert len(saved) >= seen and len(saved) < ROWS, "rows the bar counted as finished were not written"
    assert not (out / "results.jsonl").exists()

    rc, stdout, stderr = run_to_end(_cmd(manifest, out, "--no-progress"))
    assert rc == 0, stderr[-3000:]
    # summary.json, not stdout's last line: stdout also carries Ray's own lines.
    assert json.loads((out / "summary.json").read_text())["rows_already_done"] == len(saved)
    counts = collections.Counter(r["row_id"] for r in records(sorted((out / "shards").glob("*.results.jsonl"))))
    assert set(counts) == {str(i) for i in range(ROWS)} and set(counts.values()) == {1}
