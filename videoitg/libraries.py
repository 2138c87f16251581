"""The one place that imports the optional runtime libraries (onnxruntime, TensorRT, TensorRT-LLM), and that reads
their versions without importing them.

Each import raises `BackendUnavailable` with the library's own reason, so a machine without TensorRT still runs
torch and onnxruntime, and a caller can report exactly why a backend was passed over. `library_version` reads the
installed distribution's metadata (importlib.metadata): importing `tensorrt_llm` only to read its version takes
seconds and starts MPI; `probe_import` proves a library imports in a child process, so the launcher stays clean.
"""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from types import ModuleType

from videoitg.errors import BackendUnavailable


def import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except Exception as e:
        raise BackendUnavailable(f"onnxruntime is not importable here ({type(e).__name__}: {e})") from e
    return onnxruntime


def import_tensorrt() -> ModuleType:
    """TensorRT wheels whose native libraries are missing raise OSError, not ImportError: catch everything."""
    try:
        import tensorrt
    except Exception as e:
        raise BackendUnavailable(f"TensorRT is not importable here ({type(e).__name__}: {e})") from e
    return tensorrt


def import_trtllm() -> ModuleType:
    try:
        import tensorrt_llm
    except Exception as e:
        raise BackendUnavailable(f"TensorRT-LLM is not importable here ({type(e).__name__}: {e})") from e
    return tensorrt_llm


# module -> the distributions that install it (pip names; the TensorRT tarball's wheel is "tensorrt", PyPI's are
# "tensorrt-cu12" / "tensorrt-cu13"; onnxruntime's GPU build is "onnxruntime-gpu")
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
    "tensorrt_llm": ("tensorrt-llm",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "nvidia.dali": ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali-cuda110"),
}


def library_version(module: str) -> str | None:
    """The installed version of the library that provides `module`, from its distribution's metadata, without
    importing it; None when no distribution provides it."""
    names = DISTRIBUTIONS.get(module) or tuple(metadata.packages_distributions().get(module.split(".")[0], ()))
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def probe_import(module: str, timeout_s: float = 300.0) -> str | None:
    """Import `module` in a child process with this interpreter: None when it imports, else its last error line
    (a wheel whose native libraries are missing fails here, not in the server's first request)."""
    try:
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"importing {module} took over {timeout_s:.0f} s"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"
