"""The compatibility matrix of the release the GPU image is built on (`videoitg/assets/compat.json`): Triton,
python_backend, TensorRT, TensorRT-LLM, torch, CUDA, Python, numpy and the DALI the image adds, each with where its
version was read. `mismatches` compares it with what is installed here (package metadata, nothing imported):
the image's build runs `python -m videoitg.engines.compat` and fails when its base image is not the release the
code was checked against; the GPU check reports the same lines.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import resources
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from videoitg.libraries import library_version

# compat.json library -> the module whose installed distribution carries that version
MODULES = {"tensorrt": "tensorrt", "tensorrt_llm": "tensorrt_llm", "torch": "torch", "dali": "nvidia.dali",
           "numpy": "numpy"}


def load() -> dict[str, Any]:
    return json.loads(resources.files("videoitg").joinpath("assets/compat.json").read_text())


def mismatches(compat: dict[str, Any] | None = None, python: str | None = None) -> list[str]:
    """One line per library whose installed version is not the matrix's (numpy: its bound); empty when all hold."""
    libs = (compat or load())["libraries"]
    out: list[str] = []
    for name, module in MODULES.items():
        want, have = libs[name]["version"], library_version(module)
        if have is None:
            out.append(f"{name}: {want} expected, not installed")
        elif want[0] in "<>=!~":
            if Version(have) not in SpecifierSet(want):
                out.append(f"{name}: {want} expected, {have} installed")
        elif have != want:
            out.append(f"{name}: {want} expected, {have} installed")
    here = python or platform.python_version()
    if ".".join(here.split(".")[:2]) != ".".join(libs["python"]["version"].split(".")[:2]):
        out.append(f"python: {libs['python']['version']} expected, {here} here")
    return out


def main() -> int:
    compat = load()
    problems = mismatches(compat)
    for line in problems:
        print(f"videoitg compat ({compat['image']}): {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
