"""`videoitg.outputs`: the one sigmoid, the ranking and top-K of a result and its results.jsonl record, the selection
options a deployment reads from its parameters."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from videoitg.errors import InputError
from videoitg.moments import MomentParams
from videoitg.outputs import (
    GroundingResult,
    SelectionOptions,
    read_frame_indices_jsonl,
    released_scores,
    sigmoid,
    write_results_jsonl,
)


# ---- outputs -----------------------------------------------------------------------------------------------------
def test_ranking_topk_and_results_jsonl(tmp_path):
    r = GroundingResult(logits=[0.0, 2.0, -1.0, 2.0, 1.0], frame_indices=[0, 30, 60, 90, 120],
                        timestamps=[0.0, 1.0, 2.0, 3.0, 4.0], instruction="q?", video="v.mp4")
    assert r.ranking == [1, 3, 4, 0, 2]  # tie between positions 1 and 3 goes to the earlier frame
    assert r.top_k_frames(3) == [30, 90, 120]  # chronological
    assert r.top_k_frames(99) == [0, 30, 60, 90, 120]
    rec = r.to_record(doc_id=7, picked=r.top_k_positions(2))
    assert list(rec)[:6] == ["index", "logits", "num_frames", "contexts", "video_path", "doc_id"]
    assert rec["index"] == [30, 90, 120, 0, 60]
    assert rec["logits"] == [0.88, 0.88, 0.73, 0.5, 0.27]
    assert rec["contexts"] == "q?" and rec["top_k"] == [30, 90]
    assert rec["video_path"] == os.path.realpath("v.mp4") and os.path.isabs(rec["video_path"])
    out = tmp_path / "results.jsonl"
    write_results_jsonl(out, [rec, {**rec, "index": [1]}, r.to_record(doc_id=8)])
    assert read_frame_indices_jsonl(out) == {7: [30, 90, 120, 0, 60], 8: [30, 90, 120, 0, 60]}  # first line wins


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
