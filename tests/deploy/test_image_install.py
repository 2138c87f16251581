"""deploy/Dockerfile's `pip install` into the image's environment, resolved offline by pip's own resolver, so that
an install that cannot resolve fails the suite, not the image's build.

The image's environment is `videoitg/assets/compat.json` "image_environment" (what the release's sources install
into it, resolved on the package index by `scripts/image_packages.py`), each distribution with the requirements it
declares (tests/data/image_packages.json). Here: a virtual environment holding a metadata-only stand-in of every one
of them (installed, as in the image), a folder of stand-in wheels of what the package index offers for the install
set, the constraints file the Dockerfile's own shell pipeline writes from `pip list --format=freeze`, and
`pip install --dry-run --report` with the Dockerfile's arguments, run by pip (`--python` that environment,
`--no-index`). The stand-ins' environment runs this machine's Python 3.11 (the image's is 3.12): the versions were
chosen for 3.12 by the script, so the stand-ins declare no Requires-Python, and markers are read as 3.11.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support import DATA, ROOT
from tests.support.standins import canonical, install_words, with_args, write_installed, write_wheel

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPAT = json.loads((ROOT / "videoitg" / "assets" / "compat.json").read_text())
IMAGE = COMPAT["image_environment"]
INDEX = json.loads((DATA / "image_packages.json").read_text())["distributions"]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # its wheel, built in the first stage
pytestmark = pytest.mark.slow


def _install_run() -> str:
    """The Dockerfile's RUN that writes the constraints file and installs, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    runs = [r for r in re.findall(r"^RUN (.*)$", text, re.M) if "/opt/image-constraints.txt" in r]
    assert len(runs) == 1, "one RUN writes and uses /opt/image-constraints.txt"
    return " ".join(runs[0].split())


def _arg(name: str) -> str:
    """The default of the Dockerfile's `ARG name=...`."""
    return with_args(DOCKERFILE.read_text(), [f"${{{name}}}"])[0]


def _requires(name: str, version: str) -> list[str]:
    if canonical(name) == canonical(PROJECT["name"]):
        return PROJECT["dependencies"]
    build = IMAGE["builds"].get(canonical(name))
    if build is not None and build["version"] == version:
        return build["requires"]
    for d in INDEX:
        if canonical(d["name"]) == canonical(name) and d["version"] == version:
            return d["requires"]
    raise AssertionError(f"no metadata for {name} {version}: run scripts/image_packages.py")


def _project_wheel(folder: Path) -> Path:
    """The project's wheel as the image's first stage builds it, its metadata only."""
    return write_wheel(folder, PROJECT["name"], PROJECT["version"], PROJECT["dependencies"])


def resolve(tmp: Path, constraints: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """Run the Dockerfile's `pip install` (with `constraints` as its constraints file) against the image's stand-ins:
    (pip's result, {canonical name: version} pip would install)."""
    venv = tmp / "image"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for name, version in IMAGE["packages"].items():
        write_installed(site, name, version, _requires(name, version))
    links = tmp / "index"
    links.mkdir()
    for d in INDEX:
        write_wheel(links, d["name"], d["version"], d["requires"])
    wheel = _project_wheel(tmp)
    (tmp / "constraints.txt").write_text(constraints)
    words = install_words(DOCKERFILE.read_text())
    words = [str(tmp / "constraints.txt") if w == "/opt/image-constraints.txt" else w for w in words]
    words = [str(wheel) if w.startswith("/wheels/") else w for w in words]
    assert words[0] == "--no-cache-dir" and "-c" in words
    report = tmp / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--isolated", "--no-index", "--find-links", str(links), "--dry-run", "--report",
                           str(report), *words], capture_output=True, text=True, timeout=600)
    installs = {}
    if done.returncode == 0:
        installs = {canonical(i["metadata"]["name"]): i["metadata"]["version"]
                    for i in json.loads(report.read_text())["install"]}
    return done, installs


