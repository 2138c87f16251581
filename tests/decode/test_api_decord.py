"""Frame numbers, timestamps and pixels equal the released pipeline's decoder (decord 0.6.0: `len(vr)`,
`get_avg_fps`, `get_batch`, `get_frame_timestamp`) on ordinary MP4s and a few other containers: constant rate,
B-frames, long GOPs, NTSC rates, variable frame rate, camera-like content. The rule where they may differ
(damaged headers) is in docs/decoding.md."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.clips import write_natural_clip
from tests.support.video import read_number, write_clip
from videoitg.decode import decode_video, probe_video
from videoitg.preprocess import resize_frame
from videoitg.sampling import SamplingParams, sample_frame_indices

decord = pytest.importorskip("decord", reason="decord (the released decoder) is not installed: pip install decord")

S = 48
PARAMS = SamplingParams(num_frames=16, target_fps=4.0)
VFR_PTS = [i * 33 for i in range(60)] + [60 * 33 + i * 100 for i in range(40)]  # 30 fps, then 10 fps

CLIPS = {  # name: (writer, kwargs)
    "cfr_ultrafast.mp4": (write_clip, dict(frames=120, fps=25, gop=250)),
    "bframes_medium.mp4": (write_clip, dict(frames=120, fps=30, gop=30, options={"preset": "medium"})),
    "long_gop_veryfast.mp4": (write_clip, dict(frames=300, fps=25, gop=300, options={"preset": "veryfast"})),
    "ntsc_29.97.mp4": (write_clip, dict(frames=90, fps=Fraction(30000, 1001))),
    "faststart.mp4": (write_clip, dict(frames=60, fps=25, faststart=True)),
    "mpeg4.mp4": (write_clip, dict(codec="mpeg4", frames=60, fps=24)),
    "vfr.mp4": (write_clip, dict(frames=100, fps=30, pts=VFR_PTS, time_base=Fraction(1, 1000))),
    "h264.mkv": (write_clip, dict(frames=60, fps=25)),
    "camera_bframes.mp4": (write_natural_clip, dict(frames=100, width=160, height=120, gop=25,
                                                    options={"preset": "medium"})),
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("decord")


@pytest.mark.parametrize("name", list(CLIPS))
def test_frame_numbers_timestamps_and_pixels_equal_decords(clip_dir: Path, name: str) -> None:
    writer, kwargs = CLIPS[name]
    path = writer(clip_dir / name, **kwargs)
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    # what the released wrapper computes: frame count and rate from decord, then the sampling rule
    released_idx = sample_frame_indices(len(vr), vr.get_avg_fps(), PARAMS)
    info = probe_video(path, count_frames=True)
    assert info.total_frames == len(vr)
    assert info.fps == vr.get_avg_fps()
    for workers in (1, 2):
        ours = decode_video(path, image_size=S, params=PARAMS, output="uint8", workers=workers)
        assert ours.frame_indices == released_idx
        assert ours.total_frames == len(vr) and ours.fps == vr.get_avg_fps()
        np.testing.assert_allclose(ours.timestamps, vr.get_frame_timestamp(released_idx)[:, 0], atol=1e-6)
        released = vr.get_batch(released_idx).asnumpy()  # [T, H, W, 3] uint8, full size
        expect = torch.from_numpy(np.stack([resize_frame(f, S) for f in released])).permute(0, 3, 1, 2)
        assert torch.equal(ours.pixel_values, expect)  # same pictures, same RGB conversion
        if writer is write_clip:
            assert [read_number(f) for f in released] == [i % 256 for i in released_idx]  # the numbered frames
