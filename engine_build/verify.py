"""`videoitg verify`: every runtime available here against the PyTorch fp32 reference, on the same inputs.

For each number of frames T (tokens per frame change with T, so several T are checked): the same pixels and
instruction go through the reference (`VideoITG.visual_features` + `score_features`, fp32) and through each
backend's vision and grounding runtimes (`videoitg.engines.runtimes`, the ones the server runs); the per-frame
logits are compared (max |diff|, top-32 overlap, Spearman) and judged against the target of the backend's
precision (`engine_build.parity.TARGETS`). Backends that cannot run here are listed with the reason.

TensorRT-LLM has no fp32 path (`runtimes.trtllm_dtype`), so `trtllm` runs the grounding half in fp16 (the released
GPU precision, what the server runs) and `trtllm-bf16` in bf16, each against the same fp32 reference and judged
by its precision's target; the vision half is the fp32 torch reference's, so the difference is the LLM's alone.
`trtllm-unfused-rope` is `trtllm` with RoPE applied by TensorRT-LLM's rotary-embedding module before the attention
kernel instead of inside it (`disable_fuse_rope`). Every case's instruction is DEFAULT_INSTRUCTION_TOKENS long, so
T = 512 is the sequence length a 512-frame request has (full attention over 12.8k tokens for VideoITG-8B).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from videoitg.engine_build.parity import TARGETS, Parity, compare, merge
from videoitg.engines.runtimes import GroundingRuntime, VisionRuntime, open_grounding, open_vision
from videoitg.errors import BackendUnavailable, EngineError
from videoitg.model.checkpoint import load_checkpoint
from videoitg.model.files import checkpoint_identity
from videoitg.model.grounding import VideoITG
from videoitg.request.text import encode_instruction

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_INSTRUCTION = "when is the red circle visible?"
# The instruction's length in tokens by default (the instruction's own tokens repeated or cut to it): a typical
# instruction, so that T = 512 is the real sequence length the grounding half serves (512 frames' visual tokens +
# 30 instruction tokens; 12,830 tokens for VideoITG-8B).
DEFAULT_INSTRUCTION_TOKENS = 30
# verify backend -> (the precision TensorRT-LLM runs the grounding half in: it has no fp32 path, RoPE outside the
# fused attention kernel: `disable_fuse_rope`)
TRTLLM_BACKENDS = {"trtllm": (torch.float16, False), "trtllm-bf16": (torch.bfloat16, False),
                   "trtllm-unfused-rope": (torch.float16, True)}


@dataclass
class BackendResult:
    backend: str
    precision: str = ""
    status: str = "skipped"  # pass | fail | skipped | error
    reason: str = ""
    parity: Parity | None = None
    per_t: dict[int, Parity] = field(default_factory=dict)
    vision_max_abs_diff: float | None = None
    seconds_per_case: float | None = None  # vision + LLM wall time per T (this machine, not a benchmark)


@dataclass
class Case:
    T: int
    hw: int
    pixels: torch.Tensor
    ids: torch.Tensor
    ref: torch.Tensor  # fp32 [T], on the CPU (as pixels and ids: each runtime moves its inputs)
    ref_feats: torch.Tensor  # [T, g², Cv], on the CPU


def instruction_of_length(ids: torch.Tensor, tokens: int | None) -> torch.Tensor:
    """`ids` repeated or cut to `tokens` tokens (None: as they are)."""
    if tokens is None:
        return ids
    if tokens < 1 or ids.numel() == 0:
        raise EngineError(f"an instruction of {tokens} tokens cannot be made from {ids.numel()} tokens")
    return ids.repeat(-(-tokens // ids.numel()))[:tokens]


def make_cases(model: VideoITG, tokenizer: PreTrainedTokenizerBase, frames: list[int], instruction: str, seed: int,
               instruction_tokens: int | None = DEFAULT_INSTRUCTION_TOKENS) -> list[Case]:
    s = model.config.vision.image_size
    g = torch.Generator().manual_seed(seed)
    ids = instruction_of_length(encode_instruction(tokenizer, instruction), instruction_tokens)
    device, cases = model.out_proj.weight.device, []
    with torch.inference_mode():
        for T in frames:
            px = torch.rand(T, 3, s, s, generator=g) * 2 - 1  # SigLIP-normalised range
            hw = model.config.tokens_per_side(T)
            feats = model.encode_frames(px.to(device))
            ref = model.score_features([model.project(feats, hw)], [ids.to(device)])[0].float().cpu()
            cases.append(Case(T, hw, px, ids, ref, feats.float().cpu()))
    return cases


def run_backend(model: VideoITG, cases: list[Case], vision: VisionRuntime, grounding: GroundingRuntime
                ) -> BackendResult:
    name = vision.runtime if vision.runtime == grounding.runtime else f"{vision.runtime}+{grounding.runtime}"
    res = BackendResult(backend=name, precision=grounding.precision)
    vdiff, t0 = 0.0, time.perf_counter()
    with torch.inference_mode():
        for c in cases:
            feats = vision.encode(c.pixels)
            vdiff = max(vdiff, float((feats.float().cpu() - c.ref_feats).abs().max()))
            visual = vision.visual_features(c.pixels)
            res.per_t[c.T] = compare(c.ref.numpy(), grounding.score(visual, c.ids).float().cpu().numpy())
    res.seconds_per_case = (time.perf_counter() - t0) / len(res.per_t)
    res.parity = merge(list(res.per_t.values()))
    res.vision_max_abs_diff = vdiff
    res.status = "pass" if res.parity.meets(res.precision) else "fail"
    return res


def verify(
    checkpoint: str | Path,
    engines: str | Path | None,
    frames: list[int],
    instruction: str = DEFAULT_INSTRUCTION,
    seed: int = 0,
    backends: list[str] | None = None,
    threads: int | None = None,
    instruction_tokens: int | None = DEFAULT_INSTRUCTION_TOKENS,
) -> list[BackendResult]:
    """instruction_tokens: the instruction's length in tokens in every case (None: as `instruction` encodes)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_checkpoint(checkpoint, device, torch.float32)
    cases = make_cases(model, tok, frames, instruction, seed, instruction_tokens)
    ident = checkpoint_identity(checkpoint)
    # torch-bf16 is what the in-process server runs on a GPU; on CPU it is only checked on request.
    default = ["onnxruntime", "tensorrt", "trtllm", "trtllm-unfused-rope"]
    wanted = backends or ((["torch-bf16"] if device == "cuda" else []) + default)
    results = []
    for name in wanted:
        try:
            results.append(_one(name, model, checkpoint, engines, ident, cases, threads))
        except (BackendUnavailable, EngineError) as e:
            results.append(BackendResult(name, status="skipped", reason=str(e)))
    return results


