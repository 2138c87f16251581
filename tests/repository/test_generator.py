"""Serving pieces that need no running server: the repository generator and its golden repository, the feature
cache, the outputs round trip, and finding the Triton binaries (request parsing:
tests/python_backend/test_request.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import ROOT
from tests.support.model import plain_writer_checkpoint, tiny_config
from videoitg.commands.cli import main
from videoitg.contract.parameters import DecodeParameters, GroundingParameters, TopParameters, VisionParameters
from videoitg.contract.protocol import DECODE, TOP
from videoitg.contract.tensors import result_from_outputs, result_outputs
from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError
from videoitg.launch import binaries
from videoitg.model.files import checkpoint_identity
from videoitg.model.grounding import VideoITG
from videoitg.outputs import GroundingResult
from videoitg.paths import MediaRoots
from videoitg.python_backend.cache import FeatureCache, cache_key, nbytes
from videoitg.python_backend.params import StepAssets, model_parameters
from videoitg.repository.generator import RepoSpec, build_repository, model_specs, render, step_runtimes
from videoitg.request.limits import Limits
from videoitg.request.options import RequestOptions
from videoitg.sampling import SamplingParams


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts}


# The golden repository triton_models/cpu == `videoitg repo build --target cpu`; how the gpu and the ensemble
# repositories differ from it is held in tests/contract/test_protocol.py. SHAPES: (target, mode) of each repository
# shape.
SHAPES = {"cpu": ("cpu", "bls"), "gpu": ("gpu", "bls"), "cpu_ensemble": ("cpu", "ensemble")}


def test_golden_repository_equals_generator(tmp_path: Path) -> None:
    out = build_repository(RepoSpec(target="cpu"), tmp_path / "cpu")
    golden = ROOT / "triton_models" / "cpu"
    assert _tree(golden) == _tree(out), "triton_models/cpu is stale: rerun `videoitg repo build --target cpu " \
                                        "--out triton_models/cpu`"


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_configs_parse_as_triton_model_config(name: str) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2  # the serve extra: the other tests here run without it

    target, mode = SHAPES[name]
    files = render(RepoSpec(target=target, mode=mode))
    configs = {k: text_format.Parse(v, model_config_pb2.ModelConfig())  # unknown field or enum -> ParseError
               for k, v in files.items() if k.endswith("config.pbtxt")}
    assert {k.split("/")[0] for k in configs} == {
        "videoitg", "videoitg_decode", "videoitg_vision", "videoitg_grounding"} | (
        {"videoitg_select"} if mode == "ensemble" else set())
    for rel, cfg in configs.items():
        assert cfg.name == rel.split("/")[0]
    top = configs["videoitg/config.pbtxt"]
    if mode == "bls":  # the video as bytes, a cached digest alone, or a file under a media root; frames if asked
        assert [(i.name, i.optional) for i in top.input] == [
            ("VIDEO", True), ("VIDEO_DIGEST", True), ("VIDEO_URI", True), ("INSTRUCTION", False), ("TOP_K", True),
            ("RANKING_RULE", True), ("MIN_SCORE", True), ("COVERAGE", True), ("FRAMES", True), ("FRAME_SIZE", True)]
    else:
        assert [(i.name, i.optional) for i in top.input] == [
            ("VIDEO", False), ("INSTRUCTION", False), ("TOP_K", True), ("RANKING_RULE", True), ("MIN_SCORE", True),
            ("COVERAGE", True)]
    outputs = [o.name for o in top.output]
    assert outputs == ["SCORES", "LOGITS", "FRAME_INDICES", "TIMESTAMPS", "RANKING", "TOP_K_FRAMES", "CACHE_HIT",
                       "MOMENTS", "APPLIED_RANKING_RULE", "DURATION"] + (
                           ["FRAME_JPEGS", "FRAME_PIXELS"] if mode == "bls" else [])
    assert not set(outputs) & {i.name for i in top.input}  # an ensemble would answer an input for such an output
    # The python decode step streams its frames under the BLS model (decoupled); an ensemble step answers once.
    decode = configs["videoitg_decode/config.pbtxt"]
    streams = mode == "bls"  # every served decoder (pyav on cpu, dali on gpu) streams under the BLS model
    assert decode.model_transaction_policy.decoupled == streams
    assert ("NUM_FRAMES" in {o.name for o in decode.output}) == streams
    if mode == "bls":
        assert top.parameters["stream_frames"].string_value == "64"
    if mode == "ensemble":
        assert top.platform == "ensemble"
        steps = top.ensemble_scheduling.step
        assert [s.model_name for s in steps] == ["videoitg_decode", "videoitg_vision", "videoitg_grounding",
                                                "videoitg_select"]
        # Every ensemble output is produced by the last step, every step input is an ensemble input or an
        # earlier step's output, and each batch-capable step takes the ensemble's batch.
        assert set(steps[-1].output_map.values()) == set(outputs)
        produced = {i.name for i in top.input}
        for step in steps:
            assert set(step.input_map.values()) <= produced, step.model_name
            produced |= set(step.output_map.values())
        for rel, cfg in configs.items():
            assert cfg.max_batch_size >= top.max_batch_size, rel


def test_dali_decoder_is_the_same_python_backend_decode_step_with_a_decoder_parameter() -> None:
    """`--decoder dali` writes the python decode model (its shim, no model.dali, no Triton DALI backend) with the
    parameter naming DALI, uint8 frames to the vision step, streamed in chunks (decoupled) as the pyav decoder's are;
    on the gpu target on a GPU instance (Triton names its GPU), on the cpu target on a CPU one."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2  # the serve extra: the other tests here run without it

    def parse(files: dict[str, str], model: str) -> model_config_pb2.ModelConfig:
        return text_format.Parse(files[f"{model}/config.pbtxt"], model_config_pb2.ModelConfig())

    to_type = model_config_pb2.DataType.Name
    kind = model_config_pb2.ModelInstanceGroup.Kind.Name
    for target, want_kind, want_device in (("gpu", "KIND_GPU", "cuda"), ("cpu", "KIND_CPU", "cpu")):
        dali, py = render(RepoSpec(target=target, decoder="dali")), render(RepoSpec(target=target, decoder="pyav"))
        assert render(RepoSpec(target=target)) == (dali if target == "gpu" else py)  # each target's default
        assert not any(rel.endswith("model.dali") for rel in dali), target
        dec = parse(dali, "videoitg_decode")
        assert dec.backend == "python" and "videoitg_decode/1/model.py" in dali
        assert dec.parameters["decoder"].string_value == "dali"
        assert dec.parameters["device"].string_value == want_device
        assert kind(dec.instance_group[0].kind) == want_kind
        assert dec.model_transaction_policy.decoupled  # chunks as they decode, the vision step on each
        assert [o.name for o in dec.output] == ["PIXEL_VALUES", "FRAME_INDICES", "TIMESTAMPS", "DURATION", "NUM_FRAMES"]
        assert to_type(dec.output[0].data_type) == "TYPE_UINT8"
        assert to_type(parse(dali, "videoitg_vision").input[0].data_type) == "TYPE_UINT8"
        assert parse(dali, "videoitg").parameters["decoder"].string_value == "dali"
        assert parse(dali, "videoitg").parameters["stream_frames"].string_value == "64"
        pyd = parse(py, "videoitg_decode")
        assert pyd.parameters["decoder"].string_value == "pyav" and kind(pyd.instance_group[0].kind) == "KIND_CPU"
        assert to_type(pyd.output[0].data_type) == "TYPE_UINT8"
        assert to_type(parse(py, "videoitg_vision").input[0].data_type) == "TYPE_UINT8"
    ens = parse(render(RepoSpec(mode="ensemble", decoder="dali")), "videoitg_decode")
    assert ens.parameters["decoder"].string_value == "dali" and to_type(ens.output[0].data_type) == "TYPE_UINT8"
    with pytest.raises(InputError, match="decoder must be one of pyav, dali"):
        RepoSpec(decoder="nvdec")


