"""The runtimes a repository will serve, checked before tritonserver starts.

`videoitg build` records in `ENGINES/build.json` the runtime each step serves with and the library versions that
built the engines; each engine's manifest records its TensorRT version and GPU. A step that loads an engine it
cannot run fails inside a python stub, at load or at the first request, with the reason buried in the server log.
`check_runtimes` finds the same failures in the launcher, in one line: a runtime library that is not installed or
does not import (probed in a child process: `libraries.probe_import`), a library version other than the one that
built the engine, a GPU other than the one a plan was tuned for. Versions are read from package metadata, never by
importing the library (`libraries.library_version`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from videoitg.engines.manifest import EngineManifest, RuntimeEnv, manifest_problems
from videoitg.engines.runtimes import ENGINE_FILES  # (runtime, step) -> engine file; trtllm reads the checkpoint
from videoitg.engines.summary import read_summary
from videoitg.errors import EngineMismatchError
from videoitg.libraries import probe_import

# runtime -> the module it imports (torch: none beyond the image's own)
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt", "trtllm": "tensorrt_llm"}
# What a missing onnxruntime means in the GPU image (deploy/Dockerfile installs none: docs/deploy-gpu.md)
IMAGE_RUNTIMES = " (the GPU image serves TensorRT plans, TensorRT-LLM and torch only, no ONNX graphs)"


class RuntimeCheckError(EngineMismatchError):
    """A step's runtime cannot run on this machine; the message is one line."""


def runtime_problems(engines: str | Path, runtimes: Mapping[str, str], env: RuntimeEnv,
                     probe: Callable[[str], str | None] = probe_import) -> list[str]:
    """Why each step's runtime in `runtimes` ({"vision": "tensorrt", ...}) cannot run here; empty when all can."""
    root = Path(engines)
    built_versions: dict[str, str] = (read_summary(root) or {}).get("versions", {})
    problems: list[str] = []
    probed: dict[str, str | None] = {}
    for step, runtime in sorted(runtimes.items()):
        module = RUNTIME_MODULES.get(runtime)
        if module is None:  # torch: the image's own, needed by everything
            continue
        have = env.versions.get(module)
        if have is None:
            problems.append(f"{step}: runtime {runtime} needs {module}, which is not installed here"
                            + (IMAGE_RUNTIMES if runtime == "onnxruntime" else ""))
            continue
        if module not in probed:
            probed[module] = probe(module)
        if probed[module] is not None:
            problems.append(f"{step}: runtime {runtime}: {module} {have} does not import ({probed[module]})")
            continue
        file = ENGINE_FILES.get((runtime, step))
        if file is None:  # trtllm: the library that `videoitg build` checked must be the one that serves
            want = built_versions.get(module)
            if want is not None and want != have:
                problems.append(f"{step}: runtime {runtime}: engines built with {module} {want}, this machine has "
                                f"{have}")
            continue
        path = root / file
        if not path.is_file():
            problems.append(f"{step}: runtime {runtime}: {path} is missing")
            continue
        try:
            reasons = manifest_problems(EngineManifest.read(path), env)
        except EngineMismatchError as e:  # a manifest of another schema
            reasons = [str(e)]
        if reasons:
            problems.append(f"{step}: runtime {runtime}: " + "; ".join(reasons))
    return problems


def check_runtimes(engines: str | Path, runtimes: Mapping[str, str], env: RuntimeEnv | None = None,
                   probe: Callable[[str], str | None] = probe_import) -> None:
    """Raise RuntimeCheckError, one line naming every problem and the way out, when a step's runtime cannot run
    here (`runtime_problems`). `env`: this machine (default: `RuntimeEnv.current()`, versions from metadata)."""
    problems = runtime_problems(engines, runtimes, env or RuntimeEnv.current(), probe)
    if problems:
        raise RuntimeCheckError(
            "the engines in " + str(engines) + " cannot be served here: " + "; ".join(problems)
            + ". Build them in the image that serves them (`videoitg build --checkpoint DIR --out ENGINES`, "
            "docs/deploy-gpu.md) or serve without --engines (torch)"
        )
