"""Ranking rules (videoitg.outputs): `released` ranks by the fp16 sigmoid of the fp16 logit, ties to the earlier frame,
as the released evaluation wrapper does; `exact` by the logit. Selectable everywhere a ranking is made."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.model import tiny_config
from videoitg.batch.runner import BatchOptions, fingerprint
from videoitg.batch.scorers import ScorerSpec
from videoitg.client.kserve import VideoITGClient
from videoitg.errors import InputError
from videoitg.eval.summary import RecordScores, record_metrics
from videoitg.model.grounding import VideoITG
from videoitg.outputs import GroundingResult, rank_frames, released_scores
from videoitg.pipeline.scorer import Scorer, VideoFeatures, default_dtype, parse_dtype, parse_precision
from videoitg.request.options import RequestOptions, select
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer


def result(logits: list[float], rule: str) -> GroundingResult:
    n = len(logits)
    return GroundingResult(list(logits), [10 * i for i in range(n)], [float(i) for i in range(n)], "q", "v", rule)


def test_hand_computed_example() -> None:
    # fp16(sigmoid): 8.5 -> 1.0 (0.999797 rounds up past the midpoint 0.999756), 9 -> 1.0, 12 -> 1.0,
    # 7 -> 0.99902 (0.999089 rounds down), -1 -> 0.2688.
    logits = [8.5, 9.0, 12.0, 7.0, -1.0]
    assert released_scores(logits).tolist() == [1.0, 1.0, 1.0, np.float16(0.999089).item(), np.float16(0.26894).item()]
    assert rank_frames(logits, "released") == [0, 1, 2, 3, 4]  # three-way tie at 1.0: frame order
    assert rank_frames(logits, "exact") == [2, 1, 0, 3, 4]
    assert result(logits, "released").top_k_frames(2) == [0, 10]
    assert result(logits, "exact").top_k_frames(2) == [10, 20]


def test_released_key_is_pytorchs_fp16_sigmoid_of_the_fp16_logit() -> None:
    """Every finite fp16 logit: our key equals `torch.sigmoid` of an fp16 tensor (what the wrapper sorts), except
    where the exact sigmoid lies within a few float32 ulps of an fp16 rounding midpoint: there two float32 sigmoids
    (numpy's and PyTorch's CPU kernels, whose instruction paths differ by CPU) may round to the two fp16 neighbours.
    Such a key differs by one fp16 step."""
    x = np.arange(65536, dtype=np.uint16).view(np.float16)
    x = x[np.isfinite(x)]
    ours = released_scores(x.astype(np.float64))
    torch_cpu = torch.from_numpy(x.copy()).sigmoid().numpy()
    with np.errstate(over="ignore"):  # exp(65504) is inf: the sigmoid is 0
        exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    eps = 8 * 2.0**-24  # eight float32 ulps, relative: numpy's and PyTorch's sigmoids each err by up to ~3
    near_midpoint = (exact * (1 - eps)).astype(np.float16) != (exact * (1 + eps)).astype(np.float16)
    assert near_midpoint.sum() < 100  # a few dozen of the 63488 logits
    differ = np.nonzero(ours != torch_cpu)[0]
    assert near_midpoint[differ].all(), x[differ][~near_midpoint[differ]]
    one_step = ((np.nextafter(ours[differ], np.float16(np.inf)) == torch_cpu[differ])
                | (np.nextafter(ours[differ], np.float16(-np.inf)) == torch_cpu[differ]))
    assert one_step.all()
    # and the logit is rounded to fp16 first: a difference below fp16 resolution does not reorder
    assert rank_frames([4.0001, 4.0002], "released") == [0, 1] and rank_frames([4.0001, 4.0002], "exact") == [1, 0]


def test_saturating_head_many_confident_frames() -> None:
    """A tiny model whose head saturates: its logits spread with std 3 around 9.5, so about half of 64 frames lie
    above 8.3, where the fp16 sigmoid is exactly 1.0. The released rule then takes the earliest tied frames, the
    exact rule the largest logits; their top-8 differ. `released` equals the released expression, in torch."""
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = VideoITG(tiny_config(vocab_size=len(tok))).eval()
    model.reset_head()
    S = model.config.vision.image_size
    visual = model.visual_features(torch.randn(64, 3, S, S, generator=torch.Generator().manual_seed(1)))
    feats = VideoFeatures(visual, list(range(0, 640, 10)), [i / 10 for i in range(64)])
    scorer = Scorer(model=model, tokenizer=tok)
    with torch.no_grad():
        raw = torch.tensor(scorer.score_visual([(feats, "where is the dog?")])[0].logits)
        model.out_proj.weight.mul_(3.0 / raw.std().item())
        model.out_proj.bias.add_(9.5 - (raw * 3.0 / raw.std()).median().item())
    released = scorer.score_visual([(feats, "where is the dog?")])[0]
    exact = scorer.score_visual([(feats, "where is the dog?")], options=RequestOptions(ranking_rule="exact"))[0]
    logits = torch.tensor(released.logits)
    assert released.logits == exact.logits
    assert (released_scores(released.logits) == 1.0).sum() >= 16  # saturated: many ties at 1.0
    # The released code: torch.sort(logits.sigmoid(), descending=True) on the fp16 logits (its stable order).
    want = torch.sort(logits.half().sigmoid(), descending=True, stable=True).indices.tolist()
    assert released.ranking == want
    assert exact.ranking == torch.sort(logits, descending=True, stable=True).indices.tolist()
    assert set(released.top_k_positions(8)) != set(exact.top_k_positions(8))
    rec = released.to_record(doc_id=1, picked=select(released, RequestOptions(top_k=8)))
    assert rec["ranking_rule"] == "released" and rec["top_k"] == released.top_k_frames(8)
    assert rec["index"] == [feats.frame_indices[i] for i in want]
    assert rec["logits"] == [round(float(v), 2) for v in logits.half().sigmoid()[want]]
    assert exact.to_record(doc_id=1)["ranking_rule"] == "exact"


def test_docs_example_512_frames_100_confident() -> None:
    """The example in docs/fidelity.md: 512 frames, 100 confident (logits uniform in [8, 14]), the rest N(-4, 2)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(-4, 2, 512)
    confident = rng.choice(512, 100, replace=False)
    logits[confident] = rng.uniform(8, 14, 100)
    assert int((released_scores(logits) == 1.0).sum()) == 95
    top_released, top_exact = rank_frames(logits, "released")[:32], rank_frames(logits, "exact")[:32]
    assert len(set(top_released) & set(top_exact)) == 11


