"""The launcher restores what it made: a temporary-file cleaner (systemd-tmpfiles, tmpreaper) removes the model
repository `serve` generated, some of its files, the python backend's copy or the server log; the next repair or
restart writes it again from the same inputs, says so, and serves again. Each way in: the watchdog's reload after a
stub death, a model found unloaded, tritonserver's restart (through `videoitg serve`, its own generated repository),
with the whole repository gone or files of it; the backend's copy; the log. Small python repositories, real
tritonserver; the rule itself on files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import tritonclient.grpc as grpc

from tests.support import ROOT
from tests.support.launch import infer, read_only_disk, server_child, write_repo
from tests.support.server import read_until, ready, skip_without_tritonserver, stub_pids, wait_until
from videoitg.defaults import HOME_ENV
from videoitg.launch import binaries
from videoitg.launch.generated import GeneratedRepository
from videoitg.launch.ports import ServerError, free_ports
from videoitg.launch.server import ServerOptions, TritonServer


def as_written(repo: Path) -> GeneratedRepository:
    """`repo`'s files as they are now: what a launcher that wrote them holds."""
    return GeneratedRepository(repo, {str(p.relative_to(repo)): p.read_text() for p in sorted(repo.rglob("*"))
                                      if p.is_file()})


def test_the_damaged_files_are_written_again_and_said(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo")
    generated = as_written(repo)
    assert generated.restore() == "" and generated.damage() == []
    (repo / "echo" / "config.pbtxt").unlink()  # a cleaner removes old files, leaving directories
    (repo / "slow" / "1" / "model.py").write_text("changed")
    assert generated.damage() == ["echo/config.pbtxt", "slow/1/model.py"]
    assert generated.restore() == (f"the model repository {repo} lost echo/config.pbtxt and 1 more file(s); written "
                                   "again from the same inputs")
    assert as_written(repo) == generated
    shutil.rmtree(repo)
    assert generated.restore() == f"the model repository {repo} was removed; written again from the same inputs"
    assert as_written(repo) == generated and oct(repo.stat().st_mode & 0o777) == "0o700"


def test_a_repository_that_cannot_be_written_again_is_one_error_saying_what_to_do(tmp_path: Path) -> None:
    with read_only_disk(tmp_path, ("repo",)) as disk:
        generated = GeneratedRepository(disk / "repo", {"echo/config.pbtxt": "x"})
        srv = TritonServer(disk / "repo", generated=generated)
        with pytest.raises(ServerError, match=r"is damaged and cannot be written again \(.*Read-only file system\); "
                                              r"make its filesystem writable, or give --repo DIR on one"):
            srv.restore_generated("before loading 'echo'")


# ---- on a real tritonserver ------------------------------------------------------------------------------------
pytestmark = pytest.mark.server


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[TritonServer]:
    skip_without_tritonserver()
    repo = write_repo(tmp_path / "repo")
    srv = TritonServer(repo, ServerOptions(exit_timeout_s=3), log_path=tmp_path / "server.log",
                       generated=as_written(repo)).start(120)
    yield srv
    srv.stop()


@pytest.fixture()
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the test's own: the backend copy a test removes is then no other server's (the suite's servers
    share the user's home, and one reloading a model while its copy is gone fails to import the backend)."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("removed", ["the repository", "its config", "its model.py"])
def test_a_stub_death_after_a_cleaner_removed_the_repository_is_repaired(
        removed: str, server: TritonServer, capfd: pytest.CaptureFixture[str]) -> None:
    """Catches: the watchdog's reloads failing five times ("failed to poll from model repository"), health 400 for
    good."""
    target = {"the repository": server.repository, "its config": server.repository / "echo" / "config.pbtxt",
              "its model.py": server.repository / "echo" / "1" / "model.py"}[removed]
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    before = stub_pids(server)["echo"]
    os.kill(before, signal.SIGKILL)
    assert wait_until(lambda: server.watchdog.restarts >= 1 and ready(server), 60), server.log_tail()
    assert infer(server) == [3.0, 4.0] and stub_pids(server)["echo"] != before
    assert not server.watchdog.given_up and (server.repository / "echo" / "config.pbtxt").is_file()
    said = f"the model repository {server.repository} "
    assert said in server.log_tail(100_000) and "(before loading 'echo')" in server.log_tail(100_000)
    assert said in capfd.readouterr().err


def test_a_model_found_unloaded_after_its_files_went_is_loaded_from_them_again(server: TritonServer) -> None:
    shutil.rmtree(server.repository / "other")
    with grpc.InferenceServerClient(server.internal_grpc_url) as c:
        c.unload_model("other", headers=server.admin_headers("grpc"))
    assert wait_until(lambda: infer_ok(server, "other"), 60), server.log_tail()
    assert "written again from the same inputs (before loading 'other')" in server.log_tail(100_000)


def infer_ok(srv: TritonServer, model: str) -> bool:
    try:
        return infer(srv, model) == [3.0, 4.0]
    except OSError:
        return False


def test_a_backend_copy_a_cleaner_removed_is_made_again_before_the_reload(own_home: Path, server: TritonServer) -> None:
    """The copy lives in the home, which may be a directory of the temporary directory (a read-only home)."""
    if not server.install.from_wheel:
        pytest.skip("a system tritonserver's own backends are used where they are")
    copy = binaries.prepare_backend_dir(server.install)
    assert copy.is_relative_to(own_home), copy
    shutil.rmtree(copy)
    os.kill(stub_pids(server)["echo"], signal.SIGKILL)
    assert wait_until(lambda: server.watchdog.restarts >= 1 and ready(server), 60), server.log_tail()
    assert infer(server) == [3.0, 4.0] and (copy / "python" / "triton_python_backend_stub").is_file()


def test_serve_restarts_tritonserver_after_a_cleaner_removed_its_repository_and_log(tmp_path: Path) -> None:
    """Catches: the next tritonserver death ended `serve` with exit 1 (five failed starts) once its generated
    repository was gone, though a server that exits on its own is started again. The log at its path is made
    again too."""
    skip_without_tritonserver()
    ports = [str(p) for p in free_ports(3)]
    log = tmp_path / "logs" / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "videoitg", "serve", "--target", "cpu", "--log", str(log),
                             "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        lines = read_until(proc, "ready:", timeout_s=240)
        assert lines[-1].startswith("ready:"), "".join(lines)
        start = next(x for x in lines if x.startswith("starting tritonserver"))
        repo = Path(start.rsplit(" repository ", 1)[1].strip())
        shutil.rmtree(repo)
        shutil.rmtree(log.parent)
        os.kill(server_child(proc.pid), signal.SIGKILL)
        lines = read_until(proc, "tritonserver ready again", timeout_s=240)
        out = "".join(lines)
        assert lines[-1].startswith("tritonserver ready again"), out
        assert f"the model repository {repo} was removed; written again from the same inputs (before starting " \
               "tritonserver)" in out, out
        assert f"the server log {log} was removed; a new one is written there" in out, out
        srv = TritonServer(repo, ServerOptions())  # for its helpers only: never started
        srv.http_port = int(ports[0])
        assert ready(srv) and log.is_file() and "restarting tritonserver" in log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
