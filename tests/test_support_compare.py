"""tests/support/compare.py: two computations of one result agree within tolerance, not by exact equality of what
is rounded from them (the same model differs in the last bits between AVX2 and AVX-512 CPUs)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tests.support.compare import SCORED, assert_moments_close, assert_records_close, assert_results_close
from videoitg.outputs import GroundingResult

FRAMES = [0, 30, 60, 90, 120]
TIMES = [0.0, 1.0, 2.0, 3.0, 4.0]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def result(logits: list[float], rule: str = "released") -> GroundingResult:
    return GroundingResult(logits, FRAMES, TIMES, "q", "v.mp4", rule)


def test_a_score_on_a_rounding_step_differs_in_the_record_but_agrees_within_tolerance() -> None:
    edge = logit(0.0015395)  # rounds to 0.00154 or 0.001539 on either side
    a = result([edge + 2e-7, 1.0, -3.0, 2.0, 0.5])
    b = dataclasses.replace(a, logits=[edge - 2e-7, *a.logits[1:]])
    ra, rb = a.to_record(7, "v.mp4", picked=a.top_k_positions(3)), b.to_record(7, "v.mp4", picked=b.top_k_positions(3))
    assert ra["scores"][0] != rb["scores"][0]  # what exact equality would have failed on
    assert_results_close(a, b)
    assert_records_close(ra, rb)


@pytest.mark.parametrize("rule", ["released", "exact"])
def test_frames_within_tolerance_may_swap_others_may_not(rule: str) -> None:
    a = result([1.0, 1.0 + 3e-6, -3.0, 2.0, 0.5], rule)  # positions 0 and 1 are a near-tie
    b = dataclasses.replace(a, logits=[1.0 + 3e-6, 1.0, -3.0, 2.0, 0.5])
    # exact: the near-tie orders them the other way; released: fp16 keys tie them, the earlier frame first in both
    assert (a.ranking == b.ranking) == (rule == "released")
    assert_results_close(a, b)
    assert_records_close(a.to_record(picked=a.top_k_positions(2)), b.to_record(picked=b.top_k_positions(2)),
                         fields=SCORED)
    wrong = a.to_record(picked=a.top_k_positions(2))
    wrong["index"], wrong["logits"] = wrong["index"][::-1], wrong["logits"][::-1]  # worst first
    with pytest.raises(AssertionError, match="rank 0"):
        assert_records_close(wrong, a.to_record(picked=a.top_k_positions(2)), fields=SCORED)


def test_logits_over_tolerance_fail() -> None:
    a = result([1.0, 0.0, -3.0, 2.0, 0.5])
    with pytest.raises(AssertionError, match="logits differ"):
        assert_results_close(dataclasses.replace(a, logits=list(np.add(a.logits, 1e-4))), a)


def test_a_logit_on_an_fp16_midpoint_moves_its_key_a_whole_logit_step() -> None:
    """Two computations 2e-7 apart on either side of an fp16 rounding midpoint of the logit: the released key jumps
    by 9e-5, three fp16 steps of a key near 0.047, and ties or unties it with a neighbour. Within tolerance."""
    edge = -3.0 + 2.0**-10  # halfway between the fp16 logits -3 and -3 + 2^-9
    a = result([-3.0, edge + 1e-7, 2.0, 1.0, 0.5])
    b = dataclasses.replace(a, logits=[-3.0, edge - 1e-7, *a.logits[2:]])
    assert a.ranking != b.ranking  # b ties frame 1 with frame 0, and ties keep the earlier frame first
    assert_results_close(a, b)
    assert_results_close(b, a)


def test_moments_are_compared_only_where_no_score_is_within_tolerance_of_changing_them() -> None:
    steady = result([logit(p) for p in (0.1, 0.2, 0.8, 0.9, 0.15)])
    assert_moments_close([tuple(m) for m in steady.moments], steady)
    on_edge = result([logit(p) for p in (0.1, 0.5 + 1e-7, 0.8, 0.9, 0.15)])  # the 0.5 level is (0.1 + 0.9) / 2
    with pytest.raises(AssertionError, match="changes these moments"):
        assert_moments_close([tuple(m) for m in on_edge.moments], on_edge)
    moved = [(m[0], m[1], m[2] + 1e-3) for m in steady.moments]
    with pytest.raises(AssertionError, match="scores"):
        assert_moments_close(moved, steady)
