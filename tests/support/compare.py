"""Two computations of one result (served against in-process, one backend against another) agree within a stated
tolerance. Their floats may differ in the last bits from one CPU to the next (AVX2 against AVX-512 kernels), so
nothing derived from them is compared exactly: a ranking may order frames whose keys lie within the tolerance
either way, and a rounded number may land on either side of its rounding step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from videoitg.moments import DEFAULT_PARAMS, MomentParams, _runs, frame_spans
from videoitg.outputs import GroundingResult, released_scores

TOL = 1e-5  # logits of the same model on the same input, computed twice (float32 throughout)
FP16_STEP = 2.0**-10  # relative: one fp16 step near a value, the released ranking key's precision


def ranking_keys(logits: Sequence[float], rule: str) -> np.ndarray:
    """The key each frame is ranked by under `rule`, as float64."""
    return released_scores(logits).astype(np.float64) if rule == "released" else np.asarray(logits, np.float64)


def key_tolerance(logits: Sequence[float], rule: str, tol: float) -> np.ndarray:
    """How far each frame's ranking key may move when its logit moves by up to `tol`. The released key is monotone
    in the logit, so the farthest it goes is at logit - tol or logit + tol; it moves in steps (the logit is rounded
    to fp16 first), and a logit within `tol` of an fp16 rounding midpoint moves it a whole step of the logit."""
    x = np.asarray(logits, np.float64)
    if rule != "released":
        return np.full(x.shape, tol)
    key = ranking_keys(x, rule)
    return np.maximum(np.abs(ranking_keys(x + tol, rule) - key), np.abs(ranking_keys(x - tol, rule) - key))


def stable_ranking(logits: Sequence[float], rule: str, tol: float = TOL) -> bool:
    """Whether no frame's place under `rule` can change when each logit moves by up to `tol`, so two computations of
    the ranking are equal: under `released` every key is the same at logit - tol and logit + tol (the key is
    monotone, so it is constant between; ties stay ties); under `exact` no two logits lie within 2 * tol."""
    x = np.asarray(logits, np.float64)
    if rule == "released":
        return bool(np.all(released_scores(x - tol) == released_scores(x + tol)))
    return len(x) < 2 or bool(np.diff(np.sort(x)).min() > 2 * tol)


def assert_same_order(got: Sequence[int], want: Sequence[int], keys: np.ndarray, slack: np.ndarray) -> None:
    """`got` orders the items `want` orders (best first by `keys`), apart from two items whose keys lie within what
    each may move (`slack`, per item) of each other."""
    assert sorted(got) == sorted(want), f"{list(got)} and {list(want)} rank different items"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert abs(keys[g] - keys[w]) <= slack[g] + slack[w], (
            f"rank {i}: {g} (key {keys[g]}) against {w} (key {keys[w]}) in {list(got)} and {list(want)}")


def assert_results_close(got: GroundingResult, want: GroundingResult, tol: float = TOL) -> None:
    """Same frames and timestamps (the same decode: equal by construction), logits within `tol`, and the same
    ranking up to frames whose ranking keys lie within what `tol` can move them."""
    diff = np.abs(np.asarray(got.logits) - np.asarray(want.logits)).max()
    assert diff <= tol, f"logits differ by {diff} (tolerance {tol})"
    assert got.frame_indices == want.frame_indices
    assert got.timestamps == want.timestamps
    assert got.ranking_rule == want.ranking_rule
    keys = ranking_keys(want.logits, want.ranking_rule)
    assert_same_order(got.ranking, want.ranking, keys, key_tolerance(want.logits, want.ranking_rule, tol))


def moments_margin(scores: Sequence[float], timestamps: Sequence[float],
                   params: MomentParams = DEFAULT_PARAMS) -> float:
    """How far each score may move, independently, with the moments' spans and order unchanged: half the least
    distance of a score to a level (a level moves as much as the scores it is cut from) and of two candidates'
    scores (means of scores; their order decides NMS). The spans themselves come from the timestamps, equal in both
    computations of a decode."""
    s = np.asarray(scores, np.float64)
    lo, hi = float(s.min()), float(s.max())
    spans = frame_spans(timestamps)
    margin, cands = math.inf, {}
    for r in sorted(set(params.thresholds)):
        level = lo + r * (hi - lo)
        if r > 0:  # at r = 0 every frame is in: the least score is the level
            margin = min(margin, float(np.abs(s - level).min()) / 2)
        for a, b in _runs(s.tolist(), level, spans, params.min_gap_s):
            cands[(a, b)] = float(s[a:b + 1].mean())
    means = np.sort(list(cands.values()))
    return min(margin, float(np.diff(means).min()) / 2) if len(means) > 1 else margin


def assert_moments_close(got: Sequence[Sequence[float]], want: GroundingResult, tol: float = TOL,
                         time_tol: float = TOL) -> None:
    """`got` ([start, end, score], ...) are `want`'s moments computed from scores within `tol` of its own: the same
    spans (within `time_tol`) and scores within `tol`. Asserted first: no score within `tol` of a place where a moment
    would change (`moments_margin`), so on any CPU the spans are the same."""
    margin = moments_margin(want.scores, want.timestamps)
    assert margin > tol, f"a score move of {margin:.2g} changes these moments: the fixture is within tolerance {tol}"
    g, w = np.asarray(got, np.float64).reshape(-1, 3), np.asarray(want.moments, np.float64).reshape(-1, 3)
    assert g.shape == w.shape and len(w), f"moments {g.tolist()} against {w.tolist()}"
    assert np.allclose(g[:, :2], w[:, :2], rtol=0, atol=time_tol), f"spans {g.tolist()} against {w.tolist()}"
    assert np.allclose(g[:, 2], w[:, 2], rtol=0, atol=tol), f"scores {g.tolist()} against {w.tolist()}"


# What each rounded float field of a results.jsonl record (GroundingResult.to_record) may differ by beside the
# tolerance: its rounding step (a sigmoid's slope is at most 1/4, so a score moves less than its logit).
_RECORD_FLOATS = {"scores": 1e-6, "timestamps": 0.0}


SCORED = ("frame_indices", "timestamps", "scores", "index", "logits", "moments", "ranking_rule")  # and "top_k"


def assert_records_close(got: dict[str, Any], want: dict[str, Any], tol: float = TOL,
                         fields: tuple[str, ...] | None = None) -> None:
    """Two results.jsonl records of the same request (`fields` of them; all by default): every field equal, apart
    from rounded floats (within one rounding step) and the order of frames whose ranking keys lie within one fp16
    step and the record's rounding."""
    if fields is not None:
        keep = set(fields) | ({"top_k"} & want.keys())
        got, want = {k: got[k] for k in keep}, {k: want[k] for k in keep}
    assert got.keys() == want.keys()
    for name, step in _RECORD_FLOATS.items():
        assert np.allclose(got[name], want[name], rtol=0, atol=step + tol), f"{name}: {got[name]} against {want[name]}"
    margin = moments_margin(want["scores"], want["timestamps"])  # from scores rounded to 6 places
    assert margin > tol + 1e-6, f"a score move of {margin:.2g} changes these moments: within the tolerance {tol}"
    for m, n in zip(got["moments"], want["moments"], strict=True):
        assert np.allclose(m, n, rtol=0, atol=1e-3 + tol), f"moments: {got['moments']} against {want['moments']}"
    key = dict(zip(want["index"], want["logits"], strict=True))  # the record's ranking key, rounded to 2 places
    got_key = dict(zip(got["index"], got["logits"], strict=True))
    # Each key: its rounding (half of 0.01) and what `tol` moves a released key (`key_tolerance`: below FP16_STEP).
    slack = np.full(len(key), 0.005 + FP16_STEP)
    frames = list(key)
    assert np.allclose([got_key[f] for f in frames], list(key.values()), rtol=0, atol=2 * slack[0]), "logits"
    assert_same_order([frames.index(f) for f in got["index"]], [frames.index(f) for f in want["index"]],
                      np.asarray(list(key.values())), slack)
    if "top_k" in want:
        assert got["top_k"] == sorted(got["index"][: len(want["top_k"])])
    same = set(got) - set(_RECORD_FLOATS) - {"index", "logits", "moments", "top_k"}
    assert {k: got[k] for k in same} == {k: want[k] for k in same}


def assert_picks_close(got: Sequence[int], want: Sequence[int], logits: Sequence[float], rule: str,
                       tol: float = TOL) -> None:
    """Frames two computations of one result picked (`videoitg.request.options.select`, numbers or positions):
    as many, and the same ones where no frame's place in the ranking can change within `tol` (`stable_ranking` of
    `logits`, the reference's); else they may differ by frames whose keys lie within it (the rankings themselves are
    held by `assert_results_close`). The options' own cuts (min_score, coverage) are the caller's to keep away from
    the scores."""
    assert len(got) == len(want), (list(got), list(want))
    if stable_ranking(logits, rule, tol):
        assert list(got) == list(want), (list(got), list(want))