def test_repo_build_writes_the_dali_repository_without_cuda(tmp_path: Path) -> None:
    """Nothing is serialised: the dali repository is written anywhere (its decode step checks DALI when it loads),
    every model with its version folder and shim."""
    out = build_repository(RepoSpec(target="gpu", decoder="dali"), tmp_path / "dali")
    for model in ("videoitg", "videoitg_decode", "videoitg_vision", "videoitg_grounding"):
        assert (out / model / "1" / "model.py").is_file(), model
    assert sorted(p.name for p in (out / "videoitg_decode" / "1").iterdir()) == ["model.py"]


def test_ensemble_is_refused_for_the_gpu_target() -> None:
    with pytest.raises(InputError, match="cpu target only"):
        RepoSpec(target="gpu", mode="ensemble")
    with pytest.raises(InputError, match="mode must be one of"):
        RepoSpec(mode="pipeline")
    with pytest.raises(InputError, match="max_batch must be an int >= 1"):
        RepoSpec(max_batch=0)
    with pytest.raises(InputError, match="stream_frames must be an int >= 0"):
        RepoSpec(stream_frames=-1)


def test_stream_frames_zero_answers_once() -> None:
    """`--stream-frames 0`: the decode step answers once with every frame (not decoupled), and the BLS model
    calls it so."""
    files = render(RepoSpec(stream_frames=0))
    assert "model_transaction_policy" not in files["videoitg_decode/config.pbtxt"]
    assert 'key: "stream_frames"\n  value { string_value: "0" }' in files["videoitg/config.pbtxt"]


