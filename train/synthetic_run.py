"""The synthetic benchmark: generate held-apart train / eval sets of shape videos, train a tiny VideoITG from
scratch on CPU, evaluate it on the held-out set against uniform sampling.

    python -m videoitg.train.synthetic_run --out runs/synth [--variant C] [--ship]

`--ship` copies the trained model to videoitg/assets/tiny-videoitg/ (the embedded default checkpoint).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from videoitg.model.checkpoint import save_checkpoint
from videoitg.synthetic.task import FRAME_OBJECTS, OBJECT_NAMES, write_dataset
from videoitg.train.trainer import TrainConfig, Trainer, init_model
from videoitg.train.vision_pretrain import load_tagged_frames, pretrain_tower

# A tiny model sized for 2 CPU cores: 56x56 frames in 28-px patches (a 2x2 grid), a 3-layer tower trained from
# scratch (a random frozen tower is no pretrained SigLIP), a 3-layer 128-wide LLM. vision_token_num 64 gives
# HW = 1 for the 20-30 sampled frames of these clips: one token per frame, the exact mean of the 2x2 grid
# (bilinear at scale 2 without antialias averages neighbour pairs), so the instruction is a large share of the
# ~40-token sequence. Fewer visual tokens per frame made the instruction easier to learn to use and the
# steps cheaper; the larger configs tried are in docs/training.md.
MODEL = {
    "vision": {"image_size": 56, "patch_size": 28, "hidden_size": 48, "intermediate_size": 96,
               "num_hidden_layers": 3, "num_attention_heads": 4},
    "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4,
             "num_key_value_heads": 2},
    "vision_token_num": 64,
    "vision_min_num": 1,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/synth"))
    ap.add_argument("--train-videos", type=int, default=1500)
    ap.add_argument("--eval-videos", type=int, default=40)
    ap.add_argument("--per-video", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--head-lr", type=float, default=2e-3)
    ap.add_argument("--vision-lr", type=float, help="tower learning rate (default: --lr)")
    ap.add_argument("--variant", default="C")
    ap.add_argument("--group", type=int, default=8,
                    help="instructions of one video kept together in a batch (1 = plain shuffle)")
    ap.add_argument("--tower-steps", type=int, default=2000,
                    help="pretrain the tower on the frames' object tags first, then keep it frozen as the recipe "
                         "does (train/vision_pretrain.py); 0 = train the tower end to end with the grounding loss")
    ap.add_argument("--tower-lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    ap.add_argument("--ship", action="store_true", help="copy the model to videoitg/assets/tiny-videoitg")
    ap.add_argument("--model-json", type=Path, help="override the tiny model fields (JSON)")
    args = ap.parse_args(argv)


    torch.set_num_threads(args.threads)
    model = json.loads(args.model_json.read_text()) if args.model_json else MODEL
    data = args.out / "data"
    t0 = time.time()
    train_ann = data / "train" / "annotations.json"
    eval_ann = data / "eval" / "annotations.json"
    if not train_ann.exists():
        write_dataset(data / "train", args.train_videos, seed=1000 + args.seed, instructions_per_video=args.per_video,
                      progress=True)
    if not eval_ann.exists():
        write_dataset(data / "eval", args.eval_videos, seed=2000 + args.seed, instructions_per_video=args.per_video,
                      progress=True)
    t_data = time.time() - t0
    base = TrainConfig(data=[str(train_ann)], out=str(args.out / "run"), init="tiny", variant=args.variant,
                       tiny_overrides=model, seed=args.seed)
    tower: dict = {}
    t_tower = time.time()
    if args.tower_steps:
        init, tower = pretrain_stage(base, data, args)
        base.init = str(init)
    t_tower = time.time() - t_tower
    cfg = TrainConfig(
        **{**base.to_json(), "max_steps": args.steps, "global_batch": args.batch, "micro_batch": args.batch,
           "lr": args.lr, "head_lr": args.head_lr, "train_vision": not args.tower_steps,
           "vision_lr": None if args.tower_steps else (args.vision_lr or args.lr), "group_by_video": args.group,
           "save_every": max(1, args.steps // 4)},
    )
    t1 = time.time()
    c1 = time.process_time()
    final = Trainer(cfg).run()
    t_train = time.time() - t1
    cpu_train = time.process_time() - c1
    t2 = time.time()
    cmd = [sys.executable, "-m", "videoitg", "eval", str(eval_ann), "--checkpoint", str(final),
           "--out", str(args.out / "eval"), "--quiet"]
    subprocess.run(cmd, check=True)
    t_eval = time.time() - t2
    res = json.loads((args.out / "eval" / "eval.json").read_text())
    # CPU seconds next to wall seconds: on a shared machine the wall time says more about the neighbours.
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["tower_pretraining"] = tower
    res["timing_s"] = {"data": round(t_data, 1), "tower": round(t_tower, 1), "train": round(t_train, 1),
                       "eval": round(t_eval, 1),
                       "cpu_this_process": round(own.ru_utime + own.ru_stime, 1),
                       "cpu_eval_subprocess": round(kids.ru_utime + kids.ru_stime, 1)}
    res["timing_s"]["cpu_train"] = round(cpu_train, 1)
    res["train_config"] = cfg.to_json()
    (args.out / "summary.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["timing_s"]))
    if args.ship:
        dst = Path(__file__).resolve().parents[1] / "videoitg" / "assets" / "tiny-videoitg"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(final, dst)
        print(f"shipped {final} -> {dst}")
    return 0


def pretrain_stage(base: Path, data: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """A random tiny model whose tower has been pretrained on the training frames' object tags (the held-out
    frames only measure it), saved as the checkpoint the grounding recipe starts from."""

    model, tok = init_model(base)
    size = model.config.vision.image_size
    train = load_tagged_frames(data / "train" / "videos", data / "train" / FRAME_OBJECTS, OBJECT_NAMES, size,
                               progress=True)
    held = load_tagged_frames(data / "eval" / "videos", data / "eval" / FRAME_OBJECTS, OBJECT_NAMES, size)
    stats = pretrain_tower(model.model.vision_tower, train, held, steps=args.tower_steps, lr=args.tower_lr,
                           seed=args.seed, progress=True)
    stats.update(steps=args.tower_steps, lr=args.tower_lr, frames=len(train.pixels))
    print(json.dumps({"tower_pretraining": stats}))
    return save_checkpoint(model, args.out / "tower-pretrained", tok), stats


if __name__ == "__main__":
    sys.exit(main())
