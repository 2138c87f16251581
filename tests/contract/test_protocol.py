"""The wire contract (`videoitg.contract.protocol`): the generator, the client and the repository summary follow it,
and the gpu and ensemble repositories differ from the golden cpu one exactly as intended."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tests.support import ROOT
from videoitg.client.kserve import VideoITGClient
from videoitg.commands.cli import main
from videoitg.contract import protocol
from videoitg.contract.protocol import (
    DECODE,
    GROUNDING,
    OTHER_INPUTS_BYTES,
    SELECT,
    SUMMARY_FILE,
    TOP,
    VISION,
    RepositoryError,
    RepoSummary,
    TensorSpec,
    signatures,
)
from videoitg.repository.generator import RepoSpec, build_repository, model_dims, render, repo_signatures
from videoitg.request.limits import Limits
from videoitg.request.options import RequestOptions

SHAPES = [{"target": "cpu"}, {"target": "gpu"}, {"target": "cpu", "mode": "ensemble"},
          {"target": "gpu", "decoder": "dali"}, {"target": "cpu", "stream_frames": 0}]


def _config(files: dict[str, str], model: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(files[f"{model}/config.pbtxt"], model_config_pb2.ModelConfig())


def _declared(tensors: Any) -> list[tuple[str, str, tuple[int, ...], bool, bool]]:
    """(name, dtype, dims, optional, ragged) of config inputs or outputs (an output has neither flag)."""
    return [(t.name, model_config_pb2.DataType.Name(t.data_type).removeprefix("TYPE_"), tuple(t.dims),
             getattr(t, "optional", False), getattr(t, "allow_ragged_batch", False)) for t in tensors]


def _specs(tensors: tuple[TensorSpec, ...]) -> list[tuple[str, str, tuple[int, ...], bool, bool]]:
    return [(t.name, t.dtype, t.dims, t.optional, t.ragged) for t in tensors]


@pytest.mark.parametrize("kw", SHAPES)
def test_every_generated_model_declares_the_protocol_signature(kw: dict[str, Any]) -> None:
    spec = RepoSpec(**kw)
    files = render(spec)
    sig = repo_signatures(spec, model_dims(spec))
    models = {k.split("/")[0] for k in files if k.endswith("config.pbtxt")}
    assert models == set(sig)
    summary = RepoSummary.from_json(files[SUMMARY_FILE])
    for model in models:
        cfg = _config(files, model)
        assert _declared(cfg.input) == _specs(sig[model].inputs), model
        assert _declared(cfg.output) == _specs(sig[model].outputs), model
        # what the front bounds a request's tensor counts by
        assert summary.signature_bound([model]) == (len(sig[model].inputs), len(sig[model].outputs))


@pytest.mark.parametrize("kw", SHAPES)
def test_every_dimension_the_checkpoint_fixes_is_declared(kw: dict[str, Any], scorer) -> None:
    """Pixels are [T, 3, S, S] at the tower's image size, features [T, tokens per frame, H] at the language model's
    width: tritonserver refuses another shape itself. What stays open is what varies per video: the frame count,
    the tokens per frame (they follow it), the per-frame outputs, a frame image's size."""
    files = render(RepoSpec(**kw))
    s, h = scorer.config.vision.image_size, scorer.config.text.hidden_size
    assert model_dims(RepoSpec(**kw)) == protocol.ModelDims(s, h)
    seen = set()
    for model in {k.split("/")[0] for k in files if k.endswith("config.pbtxt")}:
        for t in [*_config(files, model).input, *_config(files, model).output]:
            want = {"PIXEL_VALUES": [-1, 3, s, s], "FEATURES": [-1, -1, h]}.get(t.name)
            if want is not None:
                assert list(t.dims) == want, (model, t.name)
                seen.add(t.name)
            elif -1 in t.dims:
                assert t.name in {"SCORES", "LOGITS", "FRAME_INDICES", "TIMESTAMPS", "RANKING", "TOP_K_FRAMES",
                                  "MOMENTS", "FRAME_JPEGS", "FRAME_PIXELS"}, (model, t.name, list(t.dims))
    assert seen == {"PIXEL_VALUES", "FEATURES"}


