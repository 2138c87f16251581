"""The GPU hot path of one grounding request against the original inference, in one run (one device call).

    python3 benchmarks/bench_gpu_path.py --out $OUT/gpu_path.json            # real sizes, on a lent H100/H200
    python3 benchmarks/bench_gpu_path.py --tiny --device cpu                  # tiny shapes, seconds (the tests)

Real sizes = SigLIP-so400m-384 and Qwen2-7B shapes with random weights of the benchmark dtype (cost does not depend
on weight values; `--checkpoint DIR` loads real ones). Measured, in order:
 1. environment; the bf16 (and FP8) matmul rate of this device; the FLOP count of each request -> the floor.
 2. our path (core `VideoITG`, bf16, SigLIP cut at the select layer, no hidden states kept, SDPA): cold request
    (frames already on the device) and cached-video request (LLM only) for each T; peak memory next to the memory
    model; achieved TFLOP/s; host enqueue time; vision chunk sweep; pinned vs pageable upload of the frames.
 3. throughput with 1/2/4 requests in flight (threads on their own CUDA streams, and one padded batch);
    micro-benchmarks of changes proposed for the core model (GELU in the GEMM epilogue, SDPA enable_gqa).
 4. optional: `torch.compile` of every layer; FP8 GEMMs (`torch._scaled_mm`) with top-32 overlap vs bf16.
 5. the baseline: the original path (HF SiglipVisionModel, all layers, output_hidden_states=True, chunks of 384;
    projector; HF Qwen2Model non-causal with output_hidden_states=True; fp16), the same weights; speed-up and
    score agreement with our path.
flash-attn is not installable in this workplace: both paths use PyTorch SDPA (its own flash kernels on CUDA).
Prints a table last; writes every number to --out as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.perf.baseline import check_bidirectional  # noqa: E402
from benchmarks.perf.build import build_baseline, build_ours  # noqa: E402
from benchmarks.perf.compare import score_agreement  # noqa: E402
from benchmarks.perf.flops import request_flops, sequence_length  # noqa: E402
from benchmarks.perf.memory import request_memory  # noqa: E402
from benchmarks.perf.timing import fp8_matmul_rate, matmul_rate, median, synchronize, time_calls  # noqa: E402
from videoitg.config import VideoITGConfig, preset  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny config and sizes (CPU smoke run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", default=None, help="comma-separated T values (default 64,128,256,512; tiny 8,16)")
    p.add_argument("--instruction-len", type=int, default=None, help="instruction tokens (default 150; tiny 10)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="our path (default bf16; tiny fp32)")
    p.add_argument("--baseline-dtype", choices=sorted(DTYPES), default=None, help="default fp16; tiny fp32")
    p.add_argument("--chunk", type=int, default=64, help="frames per vision-tower call on our path")
    p.add_argument("--chunk-sweep", default=None, help="chunk sizes to time the vision tower with (default 32..256)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default 3; tiny 1)")
    p.add_argument("--inflight", default="1,2,4", help="requests in flight for the throughput test")
    p.add_argument("--fp8", choices=["auto", "on", "off"], default="auto",
                   help="auto: on where the device has FP8 tensor cores (sm_89+) and in --tiny")
    p.add_argument("--compile", action="store_true", help="also time our path with every layer torch.compile'd")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--baseline-frames", default=None, help="T values for the baseline (default: all of --frames)")
    p.add_argument("--checkpoint", default=None, help="load real weights from a checkpoint directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the full report here (JSON)")
    p.add_argument("--strict", action="store_true", help="fail on the first error instead of recording it")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (tiny default 1: tiny ops gain nothing from more, and on a shared machine "
                        "OpenMP barriers between busy cores cost more than the ops)")
    return p.parse_args(argv)


def topk_for(t: int) -> int:
    """Top-32 as downstream consumers use it; for short videos a quarter of the frames, so the overlap can still
    fail (top-32 of 16 frames is every frame)."""
    return 32 if t >= 128 else max(1, t // 4)


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


# ---- measurement pieces -----------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": str(device), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    try:
        import flash_attn  # noqa: F401

        env["flash_attn"] = "installed (not used: both paths use SDPA)"
    except ImportError:
        env["flash_attn"] = "not installed (not installable here): both paths use PyTorch SDPA"
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        env.update(gpu=prop.name, sm_count=prop.multi_processor_count, capability=f"{prop.major}.{prop.minor}",
                   memory_gb=round(prop.total_memory / 1e9, 1), cuda=torch.version.cuda)
    else:
        env.update(cpu_threads=torch.get_num_threads())
    return env


def peak_during(fn: Callable[[], object], device: torch.device) -> dict[str, float] | None:
    """Peak allocated bytes while `fn` runs once (None on CPU, where torch keeps no such counter)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_gb": peak / 1e9, "resident_before_gb": before / 1e9, "activation_peak_gb": (peak - before) / 1e9}


