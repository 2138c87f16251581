"""torchrun with 2 CPU processes (gloo), DDP and FSDP, follows the same loss curve as 1 process with the same
global batch (accumulating 2 micro-batches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support import ROOT
from tests.support.model import one_torch_thread
from tests.support.train import SMALL_MODEL, small_config, small_dataset
from videoitg.launch.ports import free_port
from videoitg.model.checkpoint import read_tensors
from videoitg.train.trainer import Trainer, read_metrics

STEPS, LR = 4, 3e-3


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp")
    data = small_dataset(root / "data", videos=3, per_video=2)
    with one_torch_thread():  # 1 process: global batch 4 as 2 accumulated micro-batches of 2
        cfg = small_config(data, root / "one", max_steps=STEPS, global_batch=4, micro_batch=2, lr=LR, head_lr=LR)
        Trainer(cfg).run()
    return data, root / "one"


@pytest.mark.slow
def test_two_gloo_processes_match_one_with_accumulation(reference, tmp_path: Path) -> None:
    data, one = reference
    # 2 processes: global batch 4 as one micro-batch of 2 per process. DDP and FSDP run side by side (the
    # machine is shared; two small jobs at once take about as long as one).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "MASTER_ADDR": "127.0.0.1"}
    procs = {}
    for engine in ("ddp", "fsdp"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "videoitg", "train",
               str(data), "--out", str(tmp_path / engine), "--max-steps", str(STEPS), "--batch", "4",
               "--micro-batch", "2", "--lr", str(LR), "--head-lr", str(LR), "--model-overrides",
               json.dumps(SMALL_MODEL), "--threads", "1", "--quiet"] + (["--fsdp"] if engine == "fsdp" else [])
        procs[engine] = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True)
    for engine, p in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, f"{engine}:\n{out[-4000:]}"
    want = [m["loss"] for m in read_metrics(one)]
    ta = read_tensors(one / "final")
    for engine in procs:
        got = [m["loss"] for m in read_metrics(tmp_path / engine)]
        assert len(want) == len(got) == STEPS, engine
        # Same samples, same math; only the order of floating-point sums differs (all-reduce vs accumulation).
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), engine
        tb = read_tensors(tmp_path / engine / "final")
        assert set(ta) == set(tb), engine
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k, e=engine: f"{e} {k}: {m}")
