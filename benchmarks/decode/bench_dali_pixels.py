"""DALI's pixels against FFmpeg's (PyAV's `to_ndarray("rgb24")`, equal to decord's, the released decoder), in
0..255 units.

Per clip, after the SigLIP preprocessing the model sees (squash to 384): `dali` (the shipped pipeline: DALI decode,
FFmpeg's conversion recovered from DALI's RGB, DALI's cubic resize), `dali_own_rgb` (DALI's decoder RGB as it
comes, squashed by the reference preprocessing), `matrix_only` (DALI's RGB mapped onto the tagged matrix in RGB,
a matrix-only correction for comparison, same preprocessing). At full size: `full_size` (the
pipeline's conversion before the resize: share of pixels equal to FFmpeg's, max, mean) and `full_size_dali_rgb`
(DALI's decoder RGB). Clips: 640x360, synthetic sharp saturated colour edges (lossless, so the YUV is the encoder's
exact input), camera-like content (moving gradients, a disc, noise), and a real photograph under a camera move
(matplotlib's sample portrait, with a flag), untagged, tagged BT.709, full range, 4:2:2, 4:4:4, an odd size.

    python -m benchmarks.decode.bench_dali_pixels                    # CPU: dali-cpu, VP9/VP8/MJPEG clips
    python -m benchmarks.decode.bench_dali_pixels --device cuda      # GPU: dali-gpu (NVDEC), adds H.264 clips
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import numpy as np
import torch
from tqdm import tqdm

from benchmarks.clips import colour_edges_frame, natural_frame, photo_frame, write_rgb_clip
from videoitg.decode import dali, dali_available, decode_video
from videoitg.decode.colour import signal_of, yuv_to_rgb
from videoitg.preprocess import preprocess_frames
from videoitg.sampling import SamplingParams

W, H, FRAMES, SIZE = 640, 360, 6, 384
PARAMS = SamplingParams(num_frames=FRAMES, target_fps=25)
DRAW = {"edges": colour_edges_frame, "natural": natural_frame, "photo": photo_frame}
# name: (content, codec, encoder options, AVColorSpace tag, AVColorRange tag, pix_fmt, size, GPU only)
CLIPS = {
    "edges_vp9_lossless": ("edges", "libvpx-vp9", {"lossless": "1"}, None, None, None, (W, H), False),
    "natural_vp9": ("natural", "libvpx-vp9", {}, None, None, None, (W, H), False),
    "natural_vp9_bt709": ("natural", "libvpx-vp9", {}, 1, None, None, (W, H), False),
    "natural_vp9_fullrange": ("natural", "libvpx-vp9", {}, None, 2, None, (W, H), False),
    "natural_vp8": ("natural", "libvpx", {}, None, None, None, (W, H), False),
    "natural_mjpeg": ("natural", "mjpeg", {}, None, None, None, (W, H), False),
    "photo_vp9": ("photo", "libvpx-vp9", {}, None, None, None, (W, H), False),
    "photo_vp9_bt709": ("photo", "libvpx-vp9", {}, 1, None, None, (W, H), False),
    "photo_mjpeg_422": ("photo", "mjpeg", {}, None, None, "yuvj422p", (W, H), False),
    "photo_vp9_444": ("photo", "libvpx-vp9", {}, None, None, "yuv444p", (W, H), False),
    "photo_vp9_odd_size": ("photo", "libvpx-vp9", {}, None, None, None, (W + 1, H - 1), False),
    "edges_h264_lossless": ("edges", "libx264", {"qp": "0", "preset": "ultrafast"}, None, None, None, (W, H), True),
    "natural_h264_bt709": ("natural", "libx264", {"preset": "veryfast"}, 1, None, None, (W, H), True),
    "photo_h264": ("photo", "libx264", {"preset": "veryfast"}, None, None, None, (W, H), True),
}
EXT = {"libvpx-vp9": "webm", "libvpx": "webm", "mjpeg": "mkv", "libx264": "mp4"}


def make_clip(cache: Path, name: str) -> Path:
    content, codec, opts, cs, rng, pix_fmt, (w, h), _ = CLIPS[name]
    path = cache / f"{name}.{EXT[codec]}"
    if not path.exists():
        write_rgb_clip(path, [DRAW[content](i, w, h) for i in range(FRAMES)], codec=codec, options=opts,
                       colorspace=cs, color_range=rng, pix_fmt=pix_fmt)
    return path


def stats(a: torch.Tensor, ref: torch.Tensor) -> dict:
    d = (a.float().cpu() - ref.float()).abs().flatten() * 127.5  # back to 0..255 units
    return {"max": round(d.max().item(), 2), "mean": round(d.mean().item(), 3),
            "p99.9": round(torch.quantile(d[:: max(1, d.numel() // 4_000_000)], 0.999).item(), 2)}


def full_size_stats(a: np.ndarray, ref: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int16) - ref.astype(np.int16))
    return {"equal_px": round(float((d == 0).all(-1).mean()), 4), "max": int(d.max()),
            "mean": round(float(d.mean()), 4)}


def measure(path: Path, device: str) -> dict:
    ref = decode_video(path, image_size=SIZE, params=PARAMS, decoder="pyav")
    got = decode_video(path, image_size=SIZE, params=PARAMS, decoder="dali", device=device)
    with av.open(str(path)) as c:
        decoded = list(c.decode(video=0))
    signal = signal_of(decoded[0])
    ffmpeg = np.stack([decoded[i].to_ndarray(format="rgb24") for i in ref.frame_indices])
    raw, converted = dali.full_size_rgb(path.read_bytes(), ref.frame_indices, signal,
                                                "mixed" if device == "cuda" else "cpu")
    a601, _ = yuv_to_rgb(2, signal.full_range)
    a_tag, _ = yuv_to_rgb(signal.matrix, signal.full_range)
    matrix = np.clip(np.rint(raw.astype(np.float64) @ (a_tag @ np.linalg.inv(a601)).T), 0, 255).astype(np.uint8)
    return {"signal": signal.name, "pix_fmt": signal.pix_fmt, "size": f"{signal.width}x{signal.height}",
            "dali": stats(got.pixel_values, ref.pixel_values),
            "dali_own_rgb": stats(preprocess_frames(list(raw), SIZE), ref.pixel_values),
            "matrix_only": stats(preprocess_frames(list(matrix), SIZE), ref.pixel_values),
            "full_size": full_size_stats(converted, ffmpeg), "full_size_dali_rgb": full_size_stats(raw, ffmpeg)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/videoitg-dali-pixels"))
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    if not dali_available():
        print("NVIDIA DALI is not installed (extra 'dali')", file=sys.stderr)
        return 1
    args.cache.mkdir(parents=True, exist_ok=True)
    gpu = args.device == "cuda"
    results = {}
    for name in tqdm([n for n, c in CLIPS.items() if gpu or not c[-1]], desc="clips"):
        results[name] = measure(make_clip(args.cache, name), args.device)
        tqdm.write(f"{name}: {json.dumps(results[name])}")
    cols = ["dali", "dali_own_rgb", "matrix_only"]
    print(f"\n| clip ({FRAMES} frames -> {SIZE}) | signal | "
          + " | ".join(f"{c} max / mean / p99.9" for c in cols)
          + " | full size: equal px / max / mean | full size, DALI's RGB |")
    print("|---|---|" + "---|" * (len(cols) + 2))
    for name, r in results.items():
        fs = [f"{r[k]['equal_px']:.1%} / {r[k]['max']} / {r[k]['mean']}" for k in ("full_size", "full_size_dali_rgb")]
        print(f"| {name} | {r['signal']} {r['pix_fmt']} {r['size']} | "
              + " | ".join(f"{r[c]['max']} / {r[c]['mean']} / {r[c]['p99.9']}" for c in cols)
              + f" | {fs[0]} | {fs[1]} |")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