def test_the_client_sends_the_protocol_inputs() -> None:
    """Every input the client can send is one the bls top-level model declares, with its data type; together the
    client's requests cover all of them."""
    client = VideoITGClient("127.0.0.1:1", protocol="http")  # nothing is sent: only the tensors are built
    top = signatures("bls")[TOP]
    every = RequestOptions(top_k=3, ranking_rule="exact", min_score=0.5, coverage=0.9, frames="jpeg", frame_size=0)
    sent = [client.inputs(b"v", "q", every),
            client.inputs(None, "q", uri="/m/v.mp4"), client.inputs(None, "q", digest="b3:00")]
    seen = set()
    for tensors in sent:
        for t in tensors:
            assert t.datatype() == top.input(t.name()).datatype, t.name()
            assert t.shape() == [1, 1]
            seen.add(t.name())
    assert seen == {t.name for t in top.inputs}
    ensemble = {t.name for t in signatures("ensemble")[TOP].inputs}
    assert {t.name() for t in sent[0]} - {"FRAMES", "FRAME_SIZE"} <= ensemble


def test_an_input_added_to_the_protocol_reaches_the_generator_and_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    modes = ("bls", "ensemble")
    before = {m: RepoSummary.from_json(render(RepoSpec(mode=m))[SUMMARY_FILE]).signature_bound([TOP]) for m in modes}
    extra = TensorSpec("TEMPERATURE", "FP32", (1,), optional=True)
    monkeypatch.setattr(protocol, "SELECTION_INPUTS", (*protocol.SELECTION_INPUTS, extra))
    for mode in modes:
        files = render(RepoSpec(mode=mode))
        assert "TEMPERATURE" in [t.name for t in _config(files, TOP).input]
        n_in, n_out = before[mode]
        assert RepoSummary.from_json(files[SUMMARY_FILE]).signature_bound([TOP]) == (n_in + 1, n_out)
    assert "TEMPERATURE" in [t.name for t in _config(render(RepoSpec(mode="ensemble")), SELECT).input]


def test_tensor_specs_give_the_wire_and_numpy_types() -> None:
    top = signatures("bls")[TOP]
    assert top.input("VIDEO").datatype == "BYTES" and np.dtype(top.input("VIDEO").numpy) == np.object_
    assert top.input("TOP_K").datatype == "INT32" and np.dtype(top.input("TOP_K").numpy) == np.int32
    assert np.dtype(top.output("MOMENTS").numpy) == np.float32 and top.output("MOMENTS").dims == (-1, 3)
    with pytest.raises(KeyError, match="NOPE"):
        top.input("NOPE")
    assert not {t.name for t in top.outputs} & {t.name for t in top.inputs}  # an ensemble would answer an input


# ---- the summary ----------------------------------------------------------------------------------------------
def test_the_summary_gives_the_bounds_and_the_placement(tmp_path: Path) -> None:
    assert main(["repo", "build", "--out", str(tmp_path / "cpu"), "--max-batch", "3", "--max-video-bytes", "1000"]) == 0
    s = RepoSummary.read(tmp_path / "cpu")
    assert (s.target, s.mode, s.decoder, s.public) == ("cpu", "bls", "pyav", TOP)
    assert set(s.models) == {TOP, DECODE, VISION, GROUNDING}
    assert s.request_bytes_bound(TOP) == 3 * 1000 + OTHER_INPUTS_BYTES
    assert s.signature_bound([TOP, DECODE]) == (10, 12)
    assert not s.gpu and s.models[VISION].kind == "KIND_CPU"
    with pytest.raises(RepositoryError, match="'nope' is not in this repository"):
        s.request_bytes_bound("nope")
    gpu = RepoSummary.read(build_repository(RepoSpec(target="gpu", decoder="pyav"), tmp_path / "gpu"))
    assert gpu.gpu and gpu.models[DECODE].kind == "KIND_CPU" and gpu.models[GROUNDING].kind == "KIND_GPU"
    ensemble = RepoSummary.read(build_repository(RepoSpec(mode="ensemble"), tmp_path / "ens"))
    assert ensemble.models[TOP].kind is None and SELECT in ensemble.models
    assert RepoSummary.from_json(s.to_json()) == s


