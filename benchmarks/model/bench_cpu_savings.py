"""What stopping SigLIP at the select layer and keeping no hidden states saves, measured on the CPU.

    python -m benchmarks.model.bench_cpu_savings                 # "small" shapes, real depths (27 + 28 layers)
    python -m benchmarks.model.bench_cpu_savings --tiny --no-rss # seconds (the tests)

Both sides hold the same weights: ours is the core `VideoITG` (`encode_frames`, `score_features`); the baseline is
the original path rebuilt from HF `SiglipVisionModel` / `Qwen2Model` with `output_hidden_states=True`
(`benchmarks.perf.baseline`). The shapes are narrow but keep the real depths, so the ratios that depend on depth
(27 vs 26 layers, 28 vs 1 retained vision states, 29 vs 1 LLM states) are the real ones; absolute times are not.

Per tower:
- the median wall time of each side (calls interleaved, so load from other processes hits both alike) and, with
  one torch thread (--threads 1, the default of --tiny), the CPU time of that thread, which a shared,
  oversubscribed machine distorts far less than wall time;
- the FLOP ratio from the counter;
- the activation bytes each side keeps, measured on the returned tensors (ours: the selected vision state and one
  final L x H LLM state; the baseline: every hidden state), and the memory model's activation ratio;
- unless --no-rss, the growth of peak RSS during one forward, in a fresh child process per side.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.perf.build import build_baseline, build_ours
from benchmarks.perf.flops import request_flops
from benchmarks.perf.memory import request_memory
from benchmarks.perf.timing import median
from videoitg.config import TextConfig, VideoITGConfig, VisionConfig
from videoitg.launch.procfs import memory
from videoitg.model.qwen2 import run_decoder

CPU = torch.device("cpu")
# the repository: the rss child runs as `python -m benchmarks.model.bench_cpu_savings` from here
ROOT = Path(__file__).resolve().parents[2]


def small_config(tiny: bool) -> tuple[VideoITGConfig, int, int]:
    """(config, frames, instruction tokens) with the real depths and narrow widths."""
    if tiny:
        text = TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=28,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        vision = VisionConfig(image_size=56, patch_size=14, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=27, num_attention_heads=2)
        return VideoITGConfig(text=text, vision=vision, vision_token_num=64, tokenizer_model_max_length=4096), 8, 8
    text = TextConfig(vocab_size=1024, hidden_size=256, intermediate_size=1024, num_hidden_layers=28,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192)
    vision = VisionConfig(image_size=224, patch_size=14, hidden_size=128, intermediate_size=512,
                          num_hidden_layers=27, num_attention_heads=4)
    return VideoITGConfig(text=text, vision=vision, vision_token_num=1024, tokenizer_model_max_length=8192), 16, 32


def tensor_bytes(x: Any) -> int:
    """Bytes of every tensor reachable from a model output (tuples, lists, HF ModelOutput dicts)."""
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, dict):
        return sum(tensor_bytes(v) for v in x.values())
    if isinstance(x, (tuple, list)):
        return sum(tensor_bytes(v) for v in x)
    return 0


class Sides:
    """Both models and one request's inputs, built identically in the parent and in every child process."""

    def __init__(self, tiny: bool, seed: int = 0) -> None:
        self.cfg, self.frames, self.instr = small_config(tiny)
        self.ours = build_ours(self.cfg, CPU, torch.float32, seed=seed)
        self.base = build_baseline(self.cfg, CPU, torch.float32, self.ours.state_dict())
        g = torch.Generator().manual_seed(seed)
        s = self.cfg.vision.image_size
        self.pixels = torch.rand(self.frames, 3, s, s, generator=g) * 2 - 1
        self.ids = torch.randint(0, self.cfg.text.vocab_size, (self.instr,), generator=g)
        self.visual = self.ours.visual_features(self.pixels)

    def call(self, which: str) -> Any:
        """One forward of a side; returns everything the call hands back."""
        if which == "vision-ours":
            return self.ours.encode_frames(self.pixels)
        if which == "vision-baseline":
            # what the original does per chunk: the full HF output (every hidden state), then hidden_states[-2]
            return [self.base.vision(pixel_values=c, output_hidden_states=True)
                    for c in self.pixels.split(self.base.chunk)]
        if which == "llm-ours":
            return self.ours.score_features([self.visual], [self.ids])
        if which == "llm-ours-state":  # the one [1, L, H] state score_features pools from
            x, valid = self.ours.embed_batch([self.visual], [self.ids])
            m = self.ours.model
            return run_decoder(m.layers, m.norm, self.cfg.text, x, valid, causal=self.ours.causal)
        if which == "llm-baseline":
            t, n, h = self.visual.shape
            emb = torch.cat([self.visual.reshape(1, t * n, h), self.base.llm.embed_tokens(self.ids[None])], dim=1)
            return self.base.llm(inputs_embeds=emb, output_hidden_states=True, use_cache=False)
        raise ValueError(which)


def child(which: str, tiny: bool) -> None:
    """Runs in a fresh process: peak-RSS growth of one forward of one side, as JSON on stdout.

    Writing 5 to /proc/self/clear_refs resets the kernel's peak-RSS mark (VmHWM), so building the models does not
    mask the forward's own peak. The parent starts the child with a fixed glibc mmap threshold, so every tensor
    buffer is its own mapping and RSS follows the live tensors."""
    torch.set_grad_enabled(False)
    sides = Sides(tiny)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so reuse of them does not hide growth
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = memory()["VmRSS"]
    out = sides.call(which)
    growth = memory()["VmHWM"] - before
    print(json.dumps({"which": which, "rss_growth": growth, "kept_bytes": tensor_bytes(out)}))


