"""torchrun DDP (2 CPU processes, gloo) follows the same loss curve as 1 process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import videoitg
from train.testing import SMALL_MODEL, small_config, small_dataset
from train.trainer import Trainer, read_metrics
from videoitg.checkpoint import read_tensors

REPO = Path(videoitg.__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_with_accumulation(tmp_path: Path) -> None:
    import json

    data = small_dataset(tmp_path / "data", videos=3, per_video=2)
    steps, lr = 4, "3e-3"
    # 1 process: global batch 4 as 2 micro-batches of 2 (gradient accumulation).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(small_config(data, tmp_path / "one", max_steps=steps, global_batch=4, micro_batch=2)).run()
    finally:
        torch.set_num_threads(n)
    # 2 processes: global batch 4 as one micro-batch of 2 per process.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "videoitg", "train",
           str(data), "--out", str(tmp_path / "two"), "--max-steps", str(steps), "--batch", "4",
           "--micro-batch", "2", "--lr", lr, "--head-lr", lr, "--model-overrides", json.dumps(SMALL_MODEL),
           "--threads", "1", "--quiet"]
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    one = [m["loss"] for m in read_metrics(tmp_path / "one")]
    two = [m["loss"] for m in read_metrics(tmp_path / "two")]
    assert len(one) == len(two) == steps
    # Same samples, same math; only the order of floating-point sums differs (all-reduce vs accumulation).
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
    ta, tb = read_tensors(tmp_path / "one" / "final"), read_tensors(tmp_path / "two" / "final")
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5)
