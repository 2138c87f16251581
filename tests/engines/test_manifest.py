"""Manifest round trip and the load-time version-lock check (no TensorRT needed)."""

from __future__ import annotations

import json
import sys

import pytest

from videoitg.engine_build.trt_builder import LLMProfileSpec, VisionProfileSpec
from videoitg.engines.manifest import (
    EngineManifest,
    Profile,
    RuntimeEnv,
    check_manifest,
    checkpoint_sha256,
    manifest_problems,
)
from videoitg.errors import BackendUnavailable, EngineError, EngineMismatchError
from videoitg.libraries import import_tensorrt

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _plan_manifest(**kw) -> EngineManifest:
    d = dict(
        name="vision",
        kind="tensorrt",
        file="vision.plan",
        precision="fp16",
        checkpoint={"sha256": "ab" * 32, "identity": "cd" * 8},
        versions={"tensorrt": "10.13.0.35"},
        gpu=dict(H100),
        profiles=VisionProfileSpec(image_size=384).profiles(),
        extra={"rebuild_command": "videoitg build --checkpoint ckpt --out engines --precision fp16"},
    )
    d.update(kw)
    return EngineManifest(**d)


def _env(trt="10.13.0.35", name=H100["name"], cc="9.0") -> RuntimeEnv:
    return RuntimeEnv(
        versions={"tensorrt": trt, "onnxruntime": "1.31.1"}, gpu_name=name, compute_capability=cc
    )


def test_round_trip(tmp_path):
    m = _plan_manifest()
    path = m.write(tmp_path)
    assert path.name == "vision.plan.manifest.json"
    back = EngineManifest.read(tmp_path / "vision.plan")
    assert back == m
    assert back.profiles[0] == Profile(
        "pixel_values", [1, 3, 384, 384], [128, 3, 384, 384], [128, 3, 384, 384]
    )


def test_matching_env_passes():
    m = _plan_manifest()
    check_manifest(m, _env(), checkpoint_sha256="ab" * 32, checkpoint_identity="cd" * 8, precision="fp16")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            _env(trt="10.14.1"),
            "tensorrt version mismatch: engine built with 10.13.0.35, this machine has 10.14.1",
        ),
        (_env(trt=None), "tensorrt 10.13.0.35 built this engine but tensorrt is not importable"),
        (_env(name="NVIDIA A100-SXM4-80GB", cc="8.0"), "compute capability mismatch"),
        (_env(name="NVIDIA H200"), "GPU model mismatch"),
        (_env(name=None, cc=None), "needs a CUDA GPU"),
    ],
)
def test_mismatch_is_refused_with_rebuild_hint(env, needle):
    with pytest.raises(EngineMismatchError) as e:
        check_manifest(_plan_manifest(), env)
    msg = str(e.value)
    assert needle in msg
    assert (
        "Rebuild it on this machine: videoitg build --checkpoint ckpt --out engines --precision fp16" in msg
    )


def test_problems_are_listed_one_per_reason():
    assert manifest_problems(_plan_manifest(), _env()) == []
    problems = manifest_problems(_plan_manifest(), _env(trt="10.14.1", name="NVIDIA H200"), precision="bf16")
    assert problems == [
        "tensorrt version mismatch: engine built with 10.13.0.35, this machine has 10.14.1",
        "GPU model mismatch: engine built on NVIDIA H100 80GB HBM3, this GPU is NVIDIA H200",
        "precision mismatch: engine is fp16, bf16 was requested",
    ]


def test_gpu_name_can_be_relaxed_but_not_compute_capability():
    check_manifest(_plan_manifest(), _env(name="NVIDIA H200"), strict_gpu_name=False)
    with pytest.raises(EngineMismatchError):
        check_manifest(_plan_manifest(), _env(name="NVIDIA A100", cc="8.0"), strict_gpu_name=False)


def test_precision_and_checkpoint_mismatch():
    with pytest.raises(EngineMismatchError, match="precision mismatch: engine is fp16, bf16 was requested"):
        check_manifest(_plan_manifest(), _env(), precision="bf16")
    with pytest.raises(EngineMismatchError, match="checkpoint mismatch"):
        check_manifest(_plan_manifest(), _env(), checkpoint_sha256="cd" * 32)
    with pytest.raises(EngineMismatchError, match="checkpoint mismatch: engine built from checkpoint identity"):
        check_manifest(_plan_manifest(), _env(), checkpoint_identity="ef" * 8)
    check_manifest(_plan_manifest(), _env(), checkpoint_identity="cd" * 8)


def test_onnx_is_not_gpu_locked():
    m = _plan_manifest(
        kind="onnx", file="vision.onnx", gpu=None, versions={"torch": "2.13.0", "onnx": "1.22"}
    )
    check_manifest(m, RuntimeEnv(versions={"torch": "2.9"}, gpu_name=None, compute_capability=None))


def test_missing_or_corrupt_manifest(tmp_path):
    (tmp_path / "vision.plan").write_bytes(b"x")
    with pytest.raises(EngineError, match="no manifest"):
        EngineManifest.read(tmp_path / "vision.plan")
    (tmp_path / "vision.plan.manifest.json").write_text("{")
    with pytest.raises(EngineError, match="not valid JSON"):
        EngineManifest.read(tmp_path / "vision.plan")
    d = json.loads(json.dumps(_plan_manifest().__dict__, default=lambda o: o.__dict__))
    d["schema"] = 0
    (tmp_path / "vision.plan.manifest.json").write_text(json.dumps(d))
    with pytest.raises(EngineMismatchError, match="schema"):
        EngineManifest.read(tmp_path / "vision.plan")


def test_checkpoint_hash_sees_weight_bytes(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    a = checkpoint_sha256(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 63 + b"\1")  # same size, one byte differs
    assert checkpoint_sha256(tmp_path) != a
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EngineError, match="no config.json"):
        checkpoint_sha256(empty)


def test_profiles_cover_a_512_frame_request():
    spec = LLMProfileSpec(hidden_size=3584, max_len=16384 + 1024)  # the budget `LLMProfileSpec.for_model` computes
    by_name = {p.input: p for p in spec.profiles()}
    assert by_name["inputs_embeds"].max == [1, 16384 + 1024, 3584]
    assert by_name["frame_ids"].max == [512]
    assert by_name["inputs_embeds"].min <= by_name["inputs_embeds"].opt <= by_name["inputs_embeds"].max


def test_tensorrt_import_seam():
    try:
        trt = import_tensorrt()
    except BackendUnavailable as e:
        pytest.skip(f"TensorRT is not importable on this machine: {e}")
    assert hasattr(trt, "Builder") and hasattr(trt, "OnnxParser")


def test_reading_a_version_does_not_import_the_library(tmp_path, monkeypatch):
    """`RuntimeEnv.current()` reads TensorRT-LLM's version from its package metadata: importing it starts MPI and
    takes seconds (here the stand-in package fails if imported at all)."""
    pkg = tmp_path / "tensorrt_llm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('tensorrt_llm was imported')\n")
    info = tmp_path / "tensorrt_llm-1.2.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt_llm\nVersion: 1.2.1\n")
    (info / "top_level.txt").write_text("tensorrt_llm\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt_llm", raising=False)
    env = RuntimeEnv.current()
    assert env.versions["tensorrt_llm"] == "1.2.1"
    assert "tensorrt_llm" not in sys.modules
