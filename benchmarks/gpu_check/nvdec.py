"""NVDEC decoding: DALI's `mixed` decoder (`decode_video(decoder="dali-gpu")`) against PyAV on the same clips:
the same frame numbers, the frames' own numbers read back from the pixels (numbered clips), and the pixel
difference of the SigLIP-ready frames, held to the documented bound (`dali_backend.PIXEL_BOUNDS`: max, mean,
p99.9 on sharp colour edges, camera-like and photographic clips, H.264 and VP9). On a CPU machine the mixed part
is skipped and the same comparison runs DALI's CPU decoder on the codecs it has (VP8, VP9, MJPEG), so the code
cannot rot.
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
    sys.path.insert(0, str(ROOT))
    from tests.support.video import write_clip

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, (codec, ext) in CODECS.items():
        try:  # numbered frames: 90 frames, 640x360, GOP 30 (B-frames where the codec has them)
            out[f"{name}_numbered"] = write_clip(work / f"numbered_{name}{ext}", codec=codec, frames=90,
                                                 width=640, height=360, fps=30, gop=30)
        except Exception:  # an encoder this PyAV build lacks
            continue
    if not tiny:  # the end-to-end goals' real-size clip: 10 minutes of 720p H.264, 25 s GOPs
        out["h264_720p_long"] = long_h264_clip(work / "h264_720p_600s.mp4", seconds=600)
    return out


# bound kind: (content, codec, encoder options, AVColorSpace tag); 640x360, 3 frames, squashed to 384
PIXEL_CLIPS = {
    "edges_h264_lossless": ("edges", "libx264", {"qp": "0"}, None),
    "edges_vp9_lossless": ("edges", "libvpx-vp9", {"lossless": "1"}, None),
    "camera_h264_bt709": ("camera", "libx264", {}, 1),
    "camera_vp9_bt709": ("camera", "libvpx-vp9", {}, 1),
    "photo_h264": ("photo", "libx264", {}, None),
    "photo_vp9": ("photo", "libvpx-vp9", {}, None),
}


def pixel_bound(work: Path, backend: str, device: str) -> dict[str, Any]:
    """Each colour clip through `backend` against PyAV at 384: max, mean and p99.9 of |difference| (0..255) within
    `PIXEL_BOUNDS` of its kind; and, at full size, the share of pixels equal to FFmpeg's."""
    sys.path.insert(0, str(ROOT))
    import av
    import numpy as np
    import torch

    from tests.support.video import colour_edges_frame, natural_frame, photo_frame, write_rgb_clip
    from videoitg.decode import decode_video
    from videoitg.decode.colour import signal_of
    from videoitg.decode.dali_backend import PIXEL_BOUNDS, full_size_rgb
    from videoitg.sampling import SamplingParams

    draw = {"edges": colour_edges_frame, "camera": natural_frame, "photo": photo_frame}
    params = SamplingParams(num_frames=3, target_fps=25)
    rows: dict[str, Any] = {}
    for name, (kind, codec, opts, cs) in PIXEL_CLIPS.items():
        if backend == "dali-cpu" and codec == "libx264":
            continue  # DALI's CPU decoder has no H.264
        try:
            path = write_rgb_clip(work / f"pixels_{name}.{'mp4' if codec == 'libx264' else 'webm'}",
                                  [draw[kind](i, 640, 360) for i in range(3)], codec=codec, options=opts,
                                  colorspace=cs)
            ref = decode_video(path, image_size=384, params=params, decoder="pyav", time_budget_s=None)
            got = decode_video(path, image_size=384, params=params, decoder=backend, device=device,
                               time_budget_s=None)
            d = (got.pixel_values.float().cpu() - ref.pixel_values).abs().flatten() * 127.5
            got_stats = (d.max().item(), d.mean().item(), torch.quantile(d[::7], 0.999).item())
            with av.open(str(path)) as c:
                decoded = list(c.decode(video=0))
            ffmpeg = np.stack([decoded[i].to_ndarray(format="rgb24") for i in ref.frame_indices])
            _, rgb = full_size_rgb(path.read_bytes(), ref.frame_indices, signal_of(decoded[0]),
                                   "mixed" if backend == "dali-gpu" else "cpu")
            bound = PIXEL_BOUNDS[kind]
            rows[name] = {"kind": kind, "decoder": got.decoder, "max": round(got_stats[0], 2),
                          "mean": round(got_stats[1], 3), "p99.9": round(got_stats[2], 2), "bound": list(bound),
                          "full_size_equal_px": round(float((rgb == ffmpeg).all(-1).mean()), 4),
                          "within_bound": all(g <= b for g, b in zip(got_stats, bound, strict=True))}
        except Exception as e:
            rows[name] = {"error": repr(e)[:600], "within_bound": False}
    return rows


def compare(path: Path, backend: str, device: str, image_size: int) -> dict[str, Any]:
    from tests.support.video import read_number
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
    work.mkdir(parents=True, exist_ok=True)
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
    # The documented pixel bound, on NVDEC where there is a GPU (else the CPU decoder stands in for it)
    res["pixels"] = pixel_bound(work, backend, device)
    if not gpu:
        res["pixels_mixed"] = {"skipped": "no CUDA device: the bound was checked on DALI's CPU decoder instead"}
    # Same frames (numbers, timestamps, the numbers drawn in the pixels); on the numbered clips (flat bands) the
    # pixels differ by the resize only (mean |d| < 0.05 in [-1, 1] units); on the colour clips within PIXEL_BOUNDS.
    res["pass"] = bool(rows) and all(
        "error" not in r and r["same_frame_numbers"] and r.get("numbers_other_ok", True) and r["mean_abs"] < 0.05
        for r in rows.values()) and bool(res["pixels"]) and all(r["within_bound"] for r in res["pixels"].values())
    return res
