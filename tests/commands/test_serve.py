"""`videoitg serve` as a process: ready, serving, and a clean exit on SIGINT/SIGTERM, with a request in flight too
(bounded stop, no shared memory left)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support import ROOT
from tests.support.server import (
    read_until,
    skip_without_tritonserver,
    wait_until,
)
from videoitg.launch.ports import free_ports
from videoitg.launch.shm import SHM_PREFIX, launcher_tag

pytestmark = pytest.mark.server

skip_without_tritonserver()


ECHO = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X")
                .as_numpy() * 2)]) for r in requests]
'''


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_stops_cleanly_on_signal(sig, tmp_path) -> None:
    """`videoitg serve` on a one-model repository: ready, serves, and exits 0 on SIGINT/SIGTERM."""
    (tmp_path / "echo" / "1").mkdir(parents=True)
    (tmp_path / "echo" / "1" / "model.py").write_text(ECHO)
    (tmp_path / "echo" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\ninput [{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }]\n'
        'output [{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }]\n')
    ports = [str(p) for p in free_ports(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoitg", "serve", "--model-repository", str(tmp_path), "--http-port", ports[0],
         "--grpc-port", ports[1], "--metrics-port", ports[2]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        lines = read_until(proc, "ready:")
        assert any(x.startswith("ready:") for x in lines), "".join(lines)
        body = b'{"inputs":[{"name":"X","shape":[2],"datatype":"FP32","data":[1.5,2]}]}'
        req = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/v2/models/echo/infer", data=body)
        with urllib.request.urlopen(req, timeout=30) as r:
            assert b"[3.0,4.0]" in r.read()
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# It marks that it runs (a file `started` beside its model.py), then takes 30 s.
SLOW = ECHO.replace("    def execute(self, requests):\n", "    def execute(self, requests):\n        import pathlib\n"
                    "        import time\n\n        pathlib.Path(__file__).with_name('started').touch()\n"
                    "        time.sleep(30)\n")


def test_serve_command_sigterm_with_a_request_in_flight(tmp_path) -> None:
    """SIGTERM to `videoitg serve` while a 30 s request runs: the launcher stops within its bounded time, exits 0,
    the client gets an answer or an error (not a hang), and no shared memory of this server is left."""

    for name, code in (("echo", ECHO), ("slow", SLOW)):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.py").write_text(code)
        (tmp_path / name / "config.pbtxt").write_text(
            'backend: "python"\nmax_batch_size: 0\ninput [{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }]\n'
            'output [{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }]\n')
    ports = [str(p) for p in free_ports(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoitg", "serve", "--model-repository", str(tmp_path), "--http-port", ports[0],
         "--grpc-port", ports[1], "--metrics-port", ports[2], "--echo-log"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    outcome: list[object] = []
    try:
        lines = read_until(proc, "ready:")
        assert proc.poll() is None, "videoitg serve did not start:\n" + "".join(lines)
        prefix = f"{SHM_PREFIX}{launcher_tag().split('.')[0]}.{proc.pid}_"
        assert any(Path("/dev/shm").glob(f"{prefix}*")), "the server's shared memory is not where expected"

        def call() -> None:
            body = b'{"inputs":[{"name":"X","shape":[1],"datatype":"FP32","data":[1]}]}'
            req = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/v2/models/slow/infer", data=body)
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    outcome.append(r.status)
            except Exception as e:
                outcome.append(e)

        t = threading.Thread(target=call)
        t.start()
        started = tmp_path / "slow" / "1" / "started"
        assert wait_until(started.exists, 60), "the request did not reach the slow model in 60 s"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=40)
        said = proc.stdout.read()
        assert code == 0, said  # the stop cancelled what was still running: what it was asked to do
        assert "requests still running at the exit timeout were cut" in said, said
        assert "Exit timeout expired" in said, said  # --echo-log: Triton's own log reached stdout
        stopped_s = time.monotonic() - t0
        t.join(timeout=30)
        assert outcome, "the in-flight request neither answered nor failed"
        assert stopped_s < 25, f"stop took {stopped_s:.1f} s"
        assert not list(Path("/dev/shm").glob(f"{prefix}*")), "shared memory left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
