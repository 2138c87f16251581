"""Serving pieces that need no running server: the repository generator and its committed examples, the
feature cache, request parsing, the outputs round trip, and finding the Triton binaries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videoitg.errors import InputError
from videoitg.limits import InstructionTooLongError, Limits
from videoitg.outputs import GroundingResult
from videoitg.sampling import SamplingParams
from videoitg.serving import binaries
from videoitg.serving.cache import FeatureCache, cache_key, nbytes
from videoitg.serving.repository import RepoSpec, build_repository, render, step_runtimes
from videoitg.serving.steps import parse_request, result_from_outputs, result_outputs

ROOT = Path(__file__).resolve().parents[1]


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts}


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_committed_repository_equals_generator(target: str, tmp_path: Path) -> None:
    out = build_repository(RepoSpec(target=target), tmp_path / target, serialize_dali=False)
    committed = ROOT / "triton_models" / target
    assert _tree(committed) == _tree(out), f"triton_models/{target} is stale: rerun `videoitg repo build`"


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_configs_parse_as_triton_model_config(target: str) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    files = render(RepoSpec(target=target))
    configs = {k: v for k, v in files.items() if k.endswith("config.pbtxt")}
    assert len(configs) == 4
    for rel, text in configs.items():
        cfg = text_format.Parse(text, model_config_pb2.ModelConfig())  # unknown field or enum -> ParseError
        assert cfg.name == rel.split("/")[0]
    top = text_format.Parse(files["videoitg/config.pbtxt"], model_config_pb2.ModelConfig())
    assert [i.name for i in top.input] == ["VIDEO", "INSTRUCTION", "TOP_K", "DOC_ID", "RANKING_RULE"]
    assert [i.optional for i in top.input] == [False, False, True, True, True]
    assert {"SCORES", "FRAME_INDICES", "TIMESTAMPS", "TOP_K_FRAMES", "MOMENTS", "RANKING_RULE"} <= {
        o.name for o in top.output}


def test_repository_follows_checkpoint_and_sampling(tmp_path: Path) -> None:
    files = render(RepoSpec(checkpoint=str(tmp_path), sampling=SamplingParams(64, 2.0, "train")))
    top = files["videoitg/config.pbtxt"]
    assert json.dumps(str(tmp_path)) in top and '"64"' in top and '"2"' in top and '"train"' in top
    assert json.dumps(str(tmp_path)) in files["videoitg_grounding/config.pbtxt"]


def test_step_runtimes_follow_build_json(tmp_path: Path) -> None:
    """Each step serves with the runtime `videoitg build` recorded; a cpu target never gets a GPU-only one."""
    assert step_runtimes("", "gpu") == {"vision": "torch", "grounding": "torch"}
    with pytest.raises(InputError, match="no build.json"):
        step_runtimes(str(tmp_path), "cpu")
    (tmp_path / "build.json").write_text(json.dumps({"runtimes": {"vision": "tensorrt", "grounding": "trtllm"}}))
    assert step_runtimes(str(tmp_path), "gpu") == {"vision": "tensorrt", "grounding": "trtllm"}
    assert step_runtimes(str(tmp_path), "cpu") == {"vision": "torch", "grounding": "torch"}  # no ONNX built
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "llm.onnx").write_bytes(b"x")
    assert step_runtimes(str(tmp_path), "cpu") == {"vision": "torch", "grounding": "onnxruntime"}
    files = render(RepoSpec(target="gpu", engines=str(tmp_path)))
    assert '"tensorrt"' in files["videoitg_vision/config.pbtxt"]
    assert '"trtllm"' in files["videoitg_grounding/config.pbtxt"]


def test_feature_cache_lru_bound_and_counters() -> None:
    t = lambda n: torch.zeros(n, dtype=torch.float32)  # n * 4 bytes
    c = FeatureCache(capacity_bytes=100)
    assert c.get("a") is None and c.stats.misses == 1
    assert c.put("a", t(10)) and c.put("b", t(10))  # 80 bytes
    assert c.get("a") is not None  # a is now most recent
    assert c.put("c", t(10))  # 120 > 100: evicts b (least recently used)
    assert "b" not in c and "a" in c and "c" in c
    assert c.stats.evictions == 1 and c.stats.bytes == 80 and c.stats.hits == 1
    assert not c.put("huge", t(30))  # larger than the whole cache: refused, nothing evicted
    assert len(c) == 2
    assert nbytes({"x": t(2), "y": [np.zeros(3, np.float64)], "z": 5}) == 8 + 24
    assert cache_key("d", "eval:512:1", "m1") != cache_key("d", "eval:512:1", "m2")


def test_parse_request_errors() -> None:
    ok = parse_request(np.array([[b"v"]], object), np.array([[b"hi"]], object), None, None, 8)
    assert (ok.video, ok.instruction, ok.top_k, ok.doc_id) == (b"v", "hi", 8, None)
    bad = [
        ((np.array([[b""]], object), np.array([[b"hi"]], object), None, None), "VIDEO is empty"),
        ((np.array([[b"v"]], object), np.array([[b"  "]], object), None, None), "INSTRUCTION is empty"),
        ((np.array([[b"v"]], object), np.array([[b"\xff\xfe"]], object), None, None), "UTF-8"),
        ((np.array([[b"v"]], object), np.array([[b"x" * 70000]], object), None, None), "max_instruction_bytes"),
        ((np.array([[b"v", b"w"]], object), np.array([[b"hi"]], object), None, None), "one video per request"),
        ((np.array([[b"v"]], object), np.array([[b"hi"]], object), np.array([[0]], np.int32), None), "TOP_K"),
    ]
    for args, msg in bad:
        with pytest.raises(InputError, match=msg):
            parse_request(*args, 8)
    lim = Limits().replace(max_bytes=4, max_instruction_bytes=3)
    with pytest.raises(InputError, match=r"VIDEO is 5 bytes, over the limit of 4 bytes \(max_video_bytes\)"):
        parse_request(np.array([[b"vvvvv"]], object), np.array([[b"hi"]], object), None, None, 8, lim)
    with pytest.raises(InstructionTooLongError, match="over the limit of 3 bytes"):
        parse_request(np.array([[b"v"]], object), np.array([[b"four"]], object), None, None, 8, lim)
    assert parse_request(np.array([[b"vvvv"]], object), np.array([[b"hi!"]], object), None, None, 8, lim).top_k == 8


def test_limits_reach_the_model_parameters_and_queue() -> None:
    """The top-level, decode and grounding models carry every knob (read back equal); the top-level queue is
    bounded by max_in_flight."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from videoitg.serving.steps import limits_from, model_parameters

    lim = Limits().replace(max_bytes=12345, max_instruction_tokens=77, max_in_flight=3, decode_time_budget_s=2.5)
    files = render(RepoSpec(target="cpu", limits=lim))
    for model in ("videoitg", "videoitg_decode", "videoitg_grounding"):
        cfg = text_format.Parse(files[f"{model}/config.pbtxt"], model_config_pb2.ModelConfig())
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        assert limits_from(params) == lim, model
    top = text_format.Parse(files["videoitg/config.pbtxt"], model_config_pb2.ModelConfig())
    assert top.dynamic_batching.default_queue_policy.max_queue_size == 3
    assert limits_from(model_parameters({"parameters": {}})) == Limits()  # hand-written config: defaults
    with pytest.raises(InputError, match="sampled frames"):
        RepoSpec(sampling=SamplingParams(64), limits=Limits(max_sampled_frames=32))


