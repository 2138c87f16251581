"""Data-parallel training with PyTorch's own engines: `torchrun` + DDP (gloo on CPU, NCCL on GPU), and FSDP
(`fully_shard`, per decoder layer) for models whose weights/optimizer state do not fit one device.

Every rank runs the same steps; which samples a rank gets is a pure function of (step, rank) (see trainer), so
the run is reproducible and resumable at any world size."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group exists, even for one process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for a process started without it).
    Under torchrun even one process joins (NCCL on GPU, gloo on CPU) and wraps the model in DDP, so a one-GPU
    run goes through the same collectives as a multi-GPU one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, launched=True)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo, device: str = "cpu") -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def wrap_ddp(module: nn.Module, info: DistInfo, device: str) -> nn.Module:
    ids = [info.local_rank] if device.startswith("cuda") else None
    # The frozen vision tower has no grads and is skipped by DDP's reducer; every trainable parameter gets a
    # gradient each step, so find_unused_parameters stays off (faster, and the same result).
    return DDP(module, device_ids=ids)


def wrap_fsdp(
    module: nn.Module, layers: nn.ModuleList, mixed_bf16: bool, replicate: set[nn.Parameter] | None = None
) -> nn.Module:
    """FSDP2: shard each decoder layer, then the root (embeddings, projector, head). `replicate` (the frozen
    tower) stays whole on every rank: it has no gradients or optimizer state to shard, and the feature cache
    runs it outside the wrapped forward."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # here: torch >= 2.6 exports it

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_bf16 else None
    kw = {"mp_policy": mp} if mp is not None else {}
    for layer in layers:
        fully_shard(layer, **kw)
    fully_shard(module, ignored_params=replicate or None, **kw)
    return module


def full_state_dicts(module: nn.Module, opt: torch.optim.Optimizer | None, sharded: bool):
    """Full (unsharded, CPU) model and optimizer state dicts, for the checkpoint writer on rank 0."""
    if not sharded:
        return module.state_dict(), (opt.state_dict() if opt is not None else None)
    # imported here: a second of start-up for every run, and only a sharded (FSDP) one uses it
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if opt is None:
        return get_model_state_dict(module, options=opts), None
    return get_state_dict(module, opt, options=opts)
