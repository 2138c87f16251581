"""The GPU check's bare-image rehearsal: `benchmarks/gpu/gpu_check.py --device cpu --tiny --wheelhouse DIR` end to end
in a fresh virtual environment that has only what a GPU node's PyTorch image has, plus the wheelhouse.

The environment: `python -m venv --without-pip`, whose one extra site folder (a .pth line) holds symlinks to exactly
torch, transformers, safetensors, onnx and onnxruntime and their declared dependencies from this machine's install
(CPU builds), pip (every image has it), and numpy 2 installed from its wheel. Nothing of this project's own
environment leaks in (no numpy 1.x, no PyAV, tritonclient, blake3, DALI, pytriton, and the project is not
installed): the check installs the wheels `benchmarks/gpu/gpu_requirements.txt` lists from the wheelhouse (into a work
folder kept between runs, as a GPU node keeps its own: installed again when the list changes) and imports the
checkout in place, as it does on a GPU node. What this proves: the requirements file names every wheel the check
imports beyond the image, the check runs under numpy 2 with tritonserver's stub on numpy 1.x, and every section runs
(served by the real tritonserver). What it cannot: anything CUDA-specific (no GPU here), and the node's Python 3.12
wheels (this interpreter's are fetched from the same list).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from benchmarks.gpu import gpu_check
from tests.support import ROOT

IMAGE = ("torch", "transformers", "safetensors", "onnx", "onnxruntime", "pip")
TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
CACHE = Path(os.environ.get("VIDEOITG_HOME", Path.home() / ".cache" / "videoitg")) / f"gpu-check-wheels-{TAG}"
pytestmark = pytest.mark.slow
INSTALLABLE = frozenset(sys_tags())
BARE_SECTIONS = ("env", "parity", "nvdec", "served", "long", "engines", "latency", "training", "hotpath", "served_e2e",
                 "fp8_breakdown", "decode_long", "burst_stacks")


def closure(names: tuple[str, ...]) -> dict[str, md.Distribution]:
    """The distributions `names` need, following each one's declared requirements (markers evaluated here)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        req = Requirement(todo.pop())
        key = req.name.lower().replace("_", "-")
        if key in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            seen[key] = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue  # an optional or platform-only requirement this install does not have
        todo += seen[key].requires or []
    return seen


def download(requirements: list[str], dest: Path) -> None:
    """The wheels `requirements` name, into `dest` (a cache kept between runs). Nothing is asked of the index when
    `dest` already holds a wheel for each: pip would, and only to find it has them (tens of seconds)."""
    if all(cached(Requirement(r), dest) for r in requirements):
        return
    p = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d",
                        str(dest), *requirements], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        pytest.skip(f"the wheels could not be downloaded here: {(p.stderr or p.stdout).strip().splitlines()[-1]}")


def cached(req: Requirement, dest: Path) -> bool:
    """Whether `dest` holds a wheel of `req` that this interpreter can install."""
    return any(matches(req, wheel) for wheel in dest.glob("*.whl"))


def matches(req: Requirement, wheel: Path) -> bool:
    """Whether `wheel` is one of `req` that this interpreter can install."""
    name, version, _, tags = parse_wheel_filename(wheel.name)
    return name == canonicalize_name(req.name) and version in req.specifier and bool(tags & INSTALLABLE)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bare")
    image = root / "image"
    image.mkdir()
    dists = closure(IMAGE)
    assert "numpy" in dists and not {"av", "blake3", "tritonclient", "nvidia-dali-cuda130", "videoitg-serve"} & set(
        dists)
    for key, dist in dists.items():
        if key == "numpy":
            continue
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (image / top).exists():
                (image / top).symlink_to(src)
    for entry in image_numpy().iterdir():
        if not (image / entry.name).exists():
            (image / entry.name).symlink_to(entry)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "image.pth").write_text(f"{image}\n")
    return venv / "bin" / "python"


