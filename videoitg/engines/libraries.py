"""The one place that imports the optional runtime libraries (onnxruntime, TensorRT, TensorRT-LLM).

Each import raises `BackendUnavailable` with the library's own reason, so a machine without TensorRT still runs
torch and onnxruntime, and a caller can report exactly why a backend was passed over.
"""

from __future__ import annotations

from types import ModuleType

from videoitg.engines.manifest import BackendUnavailable


def import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime  # noqa: PLC0415
    except Exception as e:
        raise BackendUnavailable(f"onnxruntime is not importable here ({type(e).__name__}: {e})") from e
    return onnxruntime


def import_tensorrt() -> ModuleType:
    """TensorRT wheels whose native libraries are missing raise OSError, not ImportError: catch everything."""
    try:
        import tensorrt  # noqa: PLC0415
    except Exception as e:
        raise BackendUnavailable(f"TensorRT is not importable here ({type(e).__name__}: {e})") from e
    return tensorrt


def import_trtllm() -> ModuleType:
    try:
        import tensorrt_llm  # noqa: PLC0415
    except Exception as e:
        raise BackendUnavailable(f"TensorRT-LLM is not importable here ({type(e).__name__}: {e})") from e
    return tensorrt_llm
