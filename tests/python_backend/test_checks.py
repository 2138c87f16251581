"""`videoitg.python_backend.checks` and `params`: a step's one video per request, and the device a step instance
runs on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videoitg.contract.parameters import TopParameters
from videoitg.errors import EngineError, InputError
from videoitg.python_backend.checks import one_video
from videoitg.python_backend.params import device_dtype, feature_dtype, host_features, instance_device


def test_a_step_input_holds_one_video_on_a_batch_axis_of_one() -> None:
    frames = torch.zeros(1, 2, 3, 4, 4)
    assert one_video(frames, "PIXEL_VALUES").shape == (2, 3, 4, 4)
    assert one_video(np.arange(3.0)[None], "LOGITS").tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(InputError, match=r"FEATURES must hold one video a request \(batch axis 1\), got 2"):
        one_video(torch.zeros(2, 3, 4, 5), "FEATURES")
    with pytest.raises(InputError, match="TIMESTAMPS is missing"):
        one_video(None, "TIMESTAMPS")


def test_a_gpu_instance_runs_on_the_gpu_triton_gave_it() -> None:
    """python_backend passes `model_instance_kind` ("GPU"/"CPU"/"MODEL") and `model_instance_device_id` (a string)
    to `initialize(args)`; KIND_GPU makes one instance per GPU, so each must use its own."""
    assert instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "1"}, "cuda") == "cuda:1"
    assert instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "0"}, "cuda") == "cuda:0"
    assert instance_device({"model_instance_kind": "CPU", "model_instance_device_id": "0"}, "cuda") == "cpu"
    assert instance_device({"model_instance_kind": "MODEL", "model_instance_device_id": "0"}, "cuda") == "cuda"
    assert instance_device({}, "cpu") == "cpu"  # no Triton: what the parameters say
    with pytest.raises(EngineError, match="GPU index"):
        instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "x"})


def test_a_step_runs_on_its_instances_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """With `initialize(args)`, the device is the one Triton gave the instance; without, the `device` parameter
    (what the top-level model keys its cache by). A GPU device on a machine without CUDA falls back to the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    gpu1 = {"model_instance_kind": "GPU", "model_instance_device_id": "1"}
    assert device_dtype("cpu", args=gpu1) == ("cuda:1", torch.float16)
    assert device_dtype("cuda", "float32", {"model_instance_kind": "CPU"}) == ("cpu", torch.float32)
    assert device_dtype("cuda", args={"model_instance_kind": "MODEL"})[0] == "cuda"
    assert device_dtype("cuda") == ("cuda", torch.float16)
    assert device_dtype("cuda", precision="fp8") == ("cuda", torch.bfloat16)  # FP8's 16-bit parts
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_dtype("cpu", args=gpu1)[0] == "cpu"


def test_the_top_level_model_keeps_host_features_where_numpy_has_their_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """The features reach the top-level model as numpy arrays where the steps compute them on a CPU in float32 or
    float16, as torch tensors in bfloat16 (fp8's 16-bit parts too) or on a GPU; the cache keys them by the dtype the
    steps compute in (the rule of `videoitg.precision`)."""
    assert feature_dtype(TopParameters()) == ("cpu", "float32") and host_features(TopParameters())
    assert host_features(TopParameters(dtype="float16"))
    assert not host_features(TopParameters(dtype="bfloat16"))
    assert feature_dtype(TopParameters(precision="fp8")) == ("cpu", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    assert feature_dtype(TopParameters(device="cuda:1")) == ("cuda", "float16")  # the released fp16
    assert not host_features(TopParameters(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert feature_dtype(TopParameters(device="cuda")) == ("cpu", "float32")  # a GPU repository on a CPU machine
