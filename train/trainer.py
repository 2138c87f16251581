"""The grounding trainer (Variants C and B): data -> frozen-tower features -> random HW projection -> LLM ->
per-frame BCE, with DDP/FSDP, gradient accumulation and checkpointing, and exact resume.

Which samples a process handles is a pure function of (seed, step, rank): the global batch of step s is
positions [s*B, (s+1)*B) of the epoch's shuffled order; within it, micro-batch a of rank r is the slice
starting at (a * world + r) * micro. So 2 processes with 1 micro-step each see exactly what 1 process with 2
accumulated micro-steps sees, and a resumed run continues the same sequence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from videoitg.config import VideoITGConfig, preset
from videoitg.errors import InputError
from videoitg.model.checkpoint import load_checkpoint, read_tensors, save_checkpoint
from videoitg.model.variant_b import model_class
from videoitg.request.text import encode_instruction
from videoitg.sampling import SamplingParams
from videoitg.train import recipe
from videoitg.train.data import (
    BadRecord,
    FeatureStore,
    Sample,
    apply_status,
    epoch_order,
    grouped_epoch_order,
    labels_for,
    length_grouped_epoch_order,
    parse_records,
    probe_videos,
    released_length,
    report_bad,
    sample_hw,
)
from videoitg.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    full_state_dicts,
    init_from_env,
    wrap_ddp,
    wrap_fsdp,
)
from videoitg.train.state import (
    latest_complete,
    load_training_state,
    prune,
    save_training_state,
    set_rng_state,
    step_dir,
)
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer

log = logging.getLogger("videoitg.train")


@dataclass
class TrainConfig:
    data: list[str]  # annotation JSON files (VideoITG-40K layout)
    out: str  # run directory: checkpoints/, final/, metrics.jsonl, skipped_records.jsonl
    video_root: str | None = None  # default: `<annotation dir>/videos` if it exists, else the annotation dir
    init: str = "tiny"  # a checkpoint directory, or "tiny" = a random tiny model (from scratch)
    variant: str | None = None  # "C" (bidirectional, released) or "B" (causal anchors); None = the init's
    tiny_overrides: dict[str, Any] = field(default_factory=dict)  # fields of preset("tiny") (from scratch)
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    global_batch: int = 1  # samples per optimizer step over all processes
    micro_batch: int = 1  # samples per forward per process
    lr: float = 2e-5  # LLM + projector
    head_lr: float = 2e-4  # out_proj
    vision_lr: float | None = None  # only with train_vision
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # "auto" = bf16 autocast on GPU, fp32 on CPU; "bf16" / "fp32" force it
    grad_checkpointing: bool = False
    fsdp: bool = False
    train_vision: bool = False  # from-scratch toy runs only: the recipe freezes SigLIP
    save_every: int = 0  # steps between resumable checkpoints (0 = only the final model)
    keep_checkpoints: int = 2
    group_by_video: int = 0  # > 1: batches hold runs of up to this many instructions of one video
    group_by_length: bool = False  # the released `group_by_modality_length` order (global batches by length)
    resume: bool = True  # continue from the newest complete checkpoint in `out` if there is one
    num_frames: int = 1024
    target_fps: float = 1.0
    hw_min: int | None = None  # default: config.vision_min_num
    feature_cache_bytes: int = 2 << 30
    progress: bool = True
    log_every: int = 1
    stop_after: int | None = None  # stop (as if killed) after this many steps of this invocation; for tests

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- model construction -----------------------------------------------------------------------------------
def _attention(variant: str | None, default: str) -> str:
    if variant is None:
        return default
    v = variant.upper()
    if v not in ("B", "C"):
        raise InputError(f"variant must be 'B' or 'C', got {variant!r}")
    return "causal" if v == "B" else "bidirectional"


def init_model(cfg: TrainConfig) -> tuple[nn.Module, Any]:
    """(model in fp32 on CPU, tokenizer). From a checkpoint: the Eagle LM head is dropped and a missing
    `out_proj` is initialised xavier-uniform / zero bias, as the released trainer does."""
    if cfg.init == "tiny":
        tok = use_released_pad(build_tiny_tokenizer())
        mcfg = preset("tiny", vocab_size=len(tok))
        apply_overrides(mcfg, cfg.tiny_overrides)
        mcfg.attention = _attention(cfg.variant, "bidirectional")
        torch.manual_seed(cfg.seed)
        model = model_class(mcfg)(mcfg)
        model.reset_head()
        return model, tok

    torch.manual_seed(cfg.seed)  # the new head's init, when the checkpoint has none
    model, tok = load_checkpoint(cfg.init, "cpu", torch.float32, init_missing_head=True,
                                 attention=None if cfg.variant is None else _attention(cfg.variant, "bidirectional"))
    return model.train(), use_released_pad(tok)


def use_released_pad(tokenizer: Any) -> Any:
    """The released trainer sets `tokenizer.pad_token_id = 0` (train_itg.py; every non-Llama-3 model) and drops
    masked (pad-id) tokens from the instruction, so a token with id 0 never reaches the model: "!" in Qwen2's
    vocabulary, the pad token itself in the tiny one. `encode_instruction` drops the pad id, and the saved
    checkpoint keeps this tokenizer, so inference drops the same tokens."""
    tokenizer.pad_token_id = 0
    return tokenizer


def apply_overrides(mcfg: VideoITGConfig, overrides: dict[str, Any]) -> None:
    """Set config fields; `text` / `vision` take dicts of their own fields."""
    for k, v in overrides.items():
        if k in ("text", "vision") and isinstance(v, dict):
            sub = getattr(mcfg, k)
            for kk, vv in v.items():
                if not hasattr(sub, kk):
                    raise InputError(f"unknown {k} config field {kk!r}")
                setattr(sub, kk, vv)
        elif hasattr(mcfg, k):
            setattr(mcfg, k, v)
        else:
            raise InputError(f"unknown model config field {k!r}")


class TrainModule(nn.Module):
    """What DDP/FSDP wrap: one call = features of a micro-batch -> per-frame logits (so the engines see the
    whole trainable computation inside `forward`)."""

    def __init__(self, model: nn.Module, train_vision: bool):
        super().__init__()
        self.model, self.train_vision = model, train_vision

    def forward(self, feats: list[torch.Tensor], ids: list[torch.Tensor], hws: list[int]) -> list[torch.Tensor]:
        # Samples of one video share the same cached tensor: run the tower and projector once per (video, hw).
        done: dict[tuple[int, int], torch.Tensor] = {}
        visual = []
        for f, hw in zip(feats, hws, strict=True):
            key = (id(f), hw)
            if key not in done:
                x = f
                if self.train_vision:  # f are pixels; the tower runs with grad
                    x = self.model.model.vision_tower(x)
                done[key] = self.model.project(x, hw)
            visual.append(done[key])
        return self.model.score_features(visual, ids)


# ---- the trainer ------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        dev = cfg.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        self.dist: DistInfo = init_from_env(dev)
        if dev == "cuda" and self.dist.enabled:
            dev = f"cuda:{self.dist.local_rank}"
        self.device = dev
        amp = cfg.amp if cfg.amp != "auto" else ("bf16" if dev.startswith("cuda") else "fp32")
        if amp not in ("bf16", "fp32"):
            raise InputError(f"amp must be auto, bf16 or fp32, got {cfg.amp!r}")
        self.amp = amp
        if cfg.group_by_length and cfg.group_by_video > 1:
            raise InputError("group_by_length and group_by_video are two different sample orders; choose one")
        self.out = Path(cfg.out)
        self.sampling = SamplingParams(cfg.num_frames, cfg.target_fps, "train")
        self.metrics_path = self.out / "metrics.jsonl"
        self._reduce_dev = dev if dev.startswith("cuda") else "cpu"

    # ---- data ----
    def _video_root(self, ann: Path) -> Path:
        if self.cfg.video_root:
            return Path(self.cfg.video_root)
        return ann.parent / "videos" if (ann.parent / "videos").is_dir() else ann.parent

    def prepare_data(self, model: nn.Module, tokenizer: Any) -> None:
        cfg = self.cfg
        if not cfg.data:
            raise InputError("no annotation file given")
        roots = {self._video_root(Path(a)) for a in cfg.data}
        if len(roots) != 1:
            raise InputError(f"annotation files resolve to different video roots {sorted(map(str, roots))}; "
                             "pass --video-root")
        root = roots.pop()
        records, bad = [], []
        for a in cfg.data:
            g, b = parse_records(a)
            records += g
            bad += b
        self.ids: dict[int, torch.Tensor] = {}
        kept = []
        max_text = model.config.tokenizer_model_max_length
        for r in records:
            try:
                self.ids[id(r)] = encode_instruction(tokenizer, r.question, max_tokens=max_text)
                kept.append(r)
            except InputError as e:
                bad.append(BadRecord(r.where(), str(e), r.raw))
        tower = model.model.vision_tower

        def encode(pv: torch.Tensor) -> torch.Tensor:
            if cfg.train_vision:
                return pv  # pixels are cached; the tower runs inside the step
            with torch.no_grad():
                return tower(pv.to(self.device)).to("cpu")

        self.store = FeatureStore(root, encode, model.config.vision.image_size, self.sampling,
                                  cfg.feature_cache_bytes)
        videos = sorted({r.video for r in kept})
        mine = videos[self.dist.rank :: self.dist.world_size]
        status: dict[str, int | str] = {}
        probe = lambda v: self.store.features(v)[0].shape[0]  # decodes and caches
        for part in all_gather_objects(probe_videos(mine, probe, cfg.progress and self.dist.is_main), self.dist):
            status.update(part)
        self.samples, more_bad = apply_status(kept, status)
        bad += more_bad
        if self.dist.is_main:
            report_bad(bad, self.out / "skipped_records.jsonl")
        self.bad = bad
        if not self.samples:
            raise InputError(f"no usable training records ({len(bad)} skipped; see {self.out}/skipped_records.jsonl)")

    # ---- one step ----
    def _micro_batches(self, step: int, spe: int, accum: int) -> tuple[int, list[list[tuple[int, Sample]]]]:
        cfg, B = self.cfg, self.cfg.global_batch
        epoch, pos = divmod(step, spe)
        batch = self._epoch_order(epoch)[pos * B : (pos + 1) * B]
        out = []
        for a in range(accum):
            start = (a * self.dist.world_size + self.dist.rank) * cfg.micro_batch
            out.append([(pos * B + start + j, self.samples[batch[start + j]]) for j in range(cfg.micro_batch)])
        return epoch, out

    def _epoch_order(self, epoch: int) -> list[int]:
        # Computed once per epoch, not per step (the grouped order costs ~6 ms for 12k samples).
        cached = getattr(self, "_order", None)
        if cached is None or cached[0] != epoch:
            cfg = self.cfg
            if cfg.group_by_length:
                lengths = [released_length(s.record.raw) for s in self.samples]
                chunks = cfg.global_batch // cfg.micro_batch  # processes x accumulation steps
                order = length_grouped_epoch_order(lengths, cfg.micro_batch, chunks, cfg.seed, epoch)
            elif cfg.group_by_video > 1:
                videos = [s.record.video for s in self.samples]
                order = grouped_epoch_order(videos, cfg.group_by_video, cfg.seed, epoch)
            else:
                order = epoch_order(len(self.samples), cfg.seed, epoch)
            self._order = cached = (epoch, order)
        return cached[1]

    def _inputs(self, epoch: int, items: list[tuple[int, Sample]], mcfg: VideoITGConfig
                ) -> tuple[list, list, list, list, int]:
        feats, ids, hws, labels, frames = [], [], [], [], 0
        low = self.cfg.hw_min or mcfg.vision_min_num
        moved: dict[str, torch.Tensor] = {}
        for position, s in items:
            f, meta = self.store.features(s.record.video)
            T = f.shape[0]
            hw = sample_hw(self.cfg.seed, epoch, position, low, mcfg.budget_per_side(T), mcfg.vision.grid)
            if s.record.video not in moved:  # one device copy per video, so the tower runs once per video
                moved[s.record.video] = f.to(self.device)
            feats.append(moved[s.record.video])
            ids.append(self.ids[id(s.record)].to(self.device))
            hws.append(hw)
            labels.append(recipe.frame_labels(T, labels_for(s.record, meta.timestamps)))
            frames += T
        return feats, ids, hws, labels, frames

    # ---- run ----
    def run(self) -> Path:
        cfg, dist_info = self.cfg, self.dist
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        model, tokenizer = init_model(cfg)
        self.tokenizer = tokenizer
        recipe.set_trainable(model, cfg.train_vision)
        model.gradient_checkpointing = cfg.grad_checkpointing
        model.to(self.device)
        self.model = model
        self.prepare_data(model, tokenizer)

        world, micro, B = dist_info.world_size, cfg.micro_batch, cfg.global_batch
        if B % (world * micro):
            raise InputError(f"global batch {B} is not a multiple of processes x micro batch = {world * micro}")
        accum = B // (world * micro)
        spe = len(self.samples) // B
        if spe == 0:
            raise InputError(f"{len(self.samples)} usable samples are fewer than one global batch of {B}")
        total = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * spe))

        module: nn.Module = TrainModule(model, cfg.train_vision)
        sharded = False
        if cfg.fsdp and dist_info.enabled:
            # FSDP shards the parameters in place: resume weights must be in the plain model before wrapping.
            d = self._resume_dir()
            if d is not None:
                self._load_weights(model, d)
        if cfg.fsdp and dist_info.enabled:
            frozen = None if cfg.train_vision else set(model.model.vision_tower.parameters())
            module = wrap_fsdp(module, model.model.layers, self.amp == "bf16", frozen)
            sharded = True
        elif dist_info.enabled:
            module = wrap_ddp(module, dist_info, self.device)
        self.module, self.sharded = module, sharded
        resume_from = self._resume_dir()
        if resume_from is not None and not sharded:
            self._load_weights(model, resume_from)
        opt = torch.optim.AdamW(
            recipe.param_groups(model, cfg.lr, cfg.head_lr, cfg.weight_decay, cfg.vision_lr),
            betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, recipe.cosine_with_warmup(total, cfg.warmup_ratio))
        start = self._resume(resume_from, opt, sched) if resume_from is not None else 0

        trainable = [p for p in model.parameters() if p.requires_grad]
        bar = None
        if cfg.progress and dist_info.is_main:
            bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
        if dist_info.is_main:
            run = cfg.to_json()
            if dist_info.enabled:  # what the run really went through (NCCL / gloo, DDP or FSDP)
                run["process_group"] = {"backend": tdist.get_backend(), "world_size": dist_info.world_size,
                                        "wrapper": type(module).__name__}
            (self.out / "train_config.json").write_text(json.dumps(run, indent=2))
        step = start
        done_here = 0
        while step < total:
            t0 = time.perf_counter()
            epoch, micro_batches = self._micro_batches(step, spe, accum)
            loss_sum, pw_sum, frames = 0.0, 0.0, 0
            for a, items in enumerate(micro_batches):
                feats, ids, hws, labels, n = self._inputs(epoch, items, model.config)
                frames += n
                sync = a == accum - 1 or not dist_info.enabled or sharded
                ctx = module.no_sync() if not sync else contextlib.nullcontext()
                with ctx, self._autocast():
                    logits = module(feats, ids, hws)
                    loss, pw = recipe.grounding_loss(logits, labels)
                    (loss / accum).backward()
                loss_sum += float(loss.detach())
                pw_sum += pw
            if cfg.max_grad_norm:
                gnorm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm))
            else:
                gnorm = float("nan")
            lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            done_here += 1
            tot = all_reduce_sum([loss_sum, pw_sum, float(frames), float(accum)], dist_info, self._reduce_dev)
            dt = time.perf_counter() - t0
            rec = {"step": step, "epoch": round(step / spe, 4), "loss": tot[0] / tot[3], "pos_weight": tot[1] / tot[3],
                   "grad_norm": gnorm, "lr": lrs, "frames": int(tot[2]), "frames_per_s": tot[2] / max(dt, 1e-9),
                   "step_s": dt, "time": time.time()}
            if dist_info.is_main and (step % cfg.log_every == 0 or step == total):
                with self.metrics_path.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", fps=f"{rec['frames_per_s']:.0f}")
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                self.save_step(step, opt, sched, epoch, total)
            if cfg.stop_after is not None and done_here >= cfg.stop_after and step < total:
                if bar is not None:
                    bar.close()
                return self.out
        if bar is not None:
            bar.close()
        final = self.save_final()
        return final

    def _autocast(self):
        if self.amp == "bf16":
            return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu",
                                  dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---- checkpoints ----
    def _model_state(self, opt: torch.optim.Optimizer | None):
        if not self.sharded:
            return self.model.state_dict(), (opt.state_dict() if opt is not None else None)
        msd, osd = full_state_dicts(self.module, opt, True)
        # FSDP names start with TrainModule's attribute "model."; strip it to get the core names.
        return {k.removeprefix("model."): v for k, v in msd.items()}, osd

    def _write_model(self, d: Path, msd: dict[str, torch.Tensor]) -> None:
        cfg = self.model.config
        with torch.device("meta"):
            cpu_model = model_class(cfg)(cfg)
        cpu_model.load_state_dict({k: v.detach().float().cpu() for k, v in msd.items()}, assign=True)
        save_checkpoint(cpu_model, d, self.tokenizer)

    def save_step(self, step: int, opt: torch.optim.Optimizer, sched: LRScheduler, epoch: int, total: int) -> Path:
        msd, osd = self._model_state(opt)
        d = step_dir(self.out, step)
        if self.dist.is_main:
            d.mkdir(parents=True, exist_ok=True)
            self._write_model(d, msd)
            save_training_state(d, osd, sched, {"step": step, "epoch": epoch, "total_steps": total,
                                                "world_size": self.dist.world_size, "sharded": self.sharded})
            prune(self.out, self.cfg.keep_checkpoints)
        barrier(self.dist)
        return d

    def save_final(self) -> Path:
        msd, _ = self._model_state(None)
        d = self.out / "final"
        if self.dist.is_main:
            self._write_model(d, msd)
            plot_metrics(self.out)
        barrier(self.dist)
        return d

    def _resume_dir(self) -> Path | None:
        return latest_complete(self.out) if self.cfg.resume else None

    def _load_weights(self, model: nn.Module, d: Path) -> None:
        tensors = read_tensors(d)
        model.load_state_dict({k: tensors[k].to(self.device) for k in model.state_dict()})

    def _resume(self, d: Path, opt: torch.optim.Optimizer, sched: LRScheduler) -> int:
        state, osd, rng = load_training_state(d)
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.module, opt, osd, options=StateDictOptions(full_state_dict=True))
        else:
            opt.load_state_dict(osd)
        sched.load_state_dict({**sched.state_dict(), **state["scheduler"]})
        set_rng_state(rng, state["rng"])
        # Drop metric lines past the resumed step (written by the run that died after its last save).
        if self.dist.is_main and self.metrics_path.exists():
            lines = [ln for ln in self.metrics_path.read_text().splitlines()
                     if ln and json.loads(ln)["step"] <= state["step"]]
            self.metrics_path.write_text("".join(ln + "\n" for ln in lines))
        log.info("resumed from %s (step %d)", d, state["step"])
        return int(state["step"])


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    p = Path(run) / "metrics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln] if p.exists() else []


def plot_metrics(run: str | Path) -> Path | None:
    """RUN/metrics.png: loss (raw and smoothed) and learning rate over steps."""
    m = read_metrics(run)
    if not m:
        return None
    import matplotlib  # here: pyplot loads when a figure is drawn, after the Agg backend is chosen (no display)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [x["step"] for x in m]
    loss = [x["loss"] for x in m]
    w = max(1, len(loss) // 50)
    smooth = [sum(loss[max(0, i - w + 1) : i + 1]) / len(loss[max(0, i - w + 1) : i + 1]) for i in range(len(loss))]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.plot(steps, loss, color="#9bb7d4", lw=0.8, label="loss")
    a.plot(steps, smooth, color="#1f4e79", lw=1.6, label=f"mean of {w}")
    a.set_xlabel("step")
    a.set_ylabel("BCE (pos-weighted)")
    a.legend()
    for name in m[0]["lr"]:
        b.plot(steps, [x["lr"][name] for x in m], label=name)
    b.set_xlabel("step")
    b.set_ylabel("learning rate")
    b.legend()
    fig.tight_layout()
    out = Path(run) / "metrics.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
