"""The fidelity defaults reach every entry point: the dtype (fp16 on a GPU, as released; resolved without a GPU
here) and the ranking rule (`--ranking-rule exact` recorded and followed by `videoitg score`, `videoitg eval` and
`videoitg batch`), on a checkpoint whose head saturates so that the two rules order frames differently."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

import videoitg.model.checkpoint
import videoitg.pipeline.scorer
from tests.support.batch import local_stream
from tests.support.compare import stable_ranking
from tests.support.model import tiny_config
from tests.support.train import small_dataset
from videoitg.batch import runner
from videoitg.batch.inprocess import InProcessScorer
from videoitg.batch.runner import BatchOptions, fingerprint, run_batch
from videoitg.batch.scorers import ScorerSpec
from videoitg.commands.cli import main
from videoitg.defaults import default_checkpoint
from videoitg.engines import runtimes
from videoitg.errors import EngineError, InputError
from videoitg.eval.annotations import read_annotations
from videoitg.eval.scoring import score_records
from videoitg.lmms.tasks import model_options
from videoitg.manifest.rows import load_manifest
from videoitg.model.checkpoint import load_checkpoint, save_checkpoint
from videoitg.outputs import released_scores
from videoitg.pipeline.scorer import Scorer
from videoitg.request.limits import Limits
from videoitg.request.options import RequestOptions
from videoitg.sampling import SamplingParams


class Loaded(Exception):
    """Raised by the stand-in loader once it has seen the dtype it was asked for."""


@pytest.fixture()
def gpu_less_cuda(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """`--device cuda` accepted on this CUDA-less machine; the checkpoint loader (`load_identified` calls it)
    records the dtype and stops."""
    seen: list[torch.dtype] = []

    def load(ckpt, device="cpu", dtype=torch.float32, *args, **kw):
        assert str(device).startswith("cuda")
        seen.append(dtype)
        raise Loaded

    monkeypatch.setattr(videoitg.pipeline.scorer, "check_device", lambda d: str(d))
    monkeypatch.setattr(videoitg.model.checkpoint, "load_checkpoint", load)
    return seen


# ---- precision ---------------------------------------------------------------------------------------------
def test_scorer_loads_fp16_for_a_cuda_device(gpu_less_cuda: list[torch.dtype]) -> None:
    for kwargs in ({}, {"dtype": "auto"}, {"dtype": None}):
        with pytest.raises(Loaded):
            Scorer(default_checkpoint(), device="cuda", **kwargs)
    with pytest.raises(Loaded):
        Scorer(default_checkpoint(), device="cuda:0", dtype="bfloat16")  # an option
    assert gpu_less_cuda == [torch.float16] * 3 + [torch.bfloat16]


def test_score_and_eval_commands_load_fp16_for_cuda(gpu_less_cuda: list[torch.dtype], tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "data", videos=1, per_video=1)
    video = next((data.parent / "videos").iterdir())
    with pytest.raises(Loaded):
        main(["score", str(video), "-i", "the red square", "--device", "cuda"])
    with pytest.raises(Loaded):
        main(["eval", str(data), "--device", "cuda", "--quiet"])
    assert gpu_less_cuda == [torch.float16, torch.float16]


def test_batch_spec_resolves_the_one_default() -> None:
    assert ScorerSpec(device="cuda").dtype == "float16" and ScorerSpec(device="cuda:1").dtype == "float16"
    assert ScorerSpec().dtype == "float32" and ScorerSpec(device="cpu", dtype="auto").dtype == "float32"
    assert ScorerSpec(device="cuda", dtype="bf16").dtype == "bfloat16"
    assert ScorerSpec(kind="triton", servers=("h:1",)).dtype == "server"
    assert fingerprint(BatchOptions("out", ScorerSpec(device="cuda")))["dtype"] == "float16"  # run.json
    with pytest.raises(InputError):
        ScorerSpec(device="cuda", dtype="fp8")


def test_lmms_model_args_resolve_to_fp16_for_cuda() -> None:
    opts = model_options(device="cuda")
    assert opts.dtype is torch.float16 and RequestOptions.from_text({}, "model_args:").ranking_rule is None
    assert opts.truncate is False
    assert model_options(device="cpu").dtype is torch.float32
    assert model_options(device="cuda", dtype="bfloat16").dtype is torch.bfloat16
    opts = model_options(device="cuda", truncate="true", num_frames="64")
    named = RequestOptions.from_text({"ranking_rule": "exact", "top_k": "8"}, "model_args:")
    assert (named.ranking_rule, opts.truncate, opts.sampling.num_frames, named.top_k) == ("exact", True, 64, 8)
    assert model_options(truncate=False).truncate is False and model_options(truncate="0").truncate is False
    with pytest.raises(InputError, match="ranking rule"):
        RequestOptions.from_text({"ranking_rule": "best"}, "model_args:")
    with pytest.raises(InputError, match="in-process"):
        model_options(truncate=True, server="127.0.0.1:8001")
    with pytest.raises(InputError, match="true or false"):
        model_options(truncate="maybe")


def test_trtllm_grounding_follows_the_models_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TensorRT-LLM runtime runs the precision the model was loaded in (fp16 by default on a GPU), not a fixed
    bf16; fp32 has no TensorRT-LLM attention path and is refused by name."""

    made: list[torch.dtype] = []
    fake = types.ModuleType("videoitg.engines.trtllm")

    class FakeScorer:  # TrtllmTorchScorer's signature; it records the precision it was asked for
        def __init__(self, checkpoint, dtype, *, max_num_tokens: int, disable_fuse_rope: bool = False, **placement):
            made.append(dtype)

    fake.TrtllmTorchScorer = FakeScorer
    monkeypatch.setitem(sys.modules, "videoitg.engines.trtllm", fake)

    class Model:
        config = tiny_config()  # what the runtime sizes its attention metadata from
        class model:  # the attribute path GroundingRuntime reads
            embed_tokens = torch.nn.Embedding(4, 2).to(torch.float16)

    g = runtimes.open_grounding("trtllm", Model(), checkpoint="ckpt")
    assert made == [torch.float16] and g.precision == "fp16"
    runtimes.open_grounding("trtllm", Model(), checkpoint="ckpt", dtype=torch.bfloat16)
    assert made[-1] is torch.bfloat16
    Model.model.embed_tokens = torch.nn.Embedding(4, 2)  # float32
    with pytest.raises(EngineError, match="float16 or bfloat16"):
        runtimes.open_grounding("trtllm", Model(), checkpoint="ckpt")


