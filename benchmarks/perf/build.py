"""Build the two models the benchmarks compare, directly on the target device and dtype.

Our path is the core `VideoITG` (random weights, or a checkpoint through `load_checkpoint`); the baseline is
`OriginalPath` holding the same weights. Construction skips the fp32 CPU detour: a 7B model would otherwise
need 30 GB of host memory and minutes of CPU init before the first benchmark step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.perf.baseline import OriginalPath
from benchmarks.perf.weights import init_random_
from videoitg.config import VideoITGConfig
from videoitg.model.grounding import VideoITG


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_ours(
    cfg: VideoITGConfig,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
    checkpoint: str | Path | None = None,
) -> VideoITG:
    """Eval-mode core model without autograd state. Same seed, same weights (so a rebuild after an in-place FP8
    conversion is the same model)."""
    if checkpoint is not None:
        from videoitg.model.checkpoint import load_checkpoint

        model, _ = load_checkpoint(checkpoint, device, dtype, with_tokenizer=False)
    else:
        with torch.device("meta"):
            model = VideoITG(cfg)
        if any(True for _ in model.buffers()):
            # buffers computed in __init__ would be lost by to_empty(); build on the device instead
            with torch.device(device):
                model = VideoITG(cfg)
            model = model.to(dtype)
        else:
            model = model.to(dtype).to_empty(device=device)
        init_random_(model, seed=seed)
    return model.eval().requires_grad_(False)


def build_baseline(
    cfg: VideoITGConfig, device: torch.device, dtype: torch.dtype, state: dict[str, torch.Tensor], chunk: int = 384
) -> OriginalPath:
    """The HF original path on `device` in `dtype`, holding the weights of `state` (a core-model state dict).

    Built under `dtype` as the default dtype, like `from_pretrained(torch_dtype=...)`: rotary frequencies that HF
    computes explicitly in fp32 stay fp32 (a `.half()` afterwards would round them)."""
    with torch.device(device), default_dtype(dtype):
        base = OriginalPath(cfg, chunk=chunk)
    base.load_core_state_dict(state)
    return base.eval().requires_grad_(False)
