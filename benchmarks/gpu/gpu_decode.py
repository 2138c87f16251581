"""The GPU check's decode sections (`benchmarks/gpu/gpu_check.py --only served_e2e,decode_long`). Real sizes on a GPU;
tiny shapes with --tiny (the CPU rehearsal in the test suite, which runs every line of both sections: DALI's CPU
decoder on VP9 clips in place of NVDEC, PyNvVideoCodec and NVML skipped with their reasons).

decode_long  one request's decode of each long clip, each decoder alone on a decode pool of its own
             (`videoitg.decode.pool`), timed after a warm-up that builds its sessions: DALI on N pipelines (N: the
             card's NVDEC engines, `pool.nvdec_sessions`), DALI on one pipeline fed N pieces a run, PyNvVideoCodec on N
             sessions, PyAV on every core (`decode_video`), and DALI's N pipelines with PyAV overflow threads on the
             spare cores (the mix). Clips: the 10-minute 720p H.264 clip (no B-frames, 25-s GOPs) and a 10-minute
             1080p30 one with B-frames and 2-s GOPs (x264 medium; benchmarks/decode/e2e_clips.py). Each run: wall time,
             NVDEC and SM utilisation sampled through it (NVML, every 50 ms), the frames its pieces ran through
             against the fewest any decoder starting at keyframes needs, pieces by session; its pixels against PyAV's
             (max and mean |difference|, bit-equal or not).
served_e2e   `videoitg serve --target gpu` (its default decoder: DALI on the decode pool, streamed into the vision
             step) with a checkpoint of the released shapes (random weights): each clip's whole request through the
             client; the released-style request on the 720p clip (decord on the CPU, the HF SigLIP processor, HF SigLIP
             + Qwen2 on the GPU: the end-to-end benchmark's `released_request`), same run; the device time of one
             request's vision and grounding work (the in-process model, prepared as the served torch runtime is: CUDA
             events around it and the sum of its kernels from the profiler), beside the steps' compute time from
             Triton's statistics; then 8 and 16 concurrent cold requests of the 720p clip (feature cache off): every
             one answered, p50 and p99 latency, requests/s against 1 / device time, NVML's utilisation through each.

Estimated on an H100 from the 2026-11-26 record (decode_long 55 s and served_e2e 151 s with one clip each):
decode_long about 90 s (making the 1080p clip about 20 s, PyAV's reference decodes about 12 s, four pooled decoders
on two clips with their warm-ups), served_e2e about 210 s (the in-process device timing with its compile about 40 s,
the 1080p clip's requests, the 16-request burst): about 5 minutes in all; about 6.5 if NVDEC decodes no faster than
in that record (a 720p request 8 s, a 1080p one about 25 s).
"""

from __future__ import annotations

import io
import math
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.gpu.gpu_hotpath import empty
from videoitg.contract.protocol import DECODE, GROUNDING, VISION

BURSTS = (8, 16)  # concurrent cold requests
# served_e2e's parts after the first clip's request and the first burst, each started only where the check's budget
# leaves its time (seconds; the H100's 2026-11-26 timings with room: a 1080p request about 25 s, twice)
AFTER_FIRST_S = {False: {"clip": 60, "burst": 30, "perf": 90}, True: {"clip": 20, "burst": 20, "perf": 30}}
PERF_LEVELS = {False: [1, 4, 8], True: [1, 2]}  # `videoitg perf`'s cold levels on the served clip
SAMPLE_S = 0.05  # NVML utilisation sampling period
QUESTION = "When is the red circle visible?"


# ---- measuring tools -------------------------------------------------------------------------------------------
class Utilisation:
    """NVML's decoder and GPU utilisation (%) of the check's device, sampled every SAMPLE_S while in use (`with`);
    `summary()` gives mean and max of each, or why there is none (no NVML here)."""

    def __init__(self, cuda: bool, device_index: int = 0) -> None:
        self.cuda, self.device_index = cuda, device_index
        self.samples: list[tuple[int, int]] = []
        self.why = "" if cuda else "no GPU"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Utilisation:
        if not self.cuda:
            return self
        try:
            import pynvml

            from videoitg.decode.pool import _nvml_handle

            pynvml.nvmlInit()
            handle = _nvml_handle(pynvml, self.device_index)
        except Exception as e:  # nvidia-ml-py missing, or no NVML
            self.why = f"{type(e).__name__}: {e}"[:200]
            return self

        def sample() -> None:
            while not self._stop.is_set():
                try:
                    dec = pynvml.nvmlDeviceGetDecoderUtilization(handle)[0]
                    gpu = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                    self.samples.append((int(dec), int(gpu)))
                except Exception as e:  # a query this driver lacks: the figure is absent, the run goes on
                    self.why = f"{type(e).__name__}: {e}"[:200]
                    return
                self._stop.wait(SAMPLE_S)

        self._thread = threading.Thread(target=sample, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            import pynvml

            pynvml.nvmlShutdown()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"unavailable": self.why or "no samples"}
        dec, gpu = zip(*self.samples, strict=True)
        return {"samples": len(self.samples), "decoder_pct_mean": round(statistics.mean(dec), 1),
                "decoder_pct_max": max(dec), "gpu_pct_mean": round(statistics.mean(gpu), 1), "gpu_pct_max": max(gpu)}


