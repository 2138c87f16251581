"""The launcher's child processes (tritonserver and the front): each started in a session of its own from one
thread that lives as long as the launcher's process, so it dies with that process (`start_child`), and the two
ended in order (`stop_in_order`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from videoitg.launch.options import STOP_GRACE_S, ServerOptions, unload_s
from videoitg.launch.procfs import group_alive

PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
_launch_queue: queue.SimpleQueue = queue.SimpleQueue()
_launcher_lock = threading.Lock()
_launcher: threading.Thread | None = None


def _launch_loop() -> None:
    while True:
        fn, done = _launch_queue.get()
        try:
            done.set_result(fn())
        except BaseException as e:  # handed to the caller
            done.set_exception(e)


def in_launcher_thread(fn: Callable[[], Any]) -> Any:
    """Run `fn` (a Popen) in one thread that lives as long as the process, so PR_SET_PDEATHSIG fires when the
    process dies, not when the caller's thread ends."""
    global _launcher
    with _launcher_lock:
        if _launcher is None:
            _launcher = threading.Thread(target=_launch_loop, name="videoitg-launcher", daemon=True)
            _launcher.start()
    done: Future = Future()
    _launch_queue.put((fn, done))
    return done.result()


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the thread that started us ends (even by kill -9), so Triton shuts
    down in order (in-flight requests, stubs, shared memory) instead of holding the ports as an orphan. That
    thread is `_launcher`'s, which lives as long as the process: a server started from a short-lived thread must
    not be stopped when that thread returns."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


def start_child(cmd: list[str], env: dict[str, str] | None, out: Any, stdin: Any = None) -> subprocess.Popen:
    """`cmd` in a session of its own (a Ctrl-C in the terminal reaches only the launcher, which shuts the server
    down in order), its stderr with its stdout into `out`, ended by SIGTERM when the launcher's process dies."""
    parent = os.getpid()
    return in_launcher_thread(lambda: subprocess.Popen(
        cmd, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        preexec_fn=lambda: _die_with_parent(parent),
    ))


def signal_child(proc: subprocess.Popen | None, sig: int) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def wait_child(proc: subprocess.Popen | None, until: float) -> bool:
    """Wait for `proc` to exit until the monotonic time `until`; whether it has (True when there is none)."""
    if proc is None:
        return True
    try:
        proc.wait(timeout=max(0.0, until - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def stop_in_order(front: subprocess.Popen | None, proc: subprocess.Popen | None, options: ServerOptions,
                  close_front: Callable[[subprocess.Popen], None], note: Callable[[str], None]) -> int | None:
    """Stop within `exit_timeout_s + STOP_GRACE_S`: the `front` first (it accepts nothing new, closes idle
    connections at once and answers the requests in flight), then tritonserver (`proc`) with SIGINT (as Ctrl-C
    would) once the front is done, or `unload_s` before the exit timeout; then SIGKILL of the server's own process
    group. `close_front` closes the front's stdin once it has exited. Returns tritonserver's exit code."""
    t0 = time.monotonic()
    deadline = t0 + options.exit_timeout_s + STOP_GRACE_S
    # tritonserver refuses a request's next step ("Server not ready") from its SIGINT on: it waits until the
    # front has answered everything (a gRPC request in flight would be lost, an HTTP one delayed).
    signal_child(front, signal.SIGTERM)
    wait_child(front, t0 + options.exit_timeout_s - unload_s(options))
    signal_child(proc, signal.SIGINT)
    if front is not None and not wait_child(front, deadline):
        front.kill()
        front.wait()
    if front is not None:
        close_front(front)
    if proc is None:
        return None
    if not wait_child(proc, deadline):
        note(f"tritonserver did not exit within {deadline - t0:.0f} s of the stop; killing its process group")
    # The stubs are in the server's process group: none may outlive it (a stub busy in a request keeps running
    # after Triton's exit timeout, holding its shared memory).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    grace_end = time.monotonic() + STOP_GRACE_S
    while group_alive(proc.pid) and time.monotonic() < grace_end:  # SIGKILL lands asynchronously
        time.sleep(0.05)
    return proc.returncode
