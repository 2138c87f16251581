"""The GPU check: is the GPU path right, and what does it cost? Writes gpu_check.json and gpu_check.md to --out.

    python -m benchmarks.gpu.gpu_check --out DIR --wheelhouse WHEELS     # a GPU node without network
    python -m benchmarks.gpu.gpu_check --out DIR --device cpu --tiny     # anywhere, tiny shapes (the test suite)

--wheelhouse: a folder holding the wheels `benchmarks/gpu/gpu_requirements.txt` lists (what a PyTorch image lacks). They
are installed under --workdir with pip --no-index (STUB apart: numpy 1.x and the scipy and scikit-learn that run on
it, for the tritonserver python-backend stub only), except what the environment already has: inside the serving
image (deploy/Dockerfile) that is its own tritonclient 2.71 and tritonserver 2.71 (/opt/tritonserver; nvidia-
pytriton's 2.51 is not installed there), which the check then uses; `env` says which it used. This checkout is
imported in place (laid out as the installed package where it is not installed). Sections, each written to the
JSON as it finishes, the long ones stage by stage too (one that fails records its error and what it had; the others
still run):
  env       GPU, driver, clocks, python/torch/CUDA/cuDNN/numpy versions, the SDPA kernel each attention call runs,
            the tritonserver `videoitg serve` will run and the tritonclient imported (which, what version)
  parity    the core model on the device in fp32 (TF32 off), fp16 and bf16 against CPU fp32 with the same random
            weights and inputs, tiny and real size (SigLIP-so400m + Qwen2-7B, 16 frames at a 1,024-token visual
            budget so the CPU reference stays short): max |logit difference|, top-32 overlap
  nvdec     DALI `mixed` (NVDEC) against PyAV on the sample clips: frame numbers, pixel difference (on a CPU:
            DALI's CPU decoder on VP9 clips, the codecs it has); and each clip's 512 frames decoded again in pieces of
            at most 64 frames (several pipeline runs on the decode pool's sessions, each run's copy waited for before
            the next) against the decode in bigger pieces
  served    `videoitg serve` (the tritonserver it finds: the image's own /opt/tritonserver, else nvidia-pytriton's)
            on the gpu repository with each decoder (NVDEC, the default, and pyav): served logits against
            in-process ones decoded the same way, frame numbers against PyAV's; a second instruction is a cache hit
            that runs no decode or vision; one CUDA memory pool flag per visible GPU on the server's command line
  long      the grounding half at the real sequence length: 512 frames and a 30-token instruction (12,830 tokens),
            a checkpoint of Qwen2-7B's and SigLIP-so400m's shapes with random weights and 4 decoder layers (tiny
            shapes with --tiny), `videoitg verify` of trtllm (fused RoPE), trtllm-unfused-rope and torch fp16 against
            torch fp32; each TensorRT-LLM variant judged against torch fp16's own difference
  engines   the engine path: `videoitg build` (ONNX graphs; TensorRT plans and the TensorRT-LLM grounding where the
            node has TensorRT / TensorRT-LLM, and which is missing where not), `videoitg verify` of every runtime
            built, then `videoitg serve --engines` (the runtimes build.json names, checked before tritonserver
            starts) against in-process torch; the node's versions against videoitg/assets/compat.json
  latency   T = 64, 256, 512: cold and cached, ours against the released-style baseline (HF modules, hidden states
            kept, fp16, batch 1) interleaved; each path's peak GPU memory (its weights + what its call allocates); the
            split floor (GEMM FLOPs at the GEMM rate + each tower's attention FLOPs at its attention rate, both rates
            measured in this run); the kernels a cold request at the largest T spends most time in (torch profiler)
  training  a few `videoitg train` steps under torchrun (NCCL on CUDA, world size 1, bf16) against the same steps
            in fp32 on the CPU
  hotpath, served_e2e
            the hot path profiled and measured against the current path and the released-style path, its candidates
            (one-pass norms, the vision tower in bf16) interleaved with it, FP8 cold and cached; the whole served
            request on the 10-minute 720p clip and 8 concurrent cold requests (benchmarks/gpu/gpu_hotpath.py and
            benchmarks/gpu/gpu_decode.py say what each measures). On an H100: env 10 s, served_e2e 151 s,
            decode_long 55 s, the wheelhouse's unpack and install about 15 s (each call's wall time less its
            sections'); hotpath 173 s measured with fewer variants, about 235 s with the present ones (estimated), and
            fp8_breakdown about 55 s: `--only env,hotpath,fp8_breakdown` about 5 minutes (not run on a GPU)
  fp8_breakdown
            FP8's logits against fp32 (the hotpath's FP8 comparison: T = 128, 1,024 visual tokens, random weights):
            fp16, bf16 and the vision tower in bf16 without FP8; FP8 as `--precision fp8` runs it, without fast
            accumulation, with block scales, in every decoder layer and in both towers; each decoder layer alone in
            FP8 (the sensitivity sweep); each with its error/spread
  decode_long
            one request's decode of the 10-minute 720p clip and a 10-minute 1080p30 clip with B-frames and 2-s GOPs,
            each decoder alone on a decode pool: DALI on as many pipelines as the card has NVDEC engines, DALI on
            one pipeline fed that many pieces a run, PyNvVideoCodec, PyAV on every core, DALI with PyAV overflow
            threads; NVDEC utilisation sampled (NVML), frames run through, pixels against PyAV's. served_e2e also
            serves the 1080p clip, times one request's model work on the device, and sends bursts of 8 and 16 cold
            requests (benchmarks/gpu/gpu_decode.py: estimated at about 90 s and 210 s on an H100)
  burst_stacks
            where 8 concurrent cold requests spend their time, process by process: every served process's threads'
            CPU seconds (/proc) and, where py-spy is on PATH, their Python stacks sampled through the burst
            (stacks.txt); `--decode-instances 1,2,4` bursts at each count (on an H200 about 100 s a count with
            a 4-decoder-layer checkpoint; the full one loads longer: ESTIMATE_S's 110 s not measured)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("gpu_requirements.txt")
SECTIONS = ("env", "parity", "nvdec", "served", "long", "engines", "latency", "training", "hotpath", "served_e2e",
            "fp8_breakdown", "decode_long", "burst_stacks")
LONG_FRAMES, LONG_LAYERS = 512, 4  # the long section's frames (with verify's 30-token instruction) and LLM layers
CHUNK_FRAMES = 64  # the nvdec section's second decode: frames per DALI run
INSTRUCTIONS = ("When is the red circle visible?", "When does the blue square move?")
# Seconds each section is expected to take at the released shapes on an H100 or H200 (the 2026-11-26 records, and
# estimates where a section grew since: docs/performance.md): with --budget-s, a section is started only where this
# much is left. The tiny rehearsal's are the CPU's.
ESTIMATE_S = {"env": 15, "parity": 60, "nvdec": 10, "served": 80, "long": 45, "engines": 55, "latency": 65,
              "training": 35, "hotpath": 240, "served_e2e": 150, "fp8_breakdown": 60, "decode_long": 90,
              "burst_stacks": 110}
TINY_ESTIMATE_S = {"env": 5, "parity": 5, "nvdec": 10, "served": 30, "long": 20, "engines": 30, "latency": 5,
                   "training": 10, "hotpath": 30, "served_e2e": 40, "fp8_breakdown": 10, "decode_long": 30,
                   "burst_stacks": 40}


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# Installed first on the python-backend stub's path, for Triton 2.51's stub (built against numpy 1.x: under numpy 2 it
# hands the Python side a wrong buffer): numpy 1.x, and the numpy-1.x-capable builds of what transformers imports
# when present (an image's own scipy may need numpy 2).
STUB = ("numpy", "scipy", "scikit-learn")


def requirements() -> list[str]:
    """The requirement lines of `REQUIREMENTS`, without comments and blank lines."""
    lines = (line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def environment_has(requirement: str, system_tritonserver: bool) -> str | None:
    """What this environment already has for a line of gpu_requirements.txt (its version; "system" for
    nvidia-pytriton where a tritonserver is installed): the image's own is used, not the wheelhouse's. The STUB
    packages count only where the environment's numpy is below 2 (then the environment itself can host the stub)."""
    import importlib.metadata as md

    name = requirement.split("==")[0].strip()
    if name == "nvidia-pytriton" and system_tritonserver:
        return "system"
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        return None
    if name in STUB and int(md.version("numpy").split(".")[0]) >= 2:
        return None
    return have


