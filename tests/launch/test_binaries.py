"""The python backend's copy in the server's home (`binaries.prepare_backend_dir`): made once, checked at every start
against the wheel's files, a damaged copy replaced and said, one that cannot be made refused naming it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from videoitg.launch import binaries

pytestmark = pytest.mark.skipif(binaries._pytriton_root() is None, reason="the nvidia-pytriton wheel is not installed")


def _install() -> binaries.TritonInstall:
    install = binaries.find_tritonserver()
    if not install.from_wheel:
        pytest.skip("a system tritonserver's backends are used as they are, not copied")
    return install


def _sources(install: binaries.TritonInstall) -> dict[str, Path]:
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.backends_src.parent / "python_backend_stubs" / ver / "triton_python_backend_stub"
    return binaries.backend_files(install.backends_src / "python", stub)


@pytest.mark.parametrize("damage", ["truncated stub", "flipped byte", "missing library"])
def test_a_damaged_copy_is_replaced_and_said(damage: str, tmp_path: Path) -> None:
    """Catches: a torn copy (the stub cut short by a full disk) trusted at every start, `serve` then waiting its
    180 s start bound without a word."""
    install = _install()
    said: list[str] = []
    dest = binaries.prepare_backend_dir(install, tmp_path, notice=said.append)
    assert said == [] and binaries.copy_damage(dest / "python", _sources(install)) is None
    stub, lib = dest / "python" / "triton_python_backend_stub", dest / "python" / "libtriton_python.so"
    if damage == "truncated stub":
        stub.write_bytes(stub.read_bytes()[:4096])
    elif damage == "flipped byte":
        data = bytearray(lib.read_bytes())
        data[len(data) // 2] ^= 0x01
        lib.write_bytes(bytes(data))
    else:
        lib.unlink()
    assert binaries.copy_damage(dest / "python", _sources(install)) is not None
    t0 = time.monotonic()
    again = binaries.prepare_backend_dir(install, tmp_path, notice=said.append)
    assert again == dest and binaries.copy_damage(dest / "python", _sources(install)) is None
    assert os.access(stub, os.X_OK)
    assert len(said) == 1 and str(dest) in said[0] and "damaged" in said[0], said
    assert {"truncated stub": "triton_python_backend_stub has 4096 bytes", "flipped byte": "libtriton_python.so "
            "differs", "missing library": "libtriton_python.so is missing"}[damage] in said[0], said
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]  # the damaged copy is gone, no leftovers
    print(f"{damage}: found and replaced in {time.monotonic() - t0:.2f} s")


def test_a_whole_copy_is_checked_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install = _install()
    dest = binaries.prepare_backend_dir(install, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (dest / "python").iterdir()}
    monkeypatch.setattr(binaries, "_copy_backend", lambda *a: pytest.fail("a whole copy was copied again"))
    assert binaries.prepare_backend_dir(install, tmp_path, notice=pytest.fail) == dest
    assert {p: p.stat().st_mtime_ns for p in (dest / "python").iterdir()} == before


def test_a_copy_that_cannot_be_made_is_refused_naming_it(tmp_path: Path) -> None:
    """A home where the copy cannot be written (a file in the way here; a full disk is the same OSError): one error
    naming the copy, not a traceback from shutil."""
    install = _install()
    blocker = tmp_path / "triton_backends"
    blocker.write_text("a file where the copies' directory should be")
    with pytest.raises(binaries.ServingSetupError, match="cannot prepare the python backend copy .*triton_backends"):
        binaries.prepare_backend_dir(install, blocker)


def test_perf_analyzer_is_found_where_pip_install_target_puts_it(tmp_path, monkeypatch) -> None:
    """`pip install --target DIR tritonclient==2.51.0` puts the package in DIR and its perf_analyzer in DIR/bin (the
    GPU check installs its wheels so): found there, with no interpreter or PATH that has one."""
    import importlib
    import sys

    target = tmp_path / "site"
    (target / "tritonclient").mkdir(parents=True)
    (target / "tritonclient" / "__init__.py").write_text("")
    (target / "bin").mkdir()
    (target / "bin" / "perf_analyzer").write_text("#!/bin/sh\n")
    monkeypatch.delenv("VIDEOITG_PERF_ANALYZER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.delitem(sys.modules, "tritonclient", raising=False)
    importlib.invalidate_caches()
    assert binaries.find_perf_analyzer() == target / "bin" / "perf_analyzer"


def test_a_home_mounted_noexec_is_one_line_naming_it_and_the_fix(tmp_path: Path) -> None:
    """Catches: with the home on a filesystem mounted noexec (a hardened /tmp, where an unwritable home's files go),
    every model failed to load "unable to load shared library ... failed to map segment", worded as a missing
    backend library; `serve` now says the home and what to do before tritonserver starts."""
    import subprocess

    from tests.support import ROOT
    from tests.support.launch import full_disk, write_model

    _install()
    write_model(tmp_path / "repo", "echo")
    with full_disk(tmp_path, 64 << 20, "noexec") as disk:
        env = {**os.environ, "VIDEOITG_HOME": str(disk / "home")}
        r = subprocess.run([sys.executable, "-m", "videoitg", "serve", "--model-repository", str(tmp_path / "repo"),
                            "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"], capture_output=True,
                           text=True, cwd=ROOT, env=env, timeout=180)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "mounted noexec" in err[0] and "set VIDEOITG_HOME to a directory on a filesystem that " \
        "allows programs to run" in err[0], r.stderr
