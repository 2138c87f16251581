"""Which decoder runs: the names a caller may ask for, the codecs each DALI decoder takes, and the automatic choice."""

from __future__ import annotations

import functools
import importlib

import torch

from videoitg.decode.container import FrameIndex
from videoitg.decode.errors import DecoderUnavailableError, UnsupportedCodecError

DECODERS = ("auto", "pyav", "dali-cpu", "dali-gpu")
# DALI's CPU video decoder handles only these (environment.md, checked again in tests).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
# On CPU, "auto" prefers PyAV even for DALI's codecs: measured on 2 cores (benchmarks/RESULTS.md, Decoding),
# DALI's CPU decoder took more CPU time and 3-4x the wall time of PyAV's sampled decode for the same frames.
# Set to True to route VP8/VP9/MJPEG to DALI on CPU machines anyway.
AUTO_PREFERS_DALI_CPU = False
# NVDEC codecs DALI's "mixed" decoder accepts (DALI docs; not run on a GPU: docs/decoding.md).
DALI_GPU_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mjpeg", "mpeg4"})


def decoder_name(decoder: str) -> str:
    """The decoder a request names ("dali": the GPU variant where CUDA is available); unknown names refused."""
    if decoder == "dali":
        return "dali-gpu" if torch.cuda.is_available() else "dali-cpu"
    if decoder not in DECODERS:
        raise DecoderUnavailableError(f"unknown decoder {decoder!r}; choose one of "
                                      f"{', '.join(DECODERS)} or 'dali'")
    return decoder


@functools.lru_cache(maxsize=1)
def dali_available() -> bool:
    try:
        importlib.import_module("nvidia.dali")  # an optional dependency (extra 'dali'): imported only when asked
    except Exception:  # ImportError, or a broken install that fails while loading its libraries
        return False
    return True


def choose_decoder(requested: str, codec: str, index: FrameIndex, want_cuda: bool = False) -> str:
    """The decoder for this video. Explicit requests are honoured or refused with a typed error.
    `want_cuda`: the caller asked for frames on a CUDA device, so auto may use NVDEC (output stays there)."""
    if requested == "pyav":
        return "pyav"
    if requested == "dali-cpu":
        _require_dali()
        if codec not in DALI_CPU_CODECS:
            raise UnsupportedCodecError(f"DALI's CPU decoder cannot decode {codec} (it supports "
                                        f"{', '.join(sorted(DALI_CPU_CODECS))}); use decoder='pyav'")
        return "dali-cpu"
    if requested == "dali-gpu":
        _require_dali()
        if not torch.cuda.is_available():
            raise DecoderUnavailableError("decoder 'dali-gpu' needs a CUDA GPU; none is available")
        if codec not in DALI_GPU_CODECS:
            raise UnsupportedCodecError(f"DALI's GPU decoder cannot decode {codec}; use decoder='pyav'")
        return "dali-gpu"
    # auto: DALI frame numbers count frames in stream order, so timestamp-less or variable-rate streams,
    # whose numbering only the packet index gets right, stay on PyAV.
    regular = not index.vfr and not index.ordinal
    if regular and dali_available():
        if want_cuda and torch.cuda.is_available() and codec in DALI_GPU_CODECS:
            return "dali-gpu"
        if AUTO_PREFERS_DALI_CPU and codec in DALI_CPU_CODECS:
            return "dali-cpu"
    return "pyav"


def _require_dali() -> None:
    if not dali_available():
        raise DecoderUnavailableError("NVIDIA DALI is not installed (pip install 'videoitg-serve[dali]')")

