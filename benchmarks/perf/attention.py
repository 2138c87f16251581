"""SDPA at the model's real shapes: which kernel runs each attention call, how fast each kernel is, and how far
each is from an fp32 reference at lengths that are not multiples of 128 (12,950 tokens at T = 512, 729 patches).

Shapes (real sizes): SigLIP [chunk, 16, 729, 72] with no mask; Qwen2 q [1, 28, L, 128] against k/v with 4 heads
(GQA), bidirectional. FLOPs of one call: 4 * B * Hq * Lq * Lk * d (QK^T and PV), the convention of `flops.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.perf.flops import sequence_length
from benchmarks.perf.hotpath import BACKENDS
from benchmarks.perf.timing import median, time_calls
from videoitg.config import VideoITGConfig

# The aten op each SDPA kernel dispatches to (what the profiler records under aten::scaled_dot_product_attention).
KERNEL_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "aten::_scaled_dot_product_attention_math": "math",
}


def priority_order() -> list[str]:
    """The order in which SDPA tries its kernels on this build (`torch._C._get_sdp_priority_order()`)."""
    names = {int(b): b.name for b in SDPBackend.__members__.values()} if hasattr(SDPBackend, "__members__") else {}
    if not names:  # pybind enum without __members__ on some builds
        names = {int(getattr(SDPBackend, n)): n for n in dir(SDPBackend) if n.isupper()}
    return [names.get(int(i), str(i)) for i in torch._C._get_sdp_priority_order()]


def kernels_used(fn: Callable[[], object]) -> list[dict[str, Any]]:
    """Run `fn` once under the profiler; one row per (kernel, query shape) with its call count."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    counts: Counter[tuple[str, str]] = Counter()
    for e in prof.events():
        kernel = KERNEL_OPS.get(e.name)
        if kernel is not None:
            shapes = e.input_shapes
            counts[(kernel, "x".join(map(str, shapes[0])) if shapes and shapes[0] else "?")] += 1
    return [{"kernel": k, "query_shape": s, "calls": n} for (k, s), n in sorted(counts.items())]


@dataclass(frozen=True)
class AttnShape:
    name: str
    batch: int
    q_heads: int
    kv_heads: int
    length: int
    head_dim: int

    @property
    def flops(self) -> int:
        return 4 * self.batch * self.q_heads * self.length * self.length * self.head_dim


def real_shapes(cfg: VideoITGConfig, num_frames: int, instruction_len: int, chunk: int) -> list[AttnShape]:
    v, t = cfg.vision, cfg.text
    return [
        AttnShape("vision", min(chunk, num_frames), v.num_attention_heads, v.num_attention_heads,
                  v.tokens_per_frame, v.hidden_size // v.num_attention_heads),
        AttnShape("llm", 1, t.num_attention_heads, t.num_key_value_heads,
                  sequence_length(cfg, num_frames, instruction_len), t.head_dim),
    ]


def _inputs(s: AttnShape, device: torch.device, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(s.batch, s.q_heads, s.length, s.head_dim, device=device, generator=g).to(dtype)
    k = torch.randn(s.batch, s.kv_heads, s.length, s.head_dim, device=device, generator=g).to(dtype)
    v = torch.randn(s.batch, s.kv_heads, s.length, s.head_dim, device=device, generator=g).to(dtype)
    return q, k, v


def _call(q, k, v, native_gqa: bool) -> torch.Tensor:
    if q.shape[1] != k.shape[1] and not native_gqa:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return F.scaled_dot_product_attention(q, k, v, **({"enable_gqa": True} if native_gqa else {}))


def reference(q, k, v, heads_per_step: int = 4) -> torch.Tensor:
    """fp32 attention by explicit softmax, a few heads at a time (the [heads, L, L] scores of 12,950 tokens
    would be 19 GB at once)."""
    rep = q.shape[1] // k.shape[1]
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    scale = q.shape[-1] ** -0.5
    for h0 in range(0, q.shape[1], heads_per_step):
        hs = slice(h0, min(h0 + heads_per_step, q.shape[1]))
        kv = torch.arange(hs.start, hs.stop, device=q.device) // rep
        s = (q[:, hs].float() @ k[:, kv].float().transpose(-1, -2)) * scale
        out[:, hs] = s.softmax(-1) @ v[:, kv].float()
    return out


def kernel_table(shapes: list[AttnShape], device: torch.device, dtype: torch.dtype, kernels: list[str],
                 iters: int = 10, native_gqa: bool = True, check: bool = True) -> dict[str, dict[str, Any]]:
    """For each shape and kernel: runs or not (and why), median seconds, TFLOP/s, and the relative L2 error and
    max abs error against the fp32 reference on the same inputs. Fresh random inputs per shape."""
    out: dict[str, dict[str, Any]] = {}
    for s in shapes:
        q, k, v = _inputs(s, device, dtype, seed=s.length)
        ref = reference(q, k, v) if check else None
        row: dict[str, Any] = {"shape": vars(s), "flops": s.flops}
        for name in kernels:
            gqa = native_gqa and s.q_heads != s.kv_heads
            try:
                with sdpa_kernel([BACKENDS[name]]):
                    y = _call(q, k, v, gqa)
                    secs = median(time_calls(lambda q=q, k=k, v=v, g=gqa: _call(q, k, v, g), device, warmup=2,
                                             iters=iters))
            except RuntimeError as e:
                row[name] = {"runs": False, "why": str(e).splitlines()[0][:300]}
                continue
            entry: dict[str, Any] = {"runs": True, "s": secs, "tflops": s.flops / secs / 1e12, "native_gqa": gqa}
            if ref is not None:
                d = y.float() - ref
                entry.update(rel_l2=float(d.norm() / ref.norm()), max_abs=float(d.abs().max()),
                             finite=bool(torch.isfinite(y).all()))
            row[name] = entry
            del y
        out[s.name] = row
        del q, k, v, ref
    return out


def best_kernel(table: dict[str, Any], shape: str, max_rel_l2: float = 2e-2) -> str | None:
    """The fastest kernel at `shape` whose output is finite and within `max_rel_l2` of the fp32 reference."""
    ok = [(e["s"], k) for k, e in table[shape].items()
          if isinstance(e, dict) and e.get("runs") and e.get("finite", True) and e.get("rel_l2", 0.0) <= max_rel_l2]
    return min(ok)[1] if ok else None
