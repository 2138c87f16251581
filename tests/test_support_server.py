"""tests/support/server.py's `read_until`: a test that waits on a server's output ends at its timeout even when
the server says nothing more, and leaves what follows the line it waited for to a later read."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.server import read_until


def child(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_a_silent_process_ends_the_wait_at_the_timeout() -> None:
    proc = child("import sys, time; print('starting'); sys.stdout.write('ready: half a li'); time.sleep(60)")
    try:
        t0 = time.monotonic()
        lines = read_until(proc, "ready:", timeout_s=1.5)
        assert time.monotonic() - t0 < 10  # not the 60 s the process stays silent
        assert lines == ["starting\n"]  # the line the timeout cut is not the one waited for
    finally:
        proc.kill()
        proc.wait()


def test_the_line_waited_for_ends_the_wait_and_what_follows_stays_for_a_later_read() -> None:
    proc = child("print('a'); print('ready: 1'); print('after')")
    assert read_until(proc, "ready:", timeout_s=30) == ["a\n", "ready: 1\n"]
    assert proc.communicate(timeout=30)[0] == "after\n"


def test_the_end_of_the_output_ends_the_wait() -> None:
    proc = child("print('only')")
    assert read_until(proc, "ready:", timeout_s=30) == ["only\n", ""]
    proc.wait(timeout=30)
