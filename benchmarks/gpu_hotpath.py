"""The GPU check's hot-path sections (`benchmarks/gpu_check.py --only env,hotpath`): profile first, then
measure. Real sizes on a GPU (SigLIP-so400m + Qwen2-7B, random weights, T = 512, a 150-token instruction); tiny
shapes and few rounds with --tiny (the CPU rehearsal in the test suite, which runs every line of both sections).

hotpath     rates measured here first: fp16, bf16 and FP8 (`torch._scaled_mm`, row-wise scales) matmul at 8192^3,
            SDPA in each tower at its real shape; SM and memory clocks sampled through the section (nvidia-smi).
            Profile: the kernels of each tower (vision, projector, grounding) on the current path and the hot path,
            their device time and the share of wall time they keep the GPU busy. Then measure, interleaved round by
            round (>= 5 rounds, medians), cold (frames on the device) and cached (visual features cached):
            `current` (every `HOT_PATH` switch off, SigLIP's MLP at the checkpoint's width, eager: the path
            before the hot-path changes), `current` plus each change alone (GQA without copies, the GELU epilogue,
            the MLP padded to whole GEMM tiles), `eager` (all three), `hot` (those, compiled: the default),
            `hot_unpadded` (`hot` with the MLP unpadded) and `released` (HF modules, benchmarks/perf/baseline.py).
            Compile time of the layers. A candidate for the norms: `hot` compiled again with inductor's
            multi-kernel, interleaved with `hot`, cold and cached (`multi_kernel`). Each path's peak GPU memory,
            read while it is alone on the device (its weights, inputs and activations). FP8 (`--precision fp8`):
            cold latency interleaved with `released`, its kernels (`fp8_profile`: where its time goes against its
            floor), its own peak, and its logits against fp32 at real width (max |difference|,
            top-32 overlap; T = 128 at a 1,024-token visual budget, so the fp32 reference stays short). Each ratio
            names its floor: the torch kernels' rates measured in this run, or the card's datasheet rate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import statistics
import subprocess
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

ROUNDS, TINY_ROUNDS = 5, 2
SWITCHES = ("gqa_without_copies", "gelu_epilogue")  # HOT_PATH's
LAYOUTS = ("padded_mlp",)  # weight layouts `prepare_inference` converts to on a GPU, re-laid by `variant`
CHANGES = SWITCHES + LAYOUTS
# name -> (changes on, compiled). `current` is the path before the hot-path changes; each change is timed alone on top
# of it; `hot` is what ships (compile timed as `hot` against `eager`); `hot_unpadded` is `hot` with SigLIP's MLP at
# the checkpoint's width (the padding's own A/B on the compiled path, where its GEMM runs the GELU epilogue).
VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "current": ((), False), **{c: ((c,), False) for c in CHANGES}, "eager": (CHANGES, False),
    "hot": (CHANGES, True), "hot_unpadded": (SWITCHES, True)}
# Dense (no sparsity) tensor-core rates, TFLOP/s (NVIDIA's H100 / H200 datasheets), the more specific name first.
DATASHEET_TFLOPS = {"H100 PCIe": {"fp16": 756.5, "bf16": 756.5, "fp8": 1513.0},
                    "H100": {"fp16": 989.4, "bf16": 989.4, "fp8": 1978.9},  # SXM
                    "H200": {"fp16": 989.4, "bf16": 989.4, "fp8": 1978.9}}
CLOCK_FIELDS = ("clocks.sm", "clocks.mem", "power.draw", "utilization.gpu", "temperature.gpu")


# ---- measuring tools -------------------------------------------------------------------------------------------
class ClockSampler:
    """nvidia-smi's clocks, power, utilization and temperature every `ms` while the block runs (the card as found:
    nothing is set)."""

    def __init__(self, device: Any, ms: int = 250) -> None:
        self.device, self.ms, self.proc, self.lines = device, ms, None, []

    def __enter__(self) -> ClockSampler:
        import torch

        if self.device.type != "cuda":
            return self
        uuid = getattr(torch.cuda.get_device_properties(self.device), "uuid", None)
        target = ["-i", f"GPU-{uuid}"] if uuid else []
        try:
            self.proc = subprocess.Popen(["nvidia-smi", *target, f"--query-gpu={','.join(CLOCK_FIELDS)}",
                                          "--format=csv,noheader,nounits", "-lms", str(self.ms)],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            out, _ = self.proc.communicate(timeout=30)
            self.lines = [x for x in out.splitlines() if x.strip()]

    def summary(self) -> dict[str, Any]:
        if self.device.type != "cuda":
            return {"unavailable": "no GPU"}
        if self.proc is None or not self.lines:
            return {"unavailable": "nvidia-smi did not answer"}
        cols: dict[str, list[float]] = {f: [] for f in CLOCK_FIELDS}
        for line in self.lines:
            for f, v in zip(CLOCK_FIELDS, line.split(","), strict=False):
                with contextlib.suppress(ValueError):
                    cols[f].append(float(v))
        return {"samples": len(self.lines), "every_ms": self.ms,
                **{f: {"min": min(v), "median": statistics.median(v), "max": max(v)} for f, v in cols.items() if v}}


LAID_OUT: weakref.WeakSet = weakref.WeakSet()  # the models `variant` re-lays (`laid_out`)


def laid_out(model: Any) -> Any:
    """`model`, from here on laid out by each variant as it runs it (SigLIP's MLP padded or not)."""
    LAID_OUT.add(model)
    return model


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """The model code as the variant `name` runs it: its HOT_PATH switches, its weight layout (on the models
    `laid_out` registered, outside the timed calls), compiled or eager; all as they were after."""
    import torch

    from videoitg.model.hotpath import HOT_PATH, MLP_MULTIPLE
    from videoitg.model.vision import SiglipMLP

    on, compiled = VARIANTS[name] if name in VARIANTS else (CHANGES, True)
    saved = dataclasses.replace(HOT_PATH)
    models = list(LAID_OUT)
    padded = [any(m.padded for m in x.modules() if isinstance(m, SiglipMLP)) for x in models]
    for s in SWITCHES:
        setattr(HOT_PATH, s, s in on)
    for x in models:
        x.pad_mlps(MLP_MULTIPLE if "padded_mlp" in on else 1)
    try:
        with torch.compiler.set_stance("default" if compiled else "force_eager"):
            yield
    finally:
        for s in SWITCHES:
            setattr(HOT_PATH, s, getattr(saved, s))
        for x, was in zip(models, padded, strict=True):
            x.pad_mlps(MLP_MULTIPLE if was else 1)


def kernel_profile(call: Callable[[], Any], cuda: bool, n: int = 15) -> dict[str, Any]:
    """The kernels of one `call` (torch profiler): the `n` with most device time, how many there are, and their
    total device time (one stream: the time the GPU is busy). On a CPU, operators and their CPU time instead."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        call()
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if not cuda or e.device_type == torch.autograd.DeviceType.CUDA]
    events = [e for e in events if getattr(e, key) > 0]
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
    return {"kernel_s": sum(getattr(e, key) for e in events) / 1e6, "kernels": sum(e.count for e in events),
            "top": [{"name": e.key[:120], "ms": round(getattr(e, key) / 1e3, 3), "calls": e.count} for e in top]}


def own_peak_gb(call: Callable[[], Any], device: Any) -> float | None:
    """Peak GPU memory of `call` with what is resident now (its path's weights and inputs, nothing else), read."""
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 1e9


def fp8_matmul_rate(device: Any, n: int, iters: int, warmup: int, fast_accum: bool = True) -> float | None:
    """FLOP/s of `torch._scaled_mm` (e4m3 x e4m3, row-wise scales, bf16 out: what `Float8Linear` runs) at n^3,
    with Hopper's fast accumulation or without; None off a GPU with FP8 tensor cores."""
    import torch

    from benchmarks.perf.timing import median, time_calls

    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return None
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(torch.float8_e4m3fn)
    b = torch.randn(n, n, device=device, generator=g).to(torch.float8_e4m3fn).t()  # column-major
    sa, sb = torch.ones(n, 1, device=device), torch.ones(1, n, device=device)
    secs = median(time_calls(lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16,
                                                      use_fast_accum=fast_accum), device, warmup=warmup,
                                   iters=iters))
    return 2 * n**3 / secs


def sdpa_rate(device: Any, dtype: Any, b: int, heads: int, kv_heads: int, length: int, hd: int, iters: int) -> float:
    """FLOP/s of the model's SDPA call at one tower's shape (no mask; GQA as the model runs it)."""
    import torch
    import torch.nn.functional as F

    from benchmarks.perf.timing import median, time_calls

    q = torch.randn(b, heads, length, hd, device=device, dtype=dtype)
    kv = torch.randn(b, kv_heads, length, hd, device=device, dtype=dtype)
    call = (lambda: F.scaled_dot_product_attention(q, kv, kv, enable_gqa=kv_heads != heads))
    return 4 * b * heads * length * length * hd / median(time_calls(call, device, warmup=1, iters=iters))


def tower_flops(cfg: Any, frames: int, instruction: int) -> dict[str, dict[str, int]]:
    """One request's FLOPs by tower and unit: GEMMs (every linear layer and the patch embedding) and attention;
    `fp8_gemm`: the GEMMs FP8 runs (the towers' linear layers)."""
    from benchmarks.perf.flops import request_flops, siglip_layer_flops, siglip_patch_embed_flops

    f = request_flops(cfg, frames, instruction)
    lin, att = siglip_layer_flops(cfg.vision)
    layers = cfg.vision_layers_used
    return {"vision": {"gemm": f.vision - frames * layers * att, "attention": frames * layers * att,
                       "fp8_gemm": frames * layers * lin, "other_gemm": frames * siglip_patch_embed_flops(cfg.vision)},
            "projector": {"gemm": f.projector, "attention": 0, "fp8_gemm": 0, "other_gemm": f.projector},
            "grounding": {"gemm": f.llm_linear + f.head, "attention": f.llm_attention, "fp8_gemm": f.llm_linear,
                          "other_gemm": f.head}}


def floors(flops: dict[str, dict[str, int]], gemm: float, fp8: float | None, vis_att: float,
           llm_att: float) -> dict[str, float | None]:
    """Seconds at the given rates: each tower in 16-bit, the cold and cached request, and the cold request in FP8
    (its towers' linear layers at the FP8 rate, the other GEMMs at `gemm`)."""
    tower = {"vision": flops["vision"]["gemm"] / gemm + flops["vision"]["attention"] / vis_att,
             "projector": flops["projector"]["gemm"] / gemm,
             "grounding": flops["grounding"]["gemm"] / gemm + flops["grounding"]["attention"] / llm_att}
    fp8_cold = None
    if fp8:
        fp8_cold = sum(flops[t]["fp8_gemm"] / fp8 + flops[t]["other_gemm"] / gemm for t in flops) + \
            flops["vision"]["attention"] / vis_att + flops["grounding"]["attention"] / llm_att
    return {**tower, "cold": sum(tower.values()), "cached": tower["grounding"], "fp8_cold": fp8_cold}


def datasheet(gpu: str) -> dict[str, float] | None:
    return next((r for name, r in DATASHEET_TFLOPS.items() if name in gpu), None)


# ---- hotpath ---------------------------------------------------------------------------------------------------
def hotpath(check: Any) -> dict[str, Any]:
    import torch

    from benchmarks.perf.build import build_baseline, build_ours
    from benchmarks.perf.flops import sequence_length
    from benchmarks.perf.timing import matmul_rate
    from videoitg.model.fp8 import to_fp8
    from videoitg.model.hotpath import compile_layers
    from videoitg.preprocess import pixel_values

    tiny, dev, cuda = check.tiny, check.device, check.cuda
    cfg = check.config("tiny" if tiny else "real")
    T, instr, rounds = (4, 6, TINY_ROUNDS) if tiny else (512, 150, ROUNDS)
    backend = "inductor" if cuda else "eager"  # the rehearsal traces every compiled call; inductor needs the GPU
    v, t = cfg.vision, cfg.text
    out: dict[str, Any] = {"frames": T, "instruction_tokens": instr, "rounds": rounds, "compile_backend": backend}
    dtype = torch.float16 if cuda else torch.float32  # the released precision; the CPU has no fast fp16
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, t.vocab_size, (instr,), generator=g).to(dev)
    px = pixel_values(torch.randint(0, 256, (T, 3, v.image_size, v.image_size), dtype=torch.uint8,
                                    generator=g).to(dev), dtype)
    sampler = ClockSampler(dev)
    with sampler, torch.inference_mode():
        # rates, measured first
        n, it, warm = (256, 3, 1) if tiny else (8192, 50, 10)
        rates = {"fp16": matmul_rate(dev, torch.float16, n, iters=it, warmup=warm),
                 "bf16": matmul_rate(dev, torch.bfloat16, n, iters=it, warmup=warm),
                 "fp8": fp8_matmul_rate(dev, n, it, warm),
                 "fp8_exact_accum": fp8_matmul_rate(dev, n, it, warm, fast_accum=False),
                 "vision_attention_fp16": sdpa_rate(dev, torch.float16, min(64, T), v.num_attention_heads,
                                                    v.num_attention_heads, v.tokens_per_frame,
                                                    v.hidden_size // v.num_attention_heads, 3 if tiny else 10),
                 "llm_attention_fp16": sdpa_rate(dev, torch.float16, 1, t.num_attention_heads, t.num_key_value_heads,
                                                 sequence_length(cfg, T, instr), t.head_dim, 3 if tiny else 10)}
        out["rates_tflops"] = {k: (r / 1e12 if r else None) for k, r in rates.items()}
        flops = tower_flops(cfg, T, instr)
        measured = floors(flops, rates["fp16"], rates["fp8"], rates["vision_attention_fp16"],
                          rates["llm_attention_fp16"])
        sheet = datasheet(torch.cuda.get_device_name(dev) if cuda else "")
        out["floors_s"] = {"torch_kernels_measured_here": measured,
                           "datasheet": floors(flops, *(sheet[k] * 1e12 for k in ("fp16", "fp8", "fp16", "fp16")))
                           if sheet else None}
        check.progress(out, "rates")

        ours = laid_out(build_ours(cfg, dev, dtype))
        compile_layers(ours, backend)
        out.update(alone(ours, px, ids, dev))  # compile time, own peak memory of `hot` and `current`
        check.progress(out, "compile, own peaks")
        out["profile"] = profile_towers(ours, px, ids, dev, measured)
        check.progress(out, "profile")
        base = build_baseline(cfg, dev, dtype, ours.state_dict())
        out.update(against_released(ours, base, px, ids, dev, rounds))
        check.progress(out, "interleaved rounds")
        try:  # a candidate: its failure (a compile error, say) is recorded and the section goes on
            out["multi_kernel"] = multi_kernel(ours, px, ids, dev, rounds, backend)
        except Exception as e:
            out["multi_kernel"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        check.progress(out, "multi-kernel rounds")
        ours = None
        empty(cuda, compiled=True)
        out["own_peak_gb"]["released"] = own_peak_gb(lambda: base(px, ids), dev)

        fp8 = to_fp8(build_ours(cfg, dev, torch.bfloat16))
        compile_layers(fp8, backend)
        out.update(fp8_against_released(fp8, base, px, ids, dev, rounds))
        check.progress(out, "fp8 rounds")
        base = None
        empty(cuda)
        with variant("hot"):
            out["own_peak_gb"]["fp8"] = own_peak_gb(lambda: fp8(px.to(torch.bfloat16), ids), dev)
        out["fp8_vs_fp32"] = fp8_parity(check, fp8)
    out["clocks"] = sampler.summary()
    return summarize(out, cuda)


def alone(ours: Any, px: Any, ids: Any, dev: Any) -> dict[str, Any]:
    """With only our model on the device: the compiled path's first call (compile time) and each path's peak."""
    import torch

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with variant("hot"):
        _, first = timed(lambda: ours(px, ids), sync)
        _, second = timed(lambda: ours(px, ids), sync)
    peaks = {}
    for name in ("hot", "current"):
        with variant(name):
            peaks[name] = own_peak_gb(lambda: ours(px, ids), dev)
    return {"compile": {"first_call_s": first, "second_call_s": second, "compile_s": first - second,
                        "graphs": compiled_graphs()}, "own_peak_gb": peaks}


def profile_towers(ours: Any, px: Any, ids: Any, dev: Any, floor: dict[str, Any]) -> dict[str, Any]:
    """Each tower on the current and the hot path: wall time, its kernels (profiler), their busy share, its floor."""
    from benchmarks.perf.timing import median, time_calls

    hw = ours.config.tokens_per_side(px.shape[0])
    vis, feats = ours.visual_features(px), ours.encode_frames(px)
    towers = {"vision": lambda: ours.encode_frames(px), "projector": lambda: ours.project(feats, hw),
              "grounding": lambda: ours.score_features([vis], [ids])}
    profile: dict[str, Any] = {}
    for name in ("current", "hot"):
        with variant(name):
            rows = {}
            for tower, call in towers.items():
                wall = median(time_calls(call, dev, warmup=1, iters=3))
                prof = kernel_profile(call, dev.type == "cuda")
                rows[tower] = {"wall_s": wall, "busy_share": prof["kernel_s"] / wall, **prof,
                               "floor_s": floor[tower], "over_floor": wall / floor[tower]}
            profile[name] = rows
    return profile


def against_released(ours: Any, base: Any, px: Any, ids: Any, dev: Any, rounds: int) -> dict[str, Any]:
    """Every variant and the released-style path, cold and cached, interleaved."""
    from benchmarks.perf.timing import median
    from videoitg.engine_build.parity import topk_overlap

    vis, bvis = ours.visual_features(px), base.project(base.encode_frames(px))
    calls: dict[str, Callable[[], Any]] = {f"{k}_cold": (lambda: ours(px, ids)) for k in VARIANTS}
    calls.update(released_cold=lambda: base(px, ids), hot_cached=lambda: ours.score_features([vis], [ids]),
                 current_cached=lambda: ours.score_features([vis], [ids]),
                 released_cached=lambda: base.score_visual(bvis, ids))
    secs = interleave(calls, rounds, dev)
    med = {k: median(x) for k, x in secs.items()}
    with variant("hot"):
        top32 = topk_overlap(base(px, ids).float().cpu().numpy(), ours(px, ids).float().cpu().numpy())
    ab = {k: med[f"{k}_cold"] / med["current_cold"] for k in VARIANTS if k != "current"}
    ab["compile (hot vs eager)"] = med["hot_cold"] / med["eager_cold"]
    ab["padded MLP (hot vs hot_unpadded)"] = med["hot_cold"] / med["hot_unpadded_cold"]
    return {"latency_s": {"median": med, "all": secs}, "top32_hot_vs_released": top32, "ab_vs_current": ab}


def multi_kernel(ours: Any, px: Any, ids: Any, dev: Any, rounds: int, backend: str) -> dict[str, Any]:
    """A candidate for the norms, not in the hot path: the layers compiled again with inductor's multi-kernel
    (`triton.multi_kernel`: each reduction generated both as a one-pass (persistent) kernel, which inductor's
    heuristic keeps for rows of at most 1,024 (SigLIP's are 1,152 wide, Qwen2's 3,584), and as a looped one, the
    faster chosen at the first call), interleaved with `hot`, cold and cached (Qwen2's RMSNorm is such a
    reduction too); its compile time and each tower's kernels under it."""
    from benchmarks.perf.timing import median, time_calls
    from videoitg.model.hotpath import compile_layers

    layers = ours.transformer_layers()
    default = [layer._compiled_call_impl for layer in layers]
    compile_layers(ours, backend, {"triton.multi_kernel": 1} if backend == "inductor" else None)
    candidate = [layer._compiled_call_impl for layer in layers]

    def under(impls: list[Any], call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            for layer, impl in zip(layers, impls, strict=True):
                layer._compiled_call_impl = impl
            return call()
        return run

    vis = ours.visual_features(px)
    towers = {"vision": lambda: ours.encode_frames(px), "grounding": lambda: ours.score_features([vis], [ids])}
    try:
        with variant("hot"):
            first = time_calls(under(candidate, lambda: ours(px, ids)), dev, warmup=0, iters=1)[0]
            secs = interleave({"hot_cold": under(default, lambda: ours(px, ids)),
                               "multi_kernel_cold": under(candidate, lambda: ours(px, ids)),
                               "hot_cached": under(default, towers["grounding"]),
                               "multi_kernel_cached": under(candidate, towers["grounding"])}, rounds, dev)
            profile = {}
            for tower, call in towers.items():
                wall = median(time_calls(under(candidate, call), dev, warmup=1, iters=3))
                profile[tower] = {"wall_s": wall, **kernel_profile(under(candidate, call), dev.type == "cuda")}
    finally:
        for layer, impl in zip(layers, default, strict=True):
            layer._compiled_call_impl = impl
    med = {k: median(x) for k, x in secs.items()}
    return {"first_call_s": first, "latency_s": {"median": med, "all": secs},
            "multi_kernel_over_hot": med["multi_kernel_cold"] / med["hot_cold"],
            "multi_kernel_over_hot_cached": med["multi_kernel_cached"] / med["hot_cached"],
            "graphs": compiled_graphs(),  # dynamo's: 2 more than before, unless it fell back to eager
            "profile": profile}


def fp8_against_released(fp8: Any, base: Any, px: Any, ids: Any, dev: Any, rounds: int) -> dict[str, Any]:
    """FP8's first call (its compile), then FP8 and the released-style path cold, interleaved."""
    import torch

    from benchmarks.perf.timing import median
    from videoitg.engine_build.parity import topk_overlap

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    px8 = px.to(torch.bfloat16)
    with variant("hot"):
        _, first = timed(lambda: fp8(px8, ids), sync)
        secs = interleave({"fp8_cold": lambda: fp8(px8, ids), "released_cold": lambda: base(px, ids)}, rounds, dev)
        top32 = topk_overlap(base(px, ids).float().cpu().numpy(), fp8(px8, ids).float().cpu().numpy())
        kernels = kernel_profile(lambda: fp8(px8, ids), dev.type == "cuda")  # where FP8's time goes
    med = {k: median(x) for k, x in secs.items()}
    return {"fp8_latency_s": {"median": med, "all": secs}, "fp8_first_call_s": first, "top32_fp8_vs_released": top32,
            "fp8_profile": {"busy_share": kernels["kernel_s"] / med["fp8_cold"], **kernels}}


def parity_inputs(check: Any, cfg: Any) -> tuple[Any, Any]:
    """The FP8 comparisons' frames (T = 128; 8 with --tiny) and 32-token instruction, on the device."""
    import torch

    T, s = 8 if check.tiny else 128, cfg.vision.image_size
    g = torch.Generator().manual_seed(3)
    # each frame its own colour under the noise, as a video's frames differ (i.i.d. noise frames pool to nearly
    # one feature, and their logits to near-ties that any rounding reorders)
    base, noise = torch.randint(0, 256, (T, 3, 1, 1), generator=g), torch.randint(-40, 41, (T, 3, s, s), generator=g)
    frames = (base + noise).clamp(0, 255).to(torch.uint8).to(check.device)
    return frames, torch.randint(0, cfg.text.vocab_size, (32,), generator=g).to(check.device)


def fp32_logits(check: Any, cfg: Any, frames: Any, ids: Any) -> Any:
    """The fp32 reference's logits (TF32 off, from here on), its model freed after."""
    import torch

    from benchmarks.perf.build import build_ours
    from videoitg.preprocess import pixel_values

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    ref = build_ours(cfg, check.device, torch.float32)
    with torch.inference_mode(), variant("eager"):
        want = ref(pixel_values(frames, torch.float32), ids).float().cpu().numpy()
    del ref
    empty(check.cuda)
    return want


def against_fp32(want: Any, got: Any) -> dict[str, Any]:
    from videoitg.engine_build.parity import compare

    p = compare(want, got)
    return {"max_abs_logit_diff": p.max_abs_diff, "top32": p.topk_overlap, "spearman": p.spearman}


def fp8_parity(check: Any, fp8: Any) -> dict[str, Any]:
    """FP8 logits against fp32 (TF32 off) on the same weights (one seed) and frames: T = 128 at a 1,024-token visual
    budget (8 frames with --tiny)."""
    import torch

    from videoitg.preprocess import pixel_values

    cfg = dataclasses.replace(fp8.config, vision_token_num=1024)
    fp8.config = cfg  # the reduced budget for this comparison (the model's config is read per call)
    frames, ids = parity_inputs(check, cfg)
    want = fp32_logits(check, cfg, frames, ids)
    with torch.inference_mode(), variant("hot"):
        got = fp8(pixel_values(frames, torch.bfloat16), ids).float().cpu().numpy()
    T = frames.shape[0]
    return {"frames": T, "visual_tokens": T * cfg.tokens_per_side(T) ** 2, **against_fp32(want, got),
            "logit_range": float(want.max() - want.min())}


def fp8_breakdown(check: Any) -> dict[str, Any]:
    """Where FP8's difference from fp32 comes from, in `fp8_parity`'s setup (weights, frames, instruction): fp16 and
    bf16 without FP8, FP8 in the vision tower's layers only, in the LLM's only, and in both, and in both without
    Hopper's fast accumulation, each against fp32 (eager: compiling fuses kernels, it changes no precision)."""
    import torch

    from benchmarks.perf.build import build_ours
    from videoitg.model.fp8 import Float8Linear, to_fp8
    from videoitg.model.vision import SiglipEncoderLayer
    from videoitg.preprocess import pixel_values

    cfg = dataclasses.replace(check.config("tiny" if check.tiny else "real"), vision_token_num=1024)
    frames, ids = parity_inputs(check, cfg)
    want = fp32_logits(check, cfg, frames, ids)
    out: dict[str, Any] = {"frames": frames.shape[0], "logit_range": float(want.max() - want.min()),
                           "logit_std": float(want.std())}
    # name -> (dtype, FP8 in: None none, "vision", "llm", "both")
    runs = {"fp16": (torch.float16, None), "bf16": (torch.bfloat16, None), "fp8_vision": (torch.bfloat16, "vision"),
            "fp8_llm": (torch.bfloat16, "llm"), "fp8": (torch.bfloat16, "both"),
            "fp8_exact_accum": (torch.bfloat16, "both")}
    for name, (dtype, where) in runs.items():
        model = build_ours(cfg, check.device, dtype)
        if where is not None:
            to_fp8(model, [x for x in model.transformer_layers()
                           if where == "both" or isinstance(x, SiglipEncoderLayer) == (where == "vision")])
        Float8Linear.fast_accum = name != "fp8_exact_accum"
        try:
            with torch.inference_mode(), variant("eager"):
                out[name] = against_fp32(want, model(pixel_values(frames, dtype), ids).float().cpu().numpy())
        finally:
            Float8Linear.fast_accum = True
        del model
        empty(check.cuda)
        check.progress(out, name)
    out["ok"] = all(out[k]["max_abs_logit_diff"] == out[k]["max_abs_logit_diff"] for k in runs)  # no NaN
    out["summary"] = f"T={out['frames']}, fp32 logits' range {out['logit_range']:.3g}: " + ", ".join(
        f"{k} top-32 {out[k]['top32']:.3g} max|d| {out[k]['max_abs_logit_diff']:.3g}" for k in runs)
    return out


def summarize(out: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """The goals' figures (docs/performance.md), each ratio with its floor named, and the section's verdict."""
    med, med8 = out["latency_s"]["median"], out["fp8_latency_s"]["median"]
    floor, sheet = out["floors_s"]["torch_kernels_measured_here"], out["floors_s"]["datasheet"]
    vision = out["profile"]["hot"]["vision"]
    figures = {
        "ours_cold_over_released_cold_fp16": med["hot_cold"] / med["released_cold"],
        "vision_over_floor_torch_kernels": vision["over_floor"], "vision_busy_share": vision["busy_share"],
        "vision_over_floor_datasheet": vision["wall_s"] / sheet["vision"] if sheet else None,
        "cached_s_fp16": med["hot_cached"],
        "fp8_cold_over_released_cold": med8["fp8_cold"] / med8["released_cold"],
        "fp8_top32_vs_fp32": out["fp8_vs_fp32"]["top32"],
        "fp8_max_abs_logit_diff_vs_fp32": out["fp8_vs_fp32"]["max_abs_logit_diff"],
        "hot_own_peak_gb": out["own_peak_gb"]["hot"],
        "hot_cold_over_floor_torch_kernels": med["hot_cold"] / floor["cold"],
        "fp8_cold_over_fp8_floor_torch_kernels": med8["fp8_cold"] / floor["fp8_cold"] if floor["fp8_cold"] else None}
    out["figures"] = figures
    out["ok"] = out["top32_hot_vs_released"] >= 0.97 and all(
        v is None or v == v for v in figures.values())  # agreeing paths; no NaN
    pct = {k: f"{v:.3g}" if isinstance(v, float) else str(v) for k, v in figures.items()}
    ab = ", ".join(f"{k} {v:.3f}x" for k, v in out["ab_vs_current"].items())
    out["summary"] = (f"T={out['frames']}: hot/released cold {pct['ours_cold_over_released_cold_fp16']}, cached "
                      f"{pct['cached_s_fp16']} s, vision {pct['vision_over_floor_torch_kernels']}x its floor "
                      f"(torch kernels' rates), busy {pct['vision_busy_share']}; A/B vs current: {ab}; multi-kernel "
                      f"vs hot {out['multi_kernel'].get('multi_kernel_over_hot', 'failed')}; FP8/released "
                      f"{pct['fp8_cold_over_released_cold']}, FP8 vs fp32 top-32 {pct['fp8_top32_vs_fp32']} max|d| "
                      f"{pct['fp8_max_abs_logit_diff_vs_fp32']}; own peak hot {pct['hot_own_peak_gb']} GB; compile "
                      f"{out['compile']['compile_s']:.1f} s" + ("" if cuda else " (CPU rehearsal, eager backend)"))
    return out


def timed(call: Callable[[], Any], sync: Callable[[], None]) -> tuple[Any, float]:
    sync()
    t0 = time.perf_counter()
    res = call()
    sync()
    return res, time.perf_counter() - t0


def interleave(calls: dict[str, Callable[[], Any]], rounds: int, device: Any) -> dict[str, list[float]]:
    """Seconds of each call, round by round, the order rotated each round; each call under its variant (the part
    of its name before `_cold` / `_cached`; any other name runs as it is)."""
    from benchmarks.perf.timing import time_calls

    names = list(calls)
    secs: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            with variant(k.rsplit("_", 1)[0]):
                secs[k] += time_calls(calls[k], device, warmup=1 if r == 0 else 0, iters=1)
    return secs


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (one per layer type, plus one per guard a new input breaks)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def empty(cuda: bool, compiled: bool = False) -> None:
    """Free what was dropped: the compiled code too when a compiled model was (its guards may hold its weights)."""
    import gc

    import torch

    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
