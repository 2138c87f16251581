"""`python3 -m benchmarks.gpu_check`: the GPU path checked end to end; a JSON and a Markdown table in --out.

    python3 -m benchmarks.gpu_check --part core   --out $OUT     # parity, `videoitg score --device cuda`, training
    python3 -m benchmarks.gpu_check --part extras --out $OUT     # NVDEC (DALI mixed), served GPU repository, e2e
    python3 -m benchmarks.gpu_check --tiny --device cpu --out D  # every check at tiny sizes on the CPU (the tests)
    python -m benchmarks.gpu_check verify-here FILES_DIR         # here: the GPU run's checkpoint loads and agrees

On the device machine run it through `benchmarks/gpu_check/run.sh` (installs what was carried; docs/performance.md
lists the exact device calls). The benchmark proper is `benchmarks/bench_gpu_path.py` (its own call).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

PARTS = {"core": ["environment", "model_parity", "score_cli", "training"],
         "extras": ["environment", "nvdec", "serving", "e2e"]}


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.workdir)
        self.report: dict[str, Any] = {"part": args.part, "tiny": args.tiny, "device": self.device, "checks": {}}

    def check(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        """Run one check; its result lands in the JSON at once (a call cut off at its limit keeps what ran)."""
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            detail = fn()
            status = "skip" if "skipped" in detail else ("pass" if detail.get("pass", True) else "FAIL")
        except Exception as e:  # one broken check must not cost the others their device time
            if self.args.strict:
                raise
            detail, status = {"error": repr(e)[:2000]}, "ERROR"
        entry = {"status": status, "s": round(time.perf_counter() - t0, 1), "detail": detail}
        self.report["checks"][name] = entry
        self.write()
        log(f"{name}: {status} in {entry['s']} s")

    def write(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=1, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self.report))

    # ---- checks ----------------------------------------------------------------------------------------------------
    def environment(self) -> dict[str, Any]:
        from benchmarks.bench_gpu_path import environment
        from benchmarks.gpu_check.nvdec import nvdec_present

        env = environment(torch.device(self.device))
        if self.device.startswith("cuda"):
            env.update(nvdec_present())
        import importlib.util

        env["importable"] = {m: importlib.util.find_spec(m) is not None
                             for m in ("av", "nvidia.dali", "pytriton", "tritonclient", "decord")}
        return env

    def model_parity(self) -> dict[str, Any]:
        from benchmarks.gpu_check.parity import judge_models, model_parity

        res = model_parity(torch.device(self.device), self.args.tiny)
        return {**res, **judge_models(res)}

    def score_cli(self) -> dict[str, Any]:
        from benchmarks.gpu_check.parity import judge_score, score_cli

        dtypes = ["bfloat16"] if self.args.tiny else ["float32", "bfloat16", "float16"]
        res = score_cli(self.device, self.work / "score", dtypes)
        return {**res, **judge_score(res, self.device)}

    def training(self) -> dict[str, Any]:
        from benchmarks.gpu_check.training import run_training

        return run_training(self.work / "train", self.out, self.device, steps=2 if self.args.tiny else 6,
                            videos=2 if self.args.tiny else 6)

    def nvdec(self) -> dict[str, Any]:
        from benchmarks.gpu_check.nvdec import run_nvdec

        return run_nvdec(self.work / "clips", self.device, self.args.tiny)

    def serving(self) -> dict[str, Any]:
        import importlib.util

        from benchmarks.gpu_check.serving import run_serving

        if importlib.util.find_spec("pytriton") is None:
            return {"skipped": "nvidia-pytriton is not installed (stage it: docs/performance.md)"}
        return run_serving(self.work / "serving", self.device, self.args.numpy_dir)

    def e2e(self) -> dict[str, Any]:
        """The benchmark's end-to-end section (released end to end vs ours, 10-minute 720p clip, T = 512), in a
        child process so its models leave the device when it ends."""
        if self.args.tiny:
            return {"skipped": "the benchmark's tiny run (tests/test_perf_bench.py) covers the e2e section"}
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu_path.py"), "--sections", "env,e2e",
               "--frames", "512", "--hot", self.args.hot, "--out", str(self.out / "bench_e2e.json"),
               "--workdir", str(self.work / "clips")]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=560)
        res: dict[str, Any] = {"returncode": p.returncode, "stdout_tail": p.stdout[-1500:]}
        f = self.out / "bench_e2e.json"
        if f.exists():
            res["e2e"] = json.loads(f.read_text()).get("e2e")
        if p.returncode != 0:
            res["stderr_tail"] = p.stderr[-2000:]
        res["pass"] = p.returncode == 0 and isinstance(res.get("e2e"), dict) and "speedup" in res["e2e"]
        return res


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# gpu_check ({report['part']}, device {report['device']}{', tiny' if report['tiny'] else ''})", "",
             "| check | status | seconds | numbers |", "|---|---|---|---|"]
    for name, c in report["checks"].items():
        lines.append(f"| {name} | {c['status']} | {c['s']} | {summary(name, c['detail'])} |")
    return "\n".join(lines) + "\n"


def summary(name: str, d: dict[str, Any]) -> str:
    """One line of the numbers that matter per check."""
    if "error" in d:
        return d["error"].splitlines()[0][:200]
    if "skipped" in d:
        return d["skipped"]
    if name == "environment":
        return (f"{d.get('gpu', d.get('device'))}, torch {d.get('torch')}, cuDNN {d.get('cudnn')}, "
                f"SM {d.get('sm_count')}, NVDEC {d.get('libnvcuvid', '-')}, "
                f"clocks {d.get('nvidia_smi', {}).get('clocks.sm', '-')}, power limit "
                f"{d.get('nvidia_smi', {}).get('power.limit', '-')}")
    if name == "model_parity":
        parts = []
        for size, row in d.items():
            if isinstance(row, dict) and "fp32" in row:
                ov = {k: next(v for kk, v in row[k].items() if kk.endswith("_overlap")) for k in ("bf16", "fp16")}
                parts.append(f"{size}: fp32 max|d| {row['fp32']['max_abs_diff']:.1e}, bf16 overlap {ov['bf16']:.2f} "
                             f"rho {row['bf16']['spearman']:.3f}, fp16 overlap {ov['fp16']:.2f} "
                             f"rho {row['fp16']['spearman']:.3f}")
        return "; ".join(parts)
    if name == "score_cli":
        parts = []
        for key, run in d.get("runs", {}).items():
            a = run.get("agreement_vs_cpu_fp32")
            if a:
                ov = next(v for k, v in a.items() if k.endswith("_overlap"))
                parts.append(f"{key}: max|d| {a['max_abs_diff']:.1e}, overlap {ov:.2f}, rho {a['spearman']:.3f}, "
                             f"same top-K {run['same_top_k']}")
        return "; ".join(parts)
    if name == "training":
        a, b = d.get("cpu_fp32", {}), d.get("device_run", {})
        return (f"losses CPU fp32 {[round(x, 4) for x in a.get('loss', [])]} vs {b.get('device')} {b.get('amp')} "
                f"{[round(x, 4) for x in b.get('loss', [])]}, max rel {d.get('max_rel_diff', float('nan')):.3f} "
                f"(<= {d.get('tolerance_rel')}), {b.get('process_group')}")
    if name == "nvdec":
        frames = "; ".join(f"{k}: same frames {r.get('same_frame_numbers')}, mean|d| {r.get('mean_abs', 0):.3f}, "
                           f"max|d| {r.get('max_abs', 0):.2f}" if "error" not in r else f"{k}: error"
                           for k, r in d.get("clips", {}).items())
        pixels = "; ".join(f"{k}: max/mean/p99.9 {r['max']}/{r['mean']}/{r['p99.9']} (bound {r['bound']}), "
                           f"{r['full_size_equal_px']:.1%} px equal" if "error" not in r else f"{k}: error"
                           for k, r in d.get("pixels", {}).items())
        return f"{frames}; pixels /255 ({d.get('backend')}): {pixels}"
    if name == "serving":
        ag = d.get("agreement_served_vs_in_process", [{}])
        return (f"served vs in-process max|d| {max(a.get('max_abs_diff', 0) for a in ag):.1e}, cache hit "
                f"{d.get('cache_hit')}, decode/vision runs unchanged on the hit: "
                f"{d.get('executions_before_second')} -> {d.get('executions_after_second')}")
    if name == "e2e":
        e = d.get("e2e") or {}
        return (f"released {e.get('released_s', float('nan')):.2f} s, ours {e.get('ours_s', float('nan')):.2f} s, "
                f"x{e.get('speedup', float('nan')):.2f}")
    return ""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify-here"]:
        from benchmarks.gpu_check.training import verify_here

        p = argparse.ArgumentParser(prog="gpu_check verify-here")
        p.add_argument("files", type=Path, help="the folder the device call's files came back to")
        p.add_argument("--report", type=Path, default=None, help="gpu_check.json of that call (default: FILES/)")
        a = p.parse_args(argv[1:])
        return verify_here(a.files, a.report or a.files / "gpu_check.json")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=[*PARTS, "all"], default="core")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, every check (CPU, the test suite)")
    p.add_argument("--device", default=None, help="default: cuda when available")
    p.add_argument("--only", default=None, help="comma-separated subset of the part's checks")
    p.add_argument("--out", required=True)
    p.add_argument("--workdir", default="/tmp/videoitg-gpu-check")
    p.add_argument("--numpy-dir", default=os.environ.get("VIDEOITG_NUMPY1_DIR"),
                   help="a folder holding numpy 1.x for the tritonserver python-backend stubs")
    p.add_argument("--hot", default="fuse,native_gqa", help="our path's switches for the e2e section")
    p.add_argument("--strict", action="store_true", help="raise on the first error (the tests)")
    args = p.parse_args(argv)
    names = PARTS["core"] + PARTS["extras"][1:] if args.part == "all" or args.tiny else PARTS[args.part]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    run = Run(args)
    for name in names:
        run.check(name, getattr(run, name))
    print(markdown(run.report))
    return run.report


if __name__ == "__main__":
    main()
