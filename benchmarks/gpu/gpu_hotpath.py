"""The GPU check's hot-path sections (`benchmarks/gpu/gpu_check.py --only env,hotpath,fp8_breakdown`): profile first,
then measure; record figures and name what each would decide (`decides`), deciding nothing. Real sizes on a GPU
(SigLIP-so400m + Qwen2-7B, random weights, T = 512, a 150-token instruction); tiny shapes (and four decoder
layers, so FP8 converts two) and few rounds with --tiny: the CPU rehearsal in the test suite runs every line.

hotpath     rates measured here first: fp16, bf16 and FP8 matmul at 8192^3 (FP8 through `videoitg.model.fp8.
            scaled_mm`: row-wise scales with and without Hopper's fast accumulation, and 1x128/128x128 block
            scales), SDPA in each tower at its real shape, and each FP8 scheme's layer (`Float8Linear`: the
            activation's quantization and the GEMM) at the language model's four shapes for this request's tokens
            against the bf16 layer (`fp8_gemms`); SM and memory clocks sampled through the section (nvidia-smi).
            Profile: the kernels of each tower (vision, projector, grounding) on the hot path, and the vision tower
            under each candidate, their device time and the share of wall time they keep the GPU busy. Then
            measure, interleaved round by round (>= 5 rounds, medians), cold (frames on the device) and cached
            (visual features cached): `current` (every `HOT_PATH` switch off, SigLIP's MLP at the checkpoint's
            width, eager: the hot path's changes all off), `hot` (the default: compiled), `hot_unpadded` (`hot`
            with the MLP unpadded), `hot_two_pass` (`hot` with the norms as inductor generates them), the candidate
            on top of `hot`: `vision_bf16` (the tower in bf16, the rest fp16), and `released` (HF modules,
            benchmarks/perf/baseline.py); the candidate's and the A/B variants' logits against `hot`'s and the
            released path's. Compile time of the layers. Each path's peak GPU memory, read while it is alone on the
            device. FP8 (`--precision fp8`: the language model's middle
            decoder layers): cold and cached latency interleaved with `released`, its kernels (`fp8_profile`), its
            own peak, and its logits against fp32 at real width (T = 128 at a 1,024-token visual budget, so the
            fp32 reference stays short). Each ratio names its floor: the torch kernels' rates measured in this
            run, or the card's datasheet rate.
fp8_breakdown
            in `hotpath`'s fp32 comparison (weights, frames, instruction; eager): fp16, bf16 and the vision tower
            in bf16 (the rest fp16) without FP8; FP8 as the mode runs it (row-wise scales, fast accumulation), without
            fast accumulation, with block scales, in every decoder layer, and in both towers; then the per-layer
            sensitivity sweep, each decoder layer alone in FP8, row-wise and block; each against fp32: max
            |difference|, top-32 overlap, Spearman, error/spread (std of the difference / std of the fp32 logits).

What each figure would decide (`decides` in each section's record): a candidate goes on the default GPU path only
where every round of it ran under `hot`'s fastest and its logits keep the ranking; the bf16 tower becomes the GPU
default only where its top-32 against the released path and against fp32 is >= 0.99 (and the docs say so); the FP8
scheme, fast accumulation and the decoder layers kept 16-bit (`videoitg.model.fp8.KEEP_16BIT`) follow the breakdown
and the sweep, the FP8 layers' times at the model's shapes, and FP8's cold and cached times.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import signal
import statistics
import subprocess
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

ROUNDS, TINY_ROUNDS = 5, 2
FP8_PART_S = 60  # the FP8 half of the section on an H100 or H200 (estimated), for the budget
SWITCHES = ("gqa_without_copies", "gelu_epilogue", "one_pass_norms")  # HOT_PATH's
LAYOUTS = ("padded_mlp", "vision_bf16")  # weight layouts `variant` re-lays (outside the timed calls)
SHIPPED = ("gqa_without_copies", "gelu_epilogue", "padded_mlp", "one_pass_norms")  # what the hot path runs on a GPU
# name -> (changes on, compiled). `current` has every change off; `hot` is what ships; `hot_unpadded` and
# `hot_two_pass` are `hot` without one of its changes (SigLIP's MLP at the checkpoint's width; the norms as
# inductor's kernels): each one's A/B on the compiled path. The candidates are `hot` plus one change each.
VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "current": ((), False), "hot": (SHIPPED, True),
    "hot_unpadded": (tuple(c for c in SHIPPED if c != "padded_mlp"), True),
    "hot_two_pass": (tuple(c for c in SHIPPED if c != "one_pass_norms"), True),
    "vision_bf16": ((*SHIPPED, "vision_bf16"), True)}
CANDIDATES = ("vision_bf16",)
AB = {"hot_unpadded": "padded MLP", "hot_two_pass": "one-pass norms"}  # `hot` without one change: what it measures
# Dense (no sparsity) tensor-core rates, TFLOP/s (NVIDIA's H100 / H200 datasheets), the more specific name first.
DATASHEET_TFLOPS = {"H100 PCIe": {"fp16": 756.5, "bf16": 756.5, "fp8": 1513.0},
                    "H100": {"fp16": 989.4, "bf16": 989.4, "fp8": 1978.9},  # SXM
                    "H200": {"fp16": 989.4, "bf16": 989.4, "fp8": 1978.9}}
CLOCK_FIELDS = ("clocks.sm", "clocks.mem", "power.draw", "utilization.gpu", "temperature.gpu")
DECIDES = {
    "hotpath.candidates.vision_bf16": "with fp8_breakdown.vision_bf16.top32 >= 0.99 and top-32 vs released >= 0.99: "
                                      "the tower in bf16 by default on a GPU (docs say so); else an option only",
    "hotpath.ab.padded MLP (hot vs hot_unpadded)": "SigLIP's MLP padded on a GPU where < 1; else pad_mlps removed",
    "hotpath.ab.one-pass norms (hot vs hot_two_pass)": "the one-pass norms on by default on a GPU where < 1 and "
                                                       "hot's top-32 vs released is no lower than hot_two_pass's; else "
                                                       "the kernel goes",
    "hotpath.fp8_gemms, fp8_breakdown.fp8_block": "FP8's default scheme (rowwise or block)",
    "hotpath.rates_tflops.fp8_exact_accum, fp8_breakdown.fp8_exact_accum": "Float8Linear.fast_accum kept or off",
    "fp8_breakdown.sweep_*": "which decoder layers stay 16-bit (fp8.KEEP_16BIT, fp8_layers)",
    "hotpath.figures.fp8_*": "FP8's goals: cold / released <= 0.62, cached <= 0.32 s, top-32 >= 0.93, "
                             "error/spread <= 0.15"}


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


LAID_OUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its vision tower and a bf16 twin


def laid_out(model: Any) -> Any:
    """`model`, from here on laid out by each variant as it runs it: SigLIP's MLP padded or not, its vision tower
    or the tower's bf16 twin (made here, before anything is compiled: `twin`)."""
    tower = model.model.vision_tower
    LAID_OUT[model] = (tower, copy.deepcopy(tower).bfloat16())
    return model


