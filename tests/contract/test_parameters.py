"""The model parameters (`videoitg.contract.parameters`): each model's typed parameters round-trip through their
string form, the generator writes exactly them, and a bad value is refused naming its key."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from videoitg.contract.parameters import (
    DecodeParameters,
    GroundingParameters,
    ModelParameters,
    SelectParameters,
    TopParameters,
    VisionParameters,
)
from videoitg.contract.protocol import DECODE, GROUNDING, SELECT, TOP, VISION
from videoitg.errors import InputError
from videoitg.moments import MomentParams
from videoitg.outputs import SelectionOptions
from videoitg.paths import MediaRoots
from videoitg.repository.generator import RepoSpec, render
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams

KINDS: dict[str, type[ModelParameters]] = {TOP: TopParameters, DECODE: DecodeParameters, VISION: VisionParameters,
                                           GROUNDING: GroundingParameters, SELECT: SelectParameters}
LIMITS = Limits().replace(max_bytes=12345, max_in_flight=3, decode_time_budget_s=2.5)
SELECTION = SelectionOptions(5, "exact", MomentParams(thresholds=(0.4, 0.6), min_gap_s=2.0))
SAMPLING = SamplingParams(64, 2.0, "train")
ROOTS = MediaRoots(("/srv/videos", "/mnt/clips"))

IDENTITY = "0123456789abcdef"
TOP_OTHER = TopParameters("/ckpt", "/tower", "cuda", "float16", "default", LIMITS, IDENTITY, SAMPLING, SELECTION,
                          "onnxruntime", "/engines", 123, "slow_decode", "v", "g", "pyav", 16, ROOTS)
OTHERS: dict[type[ModelParameters], list[ModelParameters]] = {  # together, every field away from its default
    TopParameters: [TOP_OTHER, replace(TOP_OTHER, decoder="dali", stream_frames=0, dtype="bfloat16", precision="fp8")],
    DecodeParameters: [DecodeParameters("/ckpt", "/tower", "dali", "cuda", SAMPLING, LIMITS, ROOTS, 0)],
    VisionParameters: [VisionParameters("/ckpt", "/tower", "cuda", "bfloat16", "fp8", LIMITS, IDENTITY, "tensorrt",
                                        "/engines")],
    GroundingParameters: [GroundingParameters("/ckpt", "/tower", "cuda", "bfloat16", "fp8", LIMITS, IDENTITY, "trtllm",
                                              "/engines")],
    SelectParameters: [SelectParameters(LIMITS, SELECTION)],
}


@pytest.mark.parametrize("kind", list(OTHERS), ids=lambda k: k.__name__)
def test_parameters_round_trip_and_default_when_absent(kind: type[ModelParameters]) -> None:
    default = kind()
    assert all(any(getattr(p, f.name) != getattr(default, f.name) for p in OTHERS[kind]) for f in fields(kind))
    for p in OTHERS[kind]:
        text = p.to_parameters()
        assert all(isinstance(v, str) for v in text.values())
        assert kind.from_parameters(text) == p
        assert kind.from_parameters({k: "" for k in text}) == default  # empty: the default
    assert kind.from_parameters({}) == default  # a hand-written config without them: the defaults


def test_one_key_is_one_concept() -> None:
    """A key means the same in every model that has it: written from the same type, read back the same."""
    types: dict[str, type] = {}
    for kind in KINDS.values():
        for f in fields(kind):
            assert types.setdefault(f.name, type(getattr(kind(), f.name))) is type(getattr(kind(), f.name)), f.name
    keys = [set(kind().to_parameters()) for kind in KINDS.values()]
    assert "decoder" in keys[0] & keys[1] and "decode_backend" not in set().union(*keys)


@pytest.mark.parametrize("values, words", [
    ({"feature_cache_bytes": "lots"}, "feature_cache_bytes must be an integer"),
    ({"stream_frames": "-1"}, "stream_frames must be an int >= 0"),
    ({"decoder": "nvdec"}, "decoder must be one of pyav, dali"),
    ({"device": "tpu"}, "device must be 'cpu' or 'cuda'"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"precision": "int4"}, "precision must be one of default, fp8"),
    ({"precision": "fp8", "dtype": "float16"}, "fp8 runs the rest of the model in bfloat16"),
    ({"media_roots": "[not json"}, "media_roots parameter must be a JSON list"),
    ({"num_frames": "many"}, "bad sampling parameter"),
    ({"sampling_rule": "best"}, "sampling rule must be"),
    ({"MAX_IN_FLIGHT": "0"}, "invalid limit"),
    ({"default_top_k": "0"}, "default_top_k"),
    ({"checkpoint_identity": "0123456789ABCDEF"}, "checkpoint_identity must be 16 lowercase hex characters"),
    ({"checkpoint_identity": "0123456789abcdef0"}, "checkpoint_identity must be 16 lowercase hex characters"),
])
def test_a_bad_parameter_is_refused_naming_it(values: dict[str, str], words: str) -> None:
    with pytest.raises(InputError, match=words):
        TopParameters.from_parameters(values)


def _parameters(files: dict[str, str], model: str) -> dict[str, str]:
    cfg = text_format.Parse(files[f"{model}/config.pbtxt"], model_config_pb2.ModelConfig())
    return {k: v.string_value for k, v in cfg.parameters.items()}


@pytest.mark.parametrize("kw", [{"target": "cpu"}, {"target": "gpu"}, {"target": "cpu", "mode": "ensemble"},
                                {"target": "gpu", "decoder": "pyav", "stream_frames": 0}])
def test_the_generator_writes_each_models_parameters_and_nothing_else(kw: dict[str, Any]) -> None:
    spec = RepoSpec(**kw, sampling=SAMPLING, limits=LIMITS, default_top_k=5, ranking_rule="exact",
                    cache_bytes=4096)
    files = render(spec)
    models = {k.split("/")[0] for k in files if k.endswith("config.pbtxt")} - ({TOP} if spec.mode == "ensemble"
                                                                                else set())
    for model in models:
        params = _parameters(files, model)
        if spec.gpu:  # python_backend's own: tensors between steps stay on the GPU
            assert params.pop("FORCE_CPU_ONLY_INPUT_TENSORS") == "no"
        p = KINDS[model].from_parameters(params)
        assert p.to_parameters() == params, model
        assert p.limits == LIMITS, model
        if hasattr(p, "sampling"):
            assert p.sampling == SAMPLING, model
        if hasattr(p, "selection"):
            assert (p.selection.default_top_k, p.selection.ranking_rule) == (5, "exact"), model
    if spec.mode == "bls":
        top, decode = TopParameters.from_parameters(_parameters(files, TOP)), \
            DecodeParameters.from_parameters(_parameters(files, DECODE))
        assert top.decoder == decode.decoder == spec.decoder and top.feature_cache_bytes == 4096
        assert top.stream_frames == decode.stream_frames == (spec.stream_frames if spec.streaming else 0)
        assert top.streaming == spec.streaming
