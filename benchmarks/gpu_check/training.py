"""Training on the GPU: a few steps of `videoitg train` at mid size (parity.mid_config) in bf16 on CUDA, launched
by torchrun as one process (so the NCCL process group and DDP run), against the same steps in fp32 on the CPU;
the GPU run's checkpoint comes back to be loaded on a CPU machine (`python -m benchmarks.gpu_check verify-here`).

Tolerance: bf16 autocast against fp32, same data and seeds, every step's loss within 5 % (relative) of the fp32
loss. Measured on the CPU with this set-up (bf16 autocast on the CPU against fp32): see docs/performance.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_check.parity import mid_config

LOSS_RTOL = 0.05
PIECE_BYTES = 15 * 1024**2  # the device call brings back files of at most 16 MiB


def mid_overrides() -> dict[str, Any]:
    cfg = mid_config()
    text, vision = asdict(cfg.text), asdict(cfg.vision)
    text.pop("vocab_size")  # the tokenizer sets it
    return {"text": text, "vision": vision, "vision_token_num": cfg.vision_token_num,
            "tokenizer_model_max_length": cfg.tokenizer_model_max_length}


def make_data(root: Path, videos: int) -> Path:
    ann = root / "annotations.json"
    if not ann.exists():
        subprocess.run([sys.executable, "-m", "videoitg", "synth", str(root), "--videos", str(videos), "--seed", "7",
                        "--per-video", "4"], check=True, capture_output=True, text=True, timeout=600)
    return ann


def train_cmd(ann: Path, out: Path, device: str, amp: str, steps: int, torchrun: bool) -> list[str]:
    args = ["-m", "videoitg", "train", str(ann), "--out", str(out), "--init", "tiny", "--model-overrides",
            json.dumps(mid_overrides()), "--max-steps", str(steps), "--batch", "4", "--micro-batch", "4",
            "--lr", "1e-3", "--head-lr", "2e-3", "--device", device, "--amp", amp, "--seed", "0", "--no-resume",
            "--quiet"]
    if torchrun:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *args]
    return [sys.executable, *args]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def run_training(work: Path, out_dir: Path, device: str, steps: int = 6, videos: int = 6) -> dict[str, Any]:
    """CPU fp32 (plain process) and `device` bf16 (torchrun, one process: NCCL on CUDA, gloo on the CPU)."""
    work.mkdir(parents=True, exist_ok=True)
    ann = make_data(work / "data", videos)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")}
    res: dict[str, Any] = {"steps": steps}
    # On a CPU machine (the tests) the torchrun run stays fp32: bf16 autocast on a CPU is slow and the point there
    # is the one-process DDP path, which must then give the same curve (1e-5).
    amp = "bf16" if device.startswith("cuda") else "fp32"
    res["tolerance_rel"] = LOSS_RTOL if amp == "bf16" else 1e-5
    runs = {"cpu_fp32": ("cpu", "fp32", False), "device_run": (device, amp, True)}
    for name, (dev, amp, tr) in runs.items():
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        p = subprocess.run(train_cmd(ann, out, dev, amp, steps, tr), capture_output=True, text=True, env=env,
                           timeout=900)
        res[name] = {"s": time.perf_counter() - t0, "device": dev, "amp": amp, "torchrun": tr}
        if p.returncode != 0:
            res[name]["error"] = (p.stderr or p.stdout)[-2000:]
            continue
        res[name]["loss"] = losses(out)
        res[name]["process_group"] = json.loads((out / "train_config.json").read_text()).get("process_group")
    if all("loss" in res[n] for n in runs):
        a, b = res["cpu_fp32"]["loss"], res["device_run"]["loss"]
        res["max_rel_diff"] = max(abs(x - y) / max(abs(x), 1e-8) for x, y in zip(a, b, strict=True))
        pg = res["device_run"]["process_group"] or {}
        want = {"backend": "nccl" if device.startswith("cuda") else "gloo", "world_size": 1,
                "wrapper": "DistributedDataParallel"}
        res["pass"] = len(a) == len(b) == steps and res["max_rel_diff"] <= res["tolerance_rel"] and pg == want
        final = work / "device_run" / "final"
        res["checkpoint_pieces"] = pack_checkpoint(final, out_dir)
        res["checkpoint_scores"] = score_checkpoint(final, device)
    else:
        res["pass"] = False
    return res


def pack_checkpoint(ckpt: Path, out_dir: Path) -> list[str]:
    """The checkpoint as a tar cut into pieces under the device call's per-file limit."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tar = out_dir / "mid_checkpoint.tar"
    with tarfile.open(tar, "w") as t:
        t.add(ckpt, arcname="mid_checkpoint")
    data, names = tar.read_bytes(), []
    tar.unlink()
    for i in range(0, len(data), PIECE_BYTES):
        name = f"mid_checkpoint.tar.{i // PIECE_BYTES:02d}"
        (out_dir / name).write_bytes(data[i:i + PIECE_BYTES])
        names.append(name)
    return names


@torch.inference_mode()
def score_checkpoint(ckpt: Path, device: str) -> dict[str, Any]:
    """The trained checkpoint's fp32 logits on fixed random frames, on `device`: what `verify-here` reproduces."""
    from videoitg.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ckpt, device, torch.float32, with_tokenizer=False)
    g = torch.Generator().manual_seed(3)
    s = model.config.vision.image_size
    px = (torch.rand(12, 3, s, s, generator=g) * 2 - 1).to(device)
    ids = torch.randint(0, model.config.text.vocab_size, (9,), generator=g).to(device)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return {"device": device, "logits": model(px, ids).float().cpu().tolist()}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def verify_here(files_dir: Path, report: Path) -> dict[str, Any]:
    """On this (CPU) machine: reassemble the GPU run's checkpoint, load it, and reproduce its logits."""
    pieces = sorted(files_dir.glob("mid_checkpoint.tar.*"))
    if not pieces:
        raise SystemExit(f"no mid_checkpoint.tar.* in {files_dir}")
    work = Path(files_dir).resolve().parent / "mid_checkpoint_here"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tar = work / "ckpt.tar"
    tar.write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(tar) as t:
        t.extractall(work, filter="data")
    expected = json.loads(Path(report).read_text())["checks"]["training"]["detail"]["checkpoint_scores"]
    got = score_checkpoint(work / "mid_checkpoint", "cpu")
    diff = max(abs(a - b) for a, b in zip(expected["logits"], got["logits"], strict=True))
    ok = diff < 1e-3
    print(f"checkpoint from the GPU run loads here: max |logit difference| GPU fp32 vs CPU fp32 = {diff:.2e} "
          f"({'pass' if ok else 'FAIL'}, < 1e-3)")
    return {"max_abs_diff": diff, "pass": ok, "checkpoint": str(work / "mid_checkpoint")}
