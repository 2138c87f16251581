"""Logic that has one home in core videoitg/: the sigmoid, grouping rows by video, and the selection options a
deployment reads from its model parameters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from videoitg.errors import InputError
from videoitg.grouping import group_by_video, make_units
from videoitg.manifest import Row
from videoitg.moments import MomentParams
from videoitg.outputs import GroundingResult, SelectionOptions, released_scores, sigmoid


def test_one_sigmoid_for_scores_and_the_released_key() -> None:
    x = np.array([-1e6, -745.2, -30.0, -1.5, 0.0, 1e-8, 2.5, 30.0, 745.2, 1e6, 70000.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning for huge logits
        s = sigmoid(x)
        key = released_scores(x)
    assert s.dtype == np.float64 and s[0] == 0.0 and s[-2] == 1.0 and s[4] == 0.5
    assert np.allclose(s, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-15, atol=0)
    assert key.dtype == np.float16
    assert np.array_equal(key, torch.from_numpy(x).half().float().sigmoid().half().numpy())
    r = GroundingResult(x.tolist(), list(range(len(x))), [float(i) for i in range(len(x))])
    assert r.scores == s.tolist()  # the in-process scores are that sigmoid ...
    with np.errstate(over="ignore"):  # the sigmoid in float64, as SCORES carries it (float32)
        served = (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    assert np.array_equal(np.float32(r.scores), served)  # ... and equal the served SCORES in float32


@dataclass
class _Item:
    video: str
    n: int


def test_group_by_video_keeps_first_appearance_and_row_order() -> None:
    items = [_Item("b", 0), _Item("a", 1), _Item("b", 2), _Item("c", 3), _Item("a", 4)]
    assert {v: [i.n for i in g] for v, g in group_by_video(items).items()} == {"b": [0, 2], "a": [1, 4], "c": [3]}
    assert list(group_by_video(items)) == ["b", "a", "c"]
    rows = [Row(str(i.n), i.n, i.video, "q") for i in items]
    assert [[r.row_id for r in u] for u in make_units(rows, max_group_rows=1)] == [["0"], ["2"], ["1"], ["4"], ["3"]]


def test_selection_options_are_read_once_from_the_parameters_written() -> None:
    opts = SelectionOptions(5, "exact", MomentParams(thresholds=(0.4, 0.6), min_gap_s=2.0))
    params = opts.to_parameters()
    assert all(isinstance(v, str) for v in params.values())
    assert SelectionOptions.from_parameters(params) == opts
    assert SelectionOptions.from_parameters({}) == SelectionOptions()  # absent: the defaults
    assert SelectionOptions.from_parameters({"default_top_k": "", "ranking_rule": ""}) == SelectionOptions()
    for bad, words in (({"default_top_k": "x"}, "default_top_k"), ({"default_top_k": "0"}, "default_top_k"),
                       ({"ranking_rule": "best"}, "unknown ranking rule")):
        with pytest.raises(InputError, match=words):
            SelectionOptions.from_parameters(bad)
