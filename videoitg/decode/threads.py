"""The decode's threads, kept for the next decode: each decode runs its budget, its stream and its GOP pieces on
threads taken from here rather than started anew. Four videos at a time with the heap trim, a decode took 113 ms
against 120 ms with a thread started per task, and the process ended higher (80.7 against 74.2 MiB after 3,000
decodes; 0.28 against 0.03 KiB a decode still allocated, not found); one at a time both are flat
(`benchmarks/decode/decode_memory.py`).

A task never waits for a thread: one is started when none is idle, so a decode stalled in FFmpeg past its budget
holds its thread and nothing else. A thread idle for `IDLE_S` ends."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

IDLE_S = 60.0

_lock = threading.Lock()
_idle: list[_Worker] = []


class Task:
    """One task handed to a kept thread; `wait(timeout)` is True once it has returned."""

    def __init__(self, fn: Callable[[], None], name: str) -> None:
        self.fn, self.name = fn, name
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def finish(self) -> None:
        """Said by the thread that ran it, once it has returned."""
        self._done.set()


class _Worker(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="videoitg-decode-idle", daemon=True)
        self.tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            try:
                task = self.tasks.get(timeout=IDLE_S)
            except queue.Empty:
                with _lock:
                    if self in _idle:  # not taken meanwhile: end; taken: its task is on the way
                        _idle.remove(self)
                        return
                continue
            self.name = task.name
            try:
                task.fn()
            except BaseException:  # the callers catch their own errors; this keeps the thread for the next task
                log.exception("decode thread %s: task failed", task.name)
            finally:
                self.name = "videoitg-decode-idle"
                with _lock:  # idle before done: a caller's next task finds this thread
                    _idle.append(self)
                task.finish()


def start(fn: Callable[[], None], name: str) -> Task:
    """Run `fn()` on an idle kept thread, or on a new one when none is idle; returns at once."""
    task = Task(fn, name)
    with _lock:
        worker = _idle.pop() if _idle else None
    if worker is None:
        worker = _Worker()
        worker.start()
    worker.tasks.put(task)
    return task


def _forked() -> None:
    """A forked child (a DataLoader's worker, say) has none of its parent's threads: it keeps none of them."""
    global _lock
    _lock = threading.Lock()
    _idle.clear()


os.register_at_fork(after_in_child=_forked)


def idle_count() -> int:
    """How many kept threads wait for a task."""
    with _lock:
        return len(_idle)
