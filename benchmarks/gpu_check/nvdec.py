"""NVDEC decoding: DALI's `mixed` decoder (`decode_video(decoder="dali-gpu")`) against PyAV on the same clips:
the same frame numbers, the frames' own numbers read back from the pixels (numbered clips), and the pixel
difference of the SigLIP-ready frames. On a CPU machine the same comparison runs DALI's CPU decoder on the codecs
it has (VP8, VP9, MJPEG), so the code cannot rot.
"""

from __future__ import annotations

import ctypes
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.perf.clips import long_h264_clip

ROOT = Path(__file__).resolve().parents[2]
CODECS = {"h264": ("libx264", ".mp4"), "hevc": ("libx265", ".mp4"), "vp9": ("libvpx-vp9", ".webm"),
          "mjpeg": ("mjpeg", ".mkv")}


def nvdec_present() -> dict[str, Any]:
    """Whether the driver's NVDEC library can be loaded (a VM may expose CUDA without the video engines)."""
    try:
        ctypes.CDLL("libnvcuvid.so.1")
        return {"libnvcuvid": True}
    except OSError as e:
        return {"libnvcuvid": False, "why": str(e)}


def clips(work: Path, tiny: bool) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures_video import write_clip

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, (codec, ext) in CODECS.items():
        try:  # numbered frames: 90 frames, 640x360, GOP 30 (B-frames where the codec has them)
            out[f"{name}_numbered"] = write_clip(work / f"numbered_{name}{ext}", codec=codec, frames=90,
                                                 width=640, height=360, fps=30, gop=30)
        except Exception:  # an encoder this PyAV build lacks
            continue
    if not tiny:  # the real-size clip: 10 minutes of 720p H.264, 25 s GOPs
        out["h264_720p_long"] = long_h264_clip(work / "h264_720p_600s.mp4", seconds=600)
    return out


def compare(path: Path, backend: str, device: str, image_size: int) -> dict[str, Any]:
    from fixtures_video import read_number

    from videoitg.decode import decode_video
    from videoitg.sampling import SamplingParams

    params = SamplingParams(num_frames=512, target_fps=1.0 if "long" in path.name or "720p" in path.name else 8.0)
    t0 = time.perf_counter()
    ref = decode_video(path, image_size=image_size, params=params, decoder="pyav", time_budget_s=None)
    t1 = time.perf_counter()
    got = decode_video(path, image_size=image_size, params=params, decoder=backend, device=device,
                       time_budget_s=None)
    t2 = time.perf_counter()
    a, b = ref.pixel_values.float(), got.pixel_values.float().cpu()
    d = (a - b).abs()
    row: dict[str, Any] = {"frames": len(ref.frame_indices), "pyav_s": t1 - t0, f"{backend}_s": t2 - t1,
                           "decoder": got.decoder, "same_frame_numbers": ref.frame_indices == got.frame_indices,
                           "same_timestamps": ref.timestamps == got.timestamps,
                           "output_device": str(got.pixel_values.device),
                           "max_abs": float(d.max()), "mean_abs": float(d.mean()),
                           "p999_abs": float(d.flatten().kthvalue(max(1, int(d.numel() * 0.999))).values)}
    if "numbered" in path.name:
        row["numbers_pyav_ok"] = [read_number(x.numpy()) for x in a] == [i % 256 for i in ref.frame_indices]
        row["numbers_other_ok"] = [read_number(x.numpy()) for x in b] == [i % 256 for i in got.frame_indices]
    return row


def run_nvdec(work: Path, device: str, tiny: bool, image_size: int = 384) -> dict[str, Any]:
    from videoitg.decode import dali_available

    res: dict[str, Any] = {"dali": dali_available()}
    gpu = device.startswith("cuda")
    if gpu:
        res.update(nvdec_present())
    if not res["dali"]:
        return {**res, "skipped": "DALI is not installed (stage it: docs/performance.md)"}
    backend = "dali-gpu" if gpu else "dali-cpu"
    res["backend"] = backend
    rows = {}
    for name, path in clips(work, tiny).items():
        if not gpu and not name.startswith(("vp9", "mjpeg")):
            continue  # DALI's CPU decoder has VP8/VP9/MJPEG only
        try:
            rows[name] = compare(path, backend, device, image_size if not tiny else 64)
        except Exception as e:
            rows[name] = {"error": repr(e)[:600]}
    res["clips"] = rows
    # Same frames (numbers, timestamps, the numbers drawn in the pixels); the pixels themselves differ by DALI's
    # YUV->RGB conversion and cubic resize (docs/decoding.md: flat content <= 0.024, edges up to ~0.8).
    res["pass"] = bool(rows) and all(
        "error" not in r and r["same_frame_numbers"] and r.get("numbers_other_ok", True) and r["mean_abs"] < 0.05
        for r in rows.values())
    return res
