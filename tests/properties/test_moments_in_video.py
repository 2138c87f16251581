"""No moment outside [0, duration]: the container's duration reaches the moments in-process (`Scorer`, the record)
and on the served path's decode step (its DURATION output), on the 29.97-fps end-of-video case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.video import WHOLE, ntsc_clip
from videoitg.decode import probe_video
from videoitg.errors import InputError
from videoitg.python_backend.checks import duration_input
from videoitg.python_backend.step_decoder import decode_stream, decode_whole
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ntsc_clip(tmp_path_factory.mktemp("ntsc") / "ntsc.mp4")


def test_scorer_bounds_every_moment_by_the_containers_duration(scorer, clip: Path) -> None:
    duration = probe_video(clip).duration_s
    assert duration == pytest.approx(4495 * 1001 / 30000, abs=1e-3) and duration < 150.0
    r = scorer.score(clip, "When is it brightest?")
    assert r.timestamps[-1] == pytest.approx(149.149, abs=1e-3)
    assert r.duration == pytest.approx(duration)
    whole = r.find_moments(WHOLE)
    assert whole[0][:2] == pytest.approx((0.0, duration))  # not 150.15: one frame gap past the last frame
    rec = r.to_record(doc_id=0)
    assert rec["duration"] == pytest.approx(duration, abs=1e-3)
    assert all(0.0 <= m[0] <= m[1] <= 150.0 for m in rec["moments"])
    assert rec["moments"] == [m.round() for m in r.moments]


def test_decode_step_answers_the_duration(clip: Path) -> None:
    duration = probe_video(clip).duration_s
    limits, sampling = Limits(), SamplingParams()
    whole = decode_whole(clip.read_bytes(), 32, sampling, limits)
    assert whole["DURATION"].shape == (1, 1) and whole["DURATION"].dtype == np.float64
    assert float(whole["DURATION"][0, 0]) == pytest.approx(duration)
    answers = list(decode_stream(clip.read_bytes(), 32, sampling, limits, chunk_frames=64))
    assert "DURATION" not in answers[0] and float(answers[-1]["DURATION"][0, 0]) == pytest.approx(duration)


def test_select_step_duration_input_is_checked() -> None:
    assert duration_input(None) is None
    assert duration_input(np.asarray([[149.983]])) == pytest.approx(149.983)
    assert duration_input(np.asarray([[0.0]])) is None  # the container did not say
    for bad in (np.asarray([[-1.0]]), np.asarray([[np.nan]]), np.asarray([[1.0, 2.0]]), np.asarray([[3]])):
        with pytest.raises(InputError, match="DURATION"):
            duration_input(bad)

