"""Load-time fusion of projections that read the same input: q/k/v into one `qkv_proj`, gate/up into one
`gate_up_proj`. One GEMM of width N1+N2+N3 instead of three reads the activation once and launches once (and an
FP8 GEMM quantises its input once instead of three times).

Fusion is applied to a loaded model, in place, for inference. The checkpoint format does not change: a fused
module's `state_dict()` still holds the HF names (`q_proj.weight`, ...) and `load_state_dict` still takes them,
through state-dict hooks, so a fused model saves and loads exactly like an unfused one.
"""

from __future__ import annotations

import torch
from torch import nn


def fuse_linears(parent: nn.Module, names: tuple[str, ...], fused_name: str) -> list[int]:
    """Replace the Linears `parent.<names>` (same input size, all with or all without bias) by one Linear
    `parent.<fused_name>` whose output is their outputs concatenated in order. Returns the output sizes, which
    `torch.split` takes to recover the parts."""
    parts = [getattr(parent, n) for n in names]
    if len({p.in_features for p in parts}) != 1 or len({p.bias is None for p in parts}) != 1:
        raise ValueError(f"cannot fuse {names}: different input sizes or bias settings")
    sizes = [p.out_features for p in parts]
    w = parts[0].weight
    fused = nn.Linear(parts[0].in_features, sum(sizes), bias=parts[0].bias is not None, device=w.device,
                      dtype=w.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
    fused.requires_grad_(w.requires_grad)
    for n in names:
        delattr(parent, n)
    setattr(parent, fused_name, fused)
    parent.register_state_dict_post_hook(_split_hook(names, fused_name, sizes))
    parent.register_load_state_dict_pre_hook(_merge_hook(names, fused_name))
    return sizes


def _split_hook(names: tuple[str, ...], fused_name: str, sizes: list[int]):
    def hook(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
        for kind in ("weight", "bias"):
            key = f"{prefix}{fused_name}.{kind}"
            if key in state:
                for n, part in zip(names, state.pop(key).split(sizes), strict=True):
                    state[f"{prefix}{n}.{kind}"] = part.clone()  # own storage: safetensors refuses shared views
    return hook


def _merge_hook(names: tuple[str, ...], fused_name: str):
    def hook(module: nn.Module, state: dict, prefix: str, *args: object) -> None:
        for kind in ("weight", "bias"):
            keys = [f"{prefix}{n}.{kind}" for n in names]
            if all(k in state for k in keys):
                state[f"{prefix}{fused_name}.{kind}"] = torch.cat([state.pop(k) for k in keys])
    return hook
