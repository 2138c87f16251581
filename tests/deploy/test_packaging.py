"""What a user installs: the wheel `pip wheel .` builds, installed (not editable) into an environment that cannot see
this checkout. It holds one name, `videoitg` (engine_build/, train/ and python_backend/ inside it), and every module
of the source tree; every module imports from the installed copy; the checks the image's build step runs against
the wheel pass against it; and `videoitg serve` from it, on the real-shape tier's checkpoint and engines, answers a
request through tritonserver, whose python-backend stubs run the installed copy, with the scores the checkout
computes in-process.

The environment: a venv without pip whose one `.pth` line adds the dev environment's site-packages (the
dependencies) to its path. A `.pth` line adds a folder without running that folder's own `.pth` files, so the
editable install's finder, which maps `videoitg` onto this checkout, never loads there; the wheel is installed into
the venv's own site-packages, ahead of that folder. The commands run from a folder outside the checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.compare import assert_results_close
from tests.support.model import one_torch_thread
from tests.support.server import read_until, skip_without_tritonserver
from tests.support.source import namespace_folders, package_modules
from tests.support.video import write_clip
from videoitg.client.kserve import VideoITGClient
from videoitg.launch import procfs
from videoitg.launch.ports import free_ports
from videoitg.pipeline.scorer import Scorer

pytestmark = [pytest.mark.slow, pytest.mark.server]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# logits: the served ONNX graphs against in-process torch, fp32 (the graphs alone within 1e-6 of torch at these
# shapes: tests/engine_build/test_onnx_export.py); the fp32 ONNX target of `videoitg verify`
SERVED_TOL = 1e-4

# Run inside the installed environment: import every module named in argv[1] (a JSON list), the in-server ones with a
# bare stand-in for tritonserver's `triton_python_backend_utils` (they import it at the top; it exists only inside
# tritonserver); a `__main__` module is found, not run (importing it runs its program). Prints where each module came
# from, or the module an import lacked, and the interpreter's path.
IMPORT_ALL = """
import importlib, importlib.util, json, sys, types
sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
files, lacking = {}, {}
for name in json.loads(sys.argv[1]):
    try:
        if name.endswith(".__main__"):
            files[name] = importlib.util.find_spec(name).origin
        else:
            files[name] = importlib.import_module(name).__file__
    except ModuleNotFoundError as e:
        lacking[name] = e.name