def twin(model: Any) -> Any:
    """The bf16 twin of a `laid_out` model's vision tower."""
    return LAID_OUT[model][1]


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """The model code as the variant `name` runs it: its HOT_PATH switches, its weight layout (on the models
    `laid_out` registered, outside the timed calls), compiled or eager; all as they were after."""
    import torch

    from videoitg.model.hotpath import HOT_PATH, MLP_MULTIPLE
    from videoitg.model.vision import SiglipMLP

    on, compiled = VARIANTS[name] if name in VARIANTS else (SHIPPED, True)
    saved = dataclasses.replace(HOT_PATH)
    models = list(LAID_OUT.items())
    before = [(x.model.vision_tower, any(m.padded for m in x.modules() if isinstance(m, SiglipMLP)))
              for x, _ in models]
    for s in SWITCHES:
        setattr(HOT_PATH, s, s in on)
    for x, (tower, bf16) in models:
        x.model.vision_tower = bf16 if "vision_bf16" in on else tower
        x.pad_mlps(MLP_MULTIPLE if "padded_mlp" in on else 1)
    try:
        with torch.compiler.set_stance("default" if compiled else "force_eager"):
            yield
    finally:
        for s in SWITCHES:
            setattr(HOT_PATH, s, getattr(saved, s))
        for (x, _), (tower, was) in zip(models, before, strict=True):
            x.model.vision_tower = tower
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


