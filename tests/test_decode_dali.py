"""DALI backend: CPU decoder parity with PyAV (same frame numbers, small stated pixel difference), the
automatic choice, and the GPU variant's preconditions."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch
from fixtures_video import read_number, write_clip, write_natural_clip

from videoitg.decode import dali_available, decode_video
from videoitg.sampling import SamplingParams

pytestmark = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed (extra 'dali')")
FEW = SamplingParams(num_frames=8, target_fps=5)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dali")
    return {
        "vp9": write_clip(d / "vp9.webm", codec="libvpx-vp9", frames=60, gop=12),
        "mjpeg": write_clip(d / "mjpeg.mkv", codec="mjpeg", frames=60),
        "vp8": write_clip(d / "vp8.webm", codec="libvpx", frames=60, gop=12),
        "h264": write_clip(d / "h264.mp4", frames=30),
        "natural_vp9": write_natural_clip(d / "nat.webm", codec="libvpx-vp9", frames=50),
        "vfr_vp9": write_clip(d / "vfr.webm", codec="libvpx-vp9", frames=6, pts=[0, 40, 80, 500, 1000, 1040],
                              time_base=Fraction(1, 1000)),
    }


@pytest.mark.parametrize("name", ["vp9", "mjpeg", "vp8"])
def test_dali_cpu_returns_the_same_frames_as_pyav(clips: dict[str, Path], name: str) -> None:
    dali = decode_video(clips[name], image_size=32, params=FEW, decoder="dali-cpu")
    ref = decode_video(clips[name], image_size=32, params=FEW, decoder="pyav")
    assert dali.decoder == "dali-cpu" and dali.frame_indices == ref.frame_indices
    assert [read_number(x) for x in dali.pixel_values.numpy()] == dali.frame_indices
    # Stated tolerance on flat-band content: 3/255 in [0,255] units = 0.0236 after x/127.5 - 1.
    assert (dali.pixel_values - ref.pixel_values).abs().max().item() <= 0.024


def test_dali_cpu_parity_on_camera_like_content(clips: dict[str, Path]) -> None:
    """Sharp saturated edges differ more: DALI converts YUV 4:2:0 to RGB with its own chroma upsampling
    (raw-frame max |diff| ~100/255 at a few edge pixels, mean ~1.5/255); the cubic resize adds <= 5/255."""
    params = SamplingParams(num_frames=10, target_fps=5)
    dali = decode_video(clips["natural_vp9"], image_size=64, params=params, decoder="dali-cpu")
    ref = decode_video(clips["natural_vp9"], image_size=64, params=params, decoder="pyav")
    diff = (dali.pixel_values - ref.pixel_values).abs()
    assert diff.mean().item() < 0.015 and diff.max().item() < 0.15


def test_auto_choice_is_reported(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from videoitg.decode import backends

    # No CUDA device asked for: CPU backends (NVDEC only when the caller wants frames on a GPU); PyAV is the
    # measured-faster CPU choice unless DALI's CPU decoder is preferred explicitly.
    chosen = {k: decode_video(clips[k], image_size=8, params=FEW).decoder for k in ("vp9", "h264")}
    assert chosen == {"vp9": "pyav", "h264": "pyav"}
    monkeypatch.setattr(backends, "AUTO_PREFERS_DALI_CPU", True)
    chosen = {k: decode_video(clips[k], image_size=8, params=FEW).decoder for k in ("vp9", "h264", "vfr_vp9")}
    assert chosen["vp9"] == "dali-cpu"
    assert chosen["h264"] == "pyav"
    # Variable frame rate: only the packet index numbers frames right, so auto keeps PyAV.
    assert chosen["vfr_vp9"] == "pyav"


def test_bytes_input_through_dali(clips: dict[str, Path]) -> None:
    a = decode_video(clips["vp9"].read_bytes(), image_size=32, params=FEW, decoder="dali-cpu")
    b = decode_video(clips["vp9"], image_size=32, params=FEW, decoder="dali-cpu")
    assert torch.equal(a.pixel_values, b.pixel_values)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the mixed (NVDEC) pipeline needs a CUDA GPU")
def test_dali_gpu_matches_pyav(clips: dict[str, Path]) -> None:  # pragma: no cover - no GPU in CI
    gpu = decode_video(clips["h264"], image_size=32, params=FEW, decoder="auto", device="cuda")
    assert gpu.decoder == "dali-gpu"
    ref = decode_video(clips["h264"], image_size=32, params=FEW, decoder="pyav")
    assert gpu.pixel_values.is_cuda and gpu.frame_indices == ref.frame_indices
    assert (gpu.pixel_values.cpu() - ref.pixel_values).abs().max().item() <= 0.05


def test_chunked_runs_bound_memory_and_change_nothing(clips: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from videoitg.decode import dali_backend

    whole = decode_video(clips["vp9"], image_size=32, params=FEW, decoder="dali-cpu")
    monkeypatch.setattr(dali_backend, "CHUNK_BYTES", 1)  # one frame per pipeline run
    chunked = decode_video(clips["vp9"], image_size=32, params=FEW, decoder="dali-cpu")
    assert torch.equal(whole.pixel_values, chunked.pixel_values)


def test_auto_falls_back_to_pyav_when_dali_fails(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from videoitg.decode import backends

    def broken(*args: object, **kw: object) -> torch.Tensor:
        raise RuntimeError("simulated DALI failure")

    monkeypatch.setattr(backends, "decode_dali", broken)
    monkeypatch.setattr(backends, "AUTO_PREFERS_DALI_CPU", True)
    out = decode_video(clips["vp9"], image_size=32, params=FEW)
    assert out.decoder == "pyav" and [read_number(x) for x in out.pixel_values.numpy()] == out.frame_indices
    with pytest.raises(RuntimeError, match="simulated"):  # an explicit request is not second-guessed
        decode_video(clips["vp9"], image_size=32, params=FEW, decoder="dali-cpu")