def device_time(call: Callable[[], Any], cuda: bool) -> tuple[Any, dict[str, float]]:
    """`call`'s result and its time on the device: CUDA events around it (`events_s`, idle gaps between kernels
    included) and the sum of its CUDA kernels' own time from the profiler (`kernels_s`, the GPU kept busy); on a CPU
    the wall time and the CPU operators' own time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        res = call()
        if cuda:
            end.record()
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    if cuda:
        kernels = sum(e.self_device_time_total for e in prof.key_averages()
                      if e.device_type == torch.autograd.DeviceType.CUDA)
        return res, {"events_s": start.elapsed_time(end) / 1e3, "kernels_s": kernels / 1e6, "wall_s": wall}
    cpu_ops = sum(e.self_cpu_time_total for e in prof.key_averages())
    return res, {"events_s": wall, "kernels_s": cpu_ops / 1e6, "wall_s": wall}


# ---- clips -------------------------------------------------------------------------------------------------------
def e2e_clip(check: Any) -> Path:
    """The end-to-end benchmark's 10-minute 720p clip (with --tiny: 40 seconds of 320x240 VP9, which DALI's CPU
    decoder reads), made once in the check's work directory."""
    from benchmarks.decode.e2e_clips import clip

    if not check.tiny:
        return clip("720p10-ultrafast", check.work / "clips")
    return tiny_clip(check, "tiny-240p10.webm", 320, 240, 10, 100, 40)


def long_clips(check: Any) -> dict[str, Path]:
    """The two long clips: 10-minute 720p (no B-frames, 25-s GOPs) and 10-minute 1080p30 with B-frames and 2-s GOPs;
    with --tiny, 40-second VP9 clips of 320x240 at 10 fps (10-s GOPs) and 160x96 at 30 fps (2-s GOPs)."""
    from benchmarks.decode.e2e_clips import clip

    if not check.tiny:
        return {"10min_720p": e2e_clip(check), "10min_1080p30": clip("1080p30-bframes", check.work / "clips")}
    return {"tiny_240p10": e2e_clip(check), "tiny_30fps_2s_gops": tiny_clip(check, "tiny-96p30.webm", 160, 96, 30,
                                                                            60, 40)}


