"""`videoitg.sampling`: the eval rule equals the released wrapper's, the train rule is end-aligned, edge cases."""

from __future__ import annotations

import pytest

from videoitg.errors import InputError
from videoitg.sampling import SamplingParams, frame_timestamps, sample_frame_indices


# ---- sampling ----------------------------------------------------------------------------------------------------
def test_eval_rule_matches_the_released_wrapper():
    # 30 fps, 1000 s: step 30, 1000 candidates -> 512 floor-spaced
    idx = sample_frame_indices(30_000, 30.0, SamplingParams(512, 1.0, "eval"))
    cand = list(range(0, 30_000, 30))
    assert idx == [cand[int(i * 1000 / 512)] for i in range(512)]
    assert idx[0] == 0 and len(set(idx)) == 512


def test_train_rule_is_end_aligned():
    idx = sample_frame_indices(30_000, 30.0, SamplingParams(512, 1.0, "train"))
    assert idx[-1] == 29_970 and idx[0] > 0 and len(idx) == 512


@pytest.mark.parametrize("rule", ["eval", "train"])
def test_sampling_edge_cases(rule):
    p = SamplingParams(512, 1.0, rule)
    assert sample_frame_indices(1, 25.0, p) == [0]  # one frame
    assert sample_frame_indices(10, 25.0, p) == [0]  # shorter than a second
    assert sample_frame_indices(100, 0.3, p) == list(range(100))  # fps < 0.5: step 0 crashed the original
    assert sample_frame_indices(90, 29.97, p) == [0, 30, 60]  # odd fps
    assert sample_frame_indices(100, 2.5, p) == list(range(0, 100, 2))  # round(2.5) = 2 (Python rounding)
    long = sample_frame_indices(10 * 3600 * 30, 30.0, p)  # ten hours
    assert len(long) == 512 and long == sorted(long)
    for bad_total in (0, -1, None):
        with pytest.raises(InputError, match="no frames"):
            sample_frame_indices(bad_total, 30.0, p)
    for bad_fps in (0.0, float("nan"), None, float("inf")):
        with pytest.raises(InputError, match="frame rate"):
            sample_frame_indices(100, bad_fps, p)
    with pytest.raises(InputError):
        SamplingParams(0)
    assert frame_timestamps([0, 30, 60], 30.0) == [0.0, 1.0, 2.0]