def sdpa_flash_usable(model: Any, cfg: VideoITGConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Run a small cold request with SDPA restricted to its flash kernel: proves both towers' attention shapes
    (SigLIP head_dim 72, Qwen2 head_dim 128, no mask) take the flash path."""
    if device.type != "cuda":
        return {"checked": False, "why": "CPU run"}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    s = cfg.vision.image_size
    px = torch.randn(4, 3, s, s, device=device).to(dtype)
    ids = torch.randint(0, cfg.text.vocab_size, (8,), device=device)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            model.score_features([model.visual_features(px)], [ids])
        synchronize(device)
        return {"checked": True, "flash_only_ok": True}
    except RuntimeError as e:
        return {"checked": True, "flash_only_ok": False, "error": str(e)[:300]}


def upload_bandwidth(shape: tuple[int, ...], device: torch.device) -> dict[str, Any] | None:
    """Host -> device copy of one request's frames. fp32 pageable is what a decoder hands over today; bf16 and
    uint8 (normalise on the device) from pinned memory with non_blocking are the alternatives. CUDA only."""
    if device.type != "cuda":
        return None
    out: dict[str, Any] = {}
    base = torch.rand(shape) * 2 - 1
    for label, dtype, pinned in [("fp32_pageable", torch.float32, False), ("bf16_pageable", torch.bfloat16, False),
                                 ("bf16_pinned", torch.bfloat16, True), ("uint8_pinned", torch.uint8, True)]:
        host = ((base + 1) * 127.5).to(dtype) if dtype == torch.uint8 else base.to(dtype)
        host = host.pin_memory() if pinned else host
        secs = median(time_calls(lambda h=host, p=pinned: h.to(device, non_blocking=p), device, 1, 3))
        nbytes = host.numel() * host.element_size()
        out[label] = {"bytes": nbytes, "s": secs, "gbps": nbytes / secs / 1e9}
    return out


def inflight_throughput(
    run_one: Callable[[], object], n: int, rounds: int, device: torch.device
) -> dict[str, float]:
    """n threads, each issuing `rounds` requests back to back on its own CUDA stream (what n model instances in
    one server process do). Requests/s over the wall time of all of them."""
    streams = [torch.cuda.Stream(device) if device.type == "cuda" else None for _ in range(n)]

    def worker(i: int) -> None:
        with torch.inference_mode(), (torch.cuda.stream(streams[i]) if streams[i] is not None else nullcontext()):
            for _ in range(rounds):
                run_one()

    for i in range(n):  # warm each stream's allocator pool
        worker_once = threading.Thread(target=lambda i=i: _once(run_one, streams[i]))
        worker_once.start()
        worker_once.join()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    synchronize(device)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return {"in_flight": n, "requests": n * rounds, "wall_s": wall, "requests_per_s": n * rounds / wall,
            "peak_gb": peak}


def _once(run_one: Callable[[], object], stream: Any) -> None:
    with torch.inference_mode(), (torch.cuda.stream(stream) if stream is not None else nullcontext()):
        run_one()


def compile_layers(model: Any) -> int:
    """torch.compile every vision and decoder layer in place (names unchanged). Returns how many."""
    layers = list(model.model.vision_tower.vision_tower.vision_model.encoder.layers) + list(model.model.layers)
    for layer in layers:
        layer.compile(dynamic=False)
    return len(layers)


# ---- the run ----------------------------------------------------------------------------------------------------
class Report(dict):
    """The run's results; every top-level section is written to `path` as it lands, so a run cut short by the
    device call's time limit still brings back what it measured."""

    def __init__(self, path: str | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if self.path:
            self.path.write_text(json.dumps(self, indent=1, default=str) + "\n")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tiny = args.tiny
        self.device = torch.device(args.device)
        self.cfg = preset("tiny") if self.tiny else VideoITGConfig()
        self.frames = ints(args.frames) if args.frames else ([8, 16] if self.tiny else [64, 128, 256, 512])
        self.instr = args.instruction_len if args.instruction_len is not None else (10 if self.tiny else 150)
        self.dtype = DTYPES[args.dtype or ("fp32" if self.tiny else "bf16")]
        self.base_dtype = DTYPES[args.baseline_dtype or ("fp32" if self.tiny else "fp16")]
        self.iters = args.iters or (1 if self.tiny else 3)
        self.report = Report(args.out)
        self.report["args"] = vars(args)
        g = torch.Generator(device="cpu").manual_seed(args.seed)
        s = self.cfg.vision.image_size
        # Inputs drawn once on the host (same frames for every path); pixels in the range SigLIP preprocessing gives.
        self.pixels_host = {t: (torch.rand(t, 3, s, s, generator=g) * 2 - 1) for t in self.frames}
        self.ids_host = torch.randint(0, self.cfg.text.vocab_size, (self.instr,), generator=g)
        self.rate = 0.0

    def pixels(self, t: int, dtype: torch.dtype) -> torch.Tensor:
        return self.pixels_host[t].to(self.device, dtype)

    def run(self) -> dict[str, Any]:
        """Process-wide torch settings are restored afterwards: the tests run this inside the suite's process."""
        threads_before = torch.get_num_threads()
        threads = self.args.threads or (1 if self.tiny else None)
        if threads:
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return self._run()
        finally:
            torch.set_num_threads(threads_before)

    def _run(self) -> dict[str, Any]:
        a, dev = self.args, self.device
        self.report["env"] = environment(dev)
        log(f"env: {self.report['env']}")
        n = 256 if self.tiny else 8192
        self.rate = matmul_rate(dev, torch.bfloat16 if dev.type == "cuda" else self.dtype, n, iters=3 if self.tiny
                                else 20)
        fp8_rate = fp8_matmul_rate(dev, n, iters=3 if self.tiny else 20) if dev.type == "cuda" else None
        self.report["matmul"] = {"n": n, "dtype": "bf16" if dev.type == "cuda" else str(self.dtype),
                                 "tflops": self.rate / 1e12, "fp8_tflops": fp8_rate / 1e12 if fp8_rate else None}
        log(f"matmul rate {self.rate / 1e12:.3g} TFLOP/s (fp8 {fp8_rate and fp8_rate / 1e12})")
        self.report["flops"] = {t: {"ours": request_flops(self.cfg, t, self.instr).as_dict(),
                                    "baseline": request_flops(self.cfg, t, self.instr, "baseline").as_dict(),
                                    "cached": request_flops(self.cfg, t, self.instr, cached_video=True).as_dict(),
                                    "seq_len": sequence_length(self.cfg, t, self.instr)} for t in self.frames}

        model = build_ours(self.cfg, dev, self.dtype, a.seed, a.checkpoint)
        self.report["sdpa_flash"] = sdpa_flash_usable(model, self.cfg, dev, self.dtype)
        ours_scores = self.measure_ours(model, "ours")
        self.report["chunk_sweep"] = self.chunk_sweep(model)
        self.report["upload"] = upload_bandwidth(tuple(self.pixels_host[max(self.frames)].shape), dev)
        self.report["throughput"] = self.throughput(model)
        self.report["micro"] = self.guarded("micro", self.micro)
        if a.compile:
            self.report["compiled"] = self.guarded("compile", self.measure_compiled, model, ours_scores)

        # The baseline borrows our weights (same function, comparable scores); FP8 rebuilds from the seed after.
        state = None if a.skip_baseline else dict(model.state_dict())
        del model
        self.free()
        if state is not None:
            self.report["baseline"] = self.guarded("baseline", self.measure_baseline, state, ours_scores)
            state = None
            self.free()
        if self.fp8_enabled():
            self.report["fp8"] = self.guarded("fp8", self.measure_fp8, ours_scores)
        self.report["summary"] = self.summary()
        return self.report

    def guarded(self, what: str, fn: Callable[..., dict[str, Any]], *fn_args: Any) -> dict[str, Any]:
        """Run an optional section; on failure record the error and keep the rest of the run (one device call
        must still bring back every other number). --strict (the tests) re-raises."""
        try:
            return fn(*fn_args)
        except Exception as e:
            if self.args.strict:
                raise
            log(f"{what} failed: {e!r}")
            self.free()
            return {"error": repr(e)[:800]}

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def fp8_enabled(self) -> bool:
        if self.args.fp8 == "off":
            return False
        if self.args.fp8 == "on" or self.tiny:
            return True
        return self.device.type == "cuda" and torch.cuda.get_device_capability(self.device) >= (8, 9)

    def measure_ours(self, model: Any, label: str, frames: list[int] | None = None) -> dict[int, torch.Tensor]:
        """Cold and cached latency, peak memory, achieved rate for each T. Returns the logits (on the host)."""
        dev, chunk, rows, scores = self.device, self.args.chunk, {}, {}
        ids = self.ids_host.to(dev)
        for t in self._progress(frames or self.frames, label):
            px = self.pixels(t, self.dtype)

            def cold(px: torch.Tensor = px) -> torch.Tensor:
                return model.score_features([model.visual_features(px, chunk_frames=chunk)], [ids])[0]

            cold_s = time_calls(cold, dev, warmup=1, iters=self.iters)
            t0 = time.perf_counter()
            out = cold()  # host time to enqueue every kernel of one request (no sync inside the call)
            enqueue_s = time.perf_counter() - t0
            synchronize(dev)
            scores[t] = out.float().cpu()
            mem_cold = peak_during(cold, dev)
            vis = model.visual_features(px, chunk_frames=chunk)
            cached_s = time_calls(lambda vis=vis: model.score_features([vis], [ids])[0], dev, 1, self.iters)
            mem_cached = peak_during(lambda vis=vis: model.score_features([vis], [ids]), dev)
            f = self.report["flops"][t]
            est = request_memory(self.cfg, t, self.instr, "ours", chunk=chunk, dtype_bytes=self.dtype.itemsize)
            est_cached = request_memory(self.cfg, t, self.instr, "ours", chunk=chunk,
                                        dtype_bytes=self.dtype.itemsize, cached_video=True)
            cold_med, cached_med = median(cold_s), median(cached_s)
            rows[t] = {
                "cold_s": cold_med, "cold_all_s": cold_s, "cached_s": cached_med, "cached_all_s": cached_s,
                "host_enqueue_s": enqueue_s,
                "floor_s": f["ours"]["total"] / self.rate, "cached_floor_s": f["cached"]["total"] / self.rate,
                "cold_over_floor": cold_med / (f["ours"]["total"] / self.rate),
                "cached_over_floor": cached_med / (f["cached"]["total"] / self.rate),
                "achieved_tflops": f["ours"]["total"] / cold_med / 1e12,
                "cached_achieved_tflops": f["cached"]["total"] / cached_med / 1e12,
                "memory_cold": mem_cold, "memory_cached": mem_cached,
                "memory_model_peak_gb": est.peak / 1e9, "memory_model_cached_peak_gb": est_cached.peak / 1e9,
            }
            log(f"{label} T={t}: cold {cold_med * 1e3:.1f} ms, cached {cached_med * 1e3:.1f} ms, "
                f"{rows[t]['achieved_tflops']:.1f} TFLOP/s, peak {mem_cold and round(mem_cold['peak_gb'], 2)} GB")
            del vis, px
        self.report[label] = rows
        return scores

    def micro(self) -> dict[str, Any]:
        """Changes proposed for the core model, timed in isolation (docs/performance.md)."""
        from benchmarks.perf.micro import gqa_attention, siglip_mlp_gelu_epilogue

        it = 2 if self.tiny else 10
        res = {"siglip_mlp_gelu_epilogue": siglip_mlp_gelu_epilogue(self.cfg, self.args.chunk, self.device,
                                                                    self.dtype, it),
               "gqa_attention": gqa_attention(self.cfg, max(self.frames), self.instr, self.device, self.dtype, it)}
        log(f"micro: {res}")
        return res

    def chunk_sweep(self, model: Any) -> dict[int, float]:
        t = max(self.frames)
        sizes = ints(self.args.chunk_sweep) if self.args.chunk_sweep else ([4, 8] if self.tiny else [32, 64, 128, 256])
        px = self.pixels(t, self.dtype)
        out = {}
        for c in sizes:
            out[c] = median(time_calls(lambda c=c: model.encode_frames(px, chunk_frames=c), self.device, 1, self.iters))
            log(f"vision tower T={t} chunk={c}: {out[c] * 1e3:.1f} ms")
        return out

    def throughput(self, model: Any) -> dict[str, Any]:
        t, chunk, dev = max(self.frames), self.args.chunk, self.device
        px, ids = self.pixels(t, self.dtype), self.ids_host.to(dev)

        def one() -> object:
            return model.score_features([model.visual_features(px, chunk_frames=chunk)], [ids])

        res: dict[str, Any] = {"frames": t, "streams": [], "batched": []}
        for n in ints(self.args.inflight):
            res["streams"].append(inflight_throughput(one, n, rounds=1 if self.tiny else 2, device=dev))

            def batched(n: int = n) -> object:
                vis = [model.visual_features(px, chunk_frames=chunk) for _ in range(n)]
                return model.score_features(vis, [ids] * n)

            secs = median(time_calls(batched, dev, 1, 1 if self.tiny else 2))
            res["batched"].append({"in_flight": n, "wall_s": secs, "requests_per_s": n / secs,
                                   "memory": peak_during(batched, dev)})
            log(f"in flight {n}: streams {res['streams'][-1]['requests_per_s']:.2f} req/s, "
                f"batched {n / secs:.2f} req/s")
        return res

    def measure_compiled(self, model: Any, ref: dict[int, torch.Tensor]) -> dict[str, Any]:
        t = max(self.frames)
        t0 = time.perf_counter()
        n = compile_layers(model)
        scores = self.measure_ours(model, "ours_compiled", frames=[t])  # the warm-up call pays the compile
        return {"layers": n, "wall_incl_compile_s": time.perf_counter() - t0,
                "agreement": score_agreement(ref[t], scores[t], k=topk_for(t))}

    def measure_fp8(self, ref: dict[int, torch.Tensor]) -> dict[str, Any]:
        """FP8 GEMMs swapped into a fresh copy of our model (same seed, same weights). The main variant (both
        towers) runs at every T; the others only at the largest T, to show where the time goes."""
        from benchmarks.perf.fp8 import convert_linears_to_fp8, default_fp8_filter, llm_only_filter

        a, big = self.args, max(self.frames)
        compiled = self.device.type == "cuda"  # fused quantisation; CPU inductor would need a C++ toolchain
        variants = [
            ("ours_fp8", default_fp8_filter, False, self.frames),
            ("ours_fp8_llm_only", llm_only_filter, False, [big]),
            ("ours_fp8_fast_accum", default_fp8_filter, True, [big]),
        ]
        res: dict[str, Any] = {"granularity": "row (per token x per output channel)", "compiled_quant": compiled,
                               "note": "random weights unless --checkpoint: overlap measures numerics, "
                                       "not the checkpoint's accuracy"}
        for label, include, fast, frames in variants if not self.tiny else variants[:1]:
            model = build_ours(self.cfg, self.device, self.dtype, a.seed, a.checkpoint)
            names = convert_linears_to_fp8(model, include, "row", fast_accum=fast, compiled_quant=compiled)
            try:
                scores = self.measure_ours(model, label, frames=frames)
            finally:
                del model
                self.free()
            res[label] = {"converted_linears": len(names), "fast_accum": fast,
                          "agreement": {t: score_agreement(ref[t], scores[t], k=topk_for(t)) for t in frames}}
        return res

    def measure_baseline(self, state: dict[str, torch.Tensor], ours: dict[int, torch.Tensor]) -> dict[str, Any]:
        dev, a = self.device, self.args
        base = build_baseline(self.cfg, dev, self.base_dtype, state)
        state.clear()  # drop our weights before the baseline's activations need the room
        self.free()
        res: dict[str, Any] = {"dtype": str(self.base_dtype), "chunk": base.chunk,
                               "bidirectional": check_bidirectional(base.llm), "rows": {}}
        if not res["bidirectional"]:
            raise RuntimeError("HF Qwen2Model ran causally despite is_causal=False: the baseline would be wrong")
        ids = self.ids_host.to(dev)
        for t in self._progress(ints(a.baseline_frames) if a.baseline_frames else self.frames, "baseline"):
            px = self.pixels(t, self.base_dtype)
            cold_s = time_calls(lambda px=px: base(px, ids), dev, warmup=1, iters=max(1, self.iters - 1))
            scores = base(px, ids).float().cpu()
            mem = peak_during(lambda px=px: base(px, ids), dev)
            vis = base.project(base.encode_frames(px))
            cached_s = time_calls(lambda vis=vis: base.score_visual(vis, ids), dev, 1, max(1, self.iters - 1))
            f = self.report["flops"][t]
            est = request_memory(self.cfg, t, self.instr, "baseline", chunk=base.chunk,
                                 dtype_bytes=self.base_dtype.itemsize)
            row = {"cold_s": median(cold_s), "cached_s": median(cached_s), "memory_cold": mem,
                   "memory_model_peak_gb": est.peak / 1e9,
                   "achieved_tflops": f["baseline"]["total"] / median(cold_s) / 1e12,
                   "agreement_with_ours": score_agreement(ours[t], scores, k=topk_for(t)) if t in ours else None}
            if t in self.report.get("ours", {}):
                mine = self.report["ours"][t]
                row["speedup_cold"] = row["cold_s"] / mine["cold_s"]
                row["speedup_cached"] = row["cached_s"] / mine["cached_s"]
            res["rows"][t] = row
            log(f"baseline T={t}: cold {row['cold_s'] * 1e3:.1f} ms, speed-up {row.get('speedup_cold', 0):.2f}x")
            del vis, px
        return res  # the caller frees the baseline's weights

    def _progress(self, items: list[int], label: str) -> Any:
        try:
            from tqdm import tqdm

            return tqdm(items, desc=label, file=sys.stderr, disable=self.tiny)
        except ImportError:
            return items

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        base = self.report.get("baseline", {}).get("rows", {})
        fp8 = self.report.get("ours_fp8", {})
        comp = self.report.get("ours_compiled", {})
        for t, r in self.report["ours"].items():
            rows.append({
                "T": t, "floor_ms": r["floor_s"] * 1e3, "cold_ms": r["cold_s"] * 1e3,
                "cold/floor": r["cold_over_floor"], "cached_ms": r["cached_s"] * 1e3,
                "TFLOP/s": r["achieved_tflops"],
                "peak_GB": r["memory_cold"]["peak_gb"] if r["memory_cold"] else None,
                "model_GB": r["memory_model_peak_gb"],
                "compiled_cold_ms": comp[t]["cold_s"] * 1e3 if t in comp else None,
                "fp8_cold_ms": fp8[t]["cold_s"] * 1e3 if t in fp8 else None,
                "base_cold_ms": base[t]["cold_s"] * 1e3 if t in base else None,
                "base_peak_GB": base[t]["memory_cold"]["peak_gb"] if t in base and base[t]["memory_cold"] else None,
                "speedup": base[t].get("speedup_cold") if t in base else None,
            })
        return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    fmt = lambda v: "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = Bench(args).run()  # written to --out section by section
    env = report["env"]
    print(f"\ndevice: {env.get('gpu', env['device'])}  torch {env['torch']}  date {env['date_utc']} UTC  "
          f"matmul {report['matmul']['tflops']:.3g} TFLOP/s  flash-attn: {env['flash_attn']}")
    print(format_table(report["summary"]))
    thr = report["throughput"]
    print(f"in flight (T={thr['frames']}): " + ", ".join(
        f"{s['in_flight']}: {s['requests_per_s']:.2f} req/s streams / {b['requests_per_s']:.2f} batched"
        for s, b in zip(thr["streams"], thr["batched"], strict=True)))
    return report


if __name__ == "__main__":
    main()
