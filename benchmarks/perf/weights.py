"""Random weights of the right shapes and dtype: a model's cost does not depend on its weight values, so the
benchmarks run at real sizes without a checkpoint."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_random_(module: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """In place: matrices ~ N(0, std) (the HF initializer range), 1-D weights (norms) = 1, biases = 0.

    Drawn on each parameter's own device, so a 7B model initialises on the GPU in milliseconds; the fixed seed
    gives the same weights on every run of the same build.
    """
    gens: dict[torch.device, torch.Generator] = {}
    for name, p in module.named_parameters():
        if p.dim() == 1:
            p.fill_(1.0 if name.endswith("weight") else 0.0)
            continue
        g = gens.get(p.device)
        if g is None:
            g = gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
        if p.dtype.is_floating_point and p.dtype.itemsize < 4:
            # draw in fp32 then round, so bf16 and fp16 copies of one seed hold the same values
            p.copy_(torch.empty(p.shape, device=p.device).normal_(0.0, std, generator=g))
        else:
            p.normal_(0.0, std, generator=g)
    return module
