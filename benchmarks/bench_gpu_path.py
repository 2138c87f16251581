"""The GPU hot path of one grounding request against the released inference, in one run (one device call).

    python3 benchmarks/bench_gpu_path.py --out $OUT/bench.json          # real sizes, on an H100/H200
    python3 benchmarks/bench_gpu_path.py --tiny --device cpu            # tiny shapes, seconds (the tests)

Real sizes = SigLIP-so400m-384 and Qwen2-7B shapes with random weights (cost does not depend on weight values;
`--checkpoint DIR` loads real ones). Sections (`--sections`, in this order):
  env        torch / CUDA / cuDNN versions, SDPA priority order, GPU name, SM count, clocks, power limit.
  rates      bf16 GEMM rate (8192^3, >= 50 warm-up and >= 100 timed products over 3 input sets), FP8 GEMM rate,
             and every SDPA kernel at the real attention shapes: runs or not, time, TFLOP/s, error against an
             fp32 reference (12,950 and 729 tokens: not multiples of 128). The floor of each T is
             GEMM FLOPs / GEMM rate + each tower's attention FLOPs / that tower's best attention rate.
  ablation   each hot-path switch (benchmarks/perf/hotpath.py) alone and together, interleaved, with agreement
             against the default model; the fastest correct variant becomes "ours" for the sections below.
  kernels    which SDPA kernel each attention call of a real request runs (profiler), default and ours.
  main       per T, interleaved: ours against "released GPU compute, frames on the device" (HF SiglipVisionModel
             all 27 layers with hidden states, HF Qwen2Model non-causal with hidden states, fp16, batch 1, SDPA
             pinned to its flash kernel, standing for flash-attn 2): cold and cached-video latency, peak memory.
  e2e        "released end to end" on a 10-minute 720p H.264 clip at T = 512 (full CPU decode, HF
             SiglipImageProcessor on the CPU, fp16 pageable upload, the released GPU compute) against ours end to
             end (decode_video to the device, uint8 frames, normalised on the GPU), interleaved.
  throughput 1/2/4 requests with ragged instructions (different lengths): threads on their own streams; one padded
             batch (a [B, 1, L, L] mask); the same requests one by one (no mask).
  upload     512 frames to the device: fp32 pageable (what a decoder hands over today) vs uint8 pinned + normalise.
  chunks     vision-tower chunk sweep.
  micro      SigLIP MLP with bias + tanh-GELU in the cuBLASLt epilogue against three kernels (benchmarks.perf.micro).
  fp8        ours with FP8 GEMMs at every T, top-32 overlap and Spearman against bf16.
Prints a table last; writes every number to --out as JSON (rewritten after each section, so a run cut off by the
device call's time limit still brings back what it measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.perf.attention import best_kernel, kernel_table, kernels_used, priority_order, real_shapes  # noqa: E402
from benchmarks.perf.baseline import check_bidirectional  # noqa: E402
from benchmarks.perf.build import build_baseline, build_ours  # noqa: E402
from benchmarks.perf.compare import score_agreement  # noqa: E402
from benchmarks.perf.flops import flop_split, sequence_length  # noqa: E402
from benchmarks.perf.frames import upload  # noqa: E402
from benchmarks.perf.hotpath import BACKENDS, HotPath  # noqa: E402
from benchmarks.perf.memory import request_memory  # noqa: E402
from benchmarks.perf.timing import fp8_matmul_rate, matmul_rate, median, synchronize, time_calls  # noqa: E402
from videoitg.config import VideoITGConfig, preset  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SECTIONS = ["env", "rates", "ablation", "kernels", "main", "e2e", "throughput", "upload", "chunks", "micro", "fp8"]
RELEASED_GPU = "released GPU compute, frames on the device"
RELEASED_E2E = "released end to end"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny config and sizes (CPU smoke run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sections", default=",".join(s for s in SECTIONS if s != "e2e"),
                   help=f"comma-separated, from {','.join(SECTIONS)} (e2e is opt-in: it decodes a long clip)")
    p.add_argument("--frames", default=None, help="comma-separated T values (default 64,128,256,512; tiny 8,16)")
    p.add_argument("--ablation-frames", default=None, help="T values of the ablation (default: the largest T)")
    p.add_argument("--instruction-len", type=int, default=None, help="instruction tokens (default 150; tiny 10)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="our path (default bf16; tiny fp32)")
    p.add_argument("--baseline-dtype", choices=sorted(DTYPES), default=None, help="default fp16; tiny fp32")
    p.add_argument("--chunk", type=int, default=64, help="frames per vision-tower call on our path")
    p.add_argument("--iters", type=int, default=None, help="interleaved rounds per measurement (default 3; tiny 1)")
    p.add_argument("--inflight", default="1,2,4", help="requests in flight for the throughput test")
    p.add_argument("--hot", default="auto",
                   help="our path's switches: 'auto' (the ablation's fastest correct variant), 'default', or e.g. "
                        "'fuse,native_gqa,sdpa=cudnn+flash,compile'")
    p.add_argument("--e2e-clip", default=None, help="clip for the e2e section (default: make the 10-minute 720p one)")
    p.add_argument("--workdir", default="/tmp/videoitg-bench", help="where the e2e clip is made")
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


def parse_hot(spec: str) -> HotPath:
    """'fuse,native_gqa,sdpa=cudnn+flash,fp8,compile' -> HotPath."""
    kw: dict[str, Any] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip() and p.strip() != "default"):
        if part.startswith("sdpa="):
            kw["attention"] = tuple(part[5:].split("+"))
        elif part in ("fuse", "native_gqa", "fp8", "compile"):
            kw[part] = True
        else:
            raise ValueError(f"unknown hot-path switch {part!r}")
    return HotPath(**kw)


# ---- environment ------------------------------------------------------------------------------------------------
def gpu_state() -> dict[str, str]:
    """Clocks, power and temperature as nvidia-smi reports them now (empty where it is missing)."""
    fields = ["name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem", "power.limit",
              "power.default_limit", "power.draw", "temperature.gpu", "pstate", "clocks_throttle_reasons.active"]
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    return dict(zip(fields, (v.strip() for v in out.split(",")), strict=False))


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": str(device), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "sdpa_priority_order": priority_order(),
        "flash_attn": "not installed (not installable here): both paths use PyTorch SDPA",
    }
    try:
        import flash_attn  # noqa: F401

        env["flash_attn"] = "installed (not used: both paths use SDPA)"
    except ImportError:
        pass
    try:
        from torch.nn.attention import current_flash_attention_impl, list_flash_attention_impls

        env["flash_attention_impls"] = {"available": list(list_flash_attention_impls()),
                                        "active": current_flash_attention_impl()}
    except (ImportError, RuntimeError):
        pass
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        env.update(gpu=prop.name, sm_count=prop.multi_processor_count, capability=f"{prop.major}.{prop.minor}",
                   memory_gb=round(prop.total_memory / 1e9, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), nvidia_smi=gpu_state())
    else:
        env.update(cpu_threads=torch.get_num_threads())
    return env


# ---- measurement pieces -----------------------------------------------------------------------------------------
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


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each fn, one call of each per round, the order rotated every round, so no variant
    always runs on a hotter (or cooler) GPU than another."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    names, out = list(fns), {n: [] for n in fns}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            out[n] += time_calls(fns[n], device, warmup=0, iters=1)
    return out


def inflight_throughput(calls: list[Callable[[], object]], device: torch.device) -> dict[str, float]:
    """One thread per call, each on its own CUDA stream (what several model instances in one server process do).
    Requests/s over the wall time of all of them."""
    streams = [torch.cuda.Stream(device) if device.type == "cuda" else None for _ in calls]

    def worker(i: int) -> None:
        with torch.inference_mode(), (torch.cuda.stream(streams[i]) if streams[i] is not None else nullcontext()):
            calls[i]()

    for i in range(len(calls)):  # warm each stream's allocator pool
        t = threading.Thread(target=worker, args=(i,))
        t.start()
        t.join()
    synchronize(device)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    synchronize(device)
    wall = time.perf_counter() - t0
    return {"in_flight": len(calls), "wall_s": wall, "requests_per_s": len(calls) / wall}


# ---- the run ----------------------------------------------------------------------------------------------------
class Report(dict):
    """The run's results; every top-level section is written to `path` as it lands."""

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
        self.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise SystemExit(f"unknown section(s) {bad}; choose from {SECTIONS}")
        self.cfg = preset("tiny") if self.tiny else VideoITGConfig()
        self.frames = ints(args.frames) if args.frames else ([8, 16] if self.tiny else [64, 128, 256, 512])
        self.ablation_frames = ints(args.ablation_frames) if args.ablation_frames else [max(self.frames)]
        self.instr = args.instruction_len if args.instruction_len is not None else (10 if self.tiny else 150)
        self.dtype = DTYPES[args.dtype or ("fp32" if self.tiny else "bf16")]
        self.base_dtype = DTYPES[args.baseline_dtype or ("fp32" if self.tiny else "fp16")]
        self.iters = args.iters or (1 if self.tiny else 3)
        self.report = Report(args.out)
        self.report["args"] = vars(args)
        g = torch.Generator(device="cpu").manual_seed(args.seed)
        s = self.cfg.vision.image_size
        # Frames drawn once on the host as uint8 (what a decoder produces); every path gets the same pixels.
        self.frames_u8 = {t: torch.randint(0, 256, (t, 3, s, s), dtype=torch.uint8, generator=g) for t in self.frames}
        self.ids_host = torch.randint(0, self.cfg.text.vocab_size, (self.instr,), generator=g)
        self.gemm_rate = 0.0
        self.attn_rate: dict[str, float] = {}
        self.hot = HotPath() if args.hot == "auto" else parse_hot(args.hot)
        self.ours: Any = None  # the hot-path model, built by the first section that needs it
        self.default: Any = None
        self.baseline: Any = None

    def pixels(self, t: int, dtype: torch.dtype) -> torch.Tensor:
        return upload(self.frames_u8[t], self.device, dtype)

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
        dev = self.device
        self.report["env"] = environment(dev)
        log(f"env: {self.report['env']}")
        self.report["flops"] = {t: {"ours": flop_split(self.cfg, t, self.instr),
                                    "baseline": flop_split(self.cfg, t, self.instr, "baseline"),
                                    "cached": flop_split(self.cfg, t, self.instr, cached_video=True),
                                    "seq_len": sequence_length(self.cfg, t, self.instr)} for t in self.frames}
        self.report["rates"] = self.guarded("rates", self.rates)
        self.report["floor"] = {t: self.floor(t) for t in self.frames}
        last_with_baseline = "e2e" if "e2e" in self.sections else "main"
        for name in SECTIONS[2:]:
            if name in self.sections:
                self.report[name] = self.guarded(name, getattr(self, f"section_{name}"))
            if name == last_with_baseline:
                self.drop("baseline")
                self.drop("default")
        self.report["hot_path"] = self.hot.as_dict()
        if dev.type == "cuda":
            self.report["nvidia_smi_end"] = gpu_state()
        self.report["summary"] = self.summary()
        return self.report

    def guarded(self, what: str, fn: Callable[..., dict[str, Any]], *fn_args: Any) -> dict[str, Any]:
        """Run a section; on failure record the error and keep the rest of the run (one device call must still
        bring back every other number). --strict (the tests) re-raises."""
        t0 = time.perf_counter()
        try:
            out = fn(*fn_args)
        except Exception as e:
            if self.args.strict:
                raise
            log(f"{what} failed: {e!r}")
            self.free()
            return {"error": repr(e)[:800]}
        log(f"{what}: {time.perf_counter() - t0:.1f} s")
        return out

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def drop(self, attr: str) -> None:
        setattr(self, attr, None)
        self.free()

    # ---- models ---------------------------------------------------------------------------------------------------
    def build(self, hot: HotPath | None = None) -> Any:
        model = build_ours(self.cfg, self.device, self.dtype, self.args.seed, self.args.checkpoint)
        return (hot or HotPath()).apply(model)

    def our_model(self) -> Any:
        if self.ours is None:
            self.ours = self.build(self.hot)
        return self.ours

    def default_model(self) -> Any:
        if self.default is None:
            self.default = self.build()
        return self.default

    def baseline_model(self) -> Any:
        if self.baseline is None:
            # Same seed, same weights as ours; the default model's state dict has the checkpoint's names.
            src = self.default_model()
            self.baseline = build_baseline(self.cfg, self.device, self.base_dtype, src.state_dict())
            if src is not self.ours:
                self.drop("default")
            if not check_bidirectional(self.baseline.llm):
                raise RuntimeError("HF Qwen2Model ran causally despite is_causal=False: the baseline would be wrong")
        return self.baseline

    def released_gpu(self, fn: Callable[[], Any]) -> Any:
        """The released compute runs flash-attn 2; SDPA pinned to its flash kernel stands for it (CUDA)."""
        if self.device.type != "cuda":
            return fn()
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel([BACKENDS["flash"]]):
            return fn()

    def cold(self, model: Any, t: int, ids: torch.Tensor | None = None) -> Callable[[], torch.Tensor]:
        px, ids = self.pixels(t, self.dtype), ids if ids is not None else self.ids_host.to(self.device)
        chunk = self.args.chunk
        return lambda: model.score_features([model.visual_features(px, chunk_frames=chunk)], [ids])[0]

    # ---- sections ---------------------------------------------------------------------------------------------------
    def rates(self) -> dict[str, Any]:
        dev, cuda = self.device, self.device.type == "cuda"
        n = 256 if self.tiny else 8192
        warm, iters = (2, 3) if self.tiny else (50, 100)
        gdtype = torch.bfloat16 if cuda else self.dtype
        self.gemm_rate = matmul_rate(dev, gdtype, n, iters=iters, warmup=warm)
        fp8 = fp8_matmul_rate(dev, n, iters=iters, warmup=warm) if cuda else None
        t = max(self.frames)
        kernels = ["cudnn", "flash", "efficient", "math"] if not self.tiny else ["flash", "efficient", "math"]
        # math at 12,950 tokens materialises [28, L, L] scores (19 GB in bf16): time it only where it fits easily
        shapes = real_shapes(self.cfg, t, self.instr, self.args.chunk)
        table = kernel_table(shapes, dev, torch.bfloat16 if cuda else self.dtype,
                             [k for k in kernels if k != "math"] + (["math"] if self.tiny else []),
                             iters=3 if self.tiny else 10)
        best = {s.name: best_kernel(table, s.name) for s in shapes}
        self.attn_rate = {s.name: s.flops / table[s.name][best[s.name]]["s"] for s in shapes if best[s.name]}
        per_t = {}  # the LLM attention length changes with T; re-time the best kernel at each
        for tt in self.frames:
            llm = real_shapes(self.cfg, tt, self.instr, self.args.chunk)[1]
            if best.get("llm") and tt != t:
                row = kernel_table([llm], dev, torch.bfloat16 if cuda else self.dtype, [best["llm"]],
                                   iters=3 if self.tiny else 10, check=False)["llm"][best["llm"]]
                per_t[tt] = llm.flops / row["s"] if row.get("runs") else None
            else:
                per_t[tt] = self.attn_rate.get("llm")
        self.llm_attn_rate_per_t = per_t
        log(f"GEMM {self.gemm_rate / 1e12:.3g} TFLOP/s, attention {best} "
            f"{ {k: round(v / 1e12, 1) for k, v in self.attn_rate.items()} } TFLOP/s")
        return {"gemm": {"n": n, "dtype": str(gdtype), "warmup": warm, "iters": iters,
                         "tflops": self.gemm_rate / 1e12, "fp8_tflops": fp8 / 1e12 if fp8 else None},
                "attention": table, "best_kernel": best,
                "attention_tflops": {k: v / 1e12 for k, v in self.attn_rate.items()},
                "llm_attention_tflops_per_t": {k: v / 1e12 if v else None for k, v in per_t.items()}}

    def floor(self, t: int) -> dict[str, float | None]:
        """Seconds: GEMM FLOPs at the GEMM rate + each tower's attention FLOPs at its attention rate."""
        if not self.gemm_rate:
            return {"cold_s": None, "cached_s": None}
        llm_rate = getattr(self, "llm_attn_rate_per_t", {}).get(t) or self.attn_rate.get("llm") or self.gemm_rate
        vis_rate = self.attn_rate.get("vision") or self.gemm_rate

        def f(split: dict[str, int]) -> float:
            return split["gemm"] / self.gemm_rate + split["vision_attention"] / vis_rate + \
                split["llm_attention"] / llm_rate

        fl = self.report["flops"][t]
        return {"cold_s": f(fl["ours"]), "cached_s": f(fl["cached"]), "baseline_cold_s": f(fl["baseline"]),
                "single_rate_cold_s": fl["ours"]["total"] / self.gemm_rate}

    def section_kernels(self) -> dict[str, Any]:
        t = max(self.frames)
        out = {"ours": kernels_used(self.cold(self.our_model(), t)), "ours_label": self.hot.label}
        if self.hot != HotPath():
            plain = self.default_model()
            out["default"] = kernels_used(self.cold(plain, t))
        log(f"SDPA kernels at T={t}: {out}")
        return out

    def variants(self) -> list[HotPath]:
        """Each switch alone, then together; SDPA pins only to kernels that ran at every real shape."""
        table = self.report.get("rates", {}).get("attention", {})
        ran = ["flash"] if self.tiny else [k for k in ("cudnn", "flash", "efficient")
                                           if table and all(r.get(k, {}).get("runs") for r in table.values())]
        best = self.report.get("rates", {}).get("best_kernel", {}).get("llm")
        pin = ((best,) if best in ran else ()) + tuple(k for k in ran if k != best)
        out = [HotPath(), HotPath(fuse=True), HotPath(native_gqa=True)]
        out += [HotPath(native_gqa=True, attention=(k,)) for k in ran]
        out += [HotPath(fuse=True, native_gqa=True, attention=pin)]
        if not self.tiny:  # CPU inductor compiles for ~20 s; tests/test_hotpath.py covers compile on the CPU
            out += [HotPath(fuse=True, native_gqa=True, attention=pin, compile=True)]
        return out

    def section_ablation(self) -> dict[str, Any]:
        """Every variant at each ablation T, interleaved round by round, with its scores against the default
        model's. Three models hold the variants: plain (the default; GQA and SDPA settings switch per call), fused,
        and fused + compiled (its compile time is in setup_s). The fastest variant whose top-k overlap with the
        default is >= 0.97 becomes ours; the other models are freed."""
        plain = self.default_model()
        models: dict[str, Any] = {"plain": plain}
        res: dict[str, Any] = {"variants": {}, "frames": self.ablation_frames}
        fns: dict[int, dict[str, Callable[[], Any]]] = {t: {} for t in self.ablation_frames}
        refs: dict[int, torch.Tensor] = {}
        hots = {h.label: h for h in self.variants()}
        for label, hot in hots.items():
            key = "compiled" if hot.compile else "fused" if hot.fuse else "plain"
            t0 = time.perf_counter()
            if key not in models:
                models[key] = self.build(HotPath(fuse=True, compile=hot.compile))
            row: dict[str, Any] = {"hot": hot.as_dict(), "model": key, "agreement": {}}
            try:
                for t in self.ablation_frames:
                    fn = self._with_settings(models[key], hot, self.cold(models[key], t))
                    out = fn().float().cpu()  # the first call pays any compile
                    refs.setdefault(t, out)  # the default variant comes first
                    row["agreement"][t] = score_agreement(refs[t], out, k=topk_for(t))
                    fns[t][label] = fn
            except Exception as e:  # a pinned kernel that refuses a shape, a compile that fails
                row["error"] = str(e).splitlines()[0][:300]
            row["setup_s"] = time.perf_counter() - t0
            res["variants"][label] = row
        for t in self.ablation_frames:
            for label, secs in interleaved(fns[t], self.device, self.iters).items():
                row = res["variants"][label]
                row.setdefault("cold_s", {})[t] = median(secs)
                row.setdefault("cold_all_s", {})[t] = secs
                log(f"ablation T={t} {label}: {median(secs) * 1e3:.1f} ms")
        t = max(self.ablation_frames)
        ok = [(r["cold_s"][t], label) for label, r in res["variants"].items()
              if "cold_s" in r and r["agreement"][t][f"top{topk_for(t)}_overlap"] >= 0.97]
        if self.args.hot == "auto" and ok:
            self.hot = hots[min(ok)[1]]
            key = res["variants"][self.hot.label]["model"]
            self.ours = models[key]
            HotPath(native_gqa=self.hot.native_gqa, attention=self.hot.attention).apply(self.ours)
        res["chosen"] = self.hot.label
        models.clear()
        fns.clear()
        self.free()
        return res

    @staticmethod
    def _with_settings(model: Any, hot: HotPath, fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            HotPath(native_gqa=hot.native_gqa, attention=hot.attention).apply(model)
            return fn()
        return call

    def section_main(self) -> dict[str, Any]:
        """Per T: ours and the released GPU compute, cold and cached, interleaved; scores compared."""
        dev, rows = self.device, {}
        ours, base = self.our_model(), self.baseline_model()
        ids = self.ids_host.to(dev)
        for t in self._progress(self.frames, "main"):
            ours_cold = self.cold(ours, t)
            bpx = self.pixels(t, self.base_dtype)

            def base_cold(bpx: torch.Tensor = bpx) -> torch.Tensor:
                return self.released_gpu(lambda: base(bpx, ids))

            cold = interleaved({"ours": ours_cold, "released": base_cold}, dev, self.iters)
            o_scores, b_scores = ours_cold().float().cpu(), base_cold().float().cpu()
            t0 = time.perf_counter()
            ours_cold()  # host time to enqueue every kernel of one request (no sync inside the call)
            enqueue = time.perf_counter() - t0
            synchronize(dev)
            vis = ours.visual_features(self.pixels(t, self.dtype), chunk_frames=self.args.chunk)
            bvis = self.released_gpu(lambda bpx=bpx: base.project(base.encode_frames(bpx)))
            cached = interleaved({"ours": lambda vis=vis: ours.score_features([vis], [ids])[0],
                                  "released": lambda bvis=bvis: self.released_gpu(
                                      lambda: base.score_visual(bvis, ids))}, dev, self.iters)
            fl, floor = self.report["flops"][t], self.report["floor"][t]
            est = request_memory(self.cfg, t, self.instr, "ours", chunk=self.args.chunk,
                                 dtype_bytes=self.dtype.itemsize)
            best = request_memory(self.cfg, t, self.instr, "baseline", chunk=base.chunk,
                                  dtype_bytes=self.base_dtype.itemsize)
            row = {
                "ours_cold_s": median(cold["ours"]), "ours_cold_all_s": cold["ours"],
                "released_cold_s": median(cold["released"]), "released_cold_all_s": cold["released"],
                "ours_cached_s": median(cached["ours"]), "released_cached_s": median(cached["released"]),
                "host_enqueue_s": enqueue,
                "ours_tflops": fl["ours"]["total"] / median(cold["ours"]) / 1e12,
                "released_tflops": fl["baseline"]["total"] / median(cold["released"]) / 1e12,
                "ours_memory": peak_during(ours_cold, dev), "released_memory": peak_during(base_cold, dev),
                "ours_memory_model_gb": est.peak / 1e9, "released_memory_model_gb": best.peak / 1e9,
                "agreement_released_vs_ours": score_agreement(b_scores, o_scores, k=topk_for(t)),
            }
            row["speedup_cold"] = row["released_cold_s"] / row["ours_cold_s"]
            row["speedup_cached"] = row["released_cached_s"] / row["ours_cached_s"]
            if floor["cold_s"]:
                row["cold_over_floor"] = row["ours_cold_s"] / floor["cold_s"]
                row["cached_over_floor"] = row["ours_cached_s"] / floor["cached_s"]
            rows[t] = row
            log(f"main T={t}: ours {row['ours_cold_s'] * 1e3:.1f} ms (cached {row['ours_cached_s'] * 1e3:.1f}), "
                f"released {row['released_cold_s'] * 1e3:.1f} ms, x{row['speedup_cold']:.2f}")
            del vis, bvis, bpx
            self.free()
        return {"baseline": RELEASED_GPU, "ours": self.hot.label, "rows": rows}

    def section_e2e(self) -> dict[str, Any]:
        """Bytes on disk -> scores at T = 512 (tiny: a short clip), released end to end against ours, interleaved."""
        from benchmarks.perf.clips import long_h264_clip
        from benchmarks.perf.released import released_pixels, siglip_processor
        from videoitg.decode import decode_video
        from videoitg.sampling import SamplingParams

        dev = self.device
        if self.args.e2e_clip:
            clip = Path(self.args.e2e_clip)
        else:
            Path(self.args.workdir).mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            clip = long_h264_clip(Path(self.args.workdir) / ("e2e_tiny.mp4" if self.tiny else "e2e_720p_10min.mp4"),
                                  **({"seconds": 20, "width": 96, "height": 64, "fps": 4, "gop": 20}
                                     if self.tiny else {}))
            log(f"e2e clip {clip} ({clip.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        params = SamplingParams(num_frames=max(self.frames) if self.tiny else 512)
        s = self.cfg.vision.image_size
        proc = siglip_processor(s)
        ours, base, ids = self.our_model(), self.baseline_model(), self.ids_host.to(dev)
        stages: dict[str, list[dict[str, float]]] = {"released": [], "ours": []}

        def released() -> torch.Tensor:
            t0 = time.perf_counter()
            pv, _, st = released_pixels(clip, s, params, proc)
            t1 = time.perf_counter()
            px = pv.to(dev, self.base_dtype)  # the released path: fp16 from pageable memory
            out = self.released_gpu(lambda: base(px, ids))
            synchronize(dev)
            stages["released"].append({**st, "upload_and_model": time.perf_counter() - t1,
                                       "total": time.perf_counter() - t0})
            return out

        def ours_e2e() -> torch.Tensor:
            t0 = time.perf_counter()
            frames = decode_video(clip, image_size=s, params=params, device=str(dev), time_budget_s=None)
            t1 = time.perf_counter()
            out = ours.score_features([ours.visual_features(frames.pixel_values.to(dev, self.dtype),
                                                            chunk_frames=self.args.chunk)], [ids])[0]
            synchronize(dev)
            stages["ours"].append({"decode": t1 - t0, "decoder": frames.decoder, "model": time.perf_counter() - t1,
                                   "total": time.perf_counter() - t0})
            return out

        o, r = ours_e2e().float().cpu(), released().float().cpu()
        stages = {"released": [], "ours": []}
        wall = interleaved({"released": released, "ours": ours_e2e}, dev, 1 if self.tiny else 2, warmup=0)
        res = {"clip": str(clip), "clip_mb": clip.stat().st_size / 1e6, "frames": len(o),
               "released": RELEASED_E2E, "released_s": median(wall["released"]), "ours_s": median(wall["ours"]),
               "stages": stages, "agreement_released_vs_ours": score_agreement(r, o, k=topk_for(len(o)))}
        res["speedup"] = res["released_s"] / res["ours_s"]
        log(f"e2e: released {res['released_s']:.2f} s, ours {res['ours_s']:.2f} s, x{res['speedup']:.2f}")
        return res

    def section_throughput(self) -> dict[str, Any]:
        """Ragged instructions (lengths spread around the mean): streams, one padded batch, and one by one."""
        t, dev, ours = max(self.frames), self.device, self.our_model()
        px = self.pixels(t, self.dtype)
        vocab, res = self.cfg.text.vocab_size, {"frames": t, "rows": []}
        g = torch.Generator().manual_seed(1)
        lengths = [max(1, self.instr + d) for d in (0, -self.instr // 5, self.instr // 5, -self.instr // 10)]
        for n in ints(self.args.inflight):
            ids = [torch.randint(0, vocab, (lengths[i % len(lengths)],), generator=g).to(dev) for i in range(n)]

            def one(i: int, ids: list[torch.Tensor] = ids) -> Callable[[], object]:
                return lambda: ours.score_features([ours.visual_features(px, chunk_frames=self.args.chunk)], [ids[i]])

            row: dict[str, Any] = {"in_flight": n, "instruction_lens": [len(x) for x in ids]}
            row["streams"] = inflight_throughput([one(i) for i in range(n)], dev)

            def padded(n: int = n, ids: list[torch.Tensor] = ids) -> object:
                vis = [ours.visual_features(px, chunk_frames=self.args.chunk) for _ in range(n)]
                return ours.score_features(vis, ids)  # ragged lengths: one masked pass

            def singly(n: int = n, ids: list[torch.Tensor] = ids) -> object:
                vis = [ours.visual_features(px, chunk_frames=self.args.chunk) for _ in range(n)]
                return [ours.score_features([v], [i]) for v, i in zip(vis, ids, strict=True)]  # no mask

            w = interleaved({"padded": padded, "singly": singly}, dev, 1 if self.tiny else 2)
            row["padded_batch"] = {"wall_s": median(w["padded"]), "requests_per_s": n / median(w["padded"]),
                                   "memory": peak_during(padded, dev)}
            row["singly"] = {"wall_s": median(w["singly"]), "requests_per_s": n / median(w["singly"])}
            res["rows"].append(row)
            log(f"in flight {n}: streams {row['streams']['requests_per_s']:.2f} req/s, padded "
                f"{row['padded_batch']['requests_per_s']:.2f}, singly {row['singly']['requests_per_s']:.2f}")
        return res

    def section_upload(self) -> dict[str, Any] | None:
        """One request's frames to the device: fp32 from pageable memory (today's decoder output) against uint8
        from pinned memory normalised on the device (the time includes the normalisation)."""
        if self.device.type != "cuda":
            return None
        u8 = self.frames_u8[max(self.frames)]
        f32 = u8.float().div(127.5).sub(1.0)
        pinned = u8.pin_memory()
        fns = {"fp32_pageable": lambda: f32.to(self.device, self.dtype),
               "uint8_pinned_normalise": lambda: upload(pinned, self.device, self.dtype)}
        w = interleaved(fns, self.device, 5)
        return {k: {"s": median(v), "bytes": (f32 if k.startswith("fp32") else u8).nbytes} for k, v in w.items()}

    def section_chunks(self) -> dict[int, float]:
        t, model = max(self.frames), self.our_model()
        px = self.pixels(t, self.dtype)
        sizes = [4, 8] if self.tiny else [32, 64, 128, 256]
        w = interleaved({c: (lambda c=c: model.encode_frames(px, chunk_frames=c)) for c in sizes}, self.device,
                        self.iters)
        return {c: median(v) for c, v in w.items()}

    def section_micro(self) -> dict[str, Any]:
        from benchmarks.perf.micro import siglip_mlp_gelu_epilogue

        return siglip_mlp_gelu_epilogue(self.cfg, self.args.chunk, self.device, self.dtype, 2 if self.tiny else 10)

    def section_fp8(self) -> dict[str, Any]:
        """Ours with FP8 GEMMs (fresh model, same weights), interleaved with bf16 ours, agreement per T."""
        if self.device.type == "cuda" and torch.cuda.get_device_capability(self.device) < (8, 9):
            return {"skipped": "no FP8 tensor cores (needs sm_89+)"}
        ours = self.our_model()
        hot8 = replace(self.hot, fp8=True)
        m8 = self.build(hot8)
        rows = {}
        for t in self.frames:
            a, b = self.cold(ours, t), self.cold(m8, t)
            w = interleaved({"bf16": a, "fp8": b}, self.device, self.iters)
            rows[t] = {"bf16_cold_s": median(w["bf16"]), "fp8_cold_s": median(w["fp8"]),
                       "agreement_vs_bf16": score_agreement(a().float().cpu(), b().float().cpu(), k=topk_for(t))}
            if self.report["floor"][t]["cold_s"] and self.report.get("rates", {}).get("gemm", {}).get("fp8_tflops"):
                fl = self.report["flops"][t]["ours"]
                r8 = self.report["rates"]["gemm"]["fp8_tflops"] * 1e12
                vis_rate = self.attn_rate.get("vision") or self.gemm_rate
                llm_rate = self.llm_attn_rate_per_t.get(t) or self.gemm_rate
                rows[t]["fp8_floor_s"] = fl["gemm"] / r8 + fl["vision_attention"] / vis_rate + \
                    fl["llm_attention"] / llm_rate
            log(f"fp8 T={t}: {rows[t]}")
        del m8
        self.free()
        return {"hot": hot8.label, "rows": rows,
                "note": "random weights unless --checkpoint: the overlap measures numerics, not accuracy"}

    def _progress(self, items: list[int], label: str) -> Any:
        try:
            from tqdm import tqdm

            return tqdm(items, desc=label, file=sys.stderr, disable=self.tiny)
        except ImportError:
            return items

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        main = self.report.get("main", {}).get("rows", {}) if isinstance(self.report.get("main"), dict) else {}
        fp8 = self.report.get("fp8", {}).get("rows", {}) if isinstance(self.report.get("fp8"), dict) else {}
        for t in self.frames:
            m, f, fl = main.get(t, {}), fp8.get(t, {}), self.report["floor"][t]
            ms = lambda v: v * 1e3 if isinstance(v, (int, float)) else None  # noqa: E731
            rows.append({
                "T": t, "floor_ms": ms(fl.get("cold_s")), "cold_ms": ms(m.get("ours_cold_s")),
                "cold/floor": m.get("cold_over_floor"), "cached_ms": ms(m.get("ours_cached_s")),
                "cached_floor_ms": ms(fl.get("cached_s")),
                "peak_GB": (m.get("ours_memory") or {}).get("peak_gb"),
                "fp8_cold_ms": ms(f.get("fp8_cold_s")), "fp8_floor_ms": ms(f.get("fp8_floor_s")),
                "released_cold_ms": ms(m.get("released_cold_s")), "released_peak_GB":
                    (m.get("released_memory") or {}).get("peak_gb"), "speedup": m.get("speedup_cold"),
            })
        return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    fmt = lambda v: "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = Bench(args).run()  # written to --out section by section
    env = report["env"]
    print(f"\ndevice: {env.get('gpu', env['device'])}  torch {env['torch']}  date {env['date_utc']} UTC  "
          f"cuDNN {env.get('cudnn')}  SDPA order {env['sdpa_priority_order']}  ours: {report['hot_path']['label']}")
    rates = report.get("rates", {})
    if "gemm" in rates:
        print(f"GEMM {rates['gemm']['tflops']:.3g} TFLOP/s (fp8 {rates['gemm']['fp8_tflops']}), attention "
              f"{rates.get('best_kernel')} {rates.get('attention_tflops')}")
    print(format_table(report["summary"]))
    thr = report.get("throughput")
    if isinstance(thr, dict) and "rows" in thr:
        print(f"ragged in flight (T={thr['frames']}): " + ", ".join(
            f"{r['in_flight']}: streams {r['streams']['requests_per_s']:.2f} / padded "
            f"{r['padded_batch']['requests_per_s']:.2f} / singly {r['singly']['requests_per_s']:.2f} req/s"
            for r in thr["rows"]))
    e2e = report.get("e2e")
    if isinstance(e2e, dict) and "speedup" in e2e:
        print(f"e2e ({e2e['frames']} frames of {e2e['clip']}): released {e2e['released_s']:.2f} s, ours "
              f"{e2e['ours_s']:.2f} s, x{e2e['speedup']:.2f}")
    return report


if __name__ == "__main__":
    main()
