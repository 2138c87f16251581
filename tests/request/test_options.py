"""`videoitg.request.options`: a request's options declared once, checked the same at every edge, each error naming
the option as that edge calls it."""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest

from videoitg.errors import InputError
from videoitg.outputs import GroundingResult, SelectionOptions
from videoitg.request.options import (
    CHAT,
    MAX_FRAME_SIZE,
    MAX_TOP_K,
    OPTIONS,
    SELECTION,
    RequestOptions,
    add_flags,
    from_args,
    select,
)


def test_absent_options_take_the_deployments_defaults() -> None:
    assert RequestOptions().given() == {}
    applied = RequestOptions().with_defaults(SelectionOptions(8, "exact"))
    assert (applied.top_k, applied.ranking_rule, applied.frames) == (8, "exact", None)
    named = RequestOptions(top_k=3, ranking_rule="released").with_defaults(SelectionOptions(8, "exact"))
    assert (named.top_k, named.ranking_rule) == (3, "released")


@pytest.mark.parametrize(("values", "match"), [
    ({"top_k": 0}, "top_k must be an integer from 1 to"),
    ({"top_k": MAX_TOP_K + 1}, f"got {MAX_TOP_K + 1}"),
    ({"top_k": 10**400}, "top_k must be an integer from 1 to"),  # past a float's range: refused, not an overflow
    ({"top_k": True}, "got true"),
    ({"top_k": 2.0}, "got 2.0"),
    ({"ranking_rule": "best"}, 'ranking_rule must be one of released, exact, got "best"'),
    ({"frames": "png"}, "frames must be one of jpeg, uint8"),
    ({"frames": "jpeg", "frame_size": MAX_FRAME_SIZE + 1}, "frame_size must be an integer from 0 to"),
    ({"frame_size": 64}, "frame_size sizes the frames frames asks for"),
])
def test_each_bound_is_checked_where_the_options_are_built(values: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        RequestOptions(**values)


def test_an_edge_names_the_option_its_own_way() -> None:
    labels = {"top_k": "TOP_K", "frames": "FRAMES", "frame_size": "FRAME_SIZE"}
    with pytest.raises(InputError, match="TOP_K must be an integer from 1"):
        RequestOptions.labelled({"top_k": 0}, labels)
    with pytest.raises(InputError, match="FRAME_SIZE sizes the frames FRAMES asks for: send FRAMES too"):
        RequestOptions.labelled({"frame_size": 10}, labels)
    assert RequestOptions.labelled({"top_k": 4, "frames": None}, labels) == RequestOptions(top_k=4)


def test_a_json_object_takes_only_the_fields_allowed_there() -> None:
    got = RequestOptions.from_object({"top_k": 4}, ("top_k", "frame_size"), "videoitg", {"frames": "jpeg"})
    assert got == RequestOptions(top_k=4, frames="jpeg")
    with pytest.raises(InputError, match="'videoitg' has no field 'frames'"):  # a default is not a field to set
        RequestOptions.from_object({"frames": "uint8"}, ("top_k",), "videoitg")
    with pytest.raises(InputError, match="videoitg.top_k must be an integer"):
        RequestOptions.from_object({"top_k": "4"}, ("top_k",), "videoitg")
    with pytest.raises(InputError, match="must be an object"):
        RequestOptions.from_object([4], ("top_k",), "videoitg")


def test_every_field_is_declared() -> None:
    assert tuple(OPTIONS) == tuple(f for f in RequestOptions.__dataclass_fields__)


# ---- adaptive selection: min_score and coverage ----------------------------------------------------------------
def _result(scores: list[float]) -> GroundingResult:
    """A result whose sigmoid scores are `scores` (logits = their inverse), frames numbered 10x."""
    logits = [math.log(s / (1 - s)) for s in scores]
    return GroundingResult(logits, [10 * i for i in range(len(scores))], [float(i) for i in range(len(scores))],
                           ranking_rule="exact")


def test_select_takes_the_top_k_chronologically_by_default() -> None:
    r = _result([0.2, 0.9, 0.5, 0.8, 0.1])
    assert select(r) == [0, 1, 2, 3, 4]  # DEFAULT_TOP_K = 32 covers all five
    assert select(r, RequestOptions(top_k=2)) == [1, 3]
    assert select(r, RequestOptions(top_k=2)) == r.top_k_positions(2)


def test_min_score_keeps_the_top_k_frames_that_reach_it_and_always_the_best() -> None:
    r = _result([0.2, 0.9, 0.5, 0.8, 0.1])
    assert select(r, RequestOptions(min_score=0.5)) == [1, 2, 3]  # 0.9, 0.8 and 0.5 reach 0.5
    assert select(r, RequestOptions(min_score=0.5, top_k=2)) == [1, 3]  # at most top_k
    assert select(r, RequestOptions(min_score=0.85)) == [1]
    assert select(r, RequestOptions(min_score=0.95)) == [1]  # none reaches it: the best one
    assert select(r, RequestOptions(min_score=0.0)) == [0, 1, 2, 3, 4]


def test_coverage_keeps_the_fewest_best_frames_holding_that_share_of_the_scores() -> None:
    r = _result([0.2, 0.9, 0.5, 0.8, 0.1])  # sum 2.5; best first 0.9, 0.8, 0.5, 0.2, 0.1
    # (no share at a boundary: the scores come back from logits, so a sum may differ from its decimal in the last bit)
    assert select(r, RequestOptions(coverage=0.35)) == [1]  # 0.9 / 2.5 = 0.36
    assert select(r, RequestOptions(coverage=0.37)) == [1, 3]  # 1.7 / 2.5 = 0.68
    assert select(r, RequestOptions(coverage=0.67)) == [1, 3]
    assert select(r, RequestOptions(coverage=0.85)) == [1, 2, 3]  # 2.2 / 2.5 = 0.88
    assert select(r, RequestOptions(coverage=0.9)) == [0, 1, 2, 3]  # 2.4 / 2.5 = 0.96
    assert select(r, RequestOptions(coverage=0.9, top_k=2)) == [1, 3]  # at most top_k
    assert select(r, RequestOptions(coverage=1.0)) == [0, 1, 2, 3, 4]
    assert select(r, RequestOptions(coverage=0.0)) == [1]  # the fewest is the best one
    both = RequestOptions(coverage=0.85, min_score=0.6)  # coverage cuts to 0.9, 0.8, 0.5; min_score drops 0.5
    assert select(r, both) == [1, 3]


def test_adaptive_selection_follows_the_ranking_rule() -> None:
    """Under the released rule frames rank by the fp16 key: a near tie goes to the earlier frame, and the cut is
    made in that order."""
    r = GroundingResult([9.0, 9.5, -2.0], [0, 1, 2], [0.0, 1.0, 2.0])  # fp16 keys of 9.0 and 9.5 are both 1.0
    assert r.ranking == [0, 1, 2]
    assert select(r, RequestOptions(coverage=0.4)) == [0]
    assert select(dataclasses.replace(r, ranking_rule="exact"), RequestOptions(coverage=0.4)) == [1]


@pytest.mark.parametrize(("values", "match"), [
    ({"min_score": 1.5}, "min_score must be a number from 0 to 1, got 1.5"),
    ({"min_score": -0.1}, "min_score must be a number from 0 to 1"),
    ({"coverage": float("nan")}, "coverage must be a number from 0 to 1, got NaN"),
    ({"coverage": True}, "coverage must be a number from 0 to 1, got true"),
    ({"coverage": "0.5"}, 'coverage must be a number from 0 to 1, got "0.5"'),
])
def test_adaptive_options_are_bounded(values: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        RequestOptions(**values)


def test_options_given_as_text_are_read_as_their_kind() -> None:
    got = RequestOptions.from_text({"top_k": "8", "min_score": "0.25", "coverage": "1", "ranking_rule": "exact"},
                                   "row 3:")
    assert got == RequestOptions(top_k=8, min_score=0.25, coverage=1.0, ranking_rule="exact")
    assert RequestOptions.from_text({"top_k": "", "coverage": "None"}, "x") == RequestOptions()
    with pytest.raises(InputError, match='row 3: top_k must be an integer from 1 .* got "4.5"'):
        RequestOptions.from_text({"top_k": "4.5"}, "row 3:")
    with pytest.raises(InputError, match="row 3: coverage must be a number from 0 to 1, got NaN"):
        RequestOptions.from_text({"coverage": "nan"}, "row 3:")


def test_every_edge_takes_the_adaptive_options() -> None:
    """The rows generate the edges: the KServe inputs (FP64), the chat object's fields, the flags."""
    assert (OPTIONS["min_score"].wire, OPTIONS["min_score"].wire_type) == ("MIN_SCORE", "FP64")
    assert {"min_score", "coverage"} <= set(CHAT) and {"min_score", "coverage"} <= set(SELECTION)
    parser = argparse.ArgumentParser()
    add_flags(parser, SELECTION)
    args = parser.parse_args(["--min-score", "0.5", "--coverage", "0.75", "--top-k", "4"])
    assert from_args(args, SELECTION) == RequestOptions(top_k=4, min_score=0.5, coverage=0.75)
    with pytest.raises(InputError, match="--coverage must be a number from 0 to 1, got 2"):
        from_args(parser.parse_args(["--coverage", "2"]), SELECTION)
