"""What is served is finite: a loaded tower proves itself on a test input (`prove_vision`, `prove_grounding`: a
checkpoint with NaN or infinite weights is refused at load, naming it), and a step's NaN at a request is the server's
NonFiniteError (500-class, counted a failure), never the client's. The served steps run here without a server: the
Triton module is a bare stand-in that records what the step answers."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.dlpack import to_dlpack

from tests.support.triton_stub import stand_in_pb_utils
from videoitg.defaults import default_checkpoint
from videoitg.engines.runtimes import prove_grounding, prove_vision, require_finite
from videoitg.errors import CheckpointError, NonFiniteError
from videoitg.model.checkpoint import load_checkpoint
from videoitg.request.text import encode_instruction

PATCH = "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"
DOWN = "model.layers.1.mlp.down_proj.weight"
EMBED = "model.embed_tokens.weight"
RARE = 90  # the tiny tokenizer's "z": in "where is the zebra?", not in the test input's "warm up"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))


def _with_tensors(tmp_path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """A copy of the embedded checkpoint whose weights `change` edits in place."""
    ckpt = Path(shutil.copytree(default_checkpoint(), tmp_path / "ckpt"))
    tensors = load_file(str(ckpt / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    return ckpt


def test_require_finite_names_what_is_not() -> None:
    x = torch.ones(3)
    assert require_finite(x, "x") is x
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(NonFiniteError, match="^the features hold NaN or infinite values: a fault of the served"):
            require_finite(torch.tensor([1.0, bad]), "the features")


@pytest.mark.parametrize("tensor,value,tower", [(PATCH, float("nan"), "the vision tower"),
                                                (DOWN, float("inf"), "the language model")])
def test_a_tower_with_non_finite_weights_does_not_prove_itself(tmp_path: Path, tensor: str, value: float,
                                                               tower: str) -> None:
    ckpt = _with_tensors(tmp_path, lambda t: t[tensor].view(-1).__setitem__(3, value))
    model, tok = load_checkpoint(ckpt)
    cfg = model.config
    with pytest.raises(CheckpointError, match=f"^{ckpt}: {tower} gives NaN or infinite values on a test input "
                                              "\\(torch runtime, float32 on cpu\\)"):
        prove_vision(model.visual_features, cfg, "cpu", torch.float32, ckpt)
        prove_grounding(lambda v, i: model.score_features([v], [i])[0], cfg, tok, "cpu", torch.float32, ckpt)
    good, _ = load_checkpoint(default_checkpoint())
    assert prove_vision(good.visual_features, cfg, "cpu", torch.float32, ckpt).isfinite().all()
    # the refusal names what the tower ran in, not what its output was handed back as (an engine's fp32 logits)
    with pytest.raises(CheckpointError, match="\\(onnxruntime runtime, float16 on cpu\\)"):
        prove_grounding(lambda v, i: torch.full((2,), float("nan")), cfg, tok, "cpu", torch.float16, ckpt,
                        "onnxruntime")


# ---- the served steps, without a server ------------------------------------------------------------------------
class _Tensor:
    def __init__(self, name: str, data: np.ndarray) -> None:
        self._name, self.data = name, data

    def name(self) -> str:
        return self._name

    def is_cpu(self) -> bool:
        return True

    def as_numpy(self) -> np.ndarray:
        return self.data

    def to_dlpack(self) -> Any:
        return to_dlpack(torch.from_numpy(self.data))


class _Error:
    INVALID_ARG, INTERNAL, NOT_FOUND, UNAVAILABLE = "INVALID_ARG", "INTERNAL", "NOT_FOUND", "UNAVAILABLE"

    def __init__(self, message: str, code: str) -> None:
        self._message, self.code = message, code

    def message(self) -> str:
        return self._message


class _Response:
    def __init__(self, output_tensors: list[_Tensor] | None = None, error: _Error | None = None) -> None:
        self.outputs, self._error = output_tensors or [], error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> _Error:
        assert self._error is not None
        return self._error


class _Family:
    COUNTER, GAUGE = "counter", "gauge"
    values: dict[tuple, float] = {}

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name = name

    def Metric(self, labels: dict[str, str]) -> types.SimpleNamespace:
        key = (self.name, *sorted(labels.items()))

        def add(n: float) -> None:
            _Family.values[key] = _Family.values.get(key, 0) + n

        return types.SimpleNamespace(increment=add, set=lambda n: _Family.values.__setitem__(key, n))


@pytest.fixture
def pb(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The stand-in Triton module, the step modules imported against it (and dropped afterwards)."""
    _Family.values = {}
    members = dict(Tensor=_Tensor, TritonError=_Error, InferenceResponse=_Response, MetricFamily=_Family,
                   Logger=types.SimpleNamespace(log_error=lambda msg: None),
                   get_input_tensor_by_name=lambda request, name: request.get(name))
    yield stand_in_pb_utils(monkeypatch, **members)
    for name in [n for n in sys.modules if n.startswith("videoitg.python_backend.")]:
        if name.rsplit(".", 1)[1] in ("metrics", "responses", "tensors", "vision", "grounding"):
            sys.modules.pop(name)  # bound to the stand-in: not for later tests


