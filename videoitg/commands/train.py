"""`videoitg train`: train a grounding checkpoint (Variant C, or B with --variant B) on VideoITG-40K-layout
data. Single process, or `torchrun --nproc_per_node N -m videoitg train ...` for DDP (gloo on CPU, NCCL on GPU);
`--fsdp` shards 7B-sized models."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from videoitg.errors import InputError

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = "train a VideoITG grounding checkpoint (resumable; torchrun for several processes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("data", nargs="+", type=Path, help="annotation JSON file(s): [{video, question, clip_num}, ...]")
    a("--out", type=Path, required=True, help="run folder: checkpoints/, final/, metrics.jsonl")
    a("--video-root", type=Path, help="video folder (default: <annotation dir>/videos)")
    a("--init", default="tiny", help="checkpoint directory to start from, or 'tiny' (random tiny model)")
    a("--variant", choices=["B", "C"], help="C: bidirectional (released); B: causal + anchors (default: init's)")
    a("--model-overrides", type=str, default="{}",
      help="JSON of tiny-model config fields, e.g. '{\"text\": {\"num_hidden_layers\": 3}}' (with --init tiny)")
    a("--epochs", type=float, default=1.0)
    a("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    a("--batch", type=int, default=1, help="global batch (samples per optimizer step, all processes)")
    a("--micro-batch", type=int, default=1, help="samples per forward per process (accumulation fills the rest)")
    a("--lr", type=float, default=2e-5, help="LLM + projector learning rate (default 2e-5)")
    a("--head-lr", type=float, default=2e-4, help="out_proj learning rate (default 2e-4)")
    a("--vision-lr", type=float, help="tower learning rate with --train-vision (default: --lr)")
    a("--warmup-ratio", type=float, default=0.05)
    a("--weight-decay", type=float, default=0.0)
    a("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0 = off)")
    a("--seed", type=int, default=0)
    a("--device", default="auto", help="auto, cpu, cuda")
    a("--amp", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 autocast on GPU, fp32 on CPU")
    a("--grad-checkpointing", action="store_true")
    a("--fsdp", action="store_true", help="shard parameters/optimizer with FSDP (under torchrun)")
    a("--train-vision", action="store_true", help="also train the vision tower (from-scratch toy models)")
    a("--group-by-video", type=int, default=0,
      help="keep up to N instructions of one video together in a batch (the tower then runs once per video)")
    a("--group-by-length", action="store_true",
      help="the released group_by_modality_length order: each global batch sorted by instruction length")
    a("--save-every", type=int, default=0, help="resumable checkpoint every N steps (0 = final only)")
    a("--keep", type=int, default=2, help="resumable checkpoints to keep")
    a("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    a("--num-frames", type=int, default=1024, help="max sampled frames per video (training rule: 1024)")
    a("--fps", type=float, default=1.0, help="sampling rate (training rule: 1 fps)")
    a("--threads", type=int, help="torch CPU threads per process")
    a("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from videoitg.train.trainer import TrainConfig, Trainer

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        overrides = json.loads(args.model_overrides)
    except json.JSONDecodeError as e:
        raise InputError(f"--model-overrides is not valid JSON: {e}") from e
    cfg = TrainConfig(
        data=[str(p) for p in args.data], out=str(args.out),
        video_root=str(args.video_root) if args.video_root else None, init=args.init, variant=args.variant,
        tiny_overrides=overrides, epochs=args.epochs, max_steps=args.max_steps, global_batch=args.batch,
        micro_batch=args.micro_batch, lr=args.lr, head_lr=args.head_lr, vision_lr=args.vision_lr,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, max_grad_norm=args.max_grad_norm or None,
        seed=args.seed, device=args.device, amp=args.amp, grad_checkpointing=args.grad_checkpointing,
        fsdp=args.fsdp, train_vision=args.train_vision, group_by_video=args.group_by_video,
        group_by_length=args.group_by_length,
        save_every=args.save_every, keep_checkpoints=args.keep,
        resume=not args.no_resume, num_frames=args.num_frames, target_fps=args.fps, progress=not args.quiet,
    )
    trainer = Trainer(cfg)
    try:
        final = trainer.run()
    finally:
        from videoitg.train.distributed import shutdown

        shutdown()
    if trainer.dist.is_main:
        print(f"checkpoint: {final}")
    return 0