def test_unknown_rule_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="ranking rule 'fp16'"):
        result([0.0], "fp16")
    with pytest.raises(InputError, match="ranking rule"):
        Scorer(model=VideoITG(tiny_config()), tokenizer=build_tiny_tokenizer()).score(
            "clip.mp4", "where?", RequestOptions(ranking_rule="nope"))


def test_eval_metrics_follow_the_records_order() -> None:
    """Recall/precision/AP and the moment's top frame use the rule's order, not a re-sort of the scores."""
    scores, ts = [0.9, 0.95, 0.1, 0.2], [0.0, 1.0, 2.0, 3.0]
    by_score = record_metrics(RecordScores(scores, [0], ts), ks=(1,))
    by_order = record_metrics(RecordScores(scores, [0], ts, order=[0, 1, 3, 2]), ks=(1,))
    assert by_score["recall@1"] == 0.0 and by_order["recall@1"] == 1.0


def test_one_dtype_default_everywhere() -> None:
    assert default_dtype("cuda") is torch.float16 and default_dtype("cuda:1") is torch.float16  # as released
    assert default_dtype("cpu") is torch.float32
    assert parse_dtype("auto", "cuda") is torch.float16 and parse_dtype(None, "cpu") is torch.float32
    assert parse_dtype("bf16", "cuda") is torch.bfloat16  # an option
    # the default precision keeps the dtype's default; fp8 runs everything that is not FP8 in bfloat16
    assert parse_precision("default", "auto", "cuda") == (torch.float16, None)
    assert parse_precision(None, None, "cpu") == (torch.float32, None)
    assert parse_precision("fp8", "auto", "cuda") == parse_precision("fp8", "bf16", "cpu") == (torch.bfloat16, "fp8")


def test_batch_fingerprint_and_client_carry_the_rule(tmp_path) -> None:
    fp = fingerprint(BatchOptions(str(tmp_path), ScorerSpec()))
    assert fp["ranking_rule"] == "released"
    exact = ScorerSpec(options=RequestOptions(ranking_rule="exact"))
    assert fingerprint(BatchOptions(str(tmp_path), exact))["ranking_rule"] == "exact"
    assert fingerprint(BatchOptions(str(tmp_path), ScorerSpec(kind="triton", servers=("h:1",))))[
        "ranking_rule"] == "server default"

    pytest.importorskip("tritonclient.grpc")
    c = VideoITGClient("127.0.0.1:1", protocol="grpc")  # no connection is made to build inputs
    try:
        assert [t.name() for t in c.inputs(b"x", "q")] == ["VIDEO", "INSTRUCTION"]
        sent = c.inputs(b"x", "q", RequestOptions(ranking_rule="exact"))
        assert sent[-1].name() == "RANKING_RULE" and sent[-1].datatype() == "BYTES"
        with pytest.raises(InputError):
            c.inputs(b"x", "q", RequestOptions(ranking_rule="best"))
    finally:
        c.close()