def test_repository_follows_checkpoint_and_sampling(tmp_path: Path) -> None:
    ckpt = shutil.copytree(default_checkpoint(), tmp_path / "ckpt")
    files = render(RepoSpec(checkpoint=str(ckpt), sampling=SamplingParams(64, 2.0, "train")))
    top = files["videoitg/config.pbtxt"]
    assert json.dumps(str(ckpt)) in top and '"64"' in top and '"2"' in top and '"train"' in top
    assert json.dumps(str(ckpt)) in files["videoitg_grounding/config.pbtxt"]
    # a checkpoint only the serving host has (`repo build --no-bundle`): named as given, its dimensions left open
    elsewhere = render(RepoSpec(checkpoint=str(tmp_path / "elsewhere")))
    assert json.dumps(str(tmp_path / "elsewhere")) in elsewhere["videoitg_grounding/config.pbtxt"]
    assert "dims: [ -1, 3, -1, -1 ]" in elsewhere["videoitg_vision/config.pbtxt"]
    assert "dims: [ -1, 3, 56, 56 ]" in files["videoitg_vision/config.pbtxt"]


def test_the_repository_pins_the_checkpoint_it_is_written_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model that loads or caches by the checkpoint (the top-level model, vision, grounding) carries its
    identity as the repository was written; one written where the checkpoint is not pins nothing; a bundled copy
    pins the copy's (the same bytes)."""
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))
    ckpt = shutil.copytree(default_checkpoint(), tmp_path / "ckpt")
    identity = checkpoint_identity(ckpt)

    def pins(files: dict[str, str] | Path) -> dict[str, str]:
        kinds = {"videoitg": TopParameters, "videoitg_vision": VisionParameters,
                 "videoitg_grounding": GroundingParameters}
        config = (lambda m: (files / m / "config.pbtxt").read_text()) if isinstance(files, Path) else \
            (lambda m: files[f"{m}/config.pbtxt"])
        return {m: k.from_parameters(_string_parameters(config(m))).checkpoint_identity for m, k in kinds.items()}

    files = render(RepoSpec(checkpoint=str(ckpt)))
    assert pins(files) == dict.fromkeys(pins(files), identity)
    assert "checkpoint_identity" not in files["videoitg_decode/config.pbtxt"]  # it reads the config alone
    assert set(pins(render(RepoSpec(checkpoint=str(tmp_path / "elsewhere")))).values()) == {""}
    repo = build_repository(RepoSpec(checkpoint=str(ckpt)), tmp_path / "repo", bundle=True)
    assert pins(repo) == pins(files)
    golden = pins(ROOT / "triton_models" / "cpu")  # the embedded checkpoint's: its bytes, the same on every machine
    assert set(golden.values()) == {checkpoint_identity(default_checkpoint())}


