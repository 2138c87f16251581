"""The runtimes `build.json` names are checked before tritonserver starts (`videoitg.engines.preflight`):
`repo build` and `serve` refuse, in one line, a runtime whose library is missing or does not import, whose version
is not the one that built the engine, or whose plan was tuned for another GPU. TensorRT and TensorRT-LLM are not
installed here: the machine is described by a `RuntimeEnv` and the import probe is a stand-in; the command-line
test runs the real check on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from videoitg.commands.cli import main
from videoitg.commands.repo import check_decoder_for
from videoitg.decode.errors import DecoderUnavailableError
from videoitg.engine_build import build
from videoitg.engine_build.build import BuildReport
from videoitg.engines.manifest import EngineManifest, RuntimeEnv
from videoitg.engines.preflight import RuntimeCheckError, check_runtimes, runtime_problems

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
IMAGE = {"tensorrt": "10.14.1.48", "tensorrt_llm": "1.2.1", "torch": "2.10.0a0", "onnxruntime": None}


def _engines(tmp_path: Path, runtimes: dict[str, str], versions: dict[str, str] | None = None) -> Path:
    eng = tmp_path / "engines"
    (eng / "tensorrt").mkdir(parents=True)
    (eng / "build.json").write_text(json.dumps({"runtimes": runtimes, "versions": versions or IMAGE}))
    (eng / "tensorrt" / "vision.plan").write_bytes(b"plan")
    manifest = EngineManifest(name="vision", kind="tensorrt", file="vision.plan", precision="fp16",
                              checkpoint={"identity": "abc"}, versions={"tensorrt": "10.14.1.48"}, gpu=H100)
    manifest.write(eng / "tensorrt")
    return eng


def _env(gpu: dict[str, str] | None = H100, **versions: str | None) -> RuntimeEnv:
    return RuntimeEnv(versions={**IMAGE, **versions}, gpu_name=gpu and gpu["name"],
                      compute_capability=gpu and gpu["compute_capability"])


def imports(module: str) -> None:
    return None


def test_the_image_the_engines_were_built_in_passes(tmp_path: Path) -> None:
    eng = _engines(tmp_path, {"vision": "tensorrt", "grounding": "trtllm"})
    assert runtime_problems(eng, {"vision": "tensorrt", "grounding": "trtllm"}, _env(), imports) == []


@pytest.mark.parametrize(("env", "probe", "expected"), [
    (_env(tensorrt_llm=None), imports, "grounding: runtime trtllm needs tensorrt_llm, which is not installed here"),
    (_env(), lambda m: "ImportError: libnvinfer.so.10: cannot open shared object file" if m == "tensorrt" else None,
     "vision: runtime tensorrt: tensorrt 10.14.1.48 does not import (ImportError: libnvinfer.so.10"),
    (_env(tensorrt="10.13.3.9"), imports,
     "vision: runtime tensorrt: tensorrt version mismatch: engine built with 10.14.1.48, this machine has 10.13.3.9"),
    (_env(gpu={"name": "NVIDIA L40S", "compute_capability": "8.9"}), imports,
     "vision: runtime tensorrt: GPU compute capability mismatch"),
    (_env(gpu=None), imports, "vision: runtime tensorrt: engine needs a CUDA GPU but none is visible"),
    (_env(tensorrt_llm="1.1.0"), imports,
     "grounding: runtime trtllm: engines built with tensorrt_llm 1.2.1, this machine has 1.1.0"),
])
def test_each_reason_a_runtime_cannot_run_is_named(tmp_path: Path, env: RuntimeEnv, probe, expected: str) -> None:
    eng = _engines(tmp_path, {"vision": "tensorrt", "grounding": "trtllm"})
    with pytest.raises(RuntimeCheckError) as e:
        check_runtimes(eng, {"vision": "tensorrt", "grounding": "trtllm"}, env, probe)
    msg = str(e.value)
    assert expected in msg
    assert "\n" not in msg, "one line"
    assert "videoitg build --checkpoint DIR --out ENGINES" in msg


def test_a_missing_engine_file_is_named(tmp_path: Path) -> None:
    eng = _engines(tmp_path, {"grounding": "tensorrt"})
    problems = runtime_problems(eng, {"grounding": "tensorrt"}, _env(), imports)
    assert problems == [f"grounding: runtime tensorrt: {eng / 'tensorrt' / 'llm.plan'} is missing"]


def test_repo_build_refuses_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole path on this machine: build.json names an ONNX Runtime vision graph that is not there."""
    eng = tmp_path / "engines"
    eng.mkdir()
    (eng / "build.json").write_text(json.dumps({"runtimes": {"vision": "onnxruntime"}, "versions": {}}))
    out = tmp_path / "repo"
    code = main(["repo", "build", "--target", "cpu", "--engines", str(eng), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert not out.exists()
    assert err.count("\n") == 0
    assert "vision: runtime onnxruntime:" in err and "onnx/vision.onnx is missing" in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal where NVDEC cannot run")
def test_the_dali_decoder_is_refused_before_start_where_it_cannot_run() -> None:
    """The check `serve` (and `repo build`, where CUDA is present) runs with `--decoder dali` on a gpu target: the
    decoder's self-test, in a child process; here (no CUDA) it fails in one line naming the way out; the python
    decoder is not tested."""

    with pytest.raises(DecoderUnavailableError) as e:
        check_decoder_for(SimpleNamespace(decoder="dali", target="gpu"))
    assert "\n" not in str(e.value) and str(e.value).endswith("serve with --decoder pyav")
    check_decoder_for(SimpleNamespace(decoder="pyav", target="gpu"))


def test_onnx_graphs_are_refused_in_the_gpu_image_in_one_line_that_says_what_it_serves(tmp_path: Path) -> None:
    """The image installs no onnxruntime (docs/deploy-gpu.md): an engines directory whose build.json names it is refused
    before start, in one line that says what the image serves instead."""
    eng = _engines(tmp_path, {"vision": "onnxruntime", "grounding": "trtllm"})
    (problem,) = runtime_problems(eng, {"vision": "onnxruntime", "grounding": "trtllm"}, _env(), imports)
    assert problem == ("vision: runtime onnxruntime needs onnxruntime, which is not installed here (the GPU image "
                       "serves TensorRT plans, TensorRT-LLM and torch only, no ONNX graphs)")


def test_a_build_serves_only_runtimes_whose_library_is_installed_where_it_ran(monkeypatch) -> None:
    """Engines are built in the image that serves them: ONNX graphs built there (always written) are not named as a
    serving runtime when onnxruntime is not installed; the next fastest built, or torch, is."""
    rep = BuildReport(built=[{"name": "vision", "kind": "onnx"}, {"name": "llm", "kind": "onnx"},
                             {"name": "grounding", "kind": "trtllm"}])
    versions = {"onnxruntime": "1.32.0", "tensorrt_llm": "1.2.1"}
    monkeypatch.setattr(build, "library_version", lambda module: versions.get(module))
    assert build.serving_runtimes(rep) == {"vision": "onnxruntime", "grounding": "trtllm"}
    versions.pop("onnxruntime")
    assert build.serving_runtimes(rep) == {"vision": "torch", "grounding": "trtllm"}