def _one(name: str, model: VideoITG, checkpoint: str | Path, engines: str | Path | None, ident: str,
         cases: list[Case], threads: int | None) -> BackendResult:
    if name in ("torch-bf16", "torch-fp16", "torch-fp8"):
        # torch-fp8: `--precision fp8` (the language model's middle decoder layers in FP8, the rest bf16)
        dtype = torch.float16 if name == "torch-fp16" else torch.bfloat16
        precision = "fp8" if name == "torch-fp8" else None
        low, _ = load_checkpoint(checkpoint, model.out_proj.weight.device, dtype, with_tokenizer=False)
        r = run_backend(model, cases, open_vision("torch", low, precision=precision),
                        open_grounding("torch", low, precision=precision))
        r.backend = name
        return r
    if name in ("onnxruntime", "tensorrt"):
        kw: dict[str, Any] = {"engines": engines, "checkpoint_identity": ident, "threads": threads}
        return run_backend(model, cases, open_vision(name, model, **kw), open_grounding(name, model, **kw))
    if name in TRTLLM_BACKENDS:
        dtype, unfused = TRTLLM_BACKENDS[name]
        r = run_backend(model, cases, open_vision("torch", model),
                        open_grounding("trtllm", model, checkpoint=checkpoint, dtype=dtype, disable_fuse_rope=unfused))
        r.backend = name
        return r
    raise EngineError(f"unknown backend {name!r}")


def format_table(results: list[BackendResult], frames: list[int]) -> str:
    lines = [
        f"frames T = {frames}; reference = PyTorch fp32",
        f"{'backend':<16} {'prec':<5} {'max|dlogit|':>12} {'top32':>7} {'spearman':>9} {'vision max|d|':>14}"
        f" {'s/T':>7}  {'target':<18} result",
    ]
    for r in results:
        if r.parity is None:
            lines.append(f"{r.backend:<16} {r.status}: {r.reason}")
            continue
        p, (metric, thr) = r.parity, TARGETS[r.precision]
        target = (
            f"{'max|d|' if metric == 'max_abs_diff' else 'top32'} {'<=' if metric == 'max_abs_diff' else '>='} {thr}"
        )
        vd = "-" if r.vision_max_abs_diff is None else f"{r.vision_max_abs_diff:.2e}"
        lines.append(
            f"{r.backend:<16} {r.precision:<5} {p.max_abs_diff:>12.2e} {p.topk_overlap:>7.3f} "
            f"{p.spearman:>9.4f} {vd:>14} {r.seconds_per_case:>7.3f}  {target:<18} {r.status}"
        )
    return "\n".join(lines)


def to_json(results: list[BackendResult]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        d = asdict(r)
        d["per_t"] = {str(k): asdict(v) for k, v in r.per_t.items()}
        out.append(d)
    return out


def write_json(results: list[BackendResult], path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_json(results), indent=2) + "\n")