def measure_rss(which: str, tiny: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.model.bench_cpu_savings", "--child", which, "--threads",
           str(torch.get_num_threads())]
    cmd += ["--tiny"] if tiny else []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # no dynamic threshold: freed buffers leave RSS
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True, env=env, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(tiny: bool, iters: int, rss: bool) -> dict[str, Any]:
    with torch.inference_mode():
        return _run(tiny, iters, rss)


def _run(tiny: bool, iters: int, rss: bool) -> dict[str, Any]:
    sides = Sides(tiny)
    cfg, t, instr = sides.cfg, sides.frames, sides.instr
    ours_f, base_f = request_flops(cfg, t, instr), request_flops(cfg, t, instr, "baseline")
    ours_m = request_memory(cfg, t, instr, "ours", chunk=64, dtype_bytes=4)
    base_m = request_memory(cfg, t, instr, "baseline", chunk=sides.base.chunk, dtype_bytes=4)
    report: dict[str, Any] = {
        "shapes": {"frames": t, "instruction_len": instr, "vision": vars(cfg.vision), "text": vars(cfg.text),
                   "seq_len": t * cfg.tokens_per_side(t) ** 2 + instr},
        "torch_threads": torch.get_num_threads(), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    towers = {
        "vision": ("vision-ours", "vision-baseline", base_f.vision + base_f.vision_head, ours_f.vision,
                   base_m.phases["vision"], ours_m.phases["vision"]),
        "llm": ("llm-ours", "llm-baseline", base_f.llm, ours_f.llm, base_m.phases["llm"], ours_m.phases["llm"]),
    }
    kept = {"vision": "vision-ours", "llm": "llm-ours-state"}
    for name, (mine, theirs, fb, fo, mb, mo) in towers.items():
        wall: dict[str, list[float]] = {mine: [], theirs: []}
        cpu: dict[str, list[float]] = {mine: [], theirs: []}
        for _ in range(iters + 1):  # interleaved; the first round is the warm-up
            for which in (mine, theirs):
                c0, w0 = time.thread_time(), time.perf_counter()
                sides.call(which)
                wall[which].append(time.perf_counter() - w0)
                cpu[which].append(time.thread_time() - c0)
        row = {
            "ours_s": median(wall[mine][1:]), "baseline_s": median(wall[theirs][1:]), "flop_ratio": fb / fo,
            "kept_bytes_ours": tensor_bytes(sides.call(kept[name])),
            "kept_bytes_baseline": tensor_bytes(sides.call(theirs)),
            "modelled_activation_ratio": mb / mo,
        }
        row["wall_time_ratio"] = row["baseline_s"] / row["ours_s"]
        if torch.get_num_threads() == 1:  # all compute runs on this thread, so its CPU time is the work done
            row.update(ours_cpu_s=median(cpu[mine][1:]), baseline_cpu_s=median(cpu[theirs][1:]))
            row["cpu_time_ratio"] = row["baseline_cpu_s"] / row["ours_cpu_s"]
        row["kept_bytes_ratio"] = row["kept_bytes_baseline"] / row["kept_bytes_ours"]
        if rss:
            ro, rb = measure_rss(mine, tiny), measure_rss(theirs, tiny)
            row.update(rss_growth_ours=ro["rss_growth"], rss_growth_baseline=rb["rss_growth"])
            row["rss_growth_ratio"] = rb["rss_growth"] / ro["rss_growth"] if ro["rss_growth"] else None
        report[name] = row
        print(f"[cpu-savings] {name}: {row}", file=sys.stderr, flush=True)
    return report


def format_table(report: dict[str, Any]) -> str:
    cols = ["wall_time_ratio", "cpu_time_ratio", "flop_ratio", "kept_bytes_ratio", "modelled_activation_ratio",
            "rss_growth_ratio"]
    lines = ["| tower | ours ms | baseline ms | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 3)]
    for name in ("vision", "llm"):
        r = report[name]
        vals = [f"{r[c]:.3g}" if r.get(c) is not None else "-" for c in cols]
        lines.append(f"| {name} | {r['ours_s'] * 1e3:.1f} | {r['baseline_s'] * 1e3:.1f} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny widths (seconds); depths stay real")
    p.add_argument("--iters", type=int, default=None, help="timed calls per side (default 5; tiny 2)")
    p.add_argument("--no-rss", action="store_true", help="skip the child-process peak-RSS measurement")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="write the report here (JSON)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    threads_before = torch.get_num_threads()  # restored: the tests run this inside the suite's process
    threads = args.threads or (1 if args.tiny else None)  # tiny ops gain nothing from more threads on 2 cores
    if threads:
        torch.set_num_threads(threads)
    try:
        if args.child:
            child(args.child, args.tiny)
            return None
        report = run(args.tiny, args.iters or (2 if args.tiny else 5), rss=not args.no_rss)
    finally:
        torch.set_num_threads(threads_before)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(format_table(report))
    return report


if __name__ == "__main__":
    main()
