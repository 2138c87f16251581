"""End to end: a request's whole path (bytes -> frames -> pixels -> scores), ours against the released one,
side by side in one run (results in benchmarks/RESULTS.md, plot in docs/performance.md).

    python -m benchmarks.decode.bench_e2e [--parts pixels rss served] [--reps 1] [--json out.json] [--plot out.png]
    python -m benchmarks.decode.bench_e2e --tiny        # seconds-long version on small clips (the test suite runs it)

The released path, with its own libraries: decord `VideoReader` + `get_avg_fps` + `len` + `get_batch` at the
released sampling (eval rule, 512 frames at 1 fps), PIL images, the HF SigLIP image processor (PIL, as
transformers 4.47 runs it), then for whole requests the HF model with the released settings (`OriginalPath`: all
layers, hidden states kept, batch 1). Ours: `decode_video` (PyAV, keyframe-parallel, uint8 frames) and
`pixel_values` (normalisation where the model runs), and for whole requests the real tritonserver.

Parts (variants interleaved per repetition, so machine load hits them alike):
- pixels: bytes -> SigLIP pixel values at 384 on the 10-minute clips: released (decord decode, preprocessing),
  ours (decode + resize, normalise) with the machine's decoder threads and with one; equality of frame numbers
  and pixels between the two paths; torchcodec and DALI CPU where they can run.
- rss: peak RSS of each path in its own process on the 60-minute 1080p clip.
- served: the whole request through the server (tiny embedded checkpoint) against the released-style request
  in-process with the same weights; a second instruction on the same video (feature-cache hit); throughput at
  concurrency 2 over concurrency 1 (cache off, so every request decodes).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the server's processes (bench_serving.py says why)

import torch
from tqdm import tqdm

from benchmarks.figures import legend_once, save
from benchmarks.suite.suite_time import commit
from videoitg.decode import decode_video
from videoitg.launch.procfs import memory
from videoitg.preprocess import pixel_values
from videoitg.sampling import SamplingParams, sample_frame_indices

ROOT = Path(__file__).resolve().parents[2]

PARAMS = SamplingParams()  # released eval sampling: 512 frames at 1 fps
Q1, Q2 = "When is the red circle visible?", "When does the blue square move?"


# ---- the two paths, bytes -> pixel values ------------------------------------------------------------------------
def siglip_processor(image_size: int):
    """The HF SigLIP processor with siglip-so400m's preprocessor_config values, built locally (no hub)."""
    try:
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as Proc
    except ImportError:  # transformers < 5 names the PIL processor SiglipImageProcessor
        from transformers import SiglipImageProcessor as Proc
    return Proc(do_resize=True, size={"height": image_size, "width": image_size}, resample=3, do_rescale=True,
                rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def released_pixels(path: Path, image_size: int, processor=None) -> tuple[torch.Tensor, list[int], dict]:
    """lmms_eval/models/videoitg.py `load_video` + `image_processor.preprocess`, stage by stage."""
    import decord
    from PIL import Image

    processor = processor or siglip_processor(image_size)
    t0 = time.perf_counter()
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    idx = sample_frame_indices(int(len(vr)), vr.get_avg_fps(), PARAMS)  # = the released get_seq_frames here
    t1 = time.perf_counter()
    frames = vr.get_batch(idx).asnumpy()
    t2 = time.perf_counter()
    images = [Image.fromarray(f) for f in frames]  # from here on: preprocessing
    del frames, vr
    pv = processor(images=images, return_tensors="pt")["pixel_values"]
    t3 = time.perf_counter()
    return pv, idx, {"open": t1 - t0, "decode": t2 - t1, "preprocess": t3 - t2}


def our_pixels(path: Path, image_size: int, workers: int | None = None) -> tuple[torch.Tensor, list[int], dict]:
    t0 = time.perf_counter()
    frames = decode_video(path, image_size=image_size, params=PARAMS, output="uint8", workers=workers,
                          time_budget_s=None)
    t1 = time.perf_counter()
    pv = pixel_values(frames.pixel_values)  # on a GPU this runs there, on the uint8 upload
    t2 = time.perf_counter()
    return pv, frames.frame_indices, {"decode": t1 - t0, "normalise": t2 - t1}


def timed(fn, *args, **kwargs) -> tuple[object, float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def other_decoders(path: Path, idx: list[int]) -> dict[str, dict]:
    """torchcodec and DALI CPU on the same frames, or why they cannot run here."""
    rows: dict[str, dict] = {}
    try:
        from torchcodec.decoders import VideoDecoder

        dec = VideoDecoder(str(path), device="cpu", seek_mode="exact")
        _, wall, cpu = timed(lambda: dec.get_frames_at(indices=idx))
        rows["torchcodec"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    except Exception as e:  # ImportError, or OSError from its native libraries
        rows["torchcodec"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[-1][:200]}"}
    from videoitg.decode import dali_available
    from videoitg.decode.choice import DALI_CPU_CODECS

    rows["dali-cpu"] = {"error": "not installed"} if not dali_available() else \
        {"error": f"H.264 is not among DALI's CPU codecs ({', '.join(sorted(DALI_CPU_CODECS))})"}
    return rows


def part_pixels(clips: dict[str, Path], reps: int, image_size: int) -> dict:
    processor = siglip_processor(image_size)
    out: dict[str, dict] = {}
    for name, path in clips.items():
        runs: dict[str, list[dict]] = {"released": [], "ours": [], "ours_1_thread": []}
        check: dict = {}
        for _ in tqdm(range(reps), desc=f"pixels {name}"):
            (ref, ref_idx, st), wall, cpu = timed(released_pixels, path, image_size, processor)
            runs["released"].append({"wall_s": wall, "cpu_s": cpu, **st})
            ref = ref.clone()
            gc.collect()
            for key, workers in (("ours", None), ("ours_1_thread", 1)):
                (pv, idx, st), wall, cpu = timed(our_pixels, path, image_size, workers)
                runs[key].append({"wall_s": wall, "cpu_s": cpu, **st})
                check[key] = {"frame_numbers_equal": idx == ref_idx, "frames": len(idx),
                              "max_abs_pixel_diff": float((pv - ref).abs().max())}
                del pv
                gc.collect()
            del ref
            gc.collect()
        med = {k: {f: round(statistics.median(r[f] for r in v), 3) for f in v[0]} for k, v in runs.items()}
        rel, ours = med["released"], med["ours"]
        out[name] = {
            "median": med, "checks": check, "other_decoders": other_decoders(path, ref_idx),
            "ratio_ours_over_released": round(ours["wall_s"] / rel["wall_s"], 3),
            "ratio_ours_over_decord_decode": round(ours["wall_s"] / (rel["open"] + rel["decode"]), 3),
            "ratio_parallel_over_one_thread": round(ours["wall_s"] / med["ours_1_thread"]["wall_s"], 3),
        }
        tqdm.write(json.dumps({name: {k: v for k, v in out[name].items() if k.startswith("ratio")}}))
    return out


# ---- peak RSS, one process per path -----------------------------------------------------------------------------
def rss_child(which: str, path: Path, image_size: int) -> dict:
    import transformers  # noqa: F401 - both children import the same libraries before the baseline reading

    before = memory()["VmHWM"] / 2**20  # this process's own peak (`ru_maxrss` would start at its parent's)
    fn = released_pixels if which == "released" else our_pixels
    (pv, idx, st), wall, cpu = timed(fn, path, image_size)
    peak = memory()["VmHWM"] / 2**20
    return {"path": which, "frames": len(idx), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "rss_after_imports_mb": round(before), "peak_rss_mb": round(peak),
            **{k: round(v, 2) for k, v in st.items()}}


def part_rss(path: Path, image_size: int) -> dict:
    out = {}
    for which in ("ours", "released"):
        r = subprocess.run([sys.executable, "-m", "benchmarks.decode.bench_e2e", "--rss-child", which, "--rss-clip",
                            str(path), "--image-size", str(image_size)], capture_output=True, text=True, timeout=3600,
                           cwd=ROOT)
        if r.returncode != 0:
            out[which] = {"error": r.stderr[-1000:]}
            continue
        out[which] = json.loads(r.stdout.strip().splitlines()[-1])
        tqdm.write(json.dumps(out[which]))
    if "peak_rss_mb" in out.get("ours", {}) and "peak_rss_mb" in out.get("released", {}):
        out["ratio_peak_rss_ours_over_released"] = round(out["ours"]["peak_rss_mb"] / out["released"]["peak_rss_mb"], 3)
    return out


# ---- served: whole requests through tritonserver -------------------------------------------------------------------
def released_request(model, ids: torch.Tensor, path: Path, image_size: int, processor) -> dict:
    """The released whole request: decord + processor, then the HF model at batch 1 on its device, then the ranking
    (read back to the host, as the released code does)."""
    t0 = time.perf_counter()
    pv, idx, st = released_pixels(path, image_size, processor)
    t1 = time.perf_counter()
    with torch.inference_mode():
        logits = model(pv.to(model.out_proj.weight.device, model.dtype), ids)
    torch.sort(torch.sigmoid(logits.half()), descending=True, stable=True).indices.tolist()
    t2 = time.perf_counter()
    return {"wall_s": t2 - t0, "model_s": t2 - t1, **st, "logits": logits.float().cpu(), "frame_indices": idx}


def wide_tower_checkpoint(out: Path) -> Path:
    """The tiny checkpoint's shape with a tower that costs about as much as decoding (224 px, 256 patches a frame,
    width 192): where overlapping decode with the tower can show on a CPU. Random weights."""
    from videoitg.config import VisionConfig, preset
    from videoitg.train.tiny_tokenizer import build_tiny_checkpoint, build_tiny_tokenizer

    cfg = preset("tiny", vocab_size=len(build_tiny_tokenizer()))
    cfg.vision = VisionConfig(image_size=224, patch_size=14, hidden_size=192, intermediate_size=768,
                              num_hidden_layers=3, num_attention_heads=4)
    return build_tiny_checkpoint(out, cfg=cfg)


def part_served(clips: dict[str, Path], reps: int, concurrency_requests: int, decode_budget_s: float,
                tower: str = "tiny") -> dict:
    from benchmarks.perf.build import build_baseline
    from benchmarks.serving.bench_serving import NOCACHE, TOP_LEVELS, UNSTREAMED, build_bench_repository
    from videoitg.client.kserve import VideoITGClient
    from videoitg.contract.protocol import TOP
    from videoitg.defaults import default_checkpoint
    from videoitg.launch.server import ServerOptions, TritonServer
    from videoitg.pipeline.scorer import Scorer
    from videoitg.repository.generator import RepoSpec
    from videoitg.request.limits import Limits

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        ckpt = default_checkpoint() if tower == "tiny" else wide_tower_checkpoint(Path(tmp) / "wide")
        scorer = Scorer(ckpt)
        cfg, size = scorer.config, scorer.config.vision.image_size
        base = build_baseline(cfg, torch.device("cpu"), torch.float32, scorer.model.state_dict())
        processor = siglip_processor(size)
        ids = scorer.encode(Q1)
        out: dict = {"commit": commit(), "image_size": size, "tower": tower}
        spec = RepoSpec(target="cpu", checkpoint=str(ckpt) if tower != "tiny" else "default",
                        limits=Limits(decode_time_budget_s=decode_budget_s))
        repo = build_bench_repository(Path(tmp) / "repo", spec)
        t0 = time.perf_counter()
        with TritonServer(repo, ServerOptions(models=TOP_LEVELS), log_path=Path(tmp) / "server.log") as server:
            out["server_start_s"] = round(time.perf_counter() - t0, 1)
            cold = VideoITGClient(server.grpc_url, "grpc", model=NOCACHE)
            unstreamed = VideoITGClient(server.grpc_url, "grpc", model=UNSTREAMED)
            hit = VideoITGClient(server.grpc_url, "grpc", model=TOP)
            for c in (cold, unstreamed):  # warm-up: first-request imports in the stubs
                c.infer(next(iter(clips.values())), Q1)
            for name, path in clips.items():
                rows: dict[str, list[float]] = {"released": [], "served_cold": [], "served_cold_unstreamed": [],
                                                "served_hit": []}
                for _ in tqdm(range(reps), desc=f"served {name}"):
                    r = released_request(base, ids, path, size, processor)
                    rows["released"].append(r["wall_s"])
                    t = time.perf_counter()
                    served = cold.infer(path.read_bytes(), Q1)
                    rows["served_cold"].append(time.perf_counter() - t)
                    max_diff = float((torch.tensor(served.result.logits) - r["logits"]).abs().max())
                    t = time.perf_counter()
                    once = unstreamed.infer(path.read_bytes(), Q1)
                    rows["served_cold_unstreamed"].append(time.perf_counter() - t)
                    max_diff = max(max_diff, float((torch.tensor(once.result.logits) - r["logits"]).abs().max()))
                    t = time.perf_counter()
                    first = hit.infer(path.read_bytes(), Q1)  # first instruction on the caching model
                    if not first.cache_hit:  # a miss is one more cold request (the later repetitions hit)
                        rows["served_cold"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    h = hit.infer(path.read_bytes(), Q2)
                    rows["served_hit"].append(time.perf_counter() - t)
                    assert h.cache_hit
                med = {k: round(statistics.median(v), 3) for k, v in rows.items()}
                out[name] = {"median_s": med, "max_abs_logit_diff_served_vs_released": max_diff,
                             "ratio_served_over_released": round(med["served_cold"] / med["released"], 3),
                             "ratio_streamed_over_unstreamed": round(med["served_cold"] /
                                                                     med["served_cold_unstreamed"], 3),
                             "ratio_hit_over_cold": round(med["served_hit"] / med["served_cold"], 4)}
                tqdm.write(json.dumps({name: out[name]}))
            first = next(iter(clips))  # the decode-bound 720p clip (the 1080p one would take many minutes)
            out["throughput"] = {"clip": first,
                                 **throughput(server, NOCACHE, {first: clips[first]}, concurrency_requests)}
            cold.close(), unstreamed.close(), hit.close()
    return out


def throughput(server, model: str, clips: dict[str, Path], n: int) -> dict:
    """Requests per second with 1 and 2 clients, each sending `n` requests (cache off: every one decodes)."""
    from videoitg.client.kserve import VideoITGClient

    data = [p.read_bytes() for p in clips.values()]
    res = {}
    for conc in (1, 2, 1, 2):  # twice, interleaved
        def client(k: int) -> None:
            with VideoITGClient(server.grpc_url, "grpc", model=model) as c:
                for i in range(n):
                    c.infer(data[(i + k) % len(data)], Q1)

        t = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(conc)]
        [th.start() for th in threads]
        [th.join() for th in threads]
        res.setdefault(conc, []).append(conc * n / (time.perf_counter() - t))
    best = {c: max(v) for c, v in res.items()}
    return {"requests_per_s": {str(c): [round(x, 3) for x in v] for c, v in res.items()},
            "ratio_concurrency_2_over_1": round(best[2] / best[1], 3), "requests_per_client": n}


# ---- picture -----------------------------------------------------------------------------------------------------
def plot(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    px = result.get("pixels", {})
    fig, axes = plt.subplots(len(px), 1, figsize=(10, 2.1 * len(px) + 0.8), squeeze=False)
    colours = {"open": "#bbbbbb", "decode": "#4c72b0", "preprocess": "#dd8452", "normalise": "#55a868"}
    for ax, (name, r) in zip(axes[:, 0], px.items(), strict=True):
        rows = [("released: decord, HF processor", r["median"]["released"]),
                ("ours, 1 decoder: decode+resize, normalise", r["median"]["ours_1_thread"]),
                ("ours, GOP-parallel", r["median"]["ours"])]
        longest = max(sum(v for k, v in st.items() if k in colours) for _, st in rows)
        ax.set_xlim(0, longest * 1.12)
        for y, (_, st) in enumerate(rows):
            left = 0.0
            for stage in ("open", "decode", "preprocess", "normalise"):
                if stage in st:
                    ax.barh(y, st[stage], left=left, color=colours[stage], label=stage if y == 0 or
                            stage == "normalise" else None)
                    left += st[stage]
            ax.text(left, y, f" {left:.1f} s", va="center", fontsize=8)
        ax.set_yticks(range(len(rows)), [lab for lab, _ in rows], fontsize=8)
        ax.set_title(f"{name}: bytes -> SigLIP pixels, 512 frames at 384 px "
                     f"(ours / released = {r['ratio_ours_over_released']:.2f})", fontsize=9)
        ax.set_xlabel("seconds (wall, median)", fontsize=8)
        legend_once(ax, fontsize=7, loc="upper right", ncol=4)
    return save(fig, out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["pixels", "rss", "served"])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--clips", nargs="+", default=["720p10-ultrafast", "1080p30-bframes"],
                    help="clips of benchmarks/decode/e2e_clips.py for the pixels and served parts")
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--concurrency-requests", type=int, default=2, help="requests per client in the throughput run")
    ap.add_argument("--tower", choices=["tiny", "wide"], default="tiny",
                    help="served part: the embedded tiny checkpoint, or one whose tower costs about as much as the "
                         "decode (`wide_tower_checkpoint`), where the decode/tower overlap can show")
    ap.add_argument("--tiny", action="store_true", help="small clips and sizes: checks the script runs, times nothing")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--rss-child", choices=["ours", "released"], help=argparse.SUPPRESS)
    ap.add_argument("--rss-clip", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        child = rss_child(args.rss_child, args.rss_clip, args.image_size)
        print(json.dumps(child))
        return child
    if args.tiny:
        from benchmarks.clips import write_natural_clip

        with tempfile.TemporaryDirectory(prefix="bench-e2e-tiny-") as d:
            tmp = Path(d)
            small = {"tiny-a": write_natural_clip(tmp / "a.mp4", frames=40, width=96, height=64, gop=10),
                     "tiny-b": write_natural_clip(tmp / "b.mp4", frames=30, width=80, height=48, gop=8,
                                                  options={"preset": "medium"})}
            args.image_size = 32
            return run(args, small, small["tiny-a"])
    from benchmarks.decode.e2e_clips import clip

    return run(args, {n: clip(n) for n in args.clips}, clip("1080p30-60min"))


def run(args: argparse.Namespace, clips: dict[str, Path], rss_clip: Path) -> dict:
    """The parts `args.parts` on `clips` (the RSS part on `rss_clip`), written and drawn where `args` says."""
    result: dict = {"device": f"{os.cpu_count()} CPU cores", "load_avg_before": os.getloadavg(),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit()}
    if "pixels" in args.parts:
        result["pixels"] = part_pixels(clips, args.reps, args.image_size)
    if "rss" in args.parts:
        result["rss"] = part_rss(rss_clip, args.image_size)
    if "served" in args.parts:
        result["served"] = part_served(clips, args.reps, args.concurrency_requests,
                                       decode_budget_s=60 if args.tiny else 1800, tower=args.tower)
    result["load_avg_after"] = os.getloadavg()
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if args.plot and "pixels" in result:
        print(f"plot: {plot(result, args.plot)}")
    return result


if __name__ == "__main__":
    main()
