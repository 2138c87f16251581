"""Parity on the GPU: the core model in fp32, fp16 and bf16 on CUDA against the CPU fp32 reference, at tiny, mid
and real sizes with random weights; and the shipped checkpoint on the sample clip through `videoitg score`.

Real size = SigLIP-so400m + Qwen2-7B, every layer, with a visual-token budget of 1,024 (16 frames at HW = 8) so
the CPU reference takes ~30 s: the budget changes how many tokens each frame gets, not a single weight shape.
Inputs are uint8 frames (what a decoder produces) normalised as the pipeline does, and random instruction ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.perf.build import build_ours
from benchmarks.perf.compare import score_agreement
from benchmarks.perf.frames import pixel_values
from videoitg.config import TextConfig, VideoITGConfig, VisionConfig, preset

# bf16/fp16 against fp32 (engine_build.parity.TARGETS): on the trained checkpoint this is a pass criterion; with
# random weights the logits barely differ between frames, so there it is reported, not judged.
TOPK_MIN = 0.97
FP32_MAX_ABS = 1e-3  # CUDA fp32 (TF32 off) vs CPU fp32 logits


def mid_config() -> VideoITGConfig:
    """Between tiny and real: 8.4 M parameters (a checkpoint of it fits the device call's file limits)."""
    return VideoITGConfig(
        text=TextConfig(vocab_size=512, hidden_size=384, intermediate_size=1024, num_hidden_layers=4,
                        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=8192),
        vision=VisionConfig(image_size=112, patch_size=14, hidden_size=192, intermediate_size=768,
                            num_hidden_layers=4, num_attention_heads=3),
        mm_vision_tower="embedded", vision_token_num=2048, tokenizer_model_max_length=8192,
    )


def sizes(tiny: bool) -> dict[str, tuple[VideoITGConfig, int, int]]:
    """name -> (config, frames, instruction tokens)."""
    out = {"tiny": (preset("tiny"), 32, 12)}
    if not tiny:
        out["mid"] = (mid_config(), 64, 24)
        real = VideoITGConfig()
        real.vision_token_num = 1024
        out["real"] = (real, 16, 32)
    return out


def topk_for(t: int) -> int:
    return 32 if t >= 128 else max(1, t // 4)


@torch.inference_mode()
def model_parity(device: torch.device, tiny: bool, seed: int = 0) -> dict[str, Any]:
    """Per size and dtype: logits on `device` against the CPU fp32 logits of the same weights and inputs."""
    res: dict[str, Any] = {}
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (cuDNN convs: also off)
    torch.backends.cudnn.allow_tf32 = False
    try:
        for name, (cfg, T, L) in sizes(tiny).items():
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(seed)
            s = cfg.vision.image_size
            frames = torch.randint(0, 256, (T, 3, s, s), dtype=torch.uint8, generator=g)
            ids = torch.randint(0, cfg.text.vocab_size, (L,), generator=g)
            # Random weights drawn on the device (fast at 7B), then an fp32 copy on the CPU as the reference.
            model = build_ours(cfg, device, torch.float32, seed)
            cpu_model = build_ours(cfg, torch.device("cpu"), torch.float32, seed) if device.type == "cpu" else \
                _cpu_copy(model, cfg)
            ref = cpu_model(pixel_values(frames), ids).float()
            t_ref = time.perf_counter() - t0
            del cpu_model
            row: dict[str, Any] = {"frames": T, "instruction_tokens": L, "cpu_reference_s": t_ref,
                                   "ref_logit_std": float(ref.std())}
            for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
                model = model.to(dtype)  # fp32 -> bf16 -> fp16 would round twice: go back through fp32 weights
                if dname == "fp16":
                    model = build_ours(cfg, device, torch.float16, seed)
                out = model(pixel_values(frames.to(device), dtype), ids.to(device)).float().cpu()
                row[dname] = {**score_agreement(ref, out, k=topk_for(T)), "finite": bool(torch.isfinite(out).all())}
            del model
            _free(device)
            res[name] = row
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return res


def _cpu_copy(model: torch.nn.Module, cfg: VideoITGConfig) -> torch.nn.Module:
    from videoitg.model import VideoITG

    with torch.device("meta"):
        cpu = VideoITG(cfg)
    cpu = cpu.to_empty(device="cpu")
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    return cpu.eval().requires_grad_(False)


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def judge_models(res: dict[str, Any]) -> dict[str, Any]:
    """Random weights: fp32 must match; bf16/fp16 must be finite (their overlap is reported)."""
    fails = []
    for name, row in res.items():
        if row["fp32"]["max_abs_diff"] > FP32_MAX_ABS:
            fails.append(f"{name} fp32 max|d|={row['fp32']['max_abs_diff']:.2g} > {FP32_MAX_ABS}")
        fails += [f"{name} {d} not finite" for d in ("bf16", "fp16") if not row[d]["finite"]]
    return {"pass": not fails, "fails": fails}


def score_cli(device: str, out_dir: Path, dtypes: list[str], checkpoint: str | None = None) -> dict[str, Any]:
    """`videoitg score` on the sample clip with the shipped checkpoint: CPU fp32 (reference), then `device` in
    each dtype. Same decoder (PyAV) everywhere, so only the model's arithmetic differs."""
    from videoitg.defaults import sample_video

    video, instruction = sample_video()
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Any] = {}
    for dev, dt in [("cpu", "float32")] + [(device, d) for d in dtypes]:
        path = out_dir / f"score_{dev.replace(':', '')}_{dt}.jsonl"
        path.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "videoitg", "score", str(video), "-i", instruction, "--device", dev,
               "--dtype", dt, "--decoder", "pyav", "--output", str(path)]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            runs[f"{dev} {dt}"] = {"error": (p.stderr or p.stdout)[-1500:]}
            continue
        rec = json.loads(path.read_text().splitlines()[-1])
        runs[f"{dev} {dt}"] = {"s": time.perf_counter() - t0, "scores": rec["scores"], "top_k": rec["top_k"]}
    ref = runs.get("cpu float32", {})
    if "scores" in ref:
        r = torch.tensor(ref["scores"])
        for key, run in runs.items():
            if key != "cpu float32" and "scores" in run:
                run["agreement_vs_cpu_fp32"] = score_agreement(r, torch.tensor(run["scores"]), k=topk_for(len(r)))
                run["same_top_k"] = run["top_k"] == ref["top_k"]
    return {"video": str(video), "instruction": instruction, "runs": runs}


def judge_score(res: dict[str, Any], device_type: str) -> dict[str, Any]:
    """The trained checkpoint: every dtype keeps the top-k overlap >= 0.97 and the same top-K frames."""
    fails = []
    for key, run in res["runs"].items():
        if "error" in run:
            fails.append(f"{key}: error")
        elif "agreement_vs_cpu_fp32" in run:
            a = run["agreement_vs_cpu_fp32"]
            ov = next(v for k, v in a.items() if k.endswith("_overlap"))
            if ov < TOPK_MIN:
                fails.append(f"{key}: top-k overlap {ov:.3f} < {TOPK_MIN}")
    return {"pass": not fails, "fails": fails}