def own_peak_gb(model: Any, px: Any, ids: Any, device: Any) -> float | None:
    """Peak GPU memory of `model(px, ids)` with what is resident now (its path's weights and inputs, nothing else),
    read. The frames come in the model's own dtype, so every path's reading holds one copy of them, made before."""
    import torch

    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    if px.dtype != dtype:
        raise ValueError(f"own_peak_gb: frames in {px.dtype} for a {dtype} model would be copied inside the call")
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model(px, ids)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 1e9


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
    `fp8_gemm`: the GEMMs `--precision fp8` runs in FP8 (the linear layers of the decoder layers `fp8_layer_indices`
    names; the vision tower, the projector, the 16-bit decoder layers and the head stay 16-bit: `other_gemm`)."""
    from benchmarks.perf.flops import request_flops, siglip_layer_flops
    from videoitg.model.fp8 import fp8_layer_indices

    f = request_flops(cfg, frames, instruction)
    _, att = siglip_layer_flops(cfg.vision)
    vision_att = frames * cfg.vision_layers_used * att
    n = cfg.text.num_hidden_layers
    fp8 = f.llm_linear * len(fp8_layer_indices(n)) // n  # every decoder layer's linear layers do the same work
    return {"vision": {"gemm": f.vision - vision_att, "attention": vision_att, "fp8_gemm": 0,
                       "other_gemm": f.vision - vision_att},
            "projector": {"gemm": f.projector, "attention": 0, "fp8_gemm": 0, "other_gemm": f.projector},
            "grounding": {"gemm": f.llm_linear + f.head, "attention": f.llm_attention, "fp8_gemm": fp8,
                          "other_gemm": f.llm_linear - fp8 + f.head}}


def floors(flops: dict[str, dict[str, int]], gemm: float, fp8: float | None, vis_att: float,
           llm_att: float) -> dict[str, float | None]:
    """Seconds at the given rates: each tower in 16-bit, the cold and cached request, and the cold request in FP8
    (its FP8 linear layers at the FP8 rate, the other GEMMs at `gemm`)."""
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
def check_config(check: Any) -> Any:
    """The section's model shapes: the released ones, or the tiny ones with four decoder layers (FP8 converts the
    middle two)."""
    cfg = check.config("tiny" if check.tiny else "real")
    if check.tiny:
        cfg.text = dataclasses.replace(cfg.text, num_hidden_layers=4)
    return cfg


def hotpath(check: Any) -> dict[str, Any]:
    import torch

    from benchmarks.perf.build import build_baseline, build_ours
    from benchmarks.perf.flops import sequence_length
    from benchmarks.perf.timing import matmul_rate
    from videoitg.model.fp8 import to_fp8
    from videoitg.model.hotpath import MLP_MULTIPLE, compile_layers
    from videoitg.preprocess import pixel_values

    tiny, dev, cuda = check.tiny, check.device, check.cuda
    cfg = check_config(check)
    T, instr, rounds = (4, 6, TINY_ROUNDS) if tiny else (512, 150, ROUNDS)
    backend = "inductor" if cuda else "eager"  # the rehearsal traces every compiled call; inductor needs the GPU
    recompiles(64)  # every variant's graphs kept (each layer type compiles once per dtype, layout and switch)
    v, t = cfg.vision, cfg.text
    out: dict[str, Any] = {"frames": T, "instruction_tokens": instr, "rounds": rounds, "compile_backend": backend,
                           "decides": DECIDES}
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
                 "fp8_block": attempt(out, "fp8_block_rate", lambda: fp8_matmul_rate(dev, n, it, warm,
                                                                                     scheme="block")),
                 "vision_attention_fp16": sdpa_rate(dev, torch.float16, min(64, T), v.num_attention_heads,
                                                    v.num_attention_heads, v.tokens_per_frame,
                                                    v.hidden_size // v.num_attention_heads, 3 if tiny else 10),
                 "llm_attention_fp16": sdpa_rate(dev, torch.float16, 1, t.num_attention_heads, t.num_key_value_heads,
                                                 sequence_length(cfg, T, instr), t.head_dim, 3 if tiny else 10)}
        out["rates_tflops"] = {k: (r / 1e12 if r else None) for k, r in rates.items()}
        out["fp8_gemms"] = fp8_gemms(cfg, sequence_length(cfg, T, instr), dev, 3 if tiny else 20)
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
        compile_layers(ours, backend, layers=list(twin(ours).vision_tower.vision_model.encoder.layers))
        out.update(alone(ours, px, ids, dev))  # compile time, own peak memory of `hot` and `current`
        check.progress(out, "compile, own peaks")
        # a candidate that fails its first call (a compile error, say) is recorded and left out of what follows
        cands = [c for c in CANDIDATES if attempt(out, c, lambda c=c: probe(c, ours, px, ids)) is not None]
        out["profile"] = profile_towers(ours, px, ids, dev, measured, cands)
        check.progress(out, "profile")
        base = build_baseline(cfg, dev, dtype, ours.state_dict())
        out.update(against_released(ours, base, px, ids, dev, rounds, cands))
        check.progress(out, "interleaved rounds")
        ours = None
        empty(cuda, compiled=True)
        out["own_peak_gb"]["released"] = own_peak_gb(base, px, ids, dev)

        fp8 = to_fp8(build_ours(cfg, dev, torch.bfloat16))  # as `prepare_inference` prepares it on a GPU
        if cuda:
            fp8.pad_mlps(MLP_MULTIPLE)
        compile_layers(fp8, backend)
        px8 = px.to(torch.bfloat16)  # FP8's frames, made outside every timed or measured call
        out.update(fp8_against_released(fp8, base, px, px8, ids, dev, rounds))
        check.progress(out, "fp8 rounds")
        base = px = None  # FP8's own peak as `hot`'s: its weights and one copy of the frames resident
        empty(cuda)
        with variant("hot"):
            out["own_peak_gb"]["fp8"] = own_peak_gb(fp8, px8, ids, dev)
        out["fp8_vs_fp32"] = fp8_parity(check, fp8)
    out["clocks"] = sampler.summary()
    return summarize(out, cuda)


def attempt(out: dict[str, Any], name: str, call: Callable[[], Any]) -> Any:
    """`call()`, or None with its error recorded under out["errors"][name] (what this torch or card lacks)."""
    try:
        return call()
    except Exception as e:
        out.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:2000]
        return None


def probe(name: str, model: Any, px: Any, ids: Any) -> bool:
    """A candidate's first call (its compile), untimed."""
    with variant(name):
        model(px, ids)
    return True


