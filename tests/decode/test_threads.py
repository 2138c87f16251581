"""The decode's kept threads (`videoitg.decode.threads`): reused from one decode to the next, never waited for,
ended when idle."""

from __future__ import annotations

import threading

import numpy as np

from videoitg.decode import decode_video
from videoitg.decode import threads as kept
from videoitg.sampling import SamplingParams
from videoitg.synthetic.sample import sample_video


def _ident() -> tuple[kept.Task, list[int]]:
    seen: list[int] = []
    return kept.start(lambda: seen.append(threading.get_ident()), "test-ident"), seen


def test_a_task_runs_on_the_thread_the_last_one_left() -> None:
    first, a = _ident()
    assert first.wait(10)
    second, b = _ident()
    assert second.wait(10)
    assert a == b and a[0] != threading.get_ident()


def test_a_stalled_task_holds_only_its_own_thread() -> None:
    release = threading.Event()
    stalled = kept.start(lambda: release.wait(30), "test-stalled")
    other, _ = _ident()
    assert other.wait(10), "a task waited behind a stalled one"
    assert stalled.is_alive()
    release.set()
    assert stalled.wait(10)


def test_a_task_that_raises_leaves_its_thread_for_the_next() -> None:
    def boom() -> None:
        raise RuntimeError("a task's own error")

    failed = kept.start(boom, "test-boom")
    assert failed.wait(10) and not failed.is_alive()
    assert kept.idle_count() >= 1
    after, seen = _ident()
    assert after.wait(10) and seen


def test_an_idle_thread_ends(monkeypatch) -> None:
    monkeypatch.setattr(kept, "IDLE_S", 0.05)
    release = threading.Event()
    ran: list[threading.Thread] = []

    def hold() -> None:
        ran.append(threading.current_thread())
        release.wait(10)

    tasks = [kept.start(hold, f"test-idle-{i}") for i in range(3)]  # three threads at once
    release.set()
    assert all(t.wait(10) for t in tasks) and len(set(ran)) == 3
    for thread in ran:
        thread.join(10)
        assert not thread.is_alive(), "a kept thread idle past IDLE_S did not end"
    done, seen = _ident()  # a task after they ended starts a new one
    assert done.wait(10) and seen


def test_decodes_reuse_the_threads_and_give_the_same_frames(monkeypatch) -> None:
    video, options = sample_video()[0], dict(params=SamplingParams(num_frames=8), image_size=32, output="uint8",
                                             numpy=True, workers=2)
    first = decode_video(video, **options)
    started: list[str] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    again = [decode_video(video, **options) for _ in range(4)]
    assert not started, f"decodes after the first started threads of their own: {started}"
    for frames in again:
        assert np.array_equal(frames.pixel_values, first.pixel_values)  # the same decoder on the same file


def test_a_forked_child_starts_threads_of_its_own() -> None:
    import os

    assert _ident()[0].wait(10) and kept.idle_count() >= 1  # the parent keeps an idle thread
    pid = os.fork()
    if pid == 0:  # the child: the parent's idle thread is not here; a task must still run
        done, seen = _ident()
        os._exit(0 if done.wait(10) and seen else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "a task in a forked child never ran"
