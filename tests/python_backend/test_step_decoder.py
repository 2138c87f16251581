"""`videoitg.python_backend.step_decoder`: which decoder the decode step runs, from its parameter and its instance,
and its answers (uint8 frames whichever decoder runs; streamed in order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.video import write_clip
from videoitg.decode import DecoderUnavailableError
from videoitg.decode.choice import dali_available
from videoitg.errors import InputError
from videoitg.python_backend.params import instance_device
from videoitg.python_backend.step_decoder import StepDecoder, decode_stream, decode_whole
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams


def test_step_decoder_follows_the_repository_parameter_and_the_instance_device() -> None:
    """The decode step's `decoder` parameter and the device Triton gave its instance
    (`params.instance_device`) -> decode_video's decoder and device, and what the start self-test runs."""
    gpu1 = instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "1"}, "cpu")
    # NVDEC through decode_video's own choice on the instance's GPU, PyAV where NVDEC would misnumber the frames
    assert StepDecoder.of("dali", gpu1) == StepDecoder("auto", "cuda:1", "mixed")
    assert StepDecoder.of("dali", gpu1).device_id() == 1 and StepDecoder.of("dali", gpu1).pooled
    cpu = instance_device({"model_instance_kind": "CPU"}, "cuda")
    assert StepDecoder.of("dali", cpu) == StepDecoder("dali", None, "cpu") and not StepDecoder.of("dali", cpu).pooled
    assert StepDecoder.of("pynvvideocodec", gpu1) == StepDecoder("pynvvideocodec", "cuda:1", "nvc")
    with pytest.raises(DecoderUnavailableError, match="NVDEC only.*--decoder pyav"):
        StepDecoder.of("pynvvideocodec", cpu)
    for parameter in ("pyav", ""):
        assert StepDecoder.of(parameter, gpu1) == StepDecoder("pyav", None, None)  # PyAV, no self-test
    assert StepDecoder.of("pyav", "cpu").self_test is None and StepDecoder.of("pyav", "cpu").device_id() == 0
    for name in ("nvdec", "auto"):  # "auto" is an in-process choice, not a decode step's
        with pytest.raises(InputError, match="decoder must be one of pyav, dali, pynvvideocodec"):
            StepDecoder.of(name, "cpu")


def test_a_gpu_dali_step_decodes_regular_streams_on_nvdec_and_hands_the_others_to_pyav(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the dali step of a GPU instance ("auto" with frames on the device) runs, as on a machine with a GPU and
    DALI: NVDEC for a constant-rate stream with timestamps in a codec NVDEC decodes; PyAV for a variable-rate or
    timestamp-less stream (only the packet index numbers its frames right) and for a codec NVDEC lacks."""
    from types import SimpleNamespace

    from videoitg.decode import choice

    monkeypatch.setattr(choice, "dali_available", lambda: True)
    monkeypatch.setattr(choice, "_cuda", lambda: True)

    def index(vfr: bool = False, ordinal: bool = False) -> SimpleNamespace:
        return SimpleNamespace(vfr=vfr, ordinal=ordinal)  # what the choice reads of a FrameIndex

    nvdec_codec = sorted(choice.DALI_GPU_CODECS)[0]
    assert choice.choose_decoder("auto", nvdec_codec, index(), want_cuda=True) == "dali-gpu"
    assert choice.choose_decoder("auto", nvdec_codec, index(vfr=True), want_cuda=True) == "pyav"
    assert choice.choose_decoder("auto", nvdec_codec, index(ordinal=True), want_cuda=True) == "pyav"
    assert choice.choose_decoder("auto", "prores", index(), want_cuda=True) == "pyav"
    assert choice.choose_decoder("auto", nvdec_codec, index(), want_cuda=False) != "dali-gpu"


def test_a_dali_step_without_a_gpu_answers_pyavs_uint8_frames(tmp_path: Path) -> None:
    """The dali step made for a GPU instance, run where no GPU is (`device` None: no frames on a CUDA device, so the
    automatic choice is PyAV) answers what the python step answers: the same uint8 frames, numbers and times."""
    clip = write_clip(tmp_path / "v.mp4", frames=24)
    sampling, limits = SamplingParams(8, 2.0), Limits()
    dali_like = decode_whole(clip.read_bytes(), 32, sampling, limits, StepDecoder("auto", None, "mixed"))
    python = decode_whole(clip.read_bytes(), 32, sampling, limits)
    assert isinstance(python["PIXEL_VALUES"], np.ndarray) and python["PIXEL_VALUES"].dtype == np.uint8  # no torch
    for name in ("PIXEL_VALUES", "FRAME_INDICES", "TIMESTAMPS", "DURATION"):
        np.testing.assert_array_equal(dali_like[name], python[name])  # the same decode's numbers, not a computation


@pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed (extra 'dali')")
def test_a_dali_cpu_step_streams_its_frames_in_order(tmp_path: Path) -> None:
    """The streaming decode step with DALI's CPU decoder (the decode pool): chunks of `chunk_frames` uint8 frames
    with the video's frame count, the frame numbers last; the chunks are the unstreamed answer's frames."""
    clip = write_clip(tmp_path / "v.webm", codec="libvpx-vp9", frames=60, gop=6).read_bytes()
    sampling, limits, step = SamplingParams(20, 10.0), Limits(), StepDecoder("dali", None, "cpu")
    answers = list(decode_stream(clip, 32, sampling, limits, 6, step))
    chunks, last = answers[:-1], answers[-1]
    whole = decode_whole(clip, 32, sampling, limits, step)
    t = whole["PIXEL_VALUES"].shape[1]
    assert [c["PIXEL_VALUES"].shape[1] for c in chunks] == [6] * (t // 6) + ([t % 6] if t % 6 else [])
    assert all(int(c["NUM_FRAMES"][0, 0]) == t and c["PIXEL_VALUES"].dtype == np.uint8 for c in chunks)
    assert np.array_equal(np.concatenate([np.asarray(c["PIXEL_VALUES"][0]) for c in chunks]),
                          np.asarray(whole["PIXEL_VALUES"][0]))
    np.testing.assert_array_equal(last["FRAME_INDICES"], whole["FRAME_INDICES"])