# ---- ranking rule wiring -----------------------------------------------------------------------------------
SAMPLING = ["--num-frames", "32", "--target-fps", "2"]


@pytest.fixture(scope="module")
def saturated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The embedded checkpoint with its head rescaled so that its logits spread around 9.5 (std 3): about half the
    frames of a clip get the fp16 sigmoid 1.0, a tie the `released` rule breaks by frame order."""
    root = tmp_path_factory.mktemp("saturated")
    data = small_dataset(root / "data", videos=2, per_video=2)
    records = json.loads(data.read_text())
    video = data.parent / "videos" / records[0]["video"]
    instruction = records[0]["question"].replace("<image>\n", "")
    model, tok = load_checkpoint(default_checkpoint(), "cpu", torch.float32)
    sampling = SamplingParams(32, 2.0)
    with torch.no_grad():
        raw = torch.tensor(Scorer(model=model, tokenizer=tok, sampling=sampling).score(video, instruction).logits)
        scale = 3.0 / raw.std().item()
        model.out_proj.weight.mul_(scale)
        model.out_proj.bias.mul_(scale).add_(9.5 - (raw * scale).median().item())
    ckpt = save_checkpoint(model, root / "ckpt", tok)
    scorer = Scorer(ckpt, sampling=sampling)
    results = {rule: scorer.score(video, instruction, RequestOptions(ranking_rule=rule))
               for rule in ("released", "exact")}
    assert (released_scores(results["exact"].logits) == 1.0).sum() >= 4  # ties under the released key
    assert results["released"].ranking != results["exact"].ranking
    # Far enough from every rounding step and from each other that the CLI's, eval's and batch's own computations
    # (other batch shapes, one thread) rank the frames as these do: the tests compare rankings exactly.
    assert all(stable_ranking(r.logits, rule) for rule, r in results.items())
    return {"ckpt": ckpt, "data": data, "video": video, "instruction": instruction, "results": results}


def order(result) -> list[int]:
    return [result.frame_indices[i] for i in result.ranking]


@pytest.mark.parametrize("rule", ["exact", "released"])
def test_score_records_and_follows_the_rule(saturated: dict, tmp_path: Path, rule: str) -> None:
    out = tmp_path / "results.jsonl"
    assert main(["score", str(saturated["video"]), "-i", saturated["instruction"], "--checkpoint",
                 str(saturated["ckpt"]), *SAMPLING, "--ranking-rule", rule, "--output", str(out), "--top-k",
                 "4"]) == 0
    (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
    want = saturated["results"][rule]
    assert rec["ranking_rule"] == rule and rec["index"] == order(want)
    assert rec["top_k"] == sorted(order(want)[:4])  # the top-K, in frame order
    if rule == "exact":  # by the logit: the stored fp32 scores never rise along the ranking
        by_index = dict(zip(rec["frame_indices"], rec["scores"], strict=True))
        ranked = [by_index[f] for f in rec["index"]]
        assert ranked == sorted(ranked, reverse=True)


def test_eval_records_and_follows_the_rule(saturated: dict, tmp_path: Path) -> None:
    data = saturated["data"]
    sampling = SamplingParams(1024, 1.0, "train")  # eval's sampling for VideoITG-40K annotations
    records, _ = read_annotations(data, "videoitg", data.parent / "videos")
    rankings = {}
    for rule in ("exact", "released"):
        assert main(["eval", str(data), "--checkpoint", str(saturated["ckpt"]), "--out", str(tmp_path / rule),
                     "--ranking-rule", rule, "--quiet"]) == 0
        assert json.loads((tmp_path / rule / "eval.json").read_text())["ranking_rule"] == rule
        rows = [json.loads(x) for x in (tmp_path / rule / "per_record.jsonl").read_text().splitlines()]
        rankings[rule] = [r["ranking"] for r in rows]
        # the order eval used is the Scorer's under that rule
        scorer = Scorer(saturated["ckpt"], sampling=sampling,
                        limits=Limits(max_sampled_frames=sampling.num_frames))  # as eval does
        scored, _ = score_records(scorer, records, data.parent / "videos", options=RequestOptions(ranking_rule=rule))
        assert rankings[rule] == [list(s.order) for s in scored]
    assert rankings["exact"] != rankings["released"]


@pytest.mark.usefixtures("one_thread")
def test_batch_records_and_follows_the_rule(saturated: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_stream", local_stream)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video": str(saturated["video"]), "instruction": saturated["instruction"],
                                    "doc_id": 7}) + "\n")
    for rule in ("exact", "released"):
        out = tmp_path / rule
        spec = ScorerSpec(checkpoint=str(saturated["ckpt"]), num_frames=32, target_fps=2.0,
                           options=RequestOptions(top_k=4, ranking_rule=rule))
        run_batch(load_manifest(manifest, [str(tmp_path), str(saturated["video"].parent)]),
                  BatchOptions(str(out), spec, progress=False))
        (rec,) = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert rec["ranking_rule"] == rule and rec["index"] == order(saturated["results"][rule])
        run = json.loads((out / "run.json").read_text())
        assert run["ranking_rule"] == rule and run["dtype"] == "float32"


def test_batch_truncation_is_an_in_process_option(tmp_path: Path) -> None:
    """`videoitg batch --truncate-instruction`: the in-process Scorer cuts as released, run.json records it (and
    only then, so folders written without it keep their fingerprint); a server always refuses."""
    spec = ScorerSpec(checkpoint=str(default_checkpoint()), truncate=True)
    assert InProcessScorer(spec).scorer.truncate is True
    assert InProcessScorer(ScorerSpec(checkpoint=str(default_checkpoint()))).scorer.truncate is False
    assert fingerprint(BatchOptions(str(tmp_path), spec))["truncate_instruction"] is True
    assert "truncate_instruction" not in fingerprint(BatchOptions(str(tmp_path), ScorerSpec()))
    with pytest.raises(InputError, match="in-process"):
        ScorerSpec(kind="triton", servers=("h:1",), truncate=True)
