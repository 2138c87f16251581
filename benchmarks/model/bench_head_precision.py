"""Pooling + head precision: is our head (per-frame mean in fp32 straight from the fp16 activations, then the fp32
`out_proj`) at least as close to an all-fp32 model as the released head (mean in fp16, `out_proj` in fp16, an
fp16 logit)? Both heads read the same fp16 body output; the reference is the whole model in fp32.

Models: the shipped tiny checkpoint (on the sample video) and random tiny models whose head is scaled so the
logits spread like a trained model's (std ~4, many confident frames). Runs on CPU (fp16 kernels there
accumulate in fp32 like the GPU's; absolute numbers differ on a GPU, the comparison is what matters).

    python -m benchmarks.model.bench_head_precision
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from videoitg.config import preset
from videoitg.defaults import default_checkpoint
from videoitg.model.checkpoint import load_checkpoint
from videoitg.model.grounding import VideoITG
from videoitg.outputs import rank_frames
from videoitg.request.text import encode_instruction
from videoitg.synthetic.sample import sample_video


def heads(model16: VideoITG, pixels: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits [T] from one fp16 body pass: ours, released, and the head in float64 on the same body output."""
    visual = model16.visual_features(pixels.half())
    h = model16.hidden_states([visual], [ids])[0]
    T, n = visual.shape[0], visual.shape[1]
    ours = model16.score_features([visual], [ids])[0]  # the shipped code path
    pooled16 = h[: T * n].view(T, n, -1).mean(dim=1)  # fp16 result, as the released `.mean(dim=1)`
    released = F.linear(pooled16, model16.out_proj.weight, model16.out_proj.bias)[:, 0]  # fp16 logits
    w, b = model16.out_proj.weight.double(), model16.out_proj.bias.double()
    exact_head = (h[: T * n].double().view(T, n, -1).mean(dim=1) @ w[0]) + b
    return {"ours": ours.double(), "released": released.double(), "exact_head": exact_head}


def overlap(a: list[int], b: list[int], k: int) -> float:
    return len(set(a[:k]) & set(b[:k])) / min(k, len(a))


def measure(name: str, model: VideoITG, pixels: torch.Tensor, ids: torch.Tensor, k: int) -> dict:
    with torch.inference_mode():
        ref = model(pixels, ids).double()
        out = heads(copy.deepcopy(model).half(), pixels, ids)
    row: dict = {"model": name, "T": int(pixels.shape[0]), "ref_logit_std": round(ref.std().item(), 2)}
    for label in ("ours", "released"):
        x = out[label]
        d = (x - ref).abs()
        dh = (x - out["exact_head"]).abs()  # the head's own error: same fp16 body, head in float64
        row[label] = {"max_abs": float(f"{d.max().item():.3g}"), "mean_abs": float(f"{d.mean().item():.3g}"),
                      "head_max_abs": float(f"{dh.max().item():.3g}"),
                      f"top{k}_overlap_exact": overlap(rank_frames(x.tolist(), "exact"),
                                                       rank_frames(ref.tolist(), "exact"), k),
                      f"top{k}_overlap_released": overlap(rank_frames(x.tolist(), "released"),
                                                          rank_frames(ref.tolist(), "released"), k)}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="random tiny models")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    from videoitg.decode import decode_video
    from videoitg.sampling import SamplingParams

    model, tok = load_checkpoint(default_checkpoint(), "cpu", torch.float32)
    video, instruction = sample_video()
    frames = decode_video(video, image_size=model.config.vision.image_size,
                          params=SamplingParams(num_frames=args.frames, target_fps=4.0)).pixel_values
    rows.append(measure("shipped tiny checkpoint", model.eval(), frames, encode_instruction(tok, instruction),
                        args.k))
    for seed in tqdm(range(args.seeds), desc="random tiny models"):
        torch.manual_seed(seed)
        m = VideoITG(preset("tiny", vocab_size=512)).eval()
        m.reset_head()
        with torch.no_grad():  # spread the logits like a trained head (std ~4) instead of xavier's ~0.1
            probe = m(torch.randn(8, 3, m.config.vision.image_size, m.config.vision.image_size),
                      torch.arange(1, 9))
            m.out_proj.weight.mul_(4.0 / max(probe.std().item(), 1e-6))
            m.out_proj.bias.fill_(2.0)
        S = m.config.vision.image_size
        pv = torch.randn(args.frames, 3, S, S, generator=torch.Generator().manual_seed(seed))
        ids = torch.randint(1, m.config.text.vocab_size, (12,), generator=torch.Generator().manual_seed(seed))
        rows.append(measure(f"random tiny seed {seed}", m, pv, ids, args.k))
    for r in rows:
        print(json.dumps(r))
    k = args.k
    print(f"\n| model | T | ref logit std | head | max abs logit diff | mean abs | head's own max abs "
          f"| top-{k} overlap (exact) | top-{k} overlap (released rule) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for label in ("ours", "released"):
            x = r[label]
            print(f"| {r['model']} | {r['T']} | {r['ref_logit_std']} | {label} | {x['max_abs']} | {x['mean_abs']} "
                  f"| {x['head_max_abs']} | {x[f'top{k}_overlap_exact']:.2f} | {x[f'top{k}_overlap_released']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
