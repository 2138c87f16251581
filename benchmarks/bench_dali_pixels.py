"""DALI's pixels against FFmpeg's (PyAV's `to_ndarray("rgb24")`, equal to decord's, the released decoder), after
the SigLIP preprocessing the model sees (squash to 384, x / 127.5 - 1), in 0..255 units.

Per clip: `dali` (the shipped pipeline: DALI decode, colour correction onto FFmpeg's matrix and range, DALI
cubic resize), `uncorrected` (the same without the colour correction) and, on CPU, `chroma_only` (PyAV converting
with DALI's CPU chroma interpolation but the right matrix and range: the part no RGB-domain correction can undo).
Clips: 640x360, synthetic sharp saturated colour edges (lossless, so the YUV is the encoder's exact input) and
camera-like content (moving gradients, a disc, noise), untagged, tagged BT.709 and tagged full range.

    python benchmarks/bench_dali_pixels.py                    # CPU: dali-cpu, VP9/VP8/MJPEG clips
    python benchmarks/bench_dali_pixels.py --device cuda      # GPU: dali-gpu (NVDEC), adds H.264 clips
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fixtures_video import colour_edges_frame, natural_frame, write_rgb_clip  # noqa: E402

from videoitg.decode import dali_available, dali_backend, decode_video  # noqa: E402
from videoitg.decode.budget import Deadline  # noqa: E402
from videoitg.decode.colour import signal_of  # noqa: E402
from videoitg.preprocess import preprocess_frames  # noqa: E402
from videoitg.sampling import SamplingParams  # noqa: E402

W, H, FRAMES, SIZE = 640, 360, 6, 384
PARAMS = SamplingParams(num_frames=FRAMES, target_fps=25)
# name: (content, codec, encoder options, AVColorSpace tag, AVColorRange tag, GPU only)
CLIPS = {
    "edges_vp9_lossless": ("edges", "libvpx-vp9", {"lossless": "1"}, None, None, False),
    "natural_vp9": ("natural", "libvpx-vp9", {}, None, None, False),
    "natural_vp9_bt709": ("natural", "libvpx-vp9", {}, 1, None, False),
    "natural_vp9_fullrange": ("natural", "libvpx-vp9", {}, None, 2, False),
    "natural_vp8": ("natural", "libvpx", {}, None, None, False),
    "natural_mjpeg": ("natural", "mjpeg", {}, None, None, False),
    "edges_h264_lossless": ("edges", "libx264", {"qp": "0", "preset": "ultrafast"}, None, None, True),
    "natural_h264_bt709": ("natural", "libx264", {"preset": "veryfast"}, 1, None, True),
}
EXT = {"libvpx-vp9": "webm", "libvpx": "webm", "mjpeg": "mkv", "libx264": "mp4"}


def make_clip(cache: Path, name: str) -> Path:
    content, codec, opts, cs, rng, _ = CLIPS[name]
    path = cache / f"{name}.{EXT[codec]}"
    if not path.exists():
        draw = colour_edges_frame if content == "edges" else natural_frame
        write_rgb_clip(path, [draw(i, W, H) for i in range(FRAMES)], codec=codec, options=opts, colorspace=cs,
                       color_range=rng)
    return path


def chroma_only(path: Path, frame_numbers: list[int]) -> torch.Tensor:
    """PyAV with DALI's CPU chroma interpolation (swscale full chroma interpolation, accurate rounding) and the
    frame's own matrix and range: what remains after a perfect matrix/range correction."""
    from av.video.reformatter import Interpolation as I

    flags = I.BILINEAR | I.FULL_CHR_H_INT | I.ACCURATE_RND
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return preprocess_frames([frames[i].to_ndarray(format="rgb24", interpolation=flags) for i in frame_numbers],
                             SIZE)


def stats(a: torch.Tensor, ref: torch.Tensor) -> dict:
    d = (a.float().cpu() - ref.float()).abs().flatten() * 127.5  # back to 0..255 units
    return {"max": round(d.max().item(), 2), "mean": round(d.mean().item(), 3),
            "p99.9": round(torch.quantile(d[:: max(1, d.numel() // 4_000_000)], 0.999).item(), 2)}


def measure(path: Path, device: str) -> dict:
    ref = decode_video(path, image_size=SIZE, params=PARAMS, decoder="pyav")
    backend = "dali-gpu" if device == "cuda" else "dali-cpu"
    got = decode_video(path, image_size=SIZE, params=PARAMS, decoder=backend, device=device)
    with av.open(str(path)) as c:
        signal = signal_of(next(c.decode(video=0)))
    row = {"signal": signal.name, "pix_fmt": signal.pix_fmt, "dali": stats(got.pixel_values, ref.pixel_values)}
    raw = dali_backend.decode(backend, path.read_bytes(), ref.frame_indices, SIZE, (W, H), Deadline(None),
                              path.name, device, colour=None)
    row["uncorrected"] = stats(raw, ref.pixel_values)
    if device == "cpu":
        chroma = chroma_only(path, ref.frame_indices)
        row["chroma_only"] = stats(chroma, ref.pixel_values)
        row["dali_vs_chroma_only"] = stats(got.pixel_values, chroma)  # the resize and the rounding
    return row


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
    cols = ["dali", "uncorrected"] + ([] if gpu else ["chroma_only", "dali_vs_chroma_only"])
    print(f"\n| clip (640x360, {FRAMES} frames -> {SIZE}) | signal | "
          + " | ".join(f"{c} max / mean / p99.9" for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, r in results.items():
        print(f"| {name} | {r['signal']} | "
              + " | ".join(f"{r[c]['max']} / {r[c]['mean']} / {r[c]['p99.9']}" for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
