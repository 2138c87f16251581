"""`videoitg.python_backend.decoding`: which decoder the decode step runs, from its parameter and its instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.video import write_clip
from videoitg.errors import InputError
from videoitg.preprocess import pixel_values
from videoitg.python_backend.decoding import StepDecoder, decode_whole
from videoitg.python_backend.params import instance_device
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams


def test_step_decoder_follows_the_repository_parameter_and_the_instance_device() -> None:
    """The decode step's `decoder` parameter and the device Triton gave its instance
    (`params.instance_device`) -> decode_video's decoder and device, and DALI's self-test device."""
    gpu1 = instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "1"}, "cpu")
    # NVDEC through decode_video's own choice on the instance's GPU, PyAV where NVDEC would misnumber the frames
    assert StepDecoder.of("dali", gpu1) == StepDecoder("auto", "cuda:1", "mixed", "float32")
    assert StepDecoder.of("dali", gpu1).device_id() == 1
    assert StepDecoder.of("dali", instance_device({"model_instance_kind": "CPU"}, "cuda")) == \
        StepDecoder("dali", None, "cpu", "float32")
    for parameter in ("pyav", ""):
        assert StepDecoder.of(parameter, gpu1) == StepDecoder("pyav", None, None, "uint8")  # PyAV, no self-test
    assert StepDecoder.of("pyav", "cpu").dali_device is None and StepDecoder.of("pyav", "cpu").device_id() == 0
    for name in ("nvdec", "auto"):  # "auto" is an in-process choice, not a decode step's
        with pytest.raises(InputError, match="decoder must be one of pyav, dali"):
            StepDecoder.of(name, "cpu")


def test_a_dali_step_answers_pyav_frames_as_the_pixel_values_its_vision_step_takes(tmp_path: Path) -> None:
    """A dali decode step's vision step takes float32 SigLIP pixel values. Where the step decodes with PyAV (a stream
    NVDEC cannot number, or a CPU device), the answer is those pixel values too: the python step's uint8 frames
    normalised (`preprocess.pixel_values`), with the same frame numbers and times."""
    clip = write_clip(tmp_path / "v.mp4", frames=24)
    sampling, limits = SamplingParams(8, 2.0), Limits()
    # the GPU's dali step (NVDEC, the instance's GPU), on a machine without one: PyAV decodes
    dali_like = decode_whole(clip.read_bytes(), 32, sampling, limits, StepDecoder("auto", None, "mixed", "float32"))
    python = decode_whole(clip.read_bytes(), 32, sampling, limits)
    assert dali_like["PIXEL_VALUES"].dtype == torch.float32
    assert isinstance(python["PIXEL_VALUES"], np.ndarray) and python["PIXEL_VALUES"].dtype == np.uint8  # no torch
    torch.testing.assert_close(dali_like["PIXEL_VALUES"], pixel_values(torch.from_numpy(python["PIXEL_VALUES"])),
                               rtol=0, atol=1e-6)
    for name in ("FRAME_INDICES", "TIMESTAMPS", "DURATION"):
        np.testing.assert_array_equal(dali_like[name], python[name])  # the same decode's numbers, not a computation
