"""The GPU check's decode sections (`benchmarks/gpu_check.py --only served_e2e,decode_long`). Real sizes on a GPU;
tiny shapes and few rounds with --tiny (the CPU rehearsal in the test suite, which runs every line of both sections).

served_e2e  `videoitg serve --target gpu` (NVDEC) with a checkpoint of the released shapes (random weights), the
            10-minute 720p H.264 clip of benchmarks/e2e_clips.py, the whole request through the client, against the
            released-style request (decord on the CPU, the HF SigLIP processor, HF SigLIP + Qwen2 on the GPU: the
            end-to-end benchmark's `released_request`), same run; then 8 concurrent cold requests (feature cache off)
            against 1 / (GPU time of one request: the vision and grounding steps' compute time, Triton's statistics).
decode_long one request's decode, each decoder alone (`decode_long`'s docstring).
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.gpu_hotpath import empty
from videoitg.contract.protocol import DECODE, GROUNDING, VISION

CONCURRENT = 8
PARALLEL_PIPELINES = 4  # decode_long's candidate: a request's chunks on this many DALI pipelines at once


# ---- served_e2e ------------------------------------------------------------------------------------------------
def served_e2e(check: Any) -> dict[str, Any]:
    import torch

    from benchmarks.bench_e2e import released_request, siglip_processor
    from benchmarks.perf.build import build_baseline
    from videoitg.client.kserve import VideoITGClient
    from videoitg.model.checkpoint import load_checkpoint, load_tokenizer
    from videoitg.request.text import encode_instruction

    ckpt = check.random_checkpoint("e2e-checkpoint", None)
    clip = e2e_clip(check)
    dev, cuda = check.device, check.cuda
    dtype = torch.float16 if cuda else torch.float32
    out: dict[str, Any] = {"clip": clip.name, "clip_mb": round(clip.stat().st_size / 1e6, 1), "checkpoint": str(ckpt)}
    q = "When is the red circle visible?"
    # the released-style request first (its model alone on the GPU), then the server
    model, _ = load_checkpoint(ckpt, "cpu", dtype, with_tokenizer=False)
    base = build_baseline(model.config, dev, dtype, model.state_dict())
    size = model.config.vision.image_size
    ids = encode_instruction(load_tokenizer(ckpt), q)
    del model
    processor = siglip_processor(size)
    with torch.inference_mode():  # first-call setup (kernels, handles) off the timed request
        base(torch.zeros(2, 3, size, size, device=dev, dtype=dtype), ids.to(dev))
    released = released_request(base, ids.to(dev), clip, size, processor)
    frames = released.pop("frame_indices")
    out["released_s"] = {k: round(v, 3) for k, v in released.items() if k != "logits"}
    check.progress(out, "released-style request")
    base = None
    empty(cuda)
    target = "gpu" if cuda else "cpu"
    flags = ["--target", target, "--checkpoint", str(ckpt), "--cache-bytes", "0"]
    if cuda:
        flags += ["--decode-instances", "4"]  # NVDEC decodes of concurrent requests overlap
    proc, url = check._serve(flags, "e2e-repository")
    try:
        stats = StepStats(url)
        with VideoITGClient(url, protocol="grpc") as client:
            data = clip.read_bytes()
            client.infer(data, q)  # warm-up: first-request setup in the steps
            before = stats.read()
            served = []
            for _ in range(2):
                t0 = time.perf_counter()
                served.append((client.infer(data, q), time.perf_counter() - t0))
            gpu_s = stats.per_request(before, stats.read())
        wall = statistics.median(s for _, s in served)
        result = served[-1][0].result
        out["served"] = {"wall_s": [round(s, 3) for _, s in served], "decoder": "dali" if cuda else "pyav",
                         "same_frame_numbers_as_decord": list(result.frame_indices) == list(frames),
                         "steps_s_per_request": gpu_s}
        out["released_over_served"] = released["wall_s"] / wall
        check.progress(out, "served request")
        gpu_time = gpu_s[VISION] + gpu_s[GROUNDING]
        out["throughput"] = concurrent(url, data, q, gpu_time)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    ok = out["throughput"]["errors"] == 0 and out["served"]["same_frame_numbers_as_decord"]
    out.update(ok=ok, summary=f"{clip.name} ({out['clip_mb']} MB), whole request: served {wall:.2f} s, released-style "
                              f"{released['wall_s']:.2f} s ({out['released_over_served']:.1f}x); {CONCURRENT} "
                              f"concurrent cold: {out['throughput']['requests_per_s']:.3g} req/s = "
                              f"{out['throughput']['of_gpu_floor']:.2f} of 1/(GPU time {gpu_time:.3g} s: the vision "
                              f"and grounding steps' compute per request)")
    return out


def decode_long(check: Any) -> dict[str, Any]:
    """One request's decode, each decoder alone: DALI with each chunk fed its piece of the video (the default,
    `videoitg.decode.pieces`) against DALI fed the whole video for every chunk, the chunks on PARALLEL_PIPELINES
    pipelines at once (`dali.decode`'s `pipelines`, a candidate), and PyAV (the CPU; its threads over GOP ranges), on
    served_e2e's 10-minute 720p clip (512 frames) and on a 60-second 720p clip with B-frames (x264 veryfast); the
    DALI runs' pixels compared (bit-equal: the same packets decoded from the same keyframes).
    With --tiny: DALI's CPU decoder on an 8-second 320x240 VP9 clip."""
    import torch

    from benchmarks.clips import repeat_clip, write_natural_clip

    cuda, work = check.cuda, check.work / "clips"
    work.mkdir(parents=True, exist_ok=True)
    size = check.config("tiny" if check.tiny else "real").vision.image_size
    codec, (w, h), seconds = ("libx264", (1280, 720), 60) if cuda else ("libvpx-vp9", (320, 240), 8)
    segment = write_natural_clip(work / f"segment{w}.{'mp4' if cuda else 'webm'}", codec=codec, frames=50, width=w,
                                 height=h, gop=50, options={"preset": "veryfast"} if cuda else None)
    clips = {"bframes" if cuda else "vp9": repeat_clip(segment, work / f"repeated{w}{segment.suffix}", seconds // 2)}
    if cuda:
        clips["10min_720p"] = e2e_clip(check)
    decoder = "dali-gpu" if cuda else "dali-cpu"
    sync = (lambda: torch.cuda.synchronize(check.device)) if cuda else (lambda: None)
    out: dict[str, Any] = {"decoder": decoder}
    for name, clip in clips.items():
        out[name] = decode_row(check, name, clip.read_bytes(), decoder, size, sync)
        check.progress(out, name)
    rows = {k: v for k, v in out.items() if k != "decoder"}
    out["summary"] = "; ".join(f"{k}: {v['frames']} of {v['total_frames']} frames, DALI pieces {v['dali_pieces_s']:.2f}"
                               f" s, whole {v['dali_whole_s']:.2f} s, {PARALLEL_PIPELINES} pipelines at once "
                               f"{v['dali_parallel_pieces_s']:.2f} s, PyAV {v['pyav_s']:.2f} s, bit-equal "
                               f"{v['bit_equal']}" for k, v in rows.items())
    out["ok"] = all(r["bit_equal"] for r in rows.values())
    return out


def decode_row(check: Any, name: str, data: bytes, decoder: str, size: int, sync: Callable[[], None]) -> dict:
    """decode_long's figures for one clip."""
    import io

    import av
    import torch

    from videoitg.decode import dali, decode_video, plan_decode
    from videoitg.decode.budget import Deadline
    from videoitg.decode.container import build_index, header_info, select_video_stream
    from videoitg.decode.structs import DecodeLimits

    plan = plan_decode(data, time_budget_s=None)
    with av.open(io.BytesIO(data)) as c:
        s = select_video_stream(c, name)
        index = build_index(c, s, header_info(c, s)["fps"], DecodeLimits(), Deadline(None), name)
    device = check.device if check.cuda else None

    def run(idx: Any, frames: list[int] = plan.frame_indices, pipelines: int = 1) -> tuple[Any, float]:
        sync()
        t0 = time.perf_counter()
        px = dali.decode(decoder, data, frames, size, (plan.colour.width, plan.colour.height), Deadline(None), name,
                         device, plan.colour, idx, pipelines)
        sync()
        return px, time.perf_counter() - t0

    run(index, plan.frame_indices[:1])  # the pipeline's build and the decoder's start, off the timings
    pieces, pieces_s = run(index)
    whole, whole_s = run(None)
    run(index, pipelines=PARALLEL_PIPELINES)  # the other pipelines' builds, off the timing
    parallel, parallel_s = run(index, pipelines=PARALLEL_PIPELINES)
    t0 = time.perf_counter()
    decode_video(data, image_size=size, decoder="pyav", time_budget_s=None)
    return {"frames": len(plan.frame_indices), "total_frames": index.total, "mb": round(len(data) / 1e6, 1),
            "dali_pieces_s": pieces_s, "dali_whole_s": whole_s, "dali_parallel_pieces_s": parallel_s,
            "parallel_pipelines": PARALLEL_PIPELINES, "pyav_s": time.perf_counter() - t0,
            "bit_equal": bool(torch.equal(pieces, whole)) and bool(torch.equal(pieces, parallel)),
            "max_abs_diff": float((pieces.float() - whole.float()).abs().max())}


def e2e_clip(check: Any) -> Path:
    """The end-to-end benchmark's 10-minute 720p clip (a 40-second 320x240 one with --tiny), made once in the
    check's work directory."""
    from benchmarks.e2e_clips import ClipSpec, clip

    if not check.tiny:
        return clip("720p10-ultrafast", check.work / "clips")
    return clip("tiny-240p10", check.work / "clips", ClipSpec(320, 240, 10, 100, 100, 40, {"preset": "ultrafast"}))


class StepStats:
    """Compute time per execution of the served steps, from Triton's inference statistics."""

    STEPS = (DECODE, VISION, GROUNDING)

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(url)

    def read(self) -> dict[str, tuple[int, int]]:
        out = {}
        for m in self.STEPS:
            st = self.client.get_inference_statistics(model_name=m, as_json=True)["model_stats"]
            infer = [s.get("inference_stats", {}).get("compute_infer", {}) for s in st]
            out[m] = (sum(int(x.get("count", 0)) for x in infer), sum(int(x.get("ns", 0)) for x in infer))
        return out

    def per_request(self, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
        """Seconds of compute each step spent per request between two readings (2 requests)."""
        return {m: (after[m][1] - before[m][1]) / 1e9 / 2 for m in self.STEPS}


def concurrent(url: str, data: bytes, q: str, gpu_time: float) -> dict[str, Any]:
    """CONCURRENT cold requests at once (one client each), against 1 / gpu_time."""
    from videoitg.client.kserve import VideoITGClient

    errors: list[str] = []

    def one() -> None:
        try:
            with VideoITGClient(url, protocol="grpc") as c:
                c.infer(data, q)
        except Exception as e:  # counted and reported: a failed request is not a throughput
            errors.append(f"{type(e).__name__}: {e}"[:300])

    threads = [threading.Thread(target=one) for _ in range(CONCURRENT)]
    t0 = time.perf_counter()
    [th.start() for th in threads]
    [th.join() for th in threads]
    wall = time.perf_counter() - t0
    rate = (CONCURRENT - len(errors)) / wall
    return {"requests": CONCURRENT, "wall_s": wall, "requests_per_s": rate, "gpu_floor_requests_per_s": 1 / gpu_time,
            "of_gpu_floor": rate * gpu_time, "errors": len(errors), "error_texts": errors[:3]}
