"""A start that fails says why in one line: each way tritonserver (or the front) refuses to load a model or to start
(shared memory, a backend library, a port, a file, the model's own code) reaches the operator as the model named, the
cause from the log and what to do (`videoitg/launch/refusals.py`). The lines themselves on text; each way in on a
real tritonserver with small python repositories; the shared-memory one through `videoitg serve` with a real small
/dev/shm (a mount namespace of its own: root only)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.launch import CONFIG, write_model
from tests.support.server import skip_without_tritonserver
from videoitg.launch import server as server_mod
from videoitg.launch.ports import ServerError, free_ports
from videoitg.launch.refusals import Context, LogRefusals, explain, refusal
from videoitg.launch.server import ServerOptions, TritonServer

SHM_LINE = ('E1128 04:13:58.974910 10754 model_lifecycle.cc:642] "failed to load \'videoitg_vision\' version 1: '
            "Internal: Unable to initialize shared memory key 'videoitg_1.2_ab_cd' to requested size (16777216 bytes)"
            ". If you are running Triton inside docker, use '--shm-size' flag to control the shared memory region "
            'size. Error: No space left on device"')


def test_each_refusal_line_names_its_model_and_cause() -> None:
    r = refusal(SHM_LINE)
    assert r is not None and r.model == "videoitg_vision" and r.cause.startswith("Unable to initialize shared memory")
    assert r.cause.endswith("No space left on device") and not r.fatal
    r = refusal('E1 00:00:00.0 1 model_lifecycle.cc:642] "failed to load \'m\' version 1: Internal: RuntimeError: '
                'no\\n\\nAt:\\n  /r/m/1/model.py(13): initialize\\n"')
    assert r is not None and (r.model, r.cause) == ("m", "RuntimeError: no")  # the traceback stays in the log
    r = refusal("I1 00:00:00.1 2 pb_stub.cc:2105]  Failed to preinitialize Python stub: Python model file not found "
                "in '/r/m/1/model.py'", Path("/r"))
    assert r is not None and r.model == "m" and r.fatal
    r = refusal("OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already "
                "in use")
    assert r is not None and (r.model, r.who) == ("", "the front") and "8000" in r.cause
    assert refusal('I1 00:00:00.1 2 model_lifecycle.cc:839] "successfully loaded \'m\'"') is None


def test_models_of_one_cause_share_one_line_and_the_server_line_only_where_no_model_says_more() -> None:
    found = LogRefusals()
    found.update((SHM_LINE.replace("vision", "grounding") + "\n" + SHM_LINE + "\nerror: creating server: Internal - "
                  "failed to load all models\n").encode())
    line = explain(found.found, Context(shm_need=lambda: "give it at least 256 MiB"), Path("/tmp/s.log"))
    assert "\n" not in line and line.count("could not be loaded") == 1, line
    assert line.startswith("'videoitg_grounding' and 'videoitg_vision' could not be loaded: Unable to initialize")
    assert line.endswith("No space left on device; give it at least 256 MiB (server log: /tmp/s.log)")
    assert "failed to load all models" not in line
    only = LogRefusals()
    only.update(b"error: creating server: Invalid argument - --model-repository must be specified\n")
    assert explain(only.found, Context()).startswith("tritonserver could not start: --model-repository must be")


# ---- each way in, on a real tritonserver ---------------------------------------------------------------------------
def broken(repo: Path, way: str) -> None:
    """`repo` with `echo`, and `other` refused in the way named."""
    write_model(repo, "echo")
    write_model(repo, "other", init="raise RuntimeError('the weights cannot be read')" if way == "code" else "pass")
    if way == "backend":  # a repository made for a tritonserver with other backends
        (repo / "other" / "config.pbtxt").write_text(CONFIG.replace('"python"', '"onnxruntime"'))
    elif way == "missing file":  # tritonserver 2.51 waits for this model's stub for ever
        (repo / "other" / "1" / "model.py").unlink()
    elif way == "bad file":
        (repo / "other" / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: x\n')
    elif way == "package":
        (repo / "other" / "1" / "model.py").write_text("import videoitg_no_such_package\n")


@pytest.mark.server
@pytest.mark.parametrize(("way", "cause", "what_to_do"), [
    ("backend", "unable to find backend library for backend 'onnxruntime'", "serve a repository made for it"),
    ("missing file", "Python model file not found in", "a file it needs is missing"),
    ("bad file", "failed to read text proto from", "restore it, or write the repository again"),
    ("code", "RuntimeError: the weights cannot be read", "fix what its error names"),
    ("package", "ModuleNotFoundError: No module named 'videoitg_no_such_package'", "install it there"),
])
def test_a_model_tritonserver_refuses_is_one_line_naming_it_its_cause_and_what_to_do(
        way: str, cause: str, what_to_do: str, tmp_path: Path) -> None:
    """Catches: "exited with code 1 while starting" and 4 KB of the log's option table (the cause was above it), and
    a missing model.py waited for until the 180 s stall bound."""
    skip_without_tritonserver()
    broken(tmp_path / "repo", way)
    t0 = time.monotonic()
    with pytest.raises(ServerError) as e:
        TritonServer(tmp_path / "repo", ServerOptions(exit_timeout_s=3), log_path=tmp_path / "s.log").start(120)
    said = str(e.value)
    assert "\n" not in said and "'other' could not be loaded: " in said and "'echo'" not in said, said
    assert cause in said and what_to_do in said and f"(server log: {tmp_path / 's.log'})" in said, said
    assert time.monotonic() - t0 < 100, "waited for a model that could not start"  # a hang guard, not a speed


@pytest.mark.server
def test_tritonservers_own_port_taken_at_every_try_is_named_with_its_holder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    skip_without_tritonserver()
    write_model(tmp_path / "repo", "echo")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        real = server_mod.free_ports
        picks: list[int] = []

        def free(n: int, host: str = "127.0.0.1") -> list[int]:  # tritonserver's own picks: its metrics port taken
            picks.append(n)
            return real(n, host) if len(picks) == 1 else real(2, host) + [port]

        monkeypatch.setattr(server_mod, "free_ports", free)
        with pytest.raises(ServerError) as e:
            TritonServer(tmp_path / "repo", ServerOptions(stub_watchdog_s=0), log_path=tmp_path / "s.log").start(120)
    said = str(e.value)
    assert "\n" not in said and f"port {port} is taken (held by pid {os.getpid()}" in said, said
    assert "stop that process" in said, said


@pytest.mark.server
def test_a_public_port_taken_before_the_front_binds_it_is_named_with_its_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process takes the HTTP port between the launcher's check and the front's bind."""
    skip_without_tritonserver()
    write_model(tmp_path / "repo", "echo")
    monkeypatch.setattr(server_mod, "check_ports_free", lambda host, ports: None)  # the moment after the check
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServerError) as e:
            TritonServer(tmp_path / "repo", ServerOptions(http_port=port, stub_watchdog_s=0),
                         log_path=tmp_path / "s.log").start(120)
    said = str(e.value)
    assert said.startswith("the front exited with code 1 while starting: the front could not start: "), said
    assert "\n" not in said and f"port {port} is taken (held by pid {os.getpid()}" in said, said


