"""`videoitg.launch.server_log.ServerLog`: a log removed under the server (a temporary-file cleaner) is made again at
its path and said, however the new file's inode is numbered; one still there is kept without a word."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from videoitg.launch import server_log
from videoitg.launch.server_log import ServerLog

SAID = "was removed; a new one is written there"


def test_a_log_still_there_is_kept_without_a_word(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = ServerLog(tmp_path / "server.log")
    log.open()
    log.close()
    log.open()  # closed by a stop, opened again by the restart
    log.open()
    assert SAID not in capsys.readouterr().err


@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed by a stop"])
def test_a_removed_log_is_made_again_and_said_even_where_its_inode_number_comes_back(
        closed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Catches: the removal was judged by comparing the new file's (device, inode) with the old one's after making
    it, and a filesystem that gave the new file the freed inode number (tmpfs does) hid it."""
    path = tmp_path / "logs" / "server.log"
    log = ServerLog(path)
    log.open()
    old = os.stat(path)
    if closed:
        log.close()
    path.unlink()
    path.parent.rmdir()
    real = os.fstat
    monkeypatch.setattr(server_log.os, "fstat", lambda fd: old if fd == log.file.fileno() else real(fd))
    log.open()
    assert path.is_file() and f"the server log {path} {SAID}" in capsys.readouterr().err
    assert f"{SAID}" in path.read_text()


def test_a_crash_is_read_from_tritonservers_own_words_and_a_graceful_stop_is_not(tmp_path: Path) -> None:
    log = ServerLog(tmp_path / "server.log")
    log.path.write_text('I1128 model_lifecycle.cc:839] "successfully loaded \'videoitg\'"\nSignal (2) received.\n'
                        "Signal (15) received.\n")  # SIGINT, SIGTERM: graceful stops
    assert log.fatal_signal(0) is None
    start = log.size()
    with log.path.open("a") as f:
        f.write("Signal (11) received.\n 0# 0x00007F3A in /opt/tritonserver/bin/tritonserver\n")
    assert log.fatal_signal(start) == 11 and log.fatal_signal(log.size()) is None
    assert ServerLog(None).fatal_signal(0) is None  # no log: nothing read
