"""A home that cannot be written (a read-only filesystem, a container's readOnlyRootFilesystem with no volume there):
what it holds (caches, the sample video, the python backend's copy) goes to this user's own directory in the
temporary directory, said once; where nothing can be written, caches are off and what must be written is one line
naming VIDEOITG_HOME and the fix. Each way in: the rule itself, `score`, `demo`, the backend's copy and `serve`
(with `score --server`) on a real read-only tmpfs (root only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.launch import read_only_disk
from tests.support.server import read_until
from videoitg import defaults
from videoitg.commands import cli
from videoitg.launch.ports import free_ports


@pytest.fixture()
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only filesystem holding `made/` (an existing home); `notmade/` is a home not made yet."""
    with read_only_disk(tmp_path, ("made",)) as disk:
        yield disk


@pytest.fixture()
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's temporary directory, for this process (`tempfile.tempdir`) and the commands it starts."""
    import tempfile

    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    monkeypatch.setenv("TMPDIR", str(d))
    return d


@pytest.mark.parametrize("home", ["made", "notmade"])
def test_a_home_that_cannot_be_written_sends_its_files_to_the_users_own_temporary_directory_said_once(
        home: str, read_only: Path, own_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VIDEOITG_HOME", str(read_only / home))
    fallback = own_tmp / f"videoitg-{os.getuid()}"
    assert defaults.files_home() == defaults.writable_home("x") == defaults.files_home() == fallback
    said = capsys.readouterr().err.splitlines()
    assert said == [f"videoitg: VIDEOITG_HOME={read_only / home} cannot be written (Read-only file system): its caches "
                    f"and the sample video go to {fallback} for this run"], said


def test_a_temporary_directory_that_is_a_link_is_never_used(read_only: Path, own_tmp: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user of a shared /tmp could put a link there first: it is refused, never followed."""
    (tmp_path / "elsewhere").mkdir()
    (own_tmp / f"videoitg-{os.getuid()}").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("VIDEOITG_HOME", str(read_only / "made"))
    assert defaults.files_home() is None
    with pytest.raises(defaults.HomeError, match="set VIDEOITG_HOME to a writable directory"):
        defaults.writable_home("the sample video")
    assert not list((tmp_path / "elsewhere").iterdir())


@pytest.fixture()
def nothing_writable(read_only: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The home and the temporary directory on the read-only filesystem."""
    import tempfile

    monkeypatch.setenv("VIDEOITG_HOME", str(read_only / "notmade"))
    monkeypatch.setattr(tempfile, "tempdir", str(read_only / "made"))
    return read_only


def test_with_nothing_writable_demo_says_one_line_naming_videoitg_home_and_the_fix(
        nothing_writable: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Catches: `demo` exiting 1 with `error: /home: Read-only file system`."""
    assert cli.main(["demo", "--in-process", "--out", str(nothing_writable.parent / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("videoitg demo: error: the sample video must be written and "
                                               f"VIDEOITG_HOME={nothing_writable / 'notmade'} cannot be written"), err
    assert err[0].endswith("set VIDEOITG_HOME to a writable directory (in a container, a volume or an emptyDir "
                           "mounted there)"), err


def test_with_nothing_writable_score_works_with_its_caches_off(nothing_writable: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Catches: `score` exiting 2 saying the embedded checkpoint "cannot be read", naming the home it only tried to
    make."""
    from videoitg.synthetic.task import make_sample_video

    clip = make_sample_video(tmp_path / "clip.mp4")
    assert cli.main(["score", str(clip["path"]), "-i", clip["instruction"]]) == 0
    out = capsys.readouterr()
    assert "moments" in out.out and "cannot be read" not in out.err
    assert [line for line in out.err.splitlines() if "VIDEOITG_HOME" in line] == [
        f"videoitg: VIDEOITG_HOME={nothing_writable / 'notmade'} cannot be written (Read-only file system), nor "
        f"{nothing_writable / 'made' / f'videoitg-{os.getuid()}'} (Read-only file system): caches are off"], out.err


def _env(home: Path, tmp: Path) -> dict[str, str]:
    return {**os.environ, "VIDEOITG_HOME": str(home), "TMPDIR": str(tmp)}


@pytest.mark.parametrize("command", ["score", "demo"])
def test_score_and_demo_work_with_a_read_only_home_not_made_yet(command: str, read_only: Path, own_tmp: Path,
                                                                tmp_path: Path) -> None:
    """Catches: `score` exiting 2 ("tiny-videoitg: cannot be read (HOME: Read-only file system)"), `demo` 1."""
    from videoitg.synthetic.task import make_sample_video

    clip = make_sample_video(tmp_path / "clip.mp4")
    args = {"score": [str(clip["path"]), "-i", clip["instruction"]],
            "demo": ["--in-process", "--out", str(tmp_path / "out")]}[command]
    r = subprocess.run([sys.executable, "-m", "videoitg", command, *args], capture_output=True, text=True, cwd=ROOT,
                       env=_env(read_only / "notmade", own_tmp), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "moments" in r.stdout and "cannot be read" not in r.stderr
    assert r.stderr.count("VIDEOITG_HOME") == 1, r.stderr  # said once
    fallback = own_tmp / f"videoitg-{os.getuid()}"
    assert (fallback / "file-digests.json").is_file()  # the cache kept there for this run
    assert (fallback / "sample" / "sample.mp4").is_file() == (command == "demo")


def test_the_python_backends_copy_goes_with_the_home(read_only: Path, own_tmp: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: `serve` from the pip-installed tritonserver refused, its backend copy in a read-only ~/.cache."""
    from videoitg.launch import binaries

    monkeypatch.setenv("VIDEOITG_HOME", str(read_only / "made"))
    install = binaries.find_tritonserver()
    if not install.from_wheel:
        pytest.skip("a system tritonserver's backends are used where they are")
    dest = binaries.prepare_backend_dir(install)
    assert dest.is_relative_to(own_tmp / f"videoitg-{os.getuid()}" / "triton_backends")
    assert binaries.server_env(install)["VIDEOITG_HOME"] == str(own_tmp / f"videoitg-{os.getuid()}")


@pytest.mark.server
def test_serve_and_score_through_it_work_with_a_read_only_home(read_only: Path, own_tmp: Path, tmp_path: Path) -> None:
    """Catches: `serve` refusing the embedded checkpoint as one that "cannot be read" when its home was read-only.
    The launcher says the home once; the stubs it starts use what it settled on and say nothing."""
    from tests.support.server import skip_without_tritonserver
    from videoitg.synthetic.task import make_sample_video

    skip_without_tritonserver()
    env = _env(read_only / "notmade", own_tmp)
    ports = [str(p) for p in free_ports(3)]
    proc = subprocess.Popen([sys.executable, "-m", "videoitg", "serve", "--target", "cpu", "--log",
                             str(tmp_path / "s.log"), "--http-port", ports[0], "--grpc-port", ports[1],
                             "--metrics-port", ports[2]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=env)
    try:
        lines = read_until(proc, "ready:", timeout_s=240)
        assert lines[-1].startswith("ready:"), "".join(lines)
        assert "".join(lines).count("VIDEOITG_HOME") == 1, "".join(lines)
        clip = make_sample_video(tmp_path / "clip.mp4")
        r = subprocess.run([sys.executable, "-m", "videoitg", "score", str(clip["path"]), "-i", clip["instruction"],
                            "--server", f"127.0.0.1:{ports[1]}"], capture_output=True, text=True, cwd=ROOT, env=env,
                           timeout=120)
        assert r.returncode == 0 and "moments" in r.stdout, r.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert "VIDEOITG_HOME" not in (tmp_path / "s.log").read_text()  # the stubs settled nothing again
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
