"""`videoitg batch` handles SIGINT/SIGTERM itself (a Kubernetes or Slurm stop): the first signal stops the run once,
a later one waits for the shard write in progress. A real run stopped by SIGTERM mid-way and its rerun:
tests/batch/test_runner_ray.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

from videoitg.batch.runner import SignalStop, StopRequested


def test_first_signal_raises_once_later_ones_wait_for_the_write() -> None:
    with SignalStop() as stop:
        with pytest.raises(StopRequested) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        assert e.value.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # a second signal while stopping: ignored
    written = []
    with SignalStop() as stop:
        with pytest.raises(StopRequested):
            with stop.deferred():  # a shard write in progress is finished first
                os.kill(os.getpid(), signal.SIGINT)
                written.append("shard")
        assert written == ["shard"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