def tiny_clip(check: Any, name: str, width: int, height: int, fps: int, gop: int, seconds: int) -> Path:
    from benchmarks.clips import repeat_clip, write_natural_clip

    work = check.work / "clips"
    work.mkdir(parents=True, exist_ok=True)
    path = work / name
    if not path.exists():
        seg = write_natural_clip(work / f"seg-{name}", codec="libvpx-vp9", frames=gop, width=width, height=height,
                                 fps=fps, gop=gop)
        repeat_clip(seg, path, seconds * fps // gop)
    return path


def budget_note(check: Any) -> str:
    return f"not started: {check.remaining():.0f} s of the check's {check.args.budget_s:.0f} s budget left"


# ---- decode_long -------------------------------------------------------------------------------------------------
def decode_long(check: Any) -> dict[str, Any]:
    """One request's decode of each long clip by each decoder (module docstring). PyAV's reference decode of each
    clip runs here; each decoder runs in a child process of its own over every clip (`decoder_child`), so a decoder
    that crashes its process (native code: NVDEC through DALI or PyNvVideoCodec) costs its own rows only."""
    from videoitg.decode.pool import nvdec_sessions

    index = (check.device.index or 0) if check.cuda else 0
    n, source = nvdec_sessions(index) if check.cuda else (2, "two DALI CPU pipelines (no GPU)")
    out: dict[str, Any] = {"nvdec_sessions": n, "sessions_from": source,
                           "nvdec": "dali-gpu" if check.cuda else "dali-cpu"}
    clips = long_clips(check)
    refs = check.work / "decode-long"
    refs.mkdir(parents=True, exist_ok=True)
    for name, clip in clips.items():
        out[name] = reference_decode(check, clip, refs / f"{name}.npy")
        check.progress(out, f"{name} PyAV")
    for run in DECODER_RUNS:
        if not check.affords(CHILD_ESTIMATE_S[check.tiny] * len(clips)):
            for name in clips:
                out[name]["runs"][run] = {"skipped": budget_note(check)}
            continue
        for name, row in in_child(check, run, clips, n, refs).items():
            out[name]["runs"][run] = row
        check.progress(out, run)
    rows = {k: v for k, v in out.items() if isinstance(v, dict)}
    for row in rows.values():
        ran = [r for r in row["runs"].values() if "max_abs_255" in r]
        # every decoder that ran gave the sampled frames: DALI's each within 2/255 of PyAV's on average (NVDEC's
        # measured pixels on the H200: mean 0.71-0.76); PyNvVideoCodec's PyAV's bit for bit (VP9's decoded samples
        # are fixed by the standard and its conversion is FFmpeg's own, videoitg/decode/nv12.py)
        nvc = row["runs"].get("pynvvideocodec", {})
        row["ok"] = bool(ran) and all(r["mean_abs_255"] <= 2.0 for r in ran) and nvc.get("bit_equal", True) and \
            not any("error" in r for r in row["runs"].values())
    out["summary"] = "; ".join(
        f"{k} ({v['frames']} of {v['total_frames']} frames, {v['mb']} MB): " + ", ".join(
            f"{r} {x['wall_s']:.2f} s" + (f" dec {x['utilisation'].get('decoder_pct_mean', '-')}%"
                                           if "utilisation" in x else "")
            if "wall_s" in x else f"{r} {'failed' if 'error' in x else 'skipped'}" for r, x in v["runs"].items())
        for k, v in rows.items())
    out["ok"] = all(r["ok"] for r in rows.values())
    return out


# a decoder's child process: seconds it is given per clip (its imports, sessions, warm-up and decode; killed after)
CHILD_ESTIMATE_S = {False: 40, True: 40}  # {tiny: estimate}: what the budget reserves per clip
CHILD_LIMIT_S = {False: 180, True: 300}  # a clip's decode that has not answered by then is stopped


def reference_decode(check: Any, clip: Path, ref: Path) -> dict[str, Any]:
    """A clip's row: its sampling, the fewest frames a decoder must run through, and PyAV's decode on every core
    (timed: the `pyav_all_cores` run), whose frames are written to `ref` for the decoders' children to compare."""
    import numpy as np

    from videoitg.decode import decode_video
    from videoitg.decode.parallel import machine_workers
    from videoitg.decode.pieces import minimum_decode

    data = clip.read_bytes()
    plan, index = clip_plan(data, clip.name)
    wh = (plan.colour.width, plan.colour.height)
    row: dict[str, Any] = {"frames": len(plan.frame_indices), "total_frames": index.total,
                           "mb": round(len(data) / 1e6, 1), "size": f"{wh[0]}x{wh[1]}",
                           "minimum_decode": minimum_decode(index, plan.frame_indices), "runs": {}}
    cores = machine_workers()
    size = check.config("tiny" if check.tiny else "real").vision.image_size
    with Utilisation(check.cuda, check.device.index or 0) as u:
        t0 = time.perf_counter()
        got = decode_video(data, image_size=size, decoder="pyav", output="uint8", time_budget_s=None, workers=cores,
                           numpy=True)
        row["runs"]["pyav_all_cores"] = {"wall_s": time.perf_counter() - t0, "cores": cores}
    row["runs"]["pyav_all_cores"]["utilisation"] = u.summary()
    np.save(ref, np.asarray(got.pixel_values))
    return row


def clip_plan(data: bytes, name: str) -> tuple[Any, Any]:
    """A clip's decode plan (the sampled frames, its colour) and its frame index, as a request's decode makes them."""
    import av

    from videoitg.decode import plan_decode
    from videoitg.decode.budget import Deadline
    from videoitg.decode.container import build_index, header_info, select_video_stream
    from videoitg.decode.structs import DecodeLimits

    plan = plan_decode(data, time_budget_s=None)
    with av.open(io.BytesIO(data)) as c:
        s = select_video_stream(c, name)
        index = build_index(c, s, header_info(c, s)["fps"], DecodeLimits(), Deadline(None), name)
    return plan, index


def in_child(check: Any, run: str, clips: dict[str, Path], sessions: int, refs: Path,
             target: Callable[[dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Decoder `run` over every clip in a child process of its own (spawned: CUDA is live here) running `target`
    (`decoder_child`); each clip's row as the child wrote it, or why there is none (the child crashed, or did not
    answer within its limit)."""
    import json
    import multiprocessing

    result = refs / f"{run}.jsonl"
    result.unlink(missing_ok=True)
    spec = {"run": run, "clips": {k: str(p) for k, p in clips.items()}, "sessions": sessions, "refs": str(refs),
            "result": str(result), "cuda": check.cuda, "device_index": (check.device.index or 0) if check.cuda else 0,
            "tiny": check.tiny}
    limit = CHILD_LIMIT_S[check.tiny] * len(clips)
    remaining = check.remaining()
    if remaining is not None:
        limit = max(1.0, min(limit, remaining))
    child = multiprocessing.get_context("spawn").Process(target=target or decoder_child, args=(spec,),
                                                         name=f"decode-{run}")
    child.start()
    child.join(limit)
    if child.exitcode is None:
        child.kill()
        child.join()
        why = f"no answer within {limit:.0f} s: stopped"
    else:
        why = f"its process ended with {child.exitcode}" + (
            f" (signal {signal.Signals(-child.exitcode).name})" if child.exitcode < 0 else "")
    rows = {}
    if result.exists():
        for line in result.read_text().splitlines():
            got = json.loads(line)
            rows[got["clip"]] = got["row"]
    return {k: rows.get(k, {"error": f"{run} on {k}: {why}"}) for k in clips}


def decoder_child(spec: dict[str, Any]) -> None:
    """A decoder's run over every clip (the child process `in_child` starts): each clip's row appended to the
    result file as it finishes."""
    import json

    import numpy as np

    from videoitg.decode.budget import Deadline
    from videoitg.decode.pool import DecodePool, Video

    cuda, idx, n = spec["cuda"], spec["device_index"], spec["sessions"]
    size = preset_image_size(spec["tiny"])
    for name, path in spec["clips"].items():
        data = Path(path).read_bytes()
        plan, index = clip_plan(data, name)
        wh = (plan.colour.width, plan.colour.height)

        def video(data: bytes = data, plan: Any = plan, index: Any = index, wh: tuple[int, int] = wh,
                  name: str = name) -> Video:
            return Video(data, index, plan.frame_indices, size, wh, plan.colour, Deadline(None), name)

        try:
            pool = DecodePool(decoder_sessions(spec["run"], cuda, idx, n))
        except Exception as e:  # PyNvVideoCodec or DALI missing or broken here: named
            row: dict[str, Any] = {"skipped": f"{type(e).__name__}: {e}"[:300]}
        else:
            try:
                row = pool_run(cuda, idx, pool, video, np.load(Path(spec["refs"]) / f"{name}.npy"))
            except Exception as e:  # a decoder failing on this card: recorded
                row = {"error": f"{type(e).__name__}: {e}"[:600]}
            finally:
                pool.close()
        with open(spec["result"], "a") as f:
            f.write(json.dumps({"clip": name, "row": row}) + "\n")


def preset_image_size(tiny: bool) -> int:
    from videoitg.config import VideoITGConfig, preset

    return (preset("tiny") if tiny else VideoITGConfig()).vision.image_size


DECODER_RUNS = ("dali_pipelines", "dali_batch", "pynvvideocodec", "dali_and_pyav_overflow")


def decoder_sessions(run: str, cuda: bool, idx: int, n: int) -> list:
    """The sessions of decode_long's decoder `run` (one of DECODER_RUNS), raising where it cannot run here: DALI on
    n pipelines, DALI on one pipeline fed n pieces a run, PyNvVideoCodec on n sessions, DALI's n pipelines with
    PyAV overflow threads on the spare cores."""
    from videoitg.decode.dali import DaliSession
    from videoitg.decode.pool import PyAVSession, cpu_overflow_sessions

    dev = "mixed" if cuda else "cpu"
    if run == "dali_pipelines":
        return [DaliSession(dev, idx, k) for k in range(n)]
    if run == "dali_batch":
        return [DaliSession(dev, idx, batch=n)]
    if run == "pynvvideocodec":
        from videoitg.decode.choice import nvc_available

        if not cuda:
            raise RuntimeError("PyNvVideoCodec decodes on NVDEC only: no GPU here")
        if not nvc_available():
            raise RuntimeError("PyNvVideoCodec cannot be imported here")
        from videoitg.decode.nvc import NvcSession

        return [NvcSession(idx, k) for k in range(n)]
    if run == "dali_and_pyav_overflow":
        # the spare cores' PyAV threads (one at least, so that a machine of few cores runs the mix too)
        return [DaliSession(dev, idx, k) for k in range(n)] + (
            cpu_overflow_sessions() or [PyAVSession(0, overflow=True)])
    raise ValueError(f"unknown decoder run {run!r}; one of {', '.join(DECODER_RUNS)}")


def pool_run(cuda: bool, idx: int, pool: Any, video: Callable[[], Any], want: Any) -> dict[str, Any]:
    """One decoder's run: a warm-up (its sessions build their decoders) on as many pieces as it has sessions, then
    the request timed with NVML sampling; its frames against PyAV's."""
    import numpy as np
    import torch

    v = video()
    shape = (len(v.frame_numbers), 3, v.image_size, v.image_size)
    out = torch.empty(shape, dtype=torch.uint8, device=f"cuda:{idx}") if cuda else np.empty(shape, np.uint8)
    warm = pool.plan(v)[:sum(s.batch for s in pool.sessions)]
    pool.decode(v, out, pieces=warm)
    with Utilisation(cuda, idx) as u:
        t0 = time.perf_counter()
        job = pool.decode(video(), out)
        if cuda:
            torch.cuda.synchronize(idx)
        wall = time.perf_counter() - t0
    got = out.cpu().numpy() if cuda else out
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    kinds: dict[str, int] = {}
    for session, pieces in job.by_session.items():
        kinds[session.split(":")[0]] = kinds.get(session.split(":")[0], 0) + pieces
    return {"wall_s": wall, "sessions": len(pool.sessions), "pieces": len(job.pieces), "pieces_by_kind": kinds,
            "decoded_frames": job.decoded_frames, "utilisation": u.summary(),
            "bit_equal": bool((d == 0).all()), "max_abs_255": int(d.max()), "mean_abs_255": round(float(d.mean()), 3)}


# ---- served_e2e --------------------------------------------------------------------------------------------------
def served_e2e(check: Any) -> dict[str, Any]:
    import torch

    from benchmarks.decode.bench_e2e import released_request, siglip_processor
    from benchmarks.perf.build import build_baseline
    from videoitg.client.kserve import VideoITGClient
    from videoitg.model.checkpoint import load_checkpoint, load_tokenizer
    from videoitg.request.text import encode_instruction

    ckpt = check.random_checkpoint("e2e-checkpoint", None)
    clips = long_clips(check)
    first, clip = next(iter(clips.items()))
    dev, cuda = check.device, check.cuda
    dtype = torch.float16 if cuda else torch.float32
    out: dict[str, Any] = {"clips": {k: round(p.stat().st_size / 1e6, 1) for k, p in clips.items()},
                           "checkpoint": str(ckpt)}
    # the released-style request first (its model alone on the GPU), then our model's device time, then the server
    model, _ = load_checkpoint(ckpt, "cpu", dtype, with_tokenizer=False)
    base = build_baseline(model.config, dev, dtype, model.state_dict())
    size = model.config.vision.image_size
    ids = encode_instruction(load_tokenizer(ckpt), QUESTION)
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
    out["device_time_s"] = model_device_time(check, ckpt, clip)
    check.progress(out, "device time of one request's vision and grounding")
    copies = distinct_copies(clip, max(BURSTS), check.work / "burst-copies")  # the bursts' videos
    proc, url = check._serve(serve_flags(cuda, ckpt, [*clips.values(), *copies]), "e2e-repository")
    try:
        stats = StepStats(url)
        out["served_clips"] = {}
        with VideoITGClient(url, protocol="grpc") as client:
            for k, (name, path) in enumerate(clips.items()):
                if k and not check.affords(AFTER_FIRST_S[check.tiny]["clip"]):
                    out["served_clips"][name] = {"skipped": budget_note(check)}
                    continue
                data = path.read_bytes()
                if k:
                    try:  # a later clip's failure is its own row: the first clip's bursts still run
                        client.infer(data, QUESTION)
                    except Exception as e:
                        out["served_clips"][name] = {"error": f"{type(e).__name__}: {e}"[:600]}
                        continue
                else:
                    client.infer(data, QUESTION)  # warm-up: first-request setup in the steps
                before = stats.read()
                timed = []
                for _ in range(2 if k == 0 else 1):
                    t0 = time.perf_counter()
                    timed.append((client.infer(data, QUESTION), time.perf_counter() - t0))
                result, after = timed[-1][0].result, stats.read()
                row = {"wall_s": [round(s, 3) for _, s in timed], "frames": len(result.frame_indices),
                       "steps_s_per_request": stats.per_request(before, after, len(timed)),
                       "vision_calls_per_request": (after[VISION][0] - before[VISION][0]) / len(timed)}
                if k == 0:
                    row["same_frame_numbers_as_decord"] = list(result.frame_indices) == list(frames)
                out["served_clips"][name] = row
                check.progress(out, f"served request, {name}")
        out["clip"], out["served"] = first, out["served_clips"][first]  # the released-style comparison's clip
        wall = statistics.median(s for s in out["served"]["wall_s"])
        out["released_over_served"] = released["wall_s"] / wall
        steps = out["served"]["steps_s_per_request"]
        gpu = {"device_kernels": out["device_time_s"]["kernels_s"], "device_events": out["device_time_s"]["events_s"],
               "triton_compute": steps[VISION] + steps[GROUNDING]}
        out["bursts"] = {}
        for n in BURSTS:
            if n != BURSTS[0] and not check.affords(AFTER_FIRST_S[check.tiny]["burst"] * n / BURSTS[0]):
                out["bursts"][str(n)] = {"skipped": budget_note(check)}
                continue
            before = stats.read()
            out["bursts"][str(n)] = burst(url, [c.read_bytes() for c in copies[:n]], gpu, check)
            out["bursts"][str(n)]["vision_executions"] = stats.read()[VISION][0] - before[VISION][0]
            check.progress(out, f"{n} concurrent cold requests")
        if check.affords(AFTER_FIRST_S[check.tiny]["perf"]):
            out["perf"] = perf_levels(check, url, clip, out["device_time_s"])
            check.progress(out, "perf levels")
        else:
            out["perf"] = {"skipped": budget_note(check)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    bursts = {n: b for n, b in out["bursts"].items() if "skipped" not in b}
    # every burst request answered, each a video of its own: as many vision calls as that many cold requests make
    # (none shared)
    ok = all(b["answered"] == b["requests"] and b["vision_executions"] == b["requests"] * out["served"][
        "vision_calls_per_request"] for b in bursts.values()) and out["served"]["same_frame_numbers_as_decord"]
    b8 = bursts[str(BURSTS[0])]
    out.update(ok=ok, summary=(
        "whole request: " + ", ".join(f"{k} {statistics.median(v['wall_s']):.2f} s" if "wall_s" in v
                                      else f"{k} {'failed' if 'error' in v else 'not run (budget)'}"
                                      for k, v in out["served_clips"].items())
        + f"; released-style {released['wall_s']:.2f} s ({out['released_over_served']:.1f}x on {first}); device time "
        f"of vision + grounding {gpu['device_kernels']:.3g} s (kernels; events {gpu['device_events']:.3g} s, Triton "
        f"compute {gpu['triton_compute']:.3g} s); " + "; ".join(
            f"{n} concurrent cold: {b['answered']}/{b['requests']} answered, {b['requests_per_s']:.3g} req/s = "
            f"{b['of_gpu_floor']['device_kernels']:.2f} of 1/device time, p50 {b['latency_s']['p50']:.2f} s, p99 "
            f"{b['latency_s']['p99']:.2f} s" for n, b in bursts.items())
        + f" (8: decoder utilisation {b8['utilisation'].get('decoder_pct_mean', '-')}%)"))
    return out


def model_device_time(check: Any, ckpt: Path, clip: Path) -> dict[str, float]:
    """The device time of one request's vision and grounding work on `clip`'s sampled frames: the model loaded and
    prepared as the served torch runtime prepares it (`Scorer`: `prepare_inference`, compiled layers on a GPU), a
    warm-up call (compiling), then one call under `device_time`."""
    from videoitg.decode import decode_video
    from videoitg.pipeline.scorer import Scorer

    dtype = "float16" if check.cuda else "float32"
    held = {"scorer": Scorer(ckpt, device=str(check.device), dtype=dtype, decoder="pyav")}
    frames = decode_video(clip, image_size=held["scorer"].config.vision.image_size, decoder="pyav", output="uint8",
                          time_budget_s=None)

    def one() -> Any:
        scorer = held["scorer"]
        return scorer.score_visual([(scorer.video_features(frames), QUESTION)])

    one()  # compile and first-call setup off the timing
    _, t = device_time(one, check.cuda)
    held.clear()  # the model leaves the device before the server loads its own
    empty(check.cuda, compiled=True)
    return {k: round(v, 4) for k, v in t.items()}


class StepStats:
    """Compute time per execution of the served steps, from Triton's inference statistics."""

    STEPS = (DECODE, VISION, GROUNDING)

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(url)

    def read(self) -> dict[str, tuple[int, int]]:
        """{step: (requests it answered, nanoseconds of compute)}."""
        out = {}
        for m in self.STEPS:
            st = self.client.get_inference_statistics(model_name=m, as_json=True)["model_stats"]
            infer = [s.get("inference_stats", {}).get("compute_infer", {}) for s in st]
            out[m] = (sum(int(s.get("inference_count", 0)) for s in st), sum(int(x.get("ns", 0)) for x in infer))
        return out

    def per_request(self, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                    requests: int) -> dict[str, float]:
        """Seconds of compute each step spent per request between two readings (`requests` requests)."""
        return {m: (after[m][1] - before[m][1]) / 1e9 / requests for m in self.STEPS}


def perf_levels(check: Any, url: str, clip: Path, device_time_s: dict[str, float]) -> dict[str, Any]:
    """`videoitg perf`'s report of the served clip (`videoitg.perf.measure`: perf_analyzer at each cold level, each
    level's time split by step from the server's statistics, the picture) with this run's device time beside it,
    written to the check's out folder (perf/perf.json, perf/perf.png); its figures by level."""
    from videoitg.perf.measure import Plan, measure

    levels = PERF_LEVELS[check.tiny]
    report = measure(Plan(server=url, videos=[clip], instructions=[QUESTION], levels=levels,
                          cold_requests=max(levels), out=check.out / "perf", work=check.work / "perf"),
                     device_time_s=device_time_s)
    rows = report["series"]["cold"]["rows"]
    return {"out": str(check.out / "perf"), "levels": {str(r["concurrency"]): {
        "infer_per_s": r["infer_per_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
        "steps_ms": {m.removeprefix("videoitg_"): round(t["queue_ms"] + t["compute_ms"], 1)
                     for m, t in r["split"]["steps"].items()}} for r in rows}}


def serve_flags(cuda: bool, ckpt: Path, videos: list[Path]) -> list[str]:
    """`videoitg serve`'s flags for served_e2e: the GPU target (its default decoder), the checkpoint, no feature
    cache (every request cold), a request size that holds the largest of `videos` sent whole as bytes (the
    10-minute 1080p clip is 354 MB, over the 64 MiB a request may hold by default), and room for the largest burst
    in flight (a server refuses requests past its max_in_flight, 8 by default, at once: "retry later")."""
    flags = ["--target", "gpu" if cuda else "cpu", "--checkpoint", str(ckpt), "--cache-bytes", "0",
             # with room for `videoitg perf`'s copies (a few dozen bytes its container skips, appended)
             "--max-video-bytes", str(max(p.stat().st_size for p in videos) + (1 << 20)),
             "--max-in-flight", str(max(BURSTS))]
    if not cuda:
        flags += ["--decoder", "dali"]  # DALI's CPU decoder on the VP9 clips: the decode pool, streamed
    return flags


def distinct_copies(clip: Path, n: int, folder: Path) -> list[Path]:
    """`n` copies of `clip`, each remuxed (the same packets) with its own container comment: videos with the same
    frames whose bytes, and so whose digests, differ. A burst of them is n cold requests; n requests of one video
    would share one decode and one vision run (the server computes a video once for its concurrent requests)."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        path = folder / f"copy-{k}{clip.suffix}"
        if not path.exists():
            tmp = path.with_name(f"part-{path.name}")
            with av.open(str(clip)) as src, av.open(str(tmp), "w") as dst:
                ins = src.streams.video[0]
                stream = dst.add_stream_from_template(ins)
                dst.metadata["comment"] = f"burst copy {k}"
                for p in src.demux(ins):
                    if p.dts is None:  # the demuxer's empty end-of-stream packet
                        continue
                    p.stream = stream
                    dst.mux(p)
            tmp.rename(path)
        out.append(path)
    return out


def burst(url: str, videos: list[bytes], gpu_time: dict[str, float], check: Any) -> dict[str, Any]:
    """One cold request per video of `videos`, all at once (one client each): every answer, the latencies, the rate
    against 1 / each GPU time (device kernels, device events, Triton's compute time), NVML's utilisation through the
    burst."""
    from videoitg.client.kserve import VideoITGClient

    errors: list[str] = []
    latency: list[float] = []
    lock = threading.Lock()

    n = len(videos)

    def one(data: bytes) -> None:
        t0 = time.perf_counter()
        try:
            with VideoITGClient(url, protocol="grpc") as c:
                c.infer(data, QUESTION)
            with lock:
                latency.append(time.perf_counter() - t0)
        except Exception as e:  # counted and reported: a failed request is not a throughput
            with lock:
                errors.append(f"{type(e).__name__}: {e}"[:300])

    threads = [threading.Thread(target=one, args=(data,)) for data in videos]
    with Utilisation(check.cuda, check.device.index or 0) as u:
        t0 = time.perf_counter()
        [th.start() for th in threads]
        [th.join() for th in threads]
        wall = time.perf_counter() - t0
    rate = len(latency) / wall
    lat = sorted(latency) or [math.nan]
    # p99 by nearest rank: with 8 or 16 requests, the slowest
    return {"requests": n, "answered": len(latency), "errors": len(errors), "error_texts": errors[:3],
            "wall_s": wall, "requests_per_s": rate,
            "latency_s": {"p50": lat[max(0, math.ceil(0.5 * len(lat)) - 1)],
                          "p99": lat[max(0, math.ceil(0.99 * len(lat)) - 1)], "max": lat[-1]},
            "gpu_floor_requests_per_s": {k: 1 / v for k, v in gpu_time.items() if v > 0},
            "of_gpu_floor": {k: rate * v for k, v in gpu_time.items()}, "utilisation": u.summary()}


# ---- burst_stacks ------------------------------------------------------------------------------------------------
STACK_RATE = 20  # py-spy samples a second, each process


def served_processes(root: int) -> dict[int, str]:
    """{pid: "pid name"} of `videoitg serve` (pid `root`) and every process under it but torch's compile workers:
    tritonserver, each step's python-backend stub (named by its model: instances of one step apart by pid), the
    front."""
    from videoitg.launch import procfs

    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo += procfs.children(pid)
        try:
            args = [a.decode(errors="replace") for a in procfs.argv(pid)]
        except OSError:
            continue
        model = next((a for a in args if a.endswith("model.py")), None)
        name = Path(args[0]).name + " " + (Path(model).parent.parent.name if model else " ".join(args[1:4])[:80])
        if "compile_worker" not in name:
            out[pid] = f"{pid} {name}"
    return out


def cpu_by_thread(pids: dict[int, str]) -> tuple[dict[int, float], dict[tuple[int, int], tuple[str, float]]]:
    """CPU seconds so far of each process of `pids`, and of each of their threads ({(pid, tid): (name, s)})."""
    from videoitg.launch.procfs import stat_file_cpu_s

    procs, threads = {}, {}
    for pid in pids:
        try:
            procs[pid] = stat_file_cpu_s(Path(f"/proc/{pid}/stat"))
        except OSError:
            continue
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                threads[(pid, int(task.name))] = ((task / "comm").read_text().strip(), stat_file_cpu_s(task / "stat"))
            except OSError:
                continue
    return procs, threads


def burst_stacks(check: Any) -> dict[str, Any]:
    """Where a burst of cold requests spends its time, process by process, at each of the check's
    --decode-instances counts: `videoitg serve --target gpu` with that many decode instances (the released shapes,
    random weights: served_e2e's checkpoint) answers one warm-up request, then 8 distinct copies of the 720p clip at
    once; each served process's CPU seconds through the burst (its ended threads too) and its busiest threads' are
    read from /proc, and at the first count, where py-spy is on PATH, every served process's Python threads are
    sampled from 2 s before the burst to its end (`py-spy record --idle --threads`: collapsed stacks, the out
    folder's stacks.txt)."""
    ckpt = check.random_checkpoint("e2e-checkpoint", None)
    clip = e2e_clip(check)
    copies = distinct_copies(clip, BURSTS[0], check.work / "burst-copies")
    spy = shutil.which("py-spy")
    counts = getattr(check.args, "decode_instances", [1])
    out: dict[str, Any] = {"requests": BURSTS[0], "py_spy": spy or "not on PATH: CPU seconds by thread only",
                           "decode_instances": {}}
    for k, count in enumerate(counts):
        if k and not check.affords(check.estimate("burst_stacks")):  # each count serves, warms up and bursts
            out["decode_instances"][str(count)] = {"skipped": budget_note(check)}
            continue
        try:  # a count that fails is its own row: the next still runs
            row = one_burst_stacks(check, ckpt, clip, copies, count, spy if k == 0 else None)
        except Exception as e:
            row = {"error": f"{type(e).__name__}: {e}"[:600]}
        out["decode_instances"][str(count)] = row
        check.progress(out, f"{count} decode instance(s)")
    runs = {c: r for c, r in out["decode_instances"].items() if "burst" in r}
    ok = all(r["burst"]["answered"] == r["burst"]["requests"] and r["vision_executions"] >= r["burst"]["requests"]
             for r in runs.values()) and not any("error" in r for r in out["decode_instances"].values())
    out.update(ok=ok and bool(runs), summary="; ".join(
        f"{c} decode instance(s): {BURSTS[0]} concurrent cold in {r['burst']['wall_s']:.2f} s "
        f"({r['burst']['requests_per_s']:.3g} req/s), p50 {r['burst']['latency_s']['p50']:.2f} s, CPU s by process: "
        + ", ".join(f"{p} {t}" for p, t in sorted(r["cpu_s_by_process"].items(), key=lambda x: -x[1])[:3])
        for c, r in runs.items()))
    return out


def one_burst_stacks(check: Any, ckpt: Path, clip: Path, copies: list[Path], instances: int,
                     spy: str | None) -> dict[str, Any]:
    """burst_stacks at one decode-instance count (`spy`: py-spy's path, or None)."""
    from videoitg.client.kserve import VideoITGClient

    out: dict[str, Any] = {}
    flags = serve_flags(check.cuda, ckpt, [clip, *copies]) + ["--decode-instances", str(instances)]
    proc, url = check._serve(flags, f"stacks-repository-{instances}")
    spies: list[subprocess.Popen] = []
    stacks = check.work / f"stacks-{instances}"
    shutil.rmtree(stacks, ignore_errors=True)  # no file of an earlier run read as this one's
    stacks.mkdir(parents=True)
    try:
        with VideoITGClient(url, protocol="grpc") as client:
            client.infer(clip.read_bytes(), QUESTION)  # first-request setup off the burst
        pids = served_processes(proc.pid)
        out["processes"] = list(pids.values())
        videos = [c.read_bytes() for c in copies]
        if spy:
            spies = [subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", str(STACK_RATE), "--idle", "--threads", "--nonblocking",
                 "--format", "raw", "--output", str(stacks / f"{pid}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for pid in pids]
            time.sleep(2)  # py-spy attached
        stats = StepStats(url)
        steps_before, (procs_before, before) = stats.read(), cpu_by_thread(pids)
        out["burst"] = burst(url, videos, {}, check)
        (procs_after, after), steps_after = cpu_by_thread(pids), stats.read()
        out["vision_executions"] = steps_after[VISION][0] - steps_before[VISION][0]
        for s in spies:
            s.send_signal(signal.SIGINT)
        errors = {pid: s.communicate(timeout=60)[1][-300:] for pid, s in zip(pids, spies, strict=False)}
    finally:
        for s in spies:  # none left behind, whatever ended the burst
            if s.poll() is None:
                s.kill()
                s.wait()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out["cpu_s_by_process"] = {pids[p]: round(t - procs_before.get(p, 0.0), 2) for p, t in procs_after.items()}
    busy: dict[str, list[tuple[float, str]]] = {}
    for key, (comm, cpu) in after.items():
        spent = cpu - before.get(key, (comm, 0.0))[1]
        if spent >= 0.05:
            busy.setdefault(pids[key[0]], []).append((round(spent, 2), f"{key[1]} {comm}"))
    out["cpu_s_by_thread"] = {p: sorted(rows, reverse=True)[:12] for p, rows in busy.items()}
    if spies:
        with open(check.out / "stacks.txt", "w") as f:
            for pid, err in errors.items():
                path = stacks / f"{pid}.txt"
                f.write(f"### {pids[pid]}\n" + (path.read_text() if path.exists() else f"(no stacks: {err})\n"))
    return out