def image_constraints(tmp: Path) -> str:
    """What the Dockerfile's pipeline writes to /opt/image-constraints.txt in this image: its own shell command,
    with the image's `pip list --format=freeze` (every distribution, under its own name) fed to it."""
    freeze = tmp / "freeze.txt"
    freeze.write_text("".join(f"{name}=={version}\n" for name, version in IMAGE["packages"].items()))
    run = _install_run()
    pipeline = run[run.index("python3 -m pip list --format=freeze "):run.index(" && python3 -m pip install ")]
    pipeline = pipeline.replace("python3 -m pip list --format=freeze", f"cat {freeze}", 1)
    pipeline = pipeline.replace("/opt/image-constraints.txt", str(tmp / "written.txt"))
    subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True, timeout=60)
    return (tmp / "written.txt").read_text()


# ---- the list -------------------------------------------------------------------------------------------------
def test_the_image_list_agrees_with_the_matrix_and_names_its_sources() -> None:
    packages, libs = IMAGE["packages"], COMPAT["libraries"]
    assert packages["torch"] == libs["torch"]["version"] and packages["tensorrt"] == libs["tensorrt"]["version"]
    assert packages["tensorrt-llm"] == libs["tensorrt_llm"]["version"]
    assert Version(packages["numpy"]) < Version("2") and libs["numpy"]["version"] == "<2"
    assert "numpy<2" in IMAGE["builds"]["tensorrt-llm"]["requires"]  # TensorRT-LLM 1.2.1's own bound
    assert "numpy<2" in IMAGE["builds"]["tritonserver"]["requires"]
    assert all(b["source"] for b in IMAGE["builds"].values()) and all(i["source"] for i in IMAGE["installs"])
    assert {canonical(n) for n in IMAGE["held"]} == {"torch", "tensorrt", "tensorrt-llm", "transformers", "numpy"}
    for name in IMAGE["held"]:
        assert name in packages, name


# ---- the install --------------------------------------------------------------------------------------------------
def test_the_dockerfile_install_resolves_against_the_image_and_breaks_nothing_it_holds(tmp_path: Path) -> None:
    """pip resolves the Dockerfile's install set in the image with the Dockerfile's constraints: the held packages
    (torch, TensorRT, TensorRT-LLM, transformers, numpy) stay, and whatever moves (grpcio below 1.68 for
    tritonclient's gRPC, protobuf below 7, packaging to DALI's bound) still satisfies every requirement on it of
    every distribution the image holds."""
    constraints = image_constraints(tmp_path)
    done, installs = resolve(tmp_path, constraints)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    held = {canonical(Requirement(line).name) for line in constraints.splitlines() if line.strip()}
    assert held == {canonical(n) for n in IMAGE["held"]}, constraints
    image = {canonical(n): v for n, v in IMAGE["packages"].items()}
    assert not {n for n in held if installs.get(n, image[n]) != image[n]}, installs
    assert installs["nvidia-dali-cuda130"] == _arg("DALI_VERSION")
    assert installs["tritonclient"] == _arg("TRITONCLIENT_VERSION") == COMPAT["libraries"]["triton"]["version"]
    final = image | installs
    moved = {n for n, v in installs.items() if n in image and image[n] != v}
    broken = []
    for name, version in final.items():
        requires = _requires(name, version)
        for text in requires:
            r = Requirement(text)
            if canonical(r.name) not in moved or (r.marker is not None and not r.marker.evaluate({"extra": ""})):
                continue
            if not r.specifier.contains(final[canonical(r.name)], prereleases=True):
                broken.append(f"{name} {version} requires {text}, gets {final[canonical(r.name)]}")
    assert broken == [], broken
    assert {"grpcio", "protobuf", "packaging"} <= moved  # what the image's own versions could not give


def test_holding_every_image_package_stops_the_build(tmp_path: Path) -> None:
    """The resolution has teeth: with every package the image holds pinned (a constraints file of the whole
    `pip list --format=freeze`), tritonclient's gRPC bounds and DALI's cannot be met and pip stops."""
    every = "".join(f"{name}=={version}\n" for name, version in IMAGE["packages"].items())
    done, _ = resolve(tmp_path, every)
    assert done.returncode != 0 and "ResolutionImpossible" in done.stdout + done.stderr
    assert re.search(r"grpcio|protobuf|packaging", done.stdout + done.stderr)