def recompiles(limit: int) -> None:
    """Let dynamo keep `limit` graphs per layer type (each variant's dtype, layout and switches is one)."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(limit, getattr(torch._dynamo.config, name)))


def fp8_matmul_rate(device: Any, n: int, iters: int, warmup: int, fast_accum: bool = True,
                    scheme: str = "rowwise") -> float | None:
    """FLOP/s of FP8's GEMM at n^3 (`videoitg.model.fp8.scaled_mm`, bf16 out: what `Float8Linear` runs) with
    `scheme`'s scales, with Hopper's fast accumulation or without (row-wise); None off a GPU that has it (FP8:
    compute capability 8.9+; block scales: Hopper)."""
    import torch

    from benchmarks.perf.timing import median, time_calls
    from videoitg.model.fp8 import BLOCK, quantize, scaled_mm

    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9) or (
            scheme == "block" and torch.cuda.get_device_capability(device)[0] != 9):
        return None
    g = torch.Generator(device=device).manual_seed(0)
    a, w = (torch.randn(n, n, device=device, generator=g) for _ in range(2))
    if scheme == "rowwise":
        (qa, sa), (qw, sw) = quantize(a, 1, n), quantize(w, 1, n)
        sw = sw.t().contiguous()
    else:
        (qa, sa), (qw, sw) = quantize(a, 1, BLOCK), quantize(w, BLOCK, BLOCK)
    secs = median(time_calls(lambda: scaled_mm(qa, sa, qw, sw, None, scheme, fast_accum), device, warmup=warmup,
                             iters=iters))
    return 2 * n**3 / secs


def fp8_gemms(cfg: Any, tokens: int, device: Any, iters: int) -> dict[str, Any]:
    """Each of the language model's four linear shapes for `tokens` tokens (q/k/v and gate/up fused, as FP8 runs
    them): seconds of the bf16 layer and of `Float8Linear` (the input's quantization and the GEMM) per scheme,
    fast accumulation on and off for row-wise; medians. Off a GPU with FP8, the CPU emulation's times."""
    import torch
    from torch import nn

    from benchmarks.perf.timing import median, time_calls
    from videoitg.model.fp8 import Float8Linear

    t = cfg.text
    h, kv, inter = t.hidden_size, t.num_key_value_heads * t.head_dim, t.intermediate_size
    shapes = {"qkv": (h, h + 2 * kv), "o": (h, h), "gate_up": (h, 2 * inter), "down": (inter, h)}
    g = torch.Generator(device=device).manual_seed(4)
    out: dict[str, Any] = {"tokens": tokens}
    for name, (k, n) in shapes.items():
        lin = nn.Linear(k, n, bias=name == "qkv", device=device, dtype=torch.bfloat16)
        with torch.no_grad():
            lin.weight.normal_(0, 0.02, generator=g)
        x = torch.randn(tokens, k, device=device, generator=g).to(torch.bfloat16)
        row = {"bf16_s": median(time_calls(lambda lin=lin, x=x: lin(x), device, warmup=2, iters=iters))}
        for scheme, fast in (("rowwise", True), ("rowwise", False), ("block", False)):
            key = f"{scheme}{'' if fast or scheme == 'block' else '_exact_accum'}_s"
            try:
                f8 = Float8Linear.from_linears([lin], scheme)
                Float8Linear.fast_accum = fast
                row[key] = median(time_calls(lambda f8=f8, x=x: f8(x), device, warmup=2, iters=iters))
            except Exception as e:  # a scheme this torch or card lacks: recorded, the others still timed
                row[key] = f"{type(e).__name__}: {e}"[:300]
            finally:
                Float8Linear.fast_accum = True
        out[name] = row
        del lin, x
    return out


def alone(ours: Any, px: Any, ids: Any, dev: Any) -> dict[str, Any]:
    """With only our model on the device (the bf16 twin of its tower moved off while the peaks are read): the
    compiled path's first call (compile time) and each path's peak."""
    import torch

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with variant("hot"):
        _, first = timed(lambda: ours(px, ids), sync)
        _, second = timed(lambda: ours(px, ids), sync)
    peaks = {}
    twin(ours).to("cpu")
    try:
        for name in ("hot", "current"):
            with variant(name):
                peaks[name] = own_peak_gb(ours, px, ids, dev)
    finally:
        twin(ours).to(dev)
    return {"compile": {"first_call_s": first, "second_call_s": second, "compile_s": first - second,
                        "graphs": compiled_graphs()}, "own_peak_gb": peaks}


def profile_towers(ours: Any, px: Any, ids: Any, dev: Any, floor: dict[str, Any],
                   candidates: list[str]) -> dict[str, Any]:
    """Each tower on the hot path, and the vision tower under each candidate: wall time, its kernels (profiler),
    their busy share, its floor."""
    from benchmarks.perf.timing import median, time_calls

    hw = ours.config.tokens_per_side(px.shape[0])
    vis, feats = ours.visual_features(px), ours.encode_frames(px)
    towers = {"vision": lambda: ours.encode_frames(px), "projector": lambda: ours.project(feats, hw),
              "grounding": lambda: ours.score_features([vis], [ids])}
    profile: dict[str, Any] = {}
    for name in ("hot", *candidates):
        with variant(name):
            rows = {}
            for tower, call in towers.items():
                if name != "hot" and tower != "vision":
                    continue
                wall = median(time_calls(call, dev, warmup=1, iters=3))
                prof = kernel_profile(call, dev.type == "cuda")
                rows[tower] = {"wall_s": wall, "busy_share": prof["kernel_s"] / wall, **prof,
                               "floor_s": floor[tower], "over_floor": wall / floor[tower]}
            profile[name] = rows
    return profile


def against_released(ours: Any, base: Any, px: Any, ids: Any, dev: Any, rounds: int,
                     candidates: list[str]) -> dict[str, Any]:
    """Every variant (of the candidates, those given) and the released-style path, cold and cached, interleaved; the
    candidates' logits against `hot`'s and the released path's, and each A/B variant's top-32 against the released
    path's."""
    from benchmarks.perf.timing import median
    from videoitg.engine_build.parity import compare

    vis, bvis = ours.visual_features(px), base.project(base.encode_frames(px))
    calls: dict[str, Callable[[], Any]] = {f"{k}_cold": (lambda: ours(px, ids)) for k in VARIANTS
                                           if k not in CANDIDATES or k in candidates}
    calls.update(released_cold=lambda: base(px, ids), hot_cached=lambda: ours.score_features([vis], [ids]),
                 current_cached=lambda: ours.score_features([vis], [ids]),
                 released_cached=lambda: base.score_visual(bvis, ids))
    secs = interleave(calls, rounds, dev)
    med = {k: median(x) for k, x in secs.items()}
    released = base(px, ids).float().cpu().numpy()
    logits = {}
    for name in ("hot", *AB, *candidates):
        with variant(name):
            logits[name] = ours(px, ids).float().cpu().numpy()
    ab = {k: med[f"{k}_cold"] / med["current_cold"] for k in VARIANTS if f"{k}_cold" in med and k != "current"}
    for without, what in AB.items():
        ab[f"{what} (hot vs {without})"] = med["hot_cold"] / med[f"{without}_cold"]
    rows = {}
    for name in candidates:
        vs_hot, vs_released = compare(logits["hot"], logits[name]), compare(released, logits[name])
        rows[name] = {"over_hot": med[f"{name}_cold"] / med["hot_cold"],
                      "every_round_under_hots_fastest": max(secs[f"{name}_cold"]) < min(secs["hot_cold"]),
                      "top32_vs_hot": vs_hot.topk_overlap, "max_abs_logit_diff_vs_hot": vs_hot.max_abs_diff,
                      "top32_vs_released": vs_released.topk_overlap}
    return {"latency_s": {"median": med, "all": secs},
            "top32_hot_vs_released": compare(released, logits["hot"]).topk_overlap, "ab_vs_current": ab,
            "top32_vs_released": {k: compare(released, logits[k]).topk_overlap for k in ("hot", *AB)},
            "candidates": rows}


def fp8_against_released(fp8: Any, base: Any, px: Any, px8: Any, ids: Any, dev: Any, rounds: int) -> dict[str, Any]:
    """FP8's first call (its compile), then FP8 (on `px8`, the frames in bf16) and the released-style path (on `px`),
    cold and cached, interleaved."""
    import torch

    from benchmarks.perf.timing import median
    from videoitg.engine_build.parity import topk_overlap

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with variant("hot"):
        _, first = timed(lambda: fp8(px8, ids), sync)
        vis8, bvis = fp8.visual_features(px8), base.project(base.encode_frames(px))
        secs = interleave({"fp8_cold": lambda: fp8(px8, ids), "released_cold": lambda: base(px, ids),
                           "fp8_cached": lambda: fp8.score_features([vis8], [ids]),
                           "released_cached": lambda: base.score_visual(bvis, ids)}, rounds, dev)
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
    import torch

    from videoitg.engine_build.parity import compare
    from videoitg.model.fp8 import error_over_spread

    p = compare(want, got)
    return {"max_abs_logit_diff": p.max_abs_diff, "top32": p.topk_overlap, "spearman": p.spearman,
            "error_over_spread": error_over_spread(torch.as_tensor(want), torch.as_tensor(got))}


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


@contextlib.contextmanager
def in_fp8(layers: Any, scheme: str = "rowwise") -> Iterator[None]:
    """`layers` (pairs of a ModuleList and an index) replaced by FP8 copies for the block, the 16-bit layers back
    after (one bf16 model serves every FP8 variant)."""
    from videoitg.model.fp8 import convert_layer

    saved = [(mods, i, mods[i]) for mods, i in layers]
    try:
        for mods, i, layer in saved:
            mods[i] = convert_layer(copy.deepcopy(layer), scheme)
        yield
    finally:
        for mods, i, layer in saved:
            mods[i] = layer


def fp8_breakdown(check: Any) -> dict[str, Any]:
    """Where FP8's difference from fp32 comes from, in `fp8_parity`'s setup (weights, frames, instruction), eager
    (compiling fuses kernels, it changes no precision): fp16, bf16 and the vision tower in bf16 without FP8; FP8 as
    the mode runs it, without fast accumulation, with block scales, in every decoder layer and in both towers; the
    per-layer sensitivity sweep (row-wise and block); each against fp32."""
    import torch

    from benchmarks.perf.build import build_ours
    from videoitg.model.fp8 import Float8Linear, fp8_layers, layer_sensitivity
    from videoitg.preprocess import pixel_values

    cfg = dataclasses.replace(check_config(check), vision_token_num=1024)
    frames, ids = parity_inputs(check, cfg)
    want = fp32_logits(check, cfg, frames, ids)
    out: dict[str, Any] = {"frames": frames.shape[0], "logit_range": float(want.max() - want.min()),
                           "logit_std": float(want.std()), "decides": DECIDES}

    def logits(model: Any, dtype: Any) -> Any:
        with torch.inference_mode(), variant("eager"):
            return model(pixel_values(frames, dtype), ids).float().cpu().numpy()

    model = build_ours(cfg, check.device, torch.float16)
    out["fp16"] = against_fp32(want, logits(model, torch.float16))
    model.model.vision_tower.to(torch.bfloat16)  # what precision vision-bf16 does to a loaded fp16 model
    out["vision_bf16"] = against_fp32(want, logits(model, torch.float16))
    del model
    empty(check.cuda)
    model = build_ours(cfg, check.device, torch.bfloat16)
    out["bf16"] = against_fp32(want, logits(model, torch.bfloat16))
    check.progress(out, "16-bit")
    lm = model.model.layers
    vision = model.model.vision_tower.vision_tower.vision_model.encoder.layers
    converted = {id(x) for x in fp8_layers(model)}  # the layers the FP8 mode converts
    mode = [(lm, i) for i, layer in enumerate(lm) if id(layer) in converted]
    every = [(lm, i) for i in range(len(lm))]
    runs = {"fp8": (mode, "rowwise", True), "fp8_exact_accum": (mode, "rowwise", False),
            "fp8_block": (mode, "block", False), "fp8_every_layer": (every, "rowwise", True),
            "fp8_towers": (every + [(vision, i) for i in range(len(vision))], "rowwise", True)}
    for name, (layers, scheme, fast) in runs.items():
        Float8Linear.fast_accum = fast
        try:
            with in_fp8(layers, scheme):
                out[name] = against_fp32(want, logits(model, torch.bfloat16))
        except Exception as e:  # a scheme this torch or card lacks: recorded, the others still measured
            out[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        finally:
            Float8Linear.fast_accum = True
        check.progress(out, name)
    wanted = torch.as_tensor(want)
    for scheme in ("rowwise", "block"):
        try:
            out[f"sweep_{scheme}"] = layer_sensitivity(
                model, lambda m=model: torch.as_tensor(logits(m, torch.bfloat16)), wanted, scheme)
        except Exception as e:
            out[f"sweep_{scheme}"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        check.progress(out, f"sweep {scheme}")
    del model
    empty(check.cuda)
    rows = ("fp16", "bf16", "vision_bf16", *runs)
    out["ok"] = all(out[k]["max_abs_logit_diff"] == out[k]["max_abs_logit_diff"] for k in rows
                    if "error" not in out[k])  # no NaN
    out["summary"] = f"T={out['frames']}, fp32 logits' range {out['logit_range']:.3g}: " + ", ".join(
        f"{k} top-32 {out[k]['top32']:.3g} err/spread {out[k]['error_over_spread']:.3g}" if "error" not in out[k]
        else f"{k} failed" for k in rows) + "; sweep (rowwise) " + (
        ", ".join(f"{x:.3g}" for x in out["sweep_rowwise"]) if isinstance(out["sweep_rowwise"], list) else "failed")
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
        "fp8_cached_s": med8["fp8_cached"],
        "fp8_top32_vs_fp32": out["fp8_vs_fp32"]["top32"],
        "fp8_error_over_spread_vs_fp32": out["fp8_vs_fp32"]["error_over_spread"],
        "fp8_max_abs_logit_diff_vs_fp32": out["fp8_vs_fp32"]["max_abs_logit_diff"],
        "hot_own_peak_gb": out["own_peak_gb"]["hot"],
        "hot_cold_over_floor_torch_kernels": med["hot_cold"] / floor["cold"],
        "fp8_cold_over_fp8_floor_torch_kernels": med8["fp8_cold"] / floor["fp8_cold"] if floor["fp8_cold"] else None,
        **{f"{k}_over_hot": c["over_hot"] for k, c in out["candidates"].items()}}
    out["figures"] = figures
    out["ok"] = out["top32_hot_vs_released"] >= 0.97 and all(
        v is None or v == v for v in figures.values())  # agreeing paths; no NaN
    pct = {k: f"{v:.3g}" if isinstance(v, float) else str(v) for k, v in figures.items()}
    ab = ", ".join(f"{k} {v:.3f}x" for k, v in out["ab_vs_current"].items())
    cands = ", ".join(f"{k} {c['over_hot']:.3f}x (top-32 vs released {c['top32_vs_released']:.2f})"
                      for k, c in out["candidates"].items())
    out["summary"] = (f"T={out['frames']}: hot/released cold {pct['ours_cold_over_released_cold_fp16']}, cached "
                      f"{pct['cached_s_fp16']} s, vision {pct['vision_over_floor_torch_kernels']}x its floor "
                      f"(torch kernels' rates), busy {pct['vision_busy_share']}; A/B vs current: {ab}; candidates vs "
                      f"hot: {cands}; FP8/released {pct['fp8_cold_over_released_cold']}, cached "
                      f"{pct['fp8_cached_s']} s, FP8 vs fp32 top-32 {pct['fp8_top32_vs_fp32']} err/spread "
                      f"{pct['fp8_error_over_spread_vs_fp32']}; "
                      f"own peak hot {pct['hot_own_peak_gb']} GB; compile {out['compile']['compile_s']:.1f} s"
                      + ("" if cuda else " (CPU rehearsal, eager backend)"))
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