def system_tritonserver() -> bool:
    """A tritonserver installed in this image (on PATH or /opt/tritonserver: `binaries.CONTAINER_ROOT`, not imported:
    `install` runs before `videoitg` can be, from the laid-out checkout), which `videoitg serve` prefers."""
    return bool(shutil.which("tritonserver")) or Path("/opt/tritonserver/bin/tritonserver").is_file()


def install(wheelhouse: Path, work: Path) -> tuple[list[str], str, dict[str, str]]:
    """The requirements this environment lacks into work/site, the STUB packages into work/stub (unless the
    environment's numpy is 1.x), and work/pkg: this checkout laid out as the installed package (pyproject's
    package-dir: engine_build, train, python_backend inside `videoitg`), by symlinks. Returns the path entries for
    this process and its children, the interpreter that serves (a venv whose .pth puts work/stub first, then this
    process's path: tritonserver's python-backend stubs take their packages from the `python3` first on PATH, which
    `videoitg serve` puts its own there, not from PYTHONPATH) and what the environment had ({requirement: its
    version}), which is not installed."""
    reqs = requirements()
    system = system_tritonserver()
    kept = {r: have for r in reqs if (have := environment_has(r, system)) is not None}
    reqs = [r for r in reqs if r not in kept]
    stub = [r for r in reqs if r.split("==")[0] in STUB]
    parts = {"site": [r for r in reqs if r not in stub], "stub": stub}
    for folder, names in parts.items():
        target, wanted = work / folder, "\n".join(sorted(names))
        marker = target / ".installed"  # what the folder holds: a workdir of another requirements list is redone
        if names and not (marker.is_file() and marker.read_text() == wanted):
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--find-links", str(wheelhouse), "--target", str(target), *names], check=True)
            marker.write_text(wanted)
    paths = [lay_out(work), str(work / "site"), str(ROOT)]
    venv = work / "serve-venv"
    if not venv.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    entries = [str(work / "stub"), *paths, *filter(None, sys.path)]
    (site / "videoitg_gpu_check.pth").write_text("\n".join(entries) + "\n")
    return paths, str(venv / "bin" / "python"), kept


def installed() -> bool:
    """Whether this environment has the package installed (else the checkout is laid out as it)."""
    import importlib.metadata as md

    try:
        md.distribution("videoitg-serve")
    except md.PackageNotFoundError:
        return False
    return True


def lay_out(work: Path) -> str:
    """This checkout laid out as the installed package, by symlinks, in work/pkg (returned): pyproject's package-dir
    maps engine_build, train and python_backend inside `videoitg`."""
    pkg = work / "pkg" / "videoitg"
    shutil.rmtree(pkg.parent, ignore_errors=True)
    pkg.mkdir(parents=True)
    for entry in (ROOT / "videoitg").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for sub in ("engine_build", "train", "python_backend"):
        (pkg / sub).symlink_to(ROOT / sub)
    return str(pkg.parent)


def tritonserver_command(repository: Path) -> list[str]:
    """The command line of the tritonserver serving `repository` (read from /proc while it runs)."""
    want = f"--model-repository={repository.resolve()}"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if want in args and Path(args[0]).name == "tritonserver":
            return args
    return []


def nvidia_smi() -> dict[str, str]:
    fields = ["name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "power.limit", "pstate"]
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    return dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))