def image_numpy() -> Path:
    """numpy 2 installed from its wheel into a folder of its own, kept in CACHE between runs (installed once per
    wheel: 5 CPU seconds of pip)."""
    download(["numpy>=2,<3"], CACHE / "image")
    wheel = max(w for w in (CACHE / "image").glob("numpy-2*.whl") if parse_wheel_filename(w.name)[3] & INSTALLABLE)
    done = CACHE / "image" / wheel.stem
    if not done.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=CACHE / "image"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(tmp),
                        str(wheel)], check=True, timeout=300)
        with contextlib.suppress(OSError):  # another run installed it meanwhile: theirs stays
            tmp.rename(done)
        shutil.rmtree(tmp, ignore_errors=True)
    return done


@contextlib.contextmanager
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The check's --workdir: one kept in CACHE between runs, as a GPU node keeps its own, holding only the folders
    `gpu_check.install` fills (about 1.2 GB of unpacked wheels, 15 CPU seconds to install), which it fills again when
    the requirements list changes; everything else in it is made afresh. A run that finds it in use by another run
    of the suite uses a fresh one."""
    kept = CACHE / "work"
    kept.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "work.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield tmp_path / "work"
            return
        for entry in kept.iterdir():
            if entry.name in ("site", "stub", "serve-venv"):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        yield kept


def parts(requirements: list[str]) -> Path:
    """The wheelhouse's wheels of `requirements` packed as `benchmarks.gpu.wheel_parts` packs them for a GPU node (xz
    preset 0 here: the same format, quicker), kept in CACHE while the wheel set is the same."""
    from benchmarks.gpu import wheel_parts

    wheels = sorted(w for r in requirements for w in (CACHE / "wheelhouse").glob("*.whl")
                    if matches(Requirement(r), w))
    out = CACHE / "parts"
    stamp = "\n".join(w.name for w in wheels)
    if (out / ".wheels").is_file() and (out / ".wheels").read_text() == stamp:
        return out
    with tempfile.TemporaryDirectory() as chosen:
        for w in wheels:
            (Path(chosen) / w.name).symlink_to(w)
        wheel_parts.pack(Path(chosen), out, first=("av",), preset=0)
    (out / ".wheels").write_text(stamp)
    return out


def docs_commands() -> dict[str, list[str]]:
    """The GPU node's two command lines as docs/performance.md gives them: the wheels' unpack and the check."""
    lines = [x.strip() for x in (ROOT / "docs" / "performance.md").read_text().splitlines()]
    starts = {"wheel_parts": "python -m benchmarks.gpu.wheel_parts unpack ",
              "gpu_check": "python -m benchmarks.gpu.gpu_check --out OUT --wheelhouse WHEELHOUSE "}
    return {k: next(x.split() for x in lines if x.startswith(start)) for k, start in starts.items()}


# The docs' command lines, then every other section in a second invocation: three real tritonservers among them
# (`served`, `engines`, `served_e2e`): minutes on 2 shared cores.
@pytest.mark.timeout(1500)
def test_bare_image_rehearsal(bare_python: Path, tmp_path: Path) -> None:
    download(gpu_check.requirements(), CACHE / "wheelhouse")
    with workdir(tmp_path) as work:
        rehearse(bare_python, tmp_path, work)


def rehearse(bare_python: Path, tmp_path: Path, work: Path) -> None:
    env = {"PATH": f"{bare_python.parent}{os.pathsep}/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
           "LANG": "C.UTF-8", "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
    probe = subprocess.run([str(bare_python), "-c", "import numpy, importlib.util as u; print(numpy.__version__, "
                            "[m for m in ('av', 'blake3', 'tritonclient', 'videoitg') if u.find_spec(m)])"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert probe.returncode == 0 and probe.stdout.startswith("2.") and probe.stdout.strip().endswith("[]"), probe
    # as docs/performance.md runs it on a GPU node, from the repository root: the wheels restored from their parts
    # (by the bare interpreter: the standard library only), then the check with the docs' flags, at tiny shapes
    wheelhouse = tmp_path / "wheelhouse"
    docs = docs_commands()
    names = {"PARTS": str(parts(gpu_check.requirements())), "WHEELHOUSE": str(wheelhouse), "OUT": str(tmp_path / "out")}
    unpack = [names.get(x, x) for x in docs["wheel_parts"][1:]]
    p = subprocess.run([str(bare_python), *unpack], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0 and "all present" in p.stdout, p.stdout + p.stderr
    first = [names.get(x, x) for x in docs["gpu_check"][1:]]
    only = first[first.index("--only") + 1].split(",")
    assert set(only) >= {"decode_long", "served_e2e", "hotpath"} and "--budget-s" in first
    rest = ["-m", "benchmarks.gpu.gpu_check", "--out", str(tmp_path / "out-rest"), "--wheelhouse", str(wheelhouse),
            "--only", ",".join(s for s in BARE_SECTIONS if s not in only)]
    sections: dict = {}
    for command in (first, rest):
        p = subprocess.run([str(bare_python), *command, "--device", "cpu", "--tiny", "--workdir", str(work)],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=1400)
        out = Path(command[command.index("--out") + 1])
        report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else {}
        sections.update(report.get("sections", {}))
        assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    # `long` compares TensorRT-LLM with torch: without TensorRT-LLM it says so and skips
    assert {k: v["status"] for k, v in sections.items()} == {k: "skip" if k == "long" else "pass" for k in
                                                             BARE_SECTIONS}
    assert list(sections)[:len(only)] == only  # run in the order given: the decode and the served clip first
    assert sections["env"]["numpy"].startswith("2.")  # the check ran under the image's numpy 2
    # a bare image has no Triton: the check installed and used nvidia-pytriton's server and tritonclient 2.51
    assert sections["env"]["triton"]["server_kind"] == "pytriton" and sections["env"]["triton"]["client"] == "2.51.0"
    assert sections["served"]["decoders"]["pyav"]["tritonserver_version"] == "2.51.0"
    assert sections["served"]["decoders"]["pyav"]["cuda_memory_pools"] == []  # the cpu target: no GPU, no pool
    assert all(c["runs_vs_one_max_abs_255"] <= 1.0 for c in sections["nvdec"]["clips"].values())
    top = sections["latency"]["rows"]["8"]["ours_cold_top_ops"]  # the profiled cold call at the largest T
    assert isinstance(top, list) and top and all(op["ms"] >= 0 and op["calls"] >= 1 for op in top), top
    long = sections["long"]
    assert "max_abs_logit_diff" in long["backends"]["torch-fp16"] and "TensorRT-LLM" in long["skipped"]
    assert sections["served"]["cache_hit"] == [False, True] and sections["served"]["max_abs_logit_diff"] <= 1e-3
    assert all(c["same_frame_numbers"] and c["decoder"] == "dali-cpu" for c in sections["nvdec"]["clips"].values())
    assert sections["training"]["device"]["process_group"]["backend"] == "gloo"
    # the engine path: ONNX graphs built, TensorRT and TensorRT-LLM named as absent, verify passes, and the served
    # runtimes build.json names answer within 1e-3 of in-process torch
    engines = sections["engines"]
    assert engines["built"] == ["onnx"] and engines["runtimes"] == {"vision": "onnxruntime", "grounding": "onnxruntime"}
    assert set(engines["not_built"]) == {"tensorrt/vision.plan", "tensorrt/llm.plan", "trtllm (PyTorch backend)"}
    assert engines["verify"]["onnxruntime"] == "pass" and engines["verify"]["trtllm"].startswith("skipped")
    assert engines["served_max_abs_logit_diff"] <= 1e-4  # the shipped checkpoint's fp32 graphs: verify's fp32 target
    assert "tensorrt not on this node" in engines["summary"]
    assert "tensorrt: 10.14.1.48 expected, not installed" in engines["compat_mismatches"]
    assert "| served | pass |" in (tmp_path / "out-rest" / "gpu_check.md").read_text()
    # the hot-path sections, every line run at tiny shapes: each variant timed in every round, each tower profiled,
    # FP8 against fp32, and the served whole request against the released-style one (decord from the wheelhouse)
    hot = sections["hotpath"]
    assert set(hot["latency_s"]["all"]) == {f"{v}_cold" for v in gpu_check_variants()} | {
        "released_cold", "hot_cached", "current_cached", "released_cached"}
    assert all(len(x) == hot["rounds"] for x in hot["latency_s"]["all"].values())
    assert all(hot["profile"]["hot"][t]["kernels"] > 0 for t in ("vision", "grounding"))
    assert hot["profile"]["vision_bf16"]["vision"]["kernels"] > 0
    assert hot["compile"]["graphs"] >= 2 and "fp8" in sections["parity"]["tiny"]
    assert 0 <= hot["fp8_vs_fp32"]["max_abs_logit_diff"] < hot["fp8_vs_fp32"]["logit_range"]
    assert 0 <= hot["fp8_vs_fp32"]["error_over_spread"] < 1
    # the candidates against `hot` and the released path; FP8 cold and cached; each FP8 layer's time per scheme
    assert set(hot["candidates"]) == {"vision_bf16"}
    # each kept change timed against `hot` without it, its ranking against the released path's
    assert set(hot["top32_vs_released"]) == {"hot", "hot_unpadded", "hot_two_pass"}
    assert {"padded MLP (hot vs hot_unpadded)", "one-pass norms (hot vs hot_two_pass)"} <= set(hot["ab_vs_current"])
    # (at the tiny check's 4 frames every top-32 overlap is 1 by construction: the logits say whether it ran right)
    assert all(0 <= c["max_abs_logit_diff_vs_hot"] < hot["fp8_vs_fp32"]["logit_range"] and c["over_hot"] > 0
               for c in hot["candidates"].values())
    assert set(hot["fp8_latency_s"]["all"]) == {"fp8_cold", "released_cold", "fp8_cached", "released_cached"}
    assert all(isinstance(hot["fp8_gemms"][g][k], float) for g in ("qkv", "o", "gate_up", "down")
               for k in ("bf16_s", "rowwise_s", "rowwise_exact_accum_s", "block_s"))
    assert hot["decides"] and hot["figures"]["fp8_cached_s"] > 0
    assert hot["fp8_profile"]["kernels"] > 0
    # the decode sections: two clips served (DALI's CPU decoder on the decode pool, streamed), the device time of a
    # request's model work, bursts of 8 and 16 cold requests all answered; each decoder's run on each long clip
    e2e = sections["served_e2e"]
    assert len(e2e["served_clips"]) == 2 and e2e["served"] == e2e["served_clips"][e2e["clip"]]
    assert e2e["served"]["same_frame_numbers_as_decord"]
    assert e2e["released_s"]["decode"] > 0 and e2e["device_time_s"]["events_s"] > 0
    assert {n: (b["requests"], b["answered"], b["errors"]) for n, b in e2e["bursts"].items()} == {
        "8": (8, 8, 0), "16": (16, 16, 0)}
    # each burst request a cold video of its own: as many vision calls as n single cold requests make (n requests of
    # one video would share one)
    # `videoitg perf`'s report of the served clip, as `videoitg perf` writes it: each cold level split by step
    assert set(e2e["perf"]["levels"]) == {"1", "2"}
    assert all(lv["infer_per_s"] > 0 and set(lv["steps_ms"]) == {"decode", "vision", "grounding"}
               for lv in e2e["perf"]["levels"].values())
    perf_out = Path(e2e["perf"]["out"])
    assert {p.name for p in perf_out.iterdir()} == {"perf.json", "perf.csv", "perf.png"}  # its input kept elsewhere
    calls = e2e["served"]["vision_calls_per_request"]
    assert calls >= 1 and all(b["vision_executions"] == b["requests"] * calls for b in e2e["bursts"].values())
    assert all(b["latency_s"]["p99"] >= b["latency_s"]["p50"] > 0 for b in e2e["bursts"].values())
    breakdown = sections["fp8_breakdown"]
    assert all(0 <= breakdown[k]["max_abs_logit_diff"] < breakdown["logit_range"] for k in
               ("fp16", "bf16", "vision_bf16", "fp8", "fp8_exact_accum", "fp8_block", "fp8_every_layer", "fp8_towers"))
    assert all(0 <= breakdown[k]["error_over_spread"] < 1 for k in ("fp8", "fp8_block", "fp8_every_layer"))
    # the sweep: one error/spread per decoder layer (the tiny check's four), each scheme
    assert all(len(breakdown[f"sweep_{s}"]) == 4 and min(breakdown[f"sweep_{s}"]) > 0 for s in ("rowwise", "block"))
    dl = sections["decode_long"]
    assert dl["nvdec"] == "dali-cpu" and dl["nvdec_sessions"] == 2
    for clip in ("tiny_240p10", "tiny_30fps_2s_gops"):
        runs = dl[clip]["runs"]
        assert "NVDEC only" in runs.pop("pynvvideocodec")["skipped"] and runs.pop("pyav_all_cores")["wall_s"] > 0
        assert set(runs) == {"dali_pipelines", "dali_batch", "dali_and_pyav_overflow"}
        assert all(r["mean_abs_255"] <= 2.0 and r["decoded_frames"] == dl[clip]["minimum_decode"] for r in
                   runs.values()), runs  # every sampled frame decoded once: the fewest frames run through
    # where a burst's time goes: every request answered, each served process's CPU seconds, py-spy named as absent
    stacks = sections["burst_stacks"]
    assert list(stacks["decode_instances"]) == ["1"] and "not on PATH" in stacks["py_spy"]
    one = stacks["decode_instances"]["1"]
    assert one["burst"]["answered"] == 8 and any("videoitg_decode" in p for p in one["cpu_s_by_process"])


def gpu_check_variants() -> list[str]:
    from benchmarks.gpu.gpu_hotpath import VARIANTS

    return list(VARIANTS)


def test_the_check_uses_what_the_image_has_and_installs_the_rest() -> None:
    """`environment_has`, which decides what `install` leaves out: a requirement the environment has is its
    installed version (whatever the line pins), one it lacks is None, nvidia-pytriton is "system" where a
    tritonserver is installed, and the stub's packages (numpy, and the scipy and scikit-learn transformers imports)
    count only where the environment's numpy is below 2 (the python-backend stub's)."""
    have = md.version("tritonclient")
    other = f"{have}9"  # a version the line pins that is not the installed one
    assert gpu_check.environment_has(f"tritonclient=={other}", system_tritonserver=False) == have
    assert gpu_check.environment_has("nvidia-pytriton==0.7.0", system_tritonserver=True) == "system"
    assert gpu_check.environment_has("a-distribution-nobody-installs==1.0", system_tritonserver=True) is None
    numpy = md.version("numpy")
    assert gpu_check.environment_has("numpy==1.26.4", False) == (numpy if numpy.startswith("1.") else None)
    for line in ("scipy==1.15.3", "scikit-learn==1.7.2"):
        try:
            installed: str | None = md.version(line.split("==")[0])
        except md.PackageNotFoundError:
            installed = None
        assert gpu_check.environment_has(line, False) == (installed if numpy.startswith("1.") else None)
    listed = {r.split("==")[0] for r in gpu_check.requirements()}
    assert set(gpu_check.STUB) <= listed


def test_a_workdir_installed_for_another_requirements_list_is_installed_again(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`install` keeps a folder only when it holds what the requirements ask for now: a stub folder an older list
    filled with numpy alone is emptied and filled again (with scipy and scikit-learn too); one that matches is
    left as it is. pip itself is not run here: its command lines are recorded."""
    work = tmp_path / "work"
    (work / "serve-venv" / "lib" / "python3" / "site-packages").mkdir(parents=True)  # the serving venv exists
    (work / "stub").mkdir()
    (work / "stub" / ".installed").touch()  # what an older list left: a marker naming nothing
    (work / "stub" / "left-over").touch()
    pip: list[list[str]] = []
    monkeypatch.setattr(gpu_check, "environment_has", lambda requirement, system: None)  # a bare image
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda cmd, **kw: pip.append([str(c) for c in cmd]))
    gpu_check.install(tmp_path / "wheels", work)
    stub = [c for c in pip if c[c.index("--target") + 1] == str(work / "stub")]
    assert len(stub) == 1 and {c.split("==")[0] for c in stub[0] if "==" in c} == set(gpu_check.STUB), stub
    assert not (work / "stub" / "left-over").exists()
    pip.clear()
    gpu_check.install(tmp_path / "wheels", work)  # the same list again: nothing to install
    assert pip == [], pip