def _string_parameters(config: str) -> dict[str, str]:
    """A config.pbtxt's string parameters, as a model reads them."""
    import re

    return dict(re.findall(r'parameters \{\n  key: "([^"]+)"\n  value \{ string_value: "([^"]*)" \}', config))


def test_bundled_repository_holds_its_files_and_names_them_relatively(tmp_path: Path) -> None:
    """`videoitg repo build` copies the checkpoint, an external tower and the engines into the repository and
    names them relative to its root, so the copied tree resolves them wherever it lands."""
    (tmp_path / "src").mkdir()
    ckpt = plain_writer_checkpoint(tmp_path / "src", VideoITG(tiny_config(vocab_size=300)), external_tower=True)
    engines = tmp_path / "src" / "engines"
    engines.mkdir()
    (engines / "build.json").write_text(json.dumps({"runtimes": {}}))
    repo = build_repository(RepoSpec(checkpoint=str(ckpt), engines=str(engines)), tmp_path / "repo", bundle=True)
    texts = "".join(p.read_text() for p in repo.rglob("config.pbtxt"))
    assert str(tmp_path) not in texts  # no host path left in any config
    moved = tmp_path / "elsewhere"
    repo.rename(moved)
    shutil.rmtree(tmp_path / "src")  # the originals are gone: only the repository's copies remain
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2  # the serve extra: the other tests here run without it

    kinds = {"videoitg": TopParameters, "videoitg_decode": DecodeParameters, "videoitg_vision": VisionParameters,
             "videoitg_grounding": GroundingParameters}
    for name, kind in kinds.items():
        cfg = text_format.Parse((moved / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        p = kind.from_parameters(model_parameters(json_format.MessageToDict(cfg, preserving_proto_field_name=True)))
        assets = StepAssets.resolve(moved, p.checkpoint, p.vision_tower, getattr(p, "engines", ""))
        assert assets.checkpoint == moved / "videoitg" / "checkpoint"
        assert assets.config().vision.image_size > 0  # the tower is found in the repository
    model, tok = assets.load_served("grounding", "cpu", torch.float32)[:2]
    assert tok is not None and assets.engines == moved / "videoitg" / "engines"


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


def test_limits_reach_the_model_parameters() -> None:
    """The top-level, decode and grounding models carry every knob (read back equal); the top level has no Triton
    queue bound (its own admission bounds it)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2  # the serve extra: the other tests here run without it

    lim = Limits().replace(max_bytes=12345, max_instruction_tokens=77, max_in_flight=3, decode_time_budget_s=2.5)
    files = render(RepoSpec(target="cpu", limits=lim))
    for model in ("videoitg", "videoitg_decode", "videoitg_grounding"):
        cfg = text_format.Parse(files[f"{model}/config.pbtxt"], model_config_pb2.ModelConfig())
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        assert Limits.from_mapping(params) == lim, model
    top = text_format.Parse(files["videoitg/config.pbtxt"], model_config_pb2.ModelConfig())
    assert not top.HasField("dynamic_batching")  # its admission is its own
    assert Limits.from_mapping(model_parameters({"parameters": {}})) == Limits()  # hand-written config: defaults
    with pytest.raises(InputError, match="sampled frames"):
        RepoSpec(sampling=SamplingParams(64), limits=Limits(max_sampled_frames=32))


def test_repo_build_and_serve_take_limit_flags(tmp_path: Path) -> None:
    assert main(["repo", "build", "--out", str(tmp_path), "--max-video-bytes", "1M", "--max-in-flight", "2"]) == 0
    top = (tmp_path / "videoitg" / "config.pbtxt").read_text()
    assert 'key: "MAX_IN_FLIGHT"\n  value { string_value: "2" }' in top and '"1048576"' in top
    serve = subprocess.run([sys.executable, "-m", "videoitg", "serve", "--help"], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
    assert "--max-instruction-tokens" in serve.stdout and "--max-in-flight" in serve.stdout


def test_repo_build_flags_reach_the_repository(tmp_path: Path) -> None:
    """--mode, the serving defaults and the bundling, from the command line."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(default_checkpoint(), ckpt)
    out = tmp_path / "repo"
    assert main(["repo", "build", "--mode", "ensemble", "--checkpoint", str(ckpt), "--ranking-rule", "exact",
                 "--top-k", "5", "--max-batch", "4", "--out", str(out)]) == 0
    select = (out / "videoitg_select" / "config.pbtxt").read_text()
    assert '"exact"' in select and 'key: "default_top_k"\n  value { string_value: "5" }' in select
    assert 'platform: "ensemble"' in (out / "videoitg" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in (out / "videoitg_grounding" / "config.pbtxt").read_text()
    assert (out / "videoitg" / "checkpoint" / "model.safetensors").is_file()  # bundled
    assert str(tmp_path) not in "".join(p.read_text() for p in out.rglob("config.pbtxt"))
    assert main(["repo", "build", "--checkpoint", str(ckpt), "--no-bundle", "--dtype", "bfloat16",
                 "--out", str(tmp_path / "ref")]) == 0
    vision = (tmp_path / "ref" / "videoitg_vision" / "config.pbtxt").read_text()
    assert json.dumps(str(ckpt.resolve())) in vision and "TYPE_BF16" in vision
    assert not (tmp_path / "ref" / "videoitg" / "checkpoint").exists()


def test_precision_fp8_is_served_in_bfloat16_by_the_torch_runtimes(tmp_path: Path) -> None:
    """--precision fp8 reaches the steps' parameters with the bfloat16 it runs the rest in; engines (their own
    precision) and another dtype are refused by name."""
    spec = RepoSpec(target="gpu", precision="fp8")
    assert spec.dtype == "bfloat16"
    files = render(spec)
    for model in ("videoitg", "videoitg_vision", "videoitg_grounding"):
        assert 'key: "precision"\n  value { string_value: "fp8" }' in files[f"{model}/config.pbtxt"]
    assert "TYPE_BF16" in files["videoitg_vision/config.pbtxt"]
    with pytest.raises(InputError, match="bfloat16, not float16"):
        RepoSpec(target="gpu", precision="fp8", dtype="float16")
    with pytest.raises(InputError, match="serve without --engines"):
        RepoSpec(target="gpu", precision="fp8", engines=str(tmp_path))
    with pytest.raises(InputError, match="precision must be one of default, fp8"):
        RepoSpec(precision="int8")
    assert main(["repo", "build", "--precision", "fp8", "--no-bundle", "--out", str(tmp_path / "repo")]) == 0
    assert '"fp8"' in (tmp_path / "repo" / "videoitg_grounding" / "config.pbtxt").read_text()


def test_outputs_round_trip_to_grounding_result() -> None:
    r = GroundingResult([0.5, -1.0, 2.0, 0.5], [0, 30, 60, 90], [0.0, 1.0, 2.0, 3.0], "q", "v.mp4")
    out = result_outputs(r, RequestOptions(top_k=2))
    # Every per-frame output chronological; the ranking its own output (score-descending, ties by time).
    assert out["FRAME_INDICES"].tolist() == [0, 30, 60, 90] and out["TIMESTAMPS"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert out["LOGITS"].tolist() == [0.5, -1.0, 2.0, 0.5]
    assert out["RANKING"].tolist() == [2, 0, 3, 1]
    assert out["TOP_K_FRAMES"].tolist() == [0, 60]  # chronological
    assert out["CACHE_HIT"].tolist() == [False] and out["APPLIED_RANKING_RULE"].tolist() == [b"released"]
    back = result_from_outputs(out, "q", "v.mp4")
    assert back.to_record(1, picked=back.top_k_positions(2)) == r.to_record(1, picked=r.top_k_positions(2))


def test_server_env_puts_only_a_private_libpython_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stub needs this interpreter's libpython; a system interpreter's is on the default path already, and
    putting /usr/lib/<arch> first would shadow a container's CUDA forward-compatibility libcuda."""
    install = binaries.find_tritonserver()
    for libdir, expect in (("/usr/lib/x86_64-linux-gnu", False), ("/opt/python3.11/lib", True)):
        monkeypatch.setattr(binaries.sysconfig, "get_config_var", lambda name, d=libdir: d)
        env = binaries.server_env(install, {"LD_LIBRARY_PATH": "/usr/local/cuda/compat", "PATH": "/usr/bin"})
        assert (libdir in env["LD_LIBRARY_PATH"].split(":")) is expect, env["LD_LIBRARY_PATH"]
        assert "/usr/local/cuda/compat" in env["LD_LIBRARY_PATH"].split(":")


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


def test_perf_analyzer_library_links_belong_to_their_environment(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each environment's `nvidia_pytriton.libs` gets its own directory of soname links, so removing one environment
    leaves another's links whole; a link pointing elsewhere (a removed environment's) is replaced."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = {}
    for env in ("a", "b"):
        libs = tmp_path / env / "nvidia_pytriton.libs"
        libs.mkdir(parents=True)
        for name in ("libb64-98cb6333.so.0d", "libcudart-09529672.so.12.6.77", "libssl-0f1e2d3c.so.3"):
            (libs / name).write_bytes(b"")
        monkeypatch.setattr(binaries, "pytriton_libs_dir", lambda libs=libs: libs)
        d = binaries.tool_lib_dir()
        assert d is not None and sorted(p.name for p in d.iterdir()) == ["libb64.so.0d", "libcudart.so.12"]
        assert (d / "libcudart.so.12").resolve() == libs / "libcudart-09529672.so.12.6.77"
        made[env] = d
    assert made["a"] != made["b"]
    shutil.rmtree(tmp_path / "a")
    link = made["b"] / "libb64.so.0d"
    link.unlink()
    link.symlink_to(tmp_path / "a" / "nvidia_pytriton.libs" / "libb64-98cb6333.so.0d")  # dangling
    assert binaries.tool_lib_dir() == made["b"]
    assert link.resolve() == tmp_path / "b" / "nvidia_pytriton.libs" / "libb64-98cb6333.so.0d"


def test_step_instance_counts_are_flags(tmp_path: Path) -> None:
    """--decode-instances, --vision-instances, --grounding-instances reach each step's instance_group, on both
    targets (the gpu target's DALI decode model too); `serve` takes the same flags."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2  # the serve extra: the other tests here run without it

    def groups(files: dict[str, str]) -> dict[str, tuple[str, int]]:
        out = {}
        for model in ("videoitg_decode", "videoitg_vision", "videoitg_grounding"):
            cfg = text_format.Parse(files[f"{model}/config.pbtxt"], model_config_pb2.ModelConfig())
            (g,) = cfg.instance_group
            out[model] = (model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind), g.count)
        return out

    assert main(["repo", "build", "--out", str(tmp_path), "--decode-instances", "2", "--vision-instances", "3",
                 "--grounding-instances", "4"]) == 0
    files = {str(p.relative_to(tmp_path)): p.read_text() for p in tmp_path.rglob("config.pbtxt")}
    assert groups(files) == {"videoitg_decode": ("KIND_CPU", 2), "videoitg_vision": ("KIND_CPU", 3),
                             "videoitg_grounding": ("KIND_CPU", 4)}
    assert groups(render(RepoSpec())) == {m: ("KIND_CPU", 1) for m in
                                          ("videoitg_decode", "videoitg_vision", "videoitg_grounding")}
    gpu = render(RepoSpec(target="gpu", decoder="pyav", decode_instances=2, vision_instances=1,
                          grounding_instances=2))
    assert groups(gpu) == {"videoitg_decode": ("KIND_CPU", 2), "videoitg_vision": ("KIND_GPU", 1),
                           "videoitg_grounding": ("KIND_GPU", 2)}  # the pyav decoder decodes on the CPU
    dali = render(RepoSpec(target="gpu", decoder="dali", decode_instances=2))
    assert groups(dali)["videoitg_decode"] == ("KIND_GPU", 2)
    with pytest.raises(InputError, match="grounding_instances must be an int >= 1"):
        RepoSpec(grounding_instances=0)
    serve = subprocess.run([sys.executable, "-m", "videoitg", "serve", "--help"], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
    assert all(f in serve.stdout for f in ("--decode-instances", "--vision-instances", "--grounding-instances"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("by_repository", [False, True], ids=["target", "model-repository"])
def test_serving_a_gpu_repository_without_a_gpu_says_so_in_one_line(by_repository: bool, capsys: pytest.CaptureFixture,
                                                                     tmp_path: Path) -> None:
    how = ["--target", "gpu"]
    if by_repository:
        how = ["--model-repository", str(build_repository(RepoSpec(target="gpu"), tmp_path / "gpu"))]
    ports = ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    rc = main(["serve", *how, *ports])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no CUDA GPU" in err, err


@pytest.mark.parametrize("kw", [{"target": "cpu"}, {"target": "cpu", "mode": "ensemble"}, {"target": "gpu"},
                                {"target": "cpu", "stream_frames": 0}])
def test_the_bls_models_take_requests_at_once_and_the_ensembles_decode_queue_is_bounded(kw) -> None:
    """Under the BLS model the top level and the decode step have no dynamic batcher (tritonserver 2.51's bounded
    queue held a request that came while the instance was busy up to 0.5 s): the top level admits requests itself
    and sends the step at most max_in_flight videos. Under the ensemble, which admits nothing itself, the decode
    step's queue holds at most max_in_flight, one video per execution."""
    specs = model_specs(RepoSpec(**kw, limits=Limits().replace(max_in_flight=3)))
    if kw.get("mode") == "ensemble":
        assert specs[DECODE]["dynamic_batching"]["default_queue_policy"] == {"max_queue_size": 3}
        assert specs[DECODE]["dynamic_batching"]["preferred_batch_size"] == [1]
    else:
        assert "dynamic_batching" not in specs[TOP] and "dynamic_batching" not in specs[DECODE]


def test_media_roots_are_announced_and_refused_where_references_cannot_be_served(tmp_path: Path) -> None:
    specs = render(RepoSpec(target="cpu", media_roots=(str(tmp_path),)))
    for model in ("videoitg", "videoitg_decode"):  # the decode step checks a reference itself
        assert f'key: "media_roots"\n  value {{ string_value: {json.dumps(json.dumps([str(tmp_path)]))} }}' in \
            specs[f"{model}/config.pbtxt"]
    assert MediaRoots.from_parameter(json.dumps([str(tmp_path)])).roots == (str(tmp_path),)
    assert 'key: "media_roots"\n  value { string_value: "" }' in render(RepoSpec())["videoitg/config.pbtxt"]
    for bad in ({"mode": "ensemble"}, {"media_roots": str(tmp_path)}, {"media_roots": ("relative",)}):
        with pytest.raises(InputError):
            RepoSpec(**{"media_roots": (str(tmp_path),), **bad})


@pytest.mark.parametrize("decoder", ["pyav", "dali", "pynvvideocodec"])
def test_every_served_decoder_is_placed_where_it_decodes(decoder: str) -> None:
    """On the gpu target an NVDEC decoder's step is a GPU instance on its device, PyAV's a CPU one; a decoder with no
    CPU decoder is refused for the cpu target when the repository is made, not when it loads."""
    from videoitg.decoders import DECODERS

    gpu = _decode_params(render(RepoSpec(target="gpu", decoder=decoder)))
    assert gpu["device"] == ("cpu" if DECODERS[decoder].placement == "cpu" else "cuda")
    if DECODERS[decoder].placement == "gpu only":
        with pytest.raises(InputError, match="NVDEC only: use it with --target gpu"):
            RepoSpec(target="cpu", decoder=decoder)
    else:
        assert _decode_params(render(RepoSpec(target="cpu", decoder=decoder)))["device"] == "cpu"


def _decode_params(files: dict[str, str]) -> dict[str, str]:
    text = files["videoitg_decode/config.pbtxt"]
    return dict(re.findall(r'key: "(\w+)"\s*value \{\s*string_value: "([^"]*)"', text))