print(json.dumps({"files": files, "lacking": lacking, "path": sys.path,
                  "finders": [repr(f) for f in sys.meta_path]}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` of a copy of what the wheel is built from (pyproject.toml, README.md and the package-dir folders,
    as the image's first stage copies them): built in the checkout, setuptools would reuse the checkout's build/
    folder, whose leftovers from an earlier build land in the wheel whatever pyproject says now."""
    src = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in namespace_folders().values():
        shutil.copytree(folder, src / folder.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (built,) = out.glob("videoitg_serve-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed environment's folder (its interpreter is bin/python)."""
    env = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    site = next((env / "lib").glob("python3*/site-packages"))
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))  # the dev venv's, in order
    (site / "dependencies.pth").write_text("\n".join(deps) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q",
                        "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return env


def outside(installed: Path) -> dict[str, str]:
    """The environment the installed copy runs in: its interpreter and console script first on PATH, nothing
    pointing at the checkout (no PYTHONPATH, no activated venv)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(installed / "bin"), env.get("PATH", "")])
    return env


def run_installed(installed: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed / "bin" / "python"), *argv], cwd=cwd, env=outside(installed),
                          capture_output=True, text=True, timeout=600)


def under(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def sources(path: list[str]) -> list[str]:
    """The entries of an interpreter's `path` inside the checkout, the dev venv apart (scripts/test.sh makes it in
    the checkout's .venv/: the dependencies' folder, which holds no module of ours)."""
    return [p for p in path if p and under(p, ROOT) and not under(p, Path(sys.prefix))]


def test_wheel_holds_only_the_videoitg_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"videoitg"}
    for needed in ("videoitg/engine_build/build.py", "videoitg/train/trainer.py", "videoitg/python_backend/metrics.py",
                   "videoitg/assets/tiny-videoitg/model.safetensors", "videoitg/engines/runtimes.py",
                   "videoitg/front/page/index.html", "videoitg/front/page/page.js", "videoitg/front/page/page.css"):
        assert needed in names
    assert not any(n.startswith(("videoitg/benchmarks", "videoitg/tests")) for n in names)


def test_wheel_holds_every_module_and_asset_of_the_source(wheel: Path) -> None:
    """Every .py of the folders package-dir names, at its place in the namespace (a package folder without an
    __init__.py, such as videoitg/engines/, included), and every file under videoitg/assets/: nothing is listed by
    hand, so nothing can be left off a list."""
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = namespace_folders()
    want = {"/".join(name.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")
            for name, path in package_modules(folders).items()}
    assert sorted(want - names) == []
    assets = ROOT / "videoitg" / "assets"
    assert sorted({f"videoitg/assets/{p.relative_to(assets)}" for p in assets.rglob("*") if p.is_file()} - names) == []
    assert {n for n in names if n.endswith(".py")} == want  # and no module the source does not have


def test_every_module_imports_from_the_installed_copy(installed: Path, tmp_path: Path) -> None:
    """Each module's file is the installed one, not the checkout's; the interpreter's path holds no folder of the
    checkout and no finder maps onto it. A module only an optional extra absent here can import (lmms-eval's
    model) names that extra's package, which this environment lacks too."""
    modules = sorted(package_modules())
    r = run_installed(installed, tmp_path, "-c", IMPORT_ALL, json.dumps(modules))
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    site = next((installed / "lib").glob("python3*/site-packages"))
    assert sources(got["path"]) == []
    assert not [f for f in got["finders"] if "editable" in f.lower()], got["finders"]
    assert not [n for n, f in got["files"].items() if not under(f, site / "videoitg")]
    for name, missing in got["lacking"].items():  # an optional dependency not installed here, never a piece of ours
        assert not missing.startswith("videoitg") and not _importable(missing), (name, missing)
    assert set(got["files"]) | set(got["lacking"]) == set(modules)
    assert len(got["lacking"]) <= 1, got["lacking"]


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def build_step_checks(dockerfile_text: str) -> list[str]:
    """The commands the image's build step runs against the installed wheel: those after the `pip install` in the
    RUN that installs it, as its shell (bash) runs them."""
    flat = " ".join(dockerfile_text.replace("\\\n", " ").split())
    run = next(r for r in flat.split(" RUN ") if "/wheels/videoitg_serve-*.whl" in r)
    parts = run.split(" && ")
    start = next(i for i, p in enumerate(parts) if p.startswith("python3 -m pip install "))
    return parts[start + 1:]


def test_the_image_build_steps_checks_pass_against_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """`python3 -m videoitg.engines.compat`, the import of what the server runs (the front's main among it) and
    `videoitg --help`, run from the installed copy. compat compares the installed libraries with the image's release
    and says how this machine differs (it is not the image): it ran, from the installed copy, and named only
    versions."""
    checks = build_step_checks(DOCKERFILE.read_text())
    assert any("videoitg.front.main" in c for c in checks) and any(c.startswith("videoitg ") for c in checks)
    for check in checks:
        r = subprocess.run(["bash", "-o", "pipefail", "-c", check], cwd=tmp_path, env=outside(installed),
                           capture_output=True, text=True, timeout=300)
        if check == "python3 -m videoitg.engines.compat" and r.returncode == 1:
            lines = r.stderr.strip().splitlines()
            assert lines and all(x.startswith("videoitg compat (") for x in lines), r.stderr[-3000:]
            continue
        assert r.returncode == 0, (check, r.stdout[-2000:], r.stderr[-3000:])


def test_videoitg_serve_from_the_installed_copy_answers_at_the_real_shapes(installed: Path, tmp_path: Path,
                                                                           real_shape_checkpoint: Path,
                                                                           real_shape_engines: Path) -> None:
    """`videoitg serve` of the installed console script, from a folder outside the checkout, on the real-shape tier's
    checkpoint (the released widths and heads, one Qwen2 layer: tests/support/model.py) and its ONNX engines: the
    repository it generates declares the checkpoint's shapes (frames [T, 3, 384, 384], features [T, tokens, 3584]),
    and one request of one sampled frame (729 tokens of width 3584 between the steps) equals the in-process torch
    scores. tritonserver's python-backend stubs run the `python3` first on their PATH, the installed environment's,
    in that folder, and that interpreter, in that environment, imports the model files from the installed copy."""
    skip_without_tritonserver()
    clip = write_clip(tmp_path / "clip.mp4", frames=25, fps=25, width=160, height=120)  # 1 s: one sampled frame
    instruction = "when is the red circle visible?"
    work = tmp_path / "work"
    work.mkdir()
    env = outside(installed) | {"VIDEOITG_HOME": str(tmp_path / "home")}
    ports = [str(p) for p in free_ports(3)]
    proc = subprocess.Popen([str(installed / "bin" / "videoitg"), "serve", "--checkpoint", str(real_shape_checkpoint),
                             "--engines", str(real_shape_engines), "--http-port", ports[0], "--grpc-port", ports[1],
                             "--metrics-port", ports[2]], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = read_until(proc, "ready:", timeout_s=400)
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        repo = Path(next(m[1] for x in lines if (m := re.search(r" repository (\S+)", x))))
        assert "dims: [ -1, 3, 384, 384 ]" in (repo / "videoitg_vision" / "config.pbtxt").read_text()
        assert "dims: [ -1, -1, 3584 ]" in (repo / "videoitg_grounding" / "config.pbtxt").read_text()
        with VideoITGClient(f"127.0.0.1:{ports[1]}") as client:
            got = client.score(clip, instruction)
        with one_torch_thread():
            want = Scorer(real_shape_checkpoint).score(clip, instruction)
        assert len(got.logits) == 1
        assert_results_close(got, want, tol=SERVED_TOL)
        stubs = {pid for pids in _stubs(proc.pid).values() for pid in pids}
        assert len(stubs) >= 4, _stubs(proc.pid)  # the BLS model and its decode, vision and grounding steps
        seen = {}  # each stub's environment and folder; the check below runs once for each distinct pair
        for pid in stubs:
            environ = Path(f"/proc/{pid}/environ").read_text()
            seen[(environ, os.readlink(f"/proc/{pid}/cwd"))] = pid
        for (environ, folder), pid in seen.items():
            stub_env, cwd = dict(kv.split("=", 1) for kv in environ.split("\0") if kv), Path(folder)
            assert not under(cwd, ROOT) and "PYTHONPATH" not in stub_env, pid
            python3 = shutil.which("python3", path=stub_env["PATH"])
            assert python3 == str(installed / "bin" / "python3"), python3
            r = subprocess.run([python3, "-c", "import json, sys, videoitg.python_backend.request as m; "
                                "print(json.dumps([m.__file__, sys.path]))"], cwd=cwd, env=stub_env,
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr[-2000:]
            file, path = json.loads(r.stdout)
            assert under(file, installed) and sources(path) == [], (file, path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stubs(launcher: int) -> dict[str, set[int]]:
    """The python-backend stubs of the tritonserver `videoitg serve` (pid `launcher`) started."""
    out: dict[str, set[int]] = {}
    for child in procfs.children(launcher):
        for model, pids in procfs.stub_pids(child).items():
            out.setdefault(model, set()).update(pids)
    return out
