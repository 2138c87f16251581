"""Resumable training state, written every N steps: weights (in the core checkpoint layout, so any saved step
is a usable model), optimizer, scheduler, RNG states and the data position. Tensors go to safetensors, the rest
to JSON: nothing is pickled.

    RUN/checkpoints/step-000040/
        config.json, model.safetensors, tokenizer files      (videoitg.model.checkpoint layout)
        train_state/optimizer.safetensors                   (per-parameter state tensors)
        train_state/rng.safetensors                         (torch CPU / CUDA generator states)
        train_state/trainer_state.json                      (step, epoch, optimizer/scheduler structure, RNG)

The training state sits in a subfolder so the step directory stays a plain checkpoint: the core loader reads
every `*.safetensors` next to config.json as weights.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE = "trainer_state.json"
SUBDIR = "train_state"


def optimizer_to_files(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict -> (tensors for safetensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}::{k}"] = v.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    # Plain optimizers key their state by parameter id (int); FSDP's full state dict by parameter name.
    def key(pid: str) -> int | str:
        return int(pid) if pid.isdigit() else pid

    state: dict[int | str, dict[str, Any]] = {}
    for k, v in tensors.items():
        pid, name = k.rsplit("::", 1)
        state.setdefault(key(pid), {})[name] = v
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(key(pid), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    npst = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_training_state(
    out: Path,
    opt_state_dict: dict[str, Any],
    sched: torch.optim.lr_scheduler.LRScheduler,
    progress: dict[str, Any],
) -> None:
    """Everything but the weights (the caller writes those with `save_checkpoint`). Writes `trainer_state.json`
    last, so a directory without it is an interrupted save and is never resumed from."""
    out = out / SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    tensors, opt_meta = optimizer_to_files(opt_state_dict)
    save_file(tensors, str(out / "optimizer.safetensors"))
    rng_t, rng_meta = rng_state()
    save_file(rng_t, str(out / "rng.safetensors"))
    sched_sd = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    state = {**progress, "optimizer": opt_meta, "scheduler": sched_sd, "rng": rng_meta}
    tmp = out / (STATE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(out / STATE)


def load_training_state(d: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """(trainer_state.json, optimizer state_dict, rng tensors) of a step directory."""
    d = d / SUBDIR
    state = json.loads((d / STATE).read_text())
    opt_sd = optimizer_from_files(load_file(str(d / "optimizer.safetensors")), state["optimizer"])
    return state, opt_sd, load_file(str(d / "rng.safetensors"))


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:06d}"


def latest_complete(run: Path) -> Path | None:
    """The newest step directory whose save finished (has trainer_state.json)."""
    d = run / "checkpoints"
    if not d.is_dir():
        return None
    done = sorted(p for p in d.glob("step-*") if (p / SUBDIR / STATE).exists())
    return done[-1] if done else None


def prune(run: Path, keep: int) -> None:
    """Keep the newest `keep` complete step directories (and any newer incomplete one being written)."""
    d = run / "checkpoints"
    done = sorted(p for p in d.glob("step-*") if (p / SUBDIR / STATE).exists())
    for p in done[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