class Budget:
    """The check's time budget: seconds from its start (None: no budget). `affords(s)`: whether s seconds of work can
    still start and finish inside it."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock, self.start = seconds, clock, clock()

    def remaining(self) -> float | None:
        return None if self.seconds is None else self.seconds - (self.clock() - self.start)

    def affords(self, seconds: float) -> bool:
        left = self.remaining()
        return left is None or left >= seconds


class Check:
    def __init__(self, args: argparse.Namespace, server_python: str, kept: dict[str, str] | None = None,
                 budget: Budget | None = None) -> None:
        import torch

        self.args, self.tiny, self.server_python, self.kept = args, args.tiny, server_python, kept or {}
        self.budget = budget or Budget(getattr(args, "budget_s", None))
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.out, self.work = Path(args.out), Path(args.workdir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.report: dict[str, Any] = {"device": str(self.device), "tiny": self.tiny, "sections": {}}
        self._clips: list[Path] | None = None

    def remaining(self) -> float | None:
        """Seconds left of the check's budget (None: no budget)."""
        return self.budget.remaining()

    def affords(self, seconds: float) -> bool:
        """Whether work expected to take `seconds` can start and still end inside the check's budget."""
        return self.budget.affords(seconds)

    def estimate(self, name: str) -> float:
        return (TINY_ESTIMATE_S if self.tiny else ESTIMATE_S)[name]

    def run(self, name: str) -> None:
        if not self.affords(self.estimate(name)):
            self.report["sections"][name] = {"status": "skip", "s": 0.0, "skipped": (
                f"not started: {self.remaining():.0f} s of the {self.budget.seconds:.0f} s budget left, the section "
                f"takes about {self.estimate(name):.0f} s")}
            self.write()
            log(f"{name}: not started (budget)")
            return
        log(f"{name} ...")
        t0 = self._t0 = time.perf_counter()
        self._running, self._partial = name, {}
        try:
            detail = getattr(self, name)()
            status = "skip" if "skipped" in detail else "pass" if detail.pop("ok") else "FAIL"
        except Exception as e:  # one broken section must not cost the others their run
            detail = {**self._partial, "error": f"{type(e).__name__}: {e}"[:3000],
                      "traceback": traceback.format_exc()[-4000:]}
            status = "ERROR"
        self.report["sections"][name] = {"status": status, "s": round(time.perf_counter() - t0, 1), **detail}
        self.write()
        log(f"{name}: {status} in {self.report['sections'][name]['s']} s")

    def progress(self, detail: dict[str, Any], stage: str) -> None:
        """A long section's results so far, written at once (they stay in the record if a later stage fails or the
        run is stopped); `stage`: what ran last."""
        self._partial = detail
        self.report["sections"][self._running] = {"status": f"running (done: {stage})",
                                                  "s": round(time.perf_counter() - self._t0, 1), **detail}
        self.write()
        log(f"{self._running}: {stage} done")

    def write(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=1, default=str) + "\n")
        rows = [f"| {n} | {r['status']} | {r['s']} | {r.get('summary') or r.get('skipped') or r.get('error', '')} |"
                for n, r in self.report["sections"].items()]
        head = f"# GPU check on {self.report['sections'].get('env', {}).get('gpu', self.device)}"
        (self.out / "gpu_check.md").write_text("\n".join([head, "", "| section | status | s | result |",
                                                          "|---|---|---|---|", *rows]) + "\n")

    def config(self, size: str):
        from videoitg.config import VideoITGConfig, preset

        return preset("tiny") if size == "tiny" else VideoITGConfig()

    # ---- sections --------------------------------------------------------------------------------------------
    def env(self) -> dict[str, Any]:
        import numpy
        import torch
        import transformers
        from torch.profiler import ProfilerActivity, profile

        from videoitg.launch.binaries import ServingSetupError
        from videoitg.model.qwen2 import DecoderLayer, rope_cos_sin
        from videoitg.model.vision import SiglipEncoderLayer

        d: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                             "numpy": numpy.__version__, "transformers": transformers.__version__}
        if self.cuda:
            p = torch.cuda.get_device_properties(self.device)
            d.update(gpu=p.name, sm_count=p.multi_processor_count, memory_gb=round(p.total_memory / 1e9, 1),
                     nvidia_smi=nvidia_smi())
        # The model's own attention modules at the request's real shapes: SigLIP over a 64-frame chunk, Qwen2 over
        # the 12,950 tokens of a 512-frame request (tiny shapes with --tiny).
        cfg, dtype = self.config("tiny" if self.tiny else "real"), torch.float16
        seq = 512 * cfg.tokens_per_side(512) ** 2 + 150
        with torch.device(self.device):
            vis, llm = SiglipEncoderLayer(cfg.vision).to(dtype), DecoderLayer(cfg.text).to(dtype)
            x = torch.randn(64, cfg.vision.tokens_per_frame, cfg.vision.hidden_size, dtype=dtype)
            h = torch.randn(1, seq, cfg.text.hidden_size, dtype=dtype)
            cos, sin = rope_cos_sin(torch.arange(seq), cfg.text.head_dim, cfg.text.rope_theta, dtype)
        kernels = {}
        for name, call in (("vision", lambda: vis.self_attn(x)), ("llm", lambda: llm.self_attn(h, cos, sin, None,
                                                                                               False))):
            with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
                call()
            kernels[name] = sorted({e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")})
        d["sdpa_kernels_fp16"] = kernels
        try:
            d["triton"] = self.triton_in_use()
        except (ImportError, ServingSetupError) as e:  # a node without the wheelhouse: the hotpath needs neither
            d["triton"] = {"server": "none", "server_kind": "-", "client": f"none ({type(e).__name__}: {e})"[:200]}
        d["from_the_environment"] = self.kept
        d["ok"] = all(kernels.values())
        d["summary"] = (f"{d.get('gpu', 'cpu')}, driver {d.get('nvidia_smi', {}).get('driver_version', '-')}, "
                        f"torch {d['torch']}, CUDA {d['cuda']}, cuDNN {d['cudnn']}, numpy {d['numpy']}, SDPA "
                        + ", ".join(f"{k}: {'/'.join(v).replace('aten::_scaled_dot_product_', '')}"
                                    for k, v in kernels.items())
                        + f"; tritonserver {d['triton']['server']} ({d['triton']['server_kind']}), tritonclient "
                          f"{d['triton']['client']}")
        return d

    def triton_in_use(self) -> dict[str, str]:
        """The tritonserver `videoitg serve` runs here (which install, its version where it says: the image sets
        TRITON_SERVER_VERSION; nvidia-pytriton's is read from the served log) and the tritonclient imported."""
        import tritonclient

        from videoitg.launch.binaries import find_tritonserver

        found = find_tritonserver()
        version = os.environ.get("TRITON_SERVER_VERSION", "") if found.kind != "pytriton" else ""
        client = tritonclient.__file__ or ""
        import importlib.metadata as md

        return {"server": version or "(read from the served log)", "server_kind": found.kind,
                "server_binary": str(found.binary), "client": md.version("tritonclient"),
                "client_path": str(Path(client).parent)}

    def parity(self) -> dict[str, Any]:
        import torch

        from benchmarks.perf.build import build_ours
        from videoitg.engine_build.parity import compare
        from videoitg.model.fp8 import to_fp8
        from videoitg.preprocess import pixel_values

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
        rows: dict[str, Any] = {}
        for size in ("tiny",) if self.tiny else ("tiny", "real"):
            cfg, T, L = self.config(size), (32 if size == "tiny" else 16), (12 if size == "tiny" else 32)
            cfg.vision_token_num = min(cfg.vision_token_num, 1024)
            g = torch.Generator().manual_seed(0)
            s = cfg.vision.image_size
            frames = torch.randint(0, 256, (T, 3, s, s), dtype=torch.uint8, generator=g)
            ids = torch.randint(0, cfg.text.vocab_size, (L,), generator=g)
            row: dict[str, Any] = {}
            with torch.inference_mode():
                for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16),
                                    ("fp8", torch.bfloat16)):
                    model = build_ours(cfg, self.device, dtype)  # one seed: the same weights, rounded to dtype
                    if name == "fp8":
                        # the language model's middle decoder layers in float8 (emulated on a CPU); the tiny preset
                        # has two decoder layers, both of them here
                        to_fp8(model, list(model.model.layers) if size == "tiny" else None)
                    row[name] = model(pixel_values(frames.to(self.device), dtype), ids.to(self.device)).float().cpu()
                    if name == "fp32":
                        ref = model.to("cpu")(pixel_values(frames), ids).float()  # the CPU fp32 reference
                    del model
                    torch.cuda.empty_cache() if self.cuda else None
            rows[size] = {k: {**vars(compare(ref.numpy(), v.numpy())), "finite": bool(torch.isfinite(v).all())}
                          for k, v in row.items()}
        ok = all(r["fp32"]["max_abs_diff"] <= 1e-3 and all(x["finite"] for x in r.values()) for r in rows.values())
        summary = "; ".join(f"{size} " + ", ".join(f"{k} max|d| {v['max_abs_diff']:.1e} top32 {v['topk_overlap']:.2f}"
                                                   for k, v in r.items()) for size, r in rows.items())
        note = (" (random weights: only fp32 is judged, <= 1e-3; fp8: the language model's middle decoder layers in "
                "float8, rest bf16)")
        return {**rows, "ok": ok, "summary": summary + note}

    def clips(self) -> list[Path]:
        """Synthetic clips (H.264 on a GPU; VP9 on a CPU, which DALI's CPU decoder reads): training data too."""
        if self._clips is None:
            data = self.work / "data"
            if not (data / "annotations.json").exists():
                subprocess.run([sys.executable, "-m", "videoitg", "synth", str(data), "--videos", "4", "--seed",
                                "7", "--per-video", "4", "--codec", "h264" if self.cuda else "vp9"], check=True,
                               capture_output=True, text=True, timeout=600)
            self._clips = sorted(p for p in data.rglob("*") if p.suffix in (".mp4", ".webm"))
        return self._clips

    def nvdec(self) -> dict[str, Any]:
        from videoitg.decode import decode_video
        from videoitg.sampling import SamplingParams
        from videoitg.synthetic.sample import sample_video

        backend = "dali-gpu" if self.cuda else "dali-cpu"  # what runs for decoder "dali" on this device
        clips = ([sample_video()[0]] if self.cuda else []) + self.clips()[:2]
        params, rows = SamplingParams(num_frames=512, target_fps=4.0), {}
        for clip in clips:
            ref = decode_video(clip, params=params, decoder="pyav", time_budget_s=None)
            got = decode_video(clip, params=params, decoder="dali", device=str(self.device), time_budget_s=None)
            got_cpu = got.pixel_values.float().cpu()
            d = (got_cpu - ref.pixel_values).abs() * 127.5  # 0..255 units
            chunked = self.decode_in_runs(clip, params, got.info.width * got.info.height)
            c = (chunked.float().cpu() - got_cpu).abs() * 127.5
            rows[clip.name] = {"frames": len(ref.frame_indices), "decoder": got.decoder,
                               "same_frame_numbers": got.frame_indices == ref.frame_indices,
                               "max_abs_255": round(float(d.max()), 2), "mean_abs_255": round(float(d.mean()), 3),
                               "runs_of_frames": CHUNK_FRAMES, "runs_vs_one_max_abs_255": round(float(c.max()), 3)}
        summary = "; ".join(f"{k}: {r['frames']} frames, same numbers {r['same_frame_numbers']}, |d| max "
                            f"{r['max_abs_255']} mean {r['mean_abs_255']} /255, in runs of {CHUNK_FRAMES} vs one "
                            f"run max {r['runs_vs_one_max_abs_255']}" for k, r in rows.items())
        # decoded in several runs, each run's frames equal the one-run decode's (the copy out of DALI finished
        # before DALI ran again): within one 8-bit level
        ok = bool(rows) and all(r["same_frame_numbers"] and r["decoder"] == backend and
                                r["runs_vs_one_max_abs_255"] <= 1.0 for r in rows.values())
        return {"backend": backend, "clips": rows, "ok": ok, "summary": summary}

    def decode_in_runs(self, clip: Path, params: Any, pixels: int) -> Any:
        """The clip's sampled frames decoded as `nvdec` decodes them, with DALI fed pieces of at most CHUNK_FRAMES
        frames a run (the pool plans each request's pieces by RUN_BYTES when it arrives)."""
        from videoitg.decode import dali, decode_video

        saved = dali.RUN_BYTES
        dali.RUN_BYTES = CHUNK_FRAMES * pixels * dali.WORK_BYTES_PER_PIXEL
        try:
            return decode_video(clip, params=params, decoder="dali", device=str(self.device),
                                time_budget_s=None).pixel_values
        finally:
            dali.RUN_BYTES = saved

    def _serve(self, extra: list[str], name: str) -> tuple[subprocess.Popen, str]:
        """`videoitg serve` with `extra` flags, its repository and log under work/`name`; returns
        once it says ready (the process, its gRPC address), or raises with its output."""
        from videoitg.launch.ports import free_ports

        ports = free_ports(3)
        cmd = [self.server_python, "-m", "videoitg", "serve", *extra,
               "--repo", str(self.work / name), "--log", str(self.work / f"{name}.log"),
               "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
        deadline = time.monotonic() + 300
        while not any(x.startswith("ready:") for x in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=120)
                time.sleep(0.5)  # the reader thread takes the last lines
                raise RuntimeError("videoitg serve did not get ready:\n" + "".join(lines)[-2000:])
            time.sleep(0.5)
        return proc, f"127.0.0.1:{ports[1]}"

    def served(self) -> dict[str, Any]:
        """Each decoder the target serves (gpu: NVDEC, its default, then pyav; cpu: pyav) against in-process
        scoring that decodes the same way (NVDEC: `decode_video`'s automatic choice on the GPU, as the dali step),
        and the served frame numbers against PyAV's."""
        from videoitg.defaults import default_checkpoint
        from videoitg.pipeline.scorer import Scorer
        from videoitg.synthetic.sample import sample_video

        target, dtype = ("gpu", "float16") if self.cuda else ("cpu", "float32")
        video = sample_video()[0]
        pyav = Scorer(default_checkpoint(), device=str(self.device), dtype=dtype, decoder="pyav")
        pyav_frames = pyav.score(video, INSTRUCTIONS[0]).frame_indices
        decoders = {"dali": "auto", "pyav": "pyav"} if self.cuda else {"pyav": "pyav"}
        rows = {}
        for decoder, in_process in decoders.items():
            rows[decoder] = self._served_with(decoder, target, dtype, video)
            scorer = pyav if in_process == "pyav" else Scorer(default_checkpoint(), device=str(self.device),
                                                               dtype=dtype, decoder=in_process)
            expected = [scorer.score(video, q) for q in INSTRUCTIONS]
            got = rows[decoder].pop("results")
            rows[decoder]["max_abs_logit_diff"] = max(
                max(abs(a - b) for a, b in zip(e.logits, g.logits, strict=True))
                for e, g in zip(expected, got, strict=True))
            rows[decoder]["same_frame_numbers_as_pyav"] = all(g.frame_indices == pyav_frames for g in got)
            rows[decoder]["ok"] = (rows[decoder]["ok"] and rows[decoder]["max_abs_logit_diff"] <= 1e-3
                                   and rows[decoder]["same_frame_numbers_as_pyav"])
        worst = max(r["max_abs_logit_diff"] for r in rows.values())
        return {"target": target, "dtype": dtype, "decoders": rows, "max_abs_logit_diff": worst,
                "cache_hit": rows["pyav"]["cache_hit"], "ok": all(r["ok"] for r in rows.values()),
                "summary": f"{target} repository, {dtype}, tritonserver "
                           f"{rows[next(iter(rows))]['tritonserver_version']}, CUDA memory pools "
                           f"{rows[next(iter(rows))]['cuda_memory_pools'] or 'none (cpu)'}: " + "; ".join(
                    f"{d}: served vs in-process max|d logit| {r['max_abs_logit_diff']:.1e}, frame numbers as PyAV's "
                    f"{r['same_frame_numbers_as_pyav']}, cache hit {r['cache_hit']}, decode/vision not run on the "
                    f"hit: {r['hit_skips_decode_and_vision']}" for d, r in rows.items())}

    def _served_with(self, decoder: str, target: str, dtype: str, video: Path) -> dict[str, Any]:
        """Two instructions on one video through `videoitg serve --decoder decoder`: the results, whether the second
        was a cache hit, and whether it ran no decode or vision."""
        import tritonclient.grpc as grpcclient

        from videoitg.client.kserve import VideoITGClient
        from videoitg.engines.runtimes import visible_gpus
        from videoitg.request.options import RequestOptions

        proc, url = self._serve(["--target", target, "--dtype", dtype, "--decoder", decoder], f"repository-{decoder}")
        steps = ("videoitg_decode", "videoitg_vision", "videoitg_grounding")
        try:
            stats = grpcclient.InferenceServerClient(url)

            def runs() -> dict[str, int]:
                got = {m: stats.get_inference_statistics(model_name=m, as_json=True)["model_stats"] for m in steps}
                return {m: sum(int(s.get("execution_count", 0)) for s in v) for m, v in got.items()}

            with VideoITGClient(url, protocol="grpc") as client:
                first = client.infer(video, INSTRUCTIONS[0], RequestOptions(top_k=8))
                before = runs()
                second = client.infer(video, INSTRUCTIONS[1], RequestOptions(top_k=8))
                after = runs()
            command = tritonserver_command(self.work / f"repository-{decoder}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        hits = [first.cache_hit, second.cache_hit]
        skipped = all(after[m] == before[m] for m in steps[:2]) and after[steps[2]] > before[steps[2]]
        # one CUDA memory pool per GPU the server sees (a flag sizes one GPU's; the others would keep 64 MB)
        pools = sorted(a.split("=", 1)[1] for a in command if a.startswith("--cuda-memory-pool-byte-size="))
        gpus = visible_gpus() if target == "gpu" else 0
        log = (self.work / f"repository-{decoder}.log")
        version = re.search(r"server_version\s*\|\s*(\S+)", log.read_text(errors="replace")) if log.exists() else None
        return {"results": [first.result, second.result], "cache_hit": hits, "hit_skips_decode_and_vision": skipped,
                "executions_before_second": before, "executions_after_second": after,
                "tritonserver_version": version.group(1) if version else "not in the log",
                "cuda_memory_pools": pools, "visible_gpus": gpus,
                "ok": hits == [False, True] and skipped and [p.split(":")[0] for p in pools] == [
                    str(i) for i in range(gpus)]}

    def long(self) -> dict[str, Any]:
        """The grounding half at the real sequence length (512 frames + verify's 30-token instruction): TensorRT-LLM
        with fused and with unfused RoPE, and torch fp16, each against torch fp32 on the same inputs. No in-tree
        TensorRT-LLM model runs full attention with fused RoPE and no KV cache at 12.8k tokens; each variant is
        judged against torch fp16's own difference from fp32 (random weights: the top-32 target of a trained
        checkpoint does not apply)."""
        import torch

        from videoitg.engine_build.verify import DEFAULT_INSTRUCTION_TOKENS, verify

        ckpt, frames = self.long_checkpoint(), (8 if self.tiny else LONG_FRAMES)
        backends = ["torch-fp16", "trtllm", "trtllm-unfused-rope"]
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
        results = {r.backend: r for r in verify(ckpt, None, [frames], backends=backends)}
        rows: dict[str, Any] = {}
        for name, r in results.items():
            if r.parity is None:
                rows[name] = {"status": r.status, "reason": r.reason[:300]}
                continue
            rows[name] = {"status": r.status, "max_abs_logit_diff": r.parity.max_abs_diff,
                          "top32": r.parity.topk_overlap, "spearman": r.parity.spearman,
                          "seconds": r.seconds_per_case}
        reference = rows.get("torch-fp16", {}).get("max_abs_logit_diff")
        judged = {}
        for name in ("trtllm", "trtllm-unfused-rope"):
            d = rows[name].get("max_abs_logit_diff")
            if d is not None and reference is not None:
                judged[name] = d <= 3 * reference + 1e-3  # TensorRT-LLM fp16 within 3x torch fp16's rounding
                rows[name]["within_3x_torch_fp16"] = judged[name]
        ran = [n for n in ("trtllm", "trtllm-unfused-rope") if "max_abs_logit_diff" in rows[n]]
        length = frames * self.tokens_per_frame(ckpt, frames) + DEFAULT_INSTRUCTION_TOKENS
        summary = (f"{frames} frames + {DEFAULT_INSTRUCTION_TOKENS}-token instruction = {length} tokens: " + "; ".join(
            f"{n} max|d| {r['max_abs_logit_diff']:.2e} top32 {r['top32']:.2f}" if "max_abs_logit_diff" in r else
            f"{n} {r['status']}: {r['reason'][:80]}" for n, r in rows.items()))
        out = {"checkpoint": str(ckpt), "sequence_length": length, "backends": rows, "summary": summary,
               "ok": reference is not None and all(judged.get(n, False) for n in ran)}
        if not ran:
            out["skipped"] = "TensorRT-LLM is not on this node: " + rows["trtllm"].get("reason", "")[:200]
        return out

    def tokens_per_frame(self, ckpt: Path, frames: int) -> int:
        from videoitg.model.files import load_config

        return load_config(ckpt)[0].tokens_per_side(frames) ** 2

    def long_checkpoint(self) -> Path:
        return self.random_checkpoint("long-checkpoint", LONG_LAYERS)

    def random_checkpoint(self, name: str, layers: int | None) -> Path:
        """A checkpoint of the released shapes (SigLIP-so400m, Qwen2-7B: 28 heads, 4 KV heads, RoPE theta 1e6) with
        `layers` decoder layers (None: all 28) and random weights drawn on the device, fp16, with the embedded
        checkpoint's tokenizer, written once under the work directory; the embedded tiny checkpoint with --tiny."""
        from videoitg.config import VideoITGConfig
        from videoitg.defaults import default_checkpoint
        from videoitg.model.checkpoint import load_tokenizer, save_checkpoint

        if self.tiny:
            return default_checkpoint()
        out = self.work / name
        if not (out / "config.json").exists():
            import torch

            from benchmarks.perf.build import build_ours

            cfg = VideoITGConfig()
            cfg.text.num_hidden_layers = layers or cfg.text.num_hidden_layers
            model = build_ours(cfg, self.device, torch.float16)
            save_checkpoint(model, out, tokenizer=load_tokenizer(default_checkpoint()), max_shard_bytes=4 << 30)
            del model
            torch.cuda.empty_cache() if self.cuda else None
        return out

    def engines(self) -> dict[str, Any]:
        from videoitg.client.kserve import VideoITGClient
        from videoitg.defaults import default_checkpoint
        from videoitg.engines.compat import mismatches
        from videoitg.engines.summary import read_summary
        from videoitg.libraries import library_version
        from videoitg.pipeline.scorer import Scorer
        from videoitg.request.options import RequestOptions
        from videoitg.synthetic.sample import sample_video

        eng = self.work / "engines"
        shutil.rmtree(eng, ignore_errors=True)
        target, dtype = ("gpu", "float16") if self.cuda else ("cpu", "float32")
        frames = "8,40" if self.tiny else "8,64,512"
        build = subprocess.run([self.server_python, "-m", "videoitg", "build", "--out", str(eng)],
                               capture_output=True, text=True, timeout=3600)
        if build.returncode != 0:
            return {"ok": False, "summary": "videoitg build failed", "error": (build.stdout + build.stderr)[-3000:]}
        summary = read_summary(eng) or {}
        have = {lib: library_version(lib) for lib in ("tensorrt", "tensorrt_llm", "onnxruntime")}
        built = sorted({b["kind"] for b in summary["built"]})
        not_built = {s["what"]: s["reason"][:300] for s in summary["skipped"]}
        verify = subprocess.run([self.server_python, "-m", "videoitg", "verify", "--engines", str(eng), "--frames",
                                 frames, "--json", str(self.work / "verify.json")],
                                capture_output=True, text=True, timeout=3600)
        verified = {r["backend"]: r["status"] if r["status"] != "skipped" else f"skipped: {r.get('reason', '')[:200]}"
                    for r in json.loads((self.work / "verify.json").read_text())} if verify.returncode in (0, 1) else {}
        video = sample_video()[0]
        # PyAV, as the in-process reference decodes: this section checks the runtimes, `served` the decoders
        proc, url = self._serve(["--target", target, "--dtype", dtype, "--decoder", "pyav", "--engines", str(eng)],
                                "engines-repository")
        try:
            with VideoITGClient(url, protocol="grpc") as client:
                served = client.infer(video, INSTRUCTIONS[0], RequestOptions(top_k=8))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        reference = Scorer(default_checkpoint(), device=str(self.device), dtype=dtype, decoder="pyav")
        diff = max(abs(a - b) for a, b in zip(reference.score(video, INSTRUCTIONS[0]).logits, served.result.logits,
                                               strict=True))
        tolerance = 1e-3 if dtype == "float32" else 5e-2  # fp16 engines against fp16 torch: rounding of both
        # a library the node has must have been built with; one it lacks is said, not failed
        expected = {"tensorrt": "tensorrt", "tensorrt_llm": "trtllm"}
        missing = [kind for lib, kind in expected.items() if have[lib] and self.cuda and kind not in built]
        absent = [f"{lib} not on this node" for lib in expected if not have[lib]]
        ok = verify.returncode == 0 and diff <= tolerance and not missing
        return {"built": built, "not_built": not_built, "runtimes": summary["runtimes"], "versions": have,
                "verify": verified, "served_max_abs_logit_diff": diff, "tolerance": tolerance,
                "compat_mismatches": mismatches(), "not_built_though_present": missing, "ok": ok,
                "summary": f"built {', '.join(built)}; {'; '.join(absent) or 'TensorRT and TensorRT-LLM present'}; "
                           f"verify {'pass' if verify.returncode == 0 else 'FAIL'}; served with "
                           f"{summary['runtimes']}: max|d logit| {diff:.1e} (<= {tolerance})"}

    def latency(self) -> dict[str, Any]:
        import torch

        from benchmarks.perf.build import build_baseline, build_ours
        from benchmarks.perf.flops import flop_split, sequence_length
        from benchmarks.perf.timing import matmul_rate, median, time_calls
        from videoitg.engine_build.parity import topk_overlap
        from videoitg.model.hotpath import prepare_inference
        from videoitg.preprocess import pixel_values

        cfg, dev, dtype = self.config("tiny" if self.tiny else "real"), self.device, torch.float16
        frames, instr, rounds = ([4, 8], 10, 1) if self.tiny else ([64, 256, 512], 150, 3)
        ours = prepare_inference(build_ours(cfg, dev, dtype))  # what ships: on a GPU, the layers compiled
        base = build_baseline(cfg, dev, dtype, ours.state_dict())
        n = 256 if self.tiny else 8192
        gemm = matmul_rate(dev, dtype, n, iters=3 if self.tiny else 100, warmup=1 if self.tiny else 20)
        v, t = cfg.vision, cfg.text

        def attn_rate(b: int, heads: int, length: int, hd: int) -> float:  # the models' SDPA call, no mask
            q = torch.randn(b, heads, length, hd, device=dev, dtype=dtype)
            sdpa = torch.nn.functional.scaled_dot_product_attention
            secs = median(time_calls(lambda: sdpa(q, q, q), dev, warmup=1, iters=3 if self.tiny else 10))
            return 4 * b * heads * length * length * hd / secs

        vis_rate = attn_rate(min(64, max(frames)), v.num_attention_heads, v.tokens_per_frame,
                             v.hidden_size // v.num_attention_heads)
        rows: dict[int, Any] = {}
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, t.vocab_size, (instr,), generator=g).to(dev)
        with torch.inference_mode():
            for T in frames:
                px = pixel_values(torch.randint(0, 256, (T, 3, v.image_size, v.image_size), dtype=torch.uint8,
                                                generator=g).to(dev), dtype)
                split, cached_split = flop_split(cfg, T, instr), flop_split(cfg, T, instr, cached_video=True)
                llm_rate = attn_rate(1, t.num_attention_heads, sequence_length(cfg, T, instr), t.head_dim)

                def floor(f: dict[str, int], llm_rate: float = llm_rate) -> float:
                    return f["gemm"] / gemm + f["vision_attention"] / vis_rate + f["llm_attention"] / llm_rate

                vis, bvis = ours.visual_features(px), base.project(base.encode_frames(px))
                calls: dict[str, Callable[[], Any]] = {
                    "ours_cold": lambda px=px: ours.score_features([ours.visual_features(px)], [ids])[0],
                    "released_cold": lambda px=px: base(px, ids),
                    "ours_cached": lambda vis=vis: ours.score_features([vis], [ids])[0],
                    "released_cached": lambda bvis=bvis: base.score_visual(bvis, ids)}
                secs: dict[str, list[float]] = {k: [] for k in calls}
                for r in range(rounds):  # interleaved, the order rotated each round
                    for k in list(calls)[r % 4:] + list(calls)[:r % 4]:
                        secs[k] += time_calls(calls[k], dev, warmup=1 if r == 0 else 0, iters=1)
                row: dict[str, Any] = {k: median(x) for k, x in secs.items()}
                row.update(floor_cold_s=floor(split), floor_cached_s=floor(cached_split),
                           top32_ours_vs_released=topk_overlap(calls["released_cold"]().float().cpu().numpy(),
                                                               calls["ours_cold"]().float().cpu().numpy()))
                if self.cuda:  # each path's peak: its own weights + what its call allocates over what is resident
                    for k, model in (("ours_cold", ours), ("released_cold", base)):
                        torch.cuda.synchronize(dev)
                        resident = torch.cuda.memory_allocated(dev)  # both models and this T's inputs
                        torch.cuda.reset_peak_memory_stats(dev)
                        calls[k]()
                        own = sum(t.numel() * t.element_size() for t in model.state_dict().values())
                        row[f"{k}_peak_gb"] = (torch.cuda.max_memory_allocated(dev) - resident + own) / 1e9
                if T == max(frames):  # where a cold request's time goes: what to make faster first
                    row["ours_cold_top_ops"] = self.top_ops(calls["ours_cold"])
                rows[T] = row
                log(f"latency T={T}: {row}")
        summary = "; ".join(f"T={T}: ours {r['ours_cold']:.3g}/{r['ours_cached']:.3g} s (floor {r['floor_cold_s']:.3g}"
                            f"/{r['floor_cached_s']:.3g}), released {r['released_cold']:.3g}/{r['released_cached']:.3g}"
                            " s" + (f", peak {r['ours_cold_peak_gb']:.1f}/{r['released_cold_peak_gb']:.1f} GB"
                                    if self.cuda else "") for T, r in rows.items())
        return {"gemm_tflops": gemm / 1e12, "vision_attention_tflops": vis_rate / 1e12, "rows": rows,
                "ok": all(r["top32_ours_vs_released"] >= 0.97 for r in rows.values()),
                "summary": f"cold/cached; GEMM {gemm / 1e12:.3g} TFLOP/s; " + summary}

    def top_ops(self, call: Callable[[], Any], n: int = 12) -> list[dict[str, Any]] | str:
        """The `n` kernels (on a GPU; operators on a CPU) that take the most time in one `call`, by their own time,
        from torch's profiler; a failure to profile is returned as its text (the timings stand without it)."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        try:
            with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if self.cuda else [])]) as prof:
                call()
                if self.cuda:
                    torch.cuda.synchronize(self.device)
            key = "self_device_time_total" if self.cuda else "self_cpu_time_total"
            # on a GPU the kernels alone: an operator's own device time is its kernels' again
            events = [e for e in prof.key_averages()
                      if not self.cuda or e.device_type == torch.autograd.DeviceType.CUDA]
            top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
            return [{"name": e.key[:100], "ms": round(getattr(e, key) / 1e3, 3), "calls": e.count} for e in top]
        except Exception as e:  # the profiler's API differs between torch versions
            return f"{type(e).__name__}: {e}"[:500]

    def hotpath(self) -> dict[str, Any]:
        from benchmarks.gpu.gpu_hotpath import hotpath

        return hotpath(self)

    def served_e2e(self) -> dict[str, Any]:
        from benchmarks.gpu.gpu_decode import served_e2e

        return served_e2e(self)

    def fp8_breakdown(self) -> dict[str, Any]:
        from benchmarks.gpu.gpu_hotpath import fp8_breakdown

        return fp8_breakdown(self)

    def burst_stacks(self) -> dict[str, Any]:
        from benchmarks.gpu.gpu_decode import burst_stacks

        return burst_stacks(self)

    def decode_long(self) -> dict[str, Any]:
        from benchmarks.gpu.gpu_decode import decode_long

        return decode_long(self)

    def training(self) -> dict[str, Any]:
        ann = self.work / "data" / "annotations.json"
        self.clips()
        amp, tol = ("bf16", 0.05) if self.cuda else ("fp32", 1e-5)
        runs = {"cpu_fp32": ("cpu", "fp32", False), "device": (str(self.device), amp, True)}
        res: dict[str, Any] = {}
        for name, (device, precision, torchrun) in runs.items():
            out = self.work / f"train_{name}"
            shutil.rmtree(out, ignore_errors=True)
            launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] if torchrun else []
            cmd = [sys.executable, *launcher, "-m", "videoitg", "train", str(ann), "--out", str(out), "--init", "tiny",
                   "--max-steps", "4", "--batch", "4", "--micro-batch", "4", "--lr", "1e-3", "--head-lr", "2e-3",
                   "--device", device, "--amp", precision, "--seed", "0", "--no-resume", "--quiet"]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                raise RuntimeError(f"{name} training failed:\n{(p.stderr or p.stdout)[-2000:]}")
            res[name] = {"loss": [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
                                  if x.strip()],
                         "process_group": json.loads((out / "train_config.json").read_text()).get("process_group")}
        a, b = res["cpu_fp32"]["loss"], res["device"]["loss"]
        rel = max(abs(x - y) / max(abs(x), 1e-8) for x, y in zip(a, b, strict=True))
        pg = res["device"]["process_group"] or {}
        ok = len(a) == len(b) == 4 and rel <= tol and pg.get("backend") == ("nccl" if self.cuda else "gloo") and \
            pg.get("world_size") == 1
        return {**res, "max_rel_loss_diff": rel, "tolerance": tol, "ok": ok,
                "summary": f"losses CPU fp32 {[round(x, 4) for x in a]} vs {self.device} {amp} "
                           f"{[round(x, 4) for x in b]}: max rel {rel:.2g} (<= {tol}), {pg.get('backend')}"}


def instance_counts(text: str) -> list[int]:
    """--decode-instances: a comma list of distinct positive counts ("1,2,4")."""
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of distinct positive counts, such as 1,2,4")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--wheelhouse", type=Path, help="wheels of benchmarks/gpu/gpu_requirements.txt (a bare node)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/videoitg-gpu-check"))
    p.add_argument("--device", default=None, help="default: cuda when available")
    p.add_argument("--tiny", action="store_true", help="tiny shapes only (the CPU rehearsal in the test suite)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma list from {','.join(SECTIONS)}, run in that order")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds the check may take from its start: a section (a decoder, a burst) is started only "
                        "where its expected time is left; what ran is written")
    p.add_argument("--decode-instances", default=[1], type=instance_counts,
                   help="burst_stacks: the served decode step's instance counts, a comma list (one burst each)")
    args = p.parse_args(argv)
    budget = Budget(args.budget_s)  # counted from here: the wheelhouse's install is part of the check's time
    args.out, args.workdir = args.out.resolve(), args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    server_python = sys.executable
    kept: dict[str, str] = {}
    paths: list[str] = []
    if args.wheelhouse:
        paths, server_python, kept = install(args.wheelhouse, args.workdir)
    elif not installed():  # no wheelhouse: the sections that need only a PyTorch image's packages (hotpath)
        paths = [lay_out(args.workdir), str(ROOT)]
    if paths:
        sys.path[:0] = paths
        os.environ["PYTHONPATH"] = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])
        # Nothing runs in the checkout from here on (`python -m benchmarks.gpu.gpu_check` starts there): a process
        # started in it (`python -m videoitg`, a served model's python stub) imports its `videoitg/` folder first,
        # which lacks the folders the laid-out package maps into `videoitg` (python_backend, train, engine_build).
        os.chdir(args.workdir)
    elif str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("VIDEOITG_HOME", str(args.workdir / "home"))
    check = Check(args, server_python, kept, budget)
    for name in (s.strip() for s in args.only.split(",") if s.strip()):
        check.run(name)
    print((check.out / "gpu_check.md").read_text())
    return 0 if all(s["status"] in ("pass", "skip") for s in check.report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