def _step(name: str, ckpt: Path) -> Any:
    step = importlib.import_module(f"videoitg.python_backend.{name}")
    model = step.TritonPythonModel()
    config = {"parameters": {"checkpoint": {"string_value": str(ckpt)}}}
    model.initialize({"model_config": json.dumps(config), "model_repository": str(ckpt.parent / "repo" / name)})
    return model


def _failures(model: str) -> float:
    return _Family.values.get(("videoitg_requests", ("model", model), ("outcome", "failure")), 0)


@pytest.mark.parametrize("step,tensor,value,tower", [("vision", PATCH, float("nan"), "the vision tower"),
                                                     ("grounding", DOWN, float("inf"), "the language model")])
def test_a_served_step_refuses_to_load_a_checkpoint_that_does_not_prove_itself(
        tmp_path: Path, pb: types.ModuleType, step: str, tensor: str, value: float, tower: str) -> None:
    ckpt = _with_tensors(tmp_path, lambda t: t[tensor].view(-1).__setitem__(3, value))
    with pytest.raises(CheckpointError, match=f"^{ckpt}: {tower} gives NaN or infinite values on a test input"):
        _step(step, ckpt)


def test_nan_from_the_vision_step_is_the_servers_failure(tmp_path: Path, pb: types.ModuleType) -> None:
    """A vision tower finite on the test input (mid-grey frames) and overflowing on real frames: its NaN features
    reached the grounding step's input check and the client was told its FEATURES were bad (400)."""
    ckpt = _with_tensors(tmp_path, lambda t: t[PATCH].fill_(1e38))  # finite, but x * 1e38 summed overflows
    vision = _step("vision", ckpt)
    s = vision.image_size
    frames = np.random.default_rng(0).integers(0, 256, (1, 2, 3, s, s), dtype=np.uint8)
    (answer,) = vision.execute([{"PIXEL_VALUES": _Tensor("PIXEL_VALUES", frames)}])
    assert answer.has_error() and answer.error().code == _Error.INTERNAL
    assert answer.error().message().startswith(
        "videoitg_vision: NonFiniteError: the vision tower's features (torch runtime, float32 on cpu) hold NaN")
    assert _failures("videoitg_vision") == 1


def test_nan_from_the_grounding_step_is_the_servers_failure(tmp_path: Path, pb: types.ModuleType) -> None:
    """Catches: NaN logits served as an answer (200, every score NaN, a ranking of NaNs)."""
    ckpt = _with_tensors(tmp_path, lambda t: t[EMBED][RARE].fill_(float("nan")))  # one token's embedding
    grounding = _step("grounding", ckpt)
    assert RARE not in encode_instruction(grounding.tokenizer, "warm up").tolist()
    cfg = grounding.model.config
    features = np.zeros((1, 4, cfg.tokens_per_side(4) ** 2, cfg.text.hidden_size), np.float32)

    def request(text: str) -> dict[str, _Tensor]:
        return {"FEATURES": _Tensor("FEATURES", features),
                "INSTRUCTION": _Tensor("INSTRUCTION", np.array([[text.encode()]], object))}

    fine, nan = grounding.execute([request("when is the red circle visible?"), request("where is the zebra?")])
    assert not fine.has_error() and np.isfinite(fine.outputs[0].data).all()
    assert nan.has_error() and nan.error().code == _Error.INTERNAL
    assert nan.error().message().startswith(
        "videoitg_grounding: NonFiniteError: the language model's logits (torch runtime, float32 on cpu) hold NaN")
    assert _failures("videoitg_grounding") == 1
