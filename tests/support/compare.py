"""Two computations of one result (served against in-process, one backend against another) agree within a stated
tolerance. Their floats may differ in the last bits from one CPU to the next (AVX2 against AVX-512 kernels), so
nothing derived from them is compared exactly: a ranking may order frames whose keys lie within the tolerance
either way, and a rounded number may land on either side of its rounding step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from videoitg.outputs import GroundingResult, released_scores

TOL = 1e-5  # logits of the same model on the same input, computed twice (float32 throughout)
FP16_STEP = 2.0**-10  # relative: one fp16 step near a value, the released ranking key's precision


def ranking_keys(logits: Sequence[float], rule: str) -> np.ndarray:
    """The key each frame is ranked by under `rule`, as float64."""
    return released_scores(logits).astype(np.float64) if rule == "released" else np.asarray(logits, np.float64)


def key_tolerance(keys: np.ndarray, rule: str, tol: float) -> np.ndarray:
    """How far a key may move when its logit moves by `tol`: a step of fp16 for the released key, `tol` otherwise."""
    return FP16_STEP * np.abs(keys) + tol if rule == "released" else np.full(keys.shape, 2 * tol)


def stable_ranking(logits: Sequence[float], rule: str, tol: float = TOL) -> bool:
    """Whether no frame's place under `rule` can change when each logit moves by up to `tol`, so two computations of
    the ranking are equal: under `released` every key is the same at logit - tol and logit + tol (the key is
    monotone, so it is constant between; ties stay ties); under `exact` no two logits lie within 2 * tol."""
    x = np.asarray(logits, np.float64)
    if rule == "released":
        return bool(np.all(released_scores(x - tol) == released_scores(x + tol)))
    return len(x) < 2 or bool(np.diff(np.sort(x)).min() > 2 * tol)


def assert_same_order(got: Sequence[int], want: Sequence[int], keys: np.ndarray, slack: np.ndarray) -> None:
    """`got` orders the items `want` orders (best first by `keys`), apart from items whose keys lie within `slack`."""
    assert sorted(got) == sorted(want), f"{list(got)} and {list(want)} rank different items"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert abs(keys[g] - keys[w]) <= max(slack[g], slack[w]), (
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
    assert_same_order(got.ranking, want.ranking, keys, key_tolerance(keys, want.ranking_rule, tol))


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
    for m, n in zip(got["moments"], want["moments"], strict=True):
        assert np.allclose(m, n, rtol=0, atol=1e-3 + tol), f"moments: {got['moments']} against {want['moments']}"
    key = dict(zip(want["index"], want["logits"], strict=True))  # the record's ranking key, rounded to 2 places
    got_key = dict(zip(got["index"], got["logits"], strict=True))
    slack = np.full(len(key), 0.01 + FP16_STEP)
    frames = list(key)
    assert np.allclose([got_key[f] for f in frames], list(key.values()), rtol=0, atol=slack[0]), "logits"
    assert_same_order([frames.index(f) for f in got["index"]], [frames.index(f) for f in want["index"]],
                      np.asarray(list(key.values())), slack)
    if "top_k" in want:
        assert got["top_k"] == sorted(got["index"][: len(want["top_k"])])
    same = set(got) - set(_RECORD_FLOATS) - {"index", "logits", "moments", "top_k"}
    assert {k: got[k] for k in same} == {k: want[k] for k in same}
