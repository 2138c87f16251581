"""Every decode hands what it freed back to the system (`videoitg.decode.heap`): glibc keeps the freed buffers of a
decode's threads in their arenas, and a process decoding video after video grew though it held nothing more."""

from __future__ import annotations

import time

import pytest

from videoitg.decode import budget, heap
from videoitg.decode.api import decode_video, stream_video
from videoitg.decode.errors import DecodeTimeoutError, VideoDecodeError
from videoitg.synthetic.sample import sample_video


def test_trim_runs_where_glibc_is() -> None:
    assert heap.trim_freed_memory() is True  # the images we ship are glibc (manylinux wheels need it)


@pytest.mark.parametrize("budget_s", [None, 30.0])
def test_each_decode_ends_with_a_trim_whether_it_succeeds_fails_or_times_out(monkeypatch, budget_s) -> None:
    trims: list[int] = []
    monkeypatch.setattr(budget, "trim_freed_memory", lambda: trims.append(1) or True)
    path, _ = sample_video()
    frames = decode_video(str(path), image_size=32, time_budget_s=budget_s, output="uint8", numpy=True)
    assert frames.pixel_values.shape[0] > 0 and len(trims) == 1
    stream_video(str(path), image_size=32, time_budget_s=budget_s, output="uint8", numpy=True).result()
    assert len(trims) == 2
    with pytest.raises(VideoDecodeError):
        decode_video(b"not a video at all", image_size=32, time_budget_s=budget_s)
    assert len(trims) == 3
    if budget_s is not None:
        with pytest.raises(DecodeTimeoutError):
            budget.run_with_budget(lambda deadline: time.sleep(1), 0.05)
        assert len(trims) == 4
