"""The picture of a GPU check's hot-path and served figures: each path's cold request at T = 512 (the hot path's
A/B, released-style and FP8), and the served 10-minute clip's whole request by stage against the released-style one.

    python -m benchmarks.gpu.plot_gpu_check benchmarks/results/gpu-check-h100-2026-11-26.json docs/gpu_h100.png

Reads a record of several invocations (`invocations`, each with its `sections`) or one `gpu_check.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.figures import legend_once, save

COLD = {"current": "current (every change off, eager)", "gqa_without_copies": "+ GQA without copies",
        "gelu_epilogue": "+ GELU epilogue", "eager": "both, eager", "hot_unpadded": "hot, SigLIP's MLP unpadded",
        "hot": "hot: compiled (default)", "one_pass_norms": "hot + one-pass norms", "vision_bf16": "hot + bf16 tower",
        "released": "released-style (HF)"}
DECODERS = {"pyav_all_cores": "PyAV, every core", "dali_batch": "DALI, one batched pipeline",
            "pynvvideocodec": "PyNvVideoCodec, a session per NVDEC", "dali_pipelines": "DALI, a pipeline per NVDEC",
            "dali_and_pyav_overflow": "DALI pipelines + PyAV overflow (served default)"}


def sections(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(the invocation's label for the picture, else what it ran, else its commit, else "", sections) of each
    invocation, in order."""
    runs = record.get("invocations") or [record]
    return [(run.get("label") or run.get("what") or run.get("commit", ""), run["sections"]) for run in runs]


def plot(record: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sections(record)
    hot = next(s["hotpath"] for _, s in runs if "hotpath" in s)
    served = [(commit, s["served_e2e"]) for commit, s in runs if "served_e2e" in s and "served" in s["served_e2e"]]
    decoding = next((s["decode_long"] for _, s in runs if decode_clips(s.get("decode_long", {}))), None)
    heights = [1.3, 1] + ([1.1] if decoding else [])
    fig, axes = plt.subplots(len(heights), 1, figsize=(10, 3.2 * sum(heights)), gridspec_kw={"height_ratios": heights})
    a, b = axes[0], axes[1]
    med = hot["latency_s"]["median"]
    rows = [(label, med[f"{k}_cold"]) for k, label in COLD.items() if f"{k}_cold" in med]
    rows.append(("FP8 (--precision fp8), compiled", hot["fp8_latency_s"]["median"]["fp8_cold"]))
    for y, (label, secs) in enumerate(rows):
        a.barh(y, secs, color="#4c72b0" if "hot" in label or "FP8" in label else "#9aa5b1")
        a.text(secs, y, f" {secs:.3f} s", va="center", fontsize=8)
    floor = hot["floors_s"]["torch_kernels_measured_here"]["cold"]
    a.axvline(floor, color="#c44e52", ls="--", lw=1)
    a.text(floor, len(rows) - 0.4, f" fp16 floor {floor:.2f} s", color="#c44e52", fontsize=8)
    a.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    a.invert_yaxis()
    a.set_xlim(0, max(s for _, s in rows) * 1.18)
    a.set_title(f"cold request, T = {hot['frames']}, {hot['instruction_tokens']}-token instruction, medians of "
                f"{hot['rounds']} interleaved rounds", fontsize=9)
    a.set_xlabel("seconds", fontsize=8)
    colours = {"decode": "#4c72b0", "preprocess": "#dd8452", "model": "#55a868", "other": "#bbbbbb"}
    # served: the decode step's own compute; a pooled (NVDEC) decode streams into the vision step outside it, so its
    # time shows in the model's and in "other"
    bars: list[tuple[str, dict[str, float]]] = []
    for what, e2e in served:
        r = e2e["released_s"]
        bars.append(("released-style, same run: decord, HF processor, HF model",
                     {"decode": r["decode"], "preprocess": r["preprocess"], "model": r["model_s"],
                      "other": r["wall_s"] - r["decode"] - r["preprocess"] - r["model_s"]}))
        steps, wall = e2e["served"]["steps_s_per_request"], statistics.median(e2e["served"]["wall_s"])
        decode = steps["videoitg_decode"]
        model = steps["videoitg_vision"] + steps["videoitg_grounding"]
        bars.append((f"served, {what}" if what else "served", {"decode": decode, "model": model,
                                                                "other": max(0.0, wall - decode - model)}))
    for y, (_, stages) in enumerate(bars):
        left = 0.0
        for stage, secs in stages.items():
            b.barh(y, secs, left=left, color=colours[stage], label=stage if y < 2 else None)
            left += secs
        b.text(left, y, f" {left:.2f} s", va="center", fontsize=8)
    b.set_yticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
    b.invert_yaxis()
    b.set_xlim(0, max(sum(s.values()) for _, s in bars) * 1.15)
    b.set_title(f"served whole request, {served[-1][1]['clip']} (512 of 6000 frames), each pair one run\nserved "
                "decode: the decode step's own compute (a pooled decode runs outside it, in model and other)",
                fontsize=9)
    b.set_xlabel("seconds", fontsize=8)
    legend_once(b, fontsize=7, loc="lower right", ncol=4)
    if decoding:
        decode_panel(axes[2], decoding)
    fig.suptitle(record.get("card", "GPU check"), fontsize=9)
    return save(fig, out)


def decode_clips(decode: dict[str, Any]) -> list[str]:
    """The clips of a decode_long section that hold each decoder's run."""
    return [k for k, v in decode.items() if isinstance(v, dict) and "runs" in v]


def decode_panel(ax: Any, decode: dict[str, Any]) -> None:
    """One request's decode of each long clip (512 sampled frames) by each decoder: grouped bars, seconds."""
    clips = decode_clips(decode)
    width = 0.8 / len(clips)
    colours = ["#4c72b0", "#dd8452", "#55a868"]
    for c, clip in enumerate(clips):
        runs = decode[clip]["runs"]
        for y, run in enumerate(DECODERS):
            secs = runs.get(run, {}).get("wall_s")
            if secs is None:
                continue
            ax.barh(y + (c - (len(clips) - 1) / 2) * width, secs, height=width, color=colours[c % len(colours)],
                    label=f"{clip}: {decode[clip]['size']}, {decode[clip]['total_frames']} frames" if y == 0 else None)
            ax.text(secs, y + (c - (len(clips) - 1) / 2) * width, f" {secs:.2f} s", va="center", fontsize=7)
    ax.set_yticks(range(len(DECODERS)), list(DECODERS.values()), fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"one request's decode, 512 sampled frames, each decoder alone ({decode['nvdec_sessions']} NVDEC "
                 "sessions)", fontsize=9)
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.1)
    ax.legend(fontsize=7, loc="center right")


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("record", type=Path, help="a GPU check record or gpu_check.json with hotpath and served_e2e")
    ap.add_argument("out", type=Path, help="the PNG to write")
    args = ap.parse_args(argv)
    out = plot(json.loads(args.record.read_text()), args.out)
    print(out)
    return out


if __name__ == "__main__":
    main()