@pytest.mark.server
def test_serve_with_a_dev_shm_too_small_says_so_and_how_large_to_make_it(tmp_path: Path) -> None:
    """The case of a container's small default /dev/shm: `serve` exited 2 saying only `error: creating server:
    Internal - failed to load all models`. Here /dev/shm is a real 24 MiB tmpfs in a mount namespace of its own,
    two models need 2 x 16 MiB."""
    skip_without_tritonserver()
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a /dev/shm of its own needs a mount namespace: root only")
    repo = tmp_path / "repo"
    write_model(repo, "echo")
    write_model(repo, "other")
    ports = [str(p) for p in free_ports(3)]
    script = ('mount -t tmpfs -o size=24m tmpfs /dev/shm && exec "$0" -m videoitg serve --model-repository "$1" '
              '--http-port "$2" --grpc-port "$3" --metrics-port "$4"')
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable, str(repo),
                        *ports], capture_output=True, text=True, cwd=ROOT, timeout=180)
    if "mount:" in r.stderr and r.returncode == 32:
        pytest.skip(f"no tmpfs could be mounted: {r.stderr.strip()}")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    said = lines[0]
    # tritonserver 2.51 exits 1 here, or now and then ends with SIGSEGV (-11) as it unloads after the failed load
    assert re.match(r"videoitg serve: error: tritonserver exited with code (1|-11) while starting: ", said), said
    assert "could not be loaded: Unable to initialize shared memory" in said and "No space left on device" in said
    assert "/dev/shm holds 24 MiB" in said and "2 x 16 MiB to load" in said and "--shm-size" in said, said
    assert "docs/deploy.md, Shared memory" in said, said
