"""Serving pieces that need no running server: the repository generator and its committed examples, the
feature cache, request parsing, the outputs round trip, and finding the Triton binaries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from videoitg.errors import InputError
from videoitg.outputs import GroundingResult
from videoitg.serving import binaries
from videoitg.serving.cache import FeatureCache, cache_key, nbytes
from videoitg.serving.repository import RepoSpec, build_repository, find_vision_engine, render
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
    assert [i.name for i in top.input] == ["VIDEO", "INSTRUCTION", "TOP_K", "DOC_ID"]
    assert [i.optional for i in top.input] == [False, False, True, True]
    assert {"SCORES", "FRAME_INDICES", "TIMESTAMPS", "TOP_K_FRAMES"} <= {o.name for o in top.output}


def test_repository_follows_checkpoint_and_sampling(tmp_path: Path) -> None:
    from videoitg.sampling import SamplingParams

    files = render(RepoSpec(checkpoint=str(tmp_path), sampling=SamplingParams(64, 2.0, "train")))
    top = files["videoitg/config.pbtxt"]
    assert json.dumps(str(tmp_path)) in top and '"64"' in top and '"2"' in top and '"train"' in top
    assert json.dumps(str(tmp_path)) in files["videoitg_grounding/config.pbtxt"]


def test_vision_engine_hook(tmp_path: Path) -> None:
    """Follows engine_build's layout: ENGINES/onnx/vision.onnx, ENGINES/tensorrt/vision.plan."""
    assert find_vision_engine("", "gpu").runtime == "torch"
    assert find_vision_engine(str(tmp_path), "cpu").runtime == "torch"  # nothing built
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "vision.onnx").write_bytes(b"x")
    e = find_vision_engine(str(tmp_path), "cpu")
    assert (e.runtime, e.path) == ("onnxruntime", str((tmp_path / "onnx" / "vision.onnx").resolve()))
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "vision.plan").write_bytes(b"x")
    assert find_vision_engine(str(tmp_path), "gpu").runtime == "tensorrt"
    assert find_vision_engine(str(tmp_path), "cpu").runtime == "onnxruntime"  # no TensorRT on a CPU target
    files = render(RepoSpec(target="gpu", engines=str(tmp_path)))
    assert 'platform: "tensorrt_plan"' in files["videoitg_vision_encoder/config.pbtxt"]
    assert '"videoitg_vision_encoder"' in files["videoitg_vision/config.pbtxt"]


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
        ((np.array([[b"v"]], object), np.array([[b"x" * 70000]], object), None, None), "limit"),
        ((np.array([[b"v", b"w"]], object), np.array([[b"hi"]], object), None, None), "one video per request"),
        ((np.array([[b"v"]], object), np.array([[b"hi"]], object), np.array([[0]], np.int32), None), "TOP_K"),
    ]
    for args, msg in bad:
        with pytest.raises(InputError, match=msg):
            parse_request(*args, 8)


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