def test_a_repository_without_its_summary_names_repo_build(tmp_path: Path) -> None:
    repo = build_repository(RepoSpec(), tmp_path / "old")
    (repo / SUMMARY_FILE).unlink()
    for read in (RepoSummary.read, RepoSummary.find):
        with pytest.raises(RepositoryError, match=r"older videoitg.*`videoitg repo build --out"):
            read(repo)
    (repo / SUMMARY_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(RepositoryError, match="format 99.*videoitg repo build"):
        RepoSummary.read(repo)
    (repo / SUMMARY_FILE).write_text("{not json")
    with pytest.raises(RepositoryError, match="not a videoitg repository summary"):
        RepoSummary.read(repo)
    own = tmp_path / "own"  # an operator's repository, which videoitg did not write
    (own / "echo").mkdir(parents=True)
    (own / "echo" / "config.pbtxt").write_text('name: "echo"\nbackend: "python"\n')
    assert RepoSummary.find(own) is None
    with pytest.raises(RepositoryError, match="no videoitg-repo.json; generate"):
        RepoSummary.read(own)


# ---- one golden repository: how the others differ from it ------------------------------------------------------
def _flat(tree: Any, path: str = "") -> dict[str, Any]:
    """path -> leaf; list items of messages with a name are keyed by it, an empty message is a leaf."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{path}.{k}" if path else k))
        return out
    if isinstance(tree, list) and tree and all(isinstance(x, dict) for x in tree):
        out = {}
        for i, x in enumerate(tree):
            out.update(_flat(x, f"{path}[{x.get('name', i)}]"))
        return out
    return {path: tree}


def _leaves(files: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rel, text in files.items():
        if rel.endswith("config.pbtxt"):
            cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
            out.update(_flat(json_format.MessageToDict(cfg), rel.split("/")[0]))
        elif rel == SUMMARY_FILE:
            out.update(_flat(json.loads(text), "summary"))
        else:
            out[rel] = text
    return out


def _delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


CPU = render(RepoSpec(target="cpu"))


def test_the_gpu_repository_differs_from_the_golden_one_in_placement_and_precision_only() -> None:
    gpu = render(RepoSpec(target="gpu", decoder="pyav"))
    assert set(gpu) == set(CPU)
    want: dict[str, tuple[Any, Any]] = {"summary.target": ("cpu", "gpu")}
    for model in (TOP, DECODE, VISION, GROUNDING):  # tensors pass between steps on the GPU (DLPack)
        want[f"{model}.parameters.FORCE_CPU_ONLY_INPUT_TENSORS.stringValue"] = (None, "no")
    for model in (TOP, VISION, GROUNDING):  # the pyav decoder decodes on the CPU
        want[f"{model}.parameters.device.stringValue"] = ("cpu", "cuda")
        want[f"{model}.parameters.dtype.stringValue"] = ("float32", "float16")
    for model in (VISION, GROUNDING):
        want[f"{model}.instanceGroup[0].kind"] = ("KIND_CPU", "KIND_GPU")
        want[f"summary.models.{model}.kind"] = ("KIND_CPU", "KIND_GPU")
    want[f"{VISION}.output[FEATURES].dataType"] = ("TYPE_FP32", "TYPE_FP16")
    want[f"{GROUNDING}.input[FEATURES].dataType"] = ("TYPE_FP32", "TYPE_FP16")
    assert _delta(_leaves(CPU), _leaves(gpu)) == want


def test_the_gpu_default_decodes_on_nvdec_and_differs_from_the_pyav_decoder_in_the_decode_step_only() -> None:
    pyav, default = render(RepoSpec(target="gpu", decoder="pyav")), render(RepoSpec(target="gpu"))
    assert set(pyav) == set(default)
    want: dict[str, tuple[Any, Any]] = {
        "summary.decoder": ("pyav", "dali"), f"{TOP}.parameters.decoder.stringValue": ("pyav", "dali"),
        f"{DECODE}.parameters.decoder.stringValue": ("pyav", "dali"),
        # on the instance's GPU; both stream uint8 frames to the vision step
        f"{DECODE}.parameters.device.stringValue": ("cpu", "cuda"),
        f"{DECODE}.instanceGroup[0].kind": ("KIND_CPU", "KIND_GPU"),
        f"summary.models.{DECODE}.kind": ("KIND_CPU", "KIND_GPU")}
    assert _delta(_leaves(pyav), _leaves(default)) == want


def test_the_ensemble_repository_differs_from_the_golden_one_in_its_top_level_and_its_decode_step() -> None:
    ens = render(RepoSpec(target="cpu", mode="ensemble"))
    assert set(CPU) - set(ens) == {f"{TOP}/1/model.py"}
    assert set(ens) - set(CPU) == {f"{TOP}/1/.keep", f"{SELECT}/config.pbtxt", f"{SELECT}/1/model.py"}
    delta = _delta(_leaves(CPU), _leaves(ens))
    by_model: dict[str, dict[str, tuple[Any, Any]]] = {}
    for k, v in delta.items():
        by_model.setdefault(k.split(".")[0].split("/")[0], {})[k] = v
    assert set(by_model) == {TOP, DECODE, SELECT, "summary"}  # vision and grounding: identical
    # The decode step answers once (no streaming: stream_frames 0), takes the bytes only and has a bounded queue (the
    # ensemble admits nothing itself; under the BLS model the top level does): else removals only.
    stream = f"{DECODE}.parameters.stream_frames.stringValue"
    assert by_model[DECODE].pop(stream) == ("64", "0")
    assert by_model[DECODE].pop(f"{DECODE}.dynamicBatching.defaultQueuePolicy.maxQueueSize") == (
        None, Limits().max_in_flight)
    assert by_model[DECODE].pop(f"{DECODE}.dynamicBatching.preferredBatchSize") == (None, [1])
    assert all(new is None for _, new in by_model[DECODE].values())
    removed = {k.removeprefix(f"{DECODE}.").split(".")[0] for k in by_model[DECODE]}
    assert removed == {"input[VIDEO]", "input[VIDEO_URI]", "input[VIDEO_VERSION]", "output[NUM_FRAMES]",
                       "modelTransactionPolicy"}
    assert by_model[DECODE][f"{DECODE}.input[VIDEO].optional"] == (True, None)
    # The top level is the ensemble: the cpu one's keys are gone but its name and batch, the ensemble's added.
    top = json_format.MessageToDict(_config(ens, TOP))
    assert set(top) == {"name", "platform", "maxBatchSize", "input", "output", "ensembleScheduling"}
    assert top["platform"] == "ensemble" and top["maxBatchSize"] == _config(CPU, TOP).max_batch_size
    # The selection step carries the top level's limits and selection parameters, nothing else.
    select, cpu_top = _config(ens, SELECT), _config(CPU, TOP)
    assert {k: v.string_value for k, v in select.parameters.items()} == {
        k: cpu_top.parameters[k].string_value for k in select.parameters}
    assert set(select.parameters) >= {"MAX_VIDEO_BYTES", "default_top_k", "ranking_rule", "moment_max"}
    assert (select.max_batch_size, list(select.instance_group)) == (cpu_top.max_batch_size,
                                                                     list(cpu_top.instance_group))
    assert {k for k in by_model["summary"] if not k.startswith(f"summary.models.{SELECT}.")} == {
        "summary.mode", *(f"summary.models.{m}.{f}" for m in (TOP, DECODE) for f in ("inputs", "outputs")),
        f"summary.models.{TOP}.kind", f"summary.models.{TOP}.count"}


# ---- names spelled once ----------------------------------------------------------------------------------------
# The modules that speak the contract name tensors by the constants of `protocol`, and the models and the client read
# parameters by the fields of `parameters`, so a renamed tensor or key fails at import, not at request time. (The
# generator writes the parameters through the same classes: tests/contract/test_parameters.py.)
BACKEND = sorted((ROOT / "python_backend").glob("*.py"))
CLIENT = ROOT / "videoitg" / "client" / "kserve.py"
SPEAKERS = [*BACKEND, CLIENT, *(ROOT / "videoitg" / p for p in ("outputs.py", "repository/generator.py",
                                                                  "contract/tensors.py"))]


def _tensor_names() -> set[str]:
    names = set()
    for mode, decoder, streaming in (("bls", "pyav", True), ("bls", "dali", False), ("ensemble", "pyav", False)):
        for sig in signatures(mode, decoder, streaming=streaming).values():
            names |= {t.name for t in (*sig.inputs, *sig.outputs)}
    return names


def _parameter_keys() -> set[str]:
    from videoitg.contract.parameters import (
        DecodeParameters,
        GroundingParameters,
        SelectParameters,
        TopParameters,
        VisionParameters,
    )

    kinds = (TopParameters, DecodeParameters, VisionParameters, GroundingParameters, SelectParameters)
    return set().union(*(kind().to_parameters() for kind in kinds))


def _string_constants(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_tensor_names_and_parameter_keys_are_spelled_in_one_place() -> None:
    names, keys = _tensor_names(), _parameter_keys()
    assert {"VIDEO", "INSTRUCTION", "PIXEL_VALUES", "FEATURES", "FRAME_PIXELS"} <= names
    assert {"decoder", "media_roots", "MAX_VIDEO_BYTES", "moment_max", "num_frames"} <= keys
    found = [f"{path.relative_to(ROOT)}:{line}: {value!r}" for path in SPEAKERS
             for line, value in _string_constants(path)
             if value in names or (value in keys and path in (*BACKEND, CLIENT))]
    assert not found, "spelled outside protocol.py / parameters.py:\n" + "\n".join(found)