def test_repo_build_and_serve_take_limit_flags(tmp_path: Path) -> None:
    from videoitg.cli import main

    assert main(["repo", "build", "--out", str(tmp_path), "--max-video-bytes", "1M", "--max-in-flight", "2"]) == 0
    top = (tmp_path / "videoitg" / "config.pbtxt").read_text()
    assert "max_queue_size: 2" in top and '"1048576"' in top
    serve = subprocess.run([sys.executable, "-m", "videoitg", "serve", "--help"], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
    assert "--max-instruction-tokens" in serve.stdout and "--max-in-flight" in serve.stdout


def test_outputs_round_trip_to_grounding_result() -> None:
    r = GroundingResult([0.5, -1.0, 2.0, 0.5], [0, 30, 60, 90], [0.0, 1.0, 2.0, 3.0], "q", "v.mp4")
    out = result_outputs(r, top_k=2)
    assert out["FRAME_INDICES"].tolist() == [60, 0, 90, 30]  # score-descending, ties by time
    assert out["TOP_K_FRAMES"].tolist() == [0, 60]  # chronological
    back = result_from_outputs(out, "q", "v.mp4")
    assert back.to_record(1, top_k=2) == r.to_record(1, top_k=2)


def test_binaries_found_and_perf_analyzer_runs() -> None:
    install = binaries.find_tritonserver()
    assert install.binary.is_file()
    backend = binaries.prepare_backend_dir(install)
    assert (backend / "python" / "libtriton_python.so").is_file()
    assert (backend / "python" / "triton_python_backend_stub").is_file()
    pa = binaries.find_perf_analyzer()
    r = subprocess.run([str(pa), "--version"], env=binaries.perf_analyzer_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "2.51" in r.stdout + r.stderr, r.stderr


def test_parse_request_ranking_rule_and_invisible_instruction() -> None:
    video, text = np.array([b"v"], dtype=object), np.array([b"when?"], dtype=object)
    assert parse_request(video, text, None, None, 8).ranking_rule == "released"
    assert parse_request(video, text, None, None, 8, default_ranking_rule="exact").ranking_rule == "exact"
    rule = np.array([b"exact"], dtype=object)
    assert parse_request(video, text, None, None, 8, ranking_rule=rule).ranking_rule == "exact"
    with pytest.raises(InputError, match="RANKING_RULE: unknown ranking rule 'best'"):
        parse_request(video, text, None, None, 8, ranking_rule=np.array([b"best"], dtype=object))
    for junk in ("\u200b", "\x00\x00", "\ufeff \u2060"):
        with pytest.raises(InputError, match="INSTRUCTION is empty"):
            parse_request(video, np.array([junk.encode()], dtype=object), None, None, 8)
