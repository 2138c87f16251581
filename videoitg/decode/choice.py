"""Which decoder runs for a video: the codecs each DALI decoder takes, and the automatic choice (the names a caller
may ask for: `videoitg.decoders`)."""

from __future__ import annotations

import functools
import importlib

from videoitg.decode.container import FrameIndex
from videoitg.decode.errors import DecoderUnavailableError, UnsupportedCodecError
from videoitg.decoders import decoder
from videoitg.errors import InputError

# DALI's CPU video decoder handles only these (environment.md, checked again in tests).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
# On CPU, "auto" prefers PyAV even for DALI's codecs: measured on 2 cores (benchmarks/RESULTS.md, Decoding),
# DALI's CPU decoder took more CPU time and 3-4x the wall time of PyAV's sampled decode for the same frames.
# Set to True to route VP8/VP9/MJPEG to DALI on CPU machines anyway.
AUTO_PREFERS_DALI_CPU = False
# NVDEC codecs DALI's "mixed" decoder accepts (DALI docs; not run on a GPU: docs/decoding.md).
DALI_GPU_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mjpeg", "mpeg4"})


def decoder_name(name: str) -> str:
    """The decoder a caller names (`videoitg.decoders.DECODERS`); DecoderUnavailableError for another name."""
    try:
        return decoder(name).name
    except InputError as e:
        raise DecoderUnavailableError(str(e)) from None


@functools.lru_cache(maxsize=1)
def nvc_available() -> bool:
    """Whether PyNvVideoCodec imports here (its import loads the NVIDIA driver's video libraries)."""
    try:
        importlib.import_module("PyNvVideoCodec")  # an optional dependency (the GPU image): imported only when asked
    except Exception:  # not installed, or no driver to load
        return False
    return True


@functools.lru_cache(maxsize=1)
def dali_available() -> bool:
    try:
        importlib.import_module("nvidia.dali")  # an optional dependency (extra 'dali'): imported only when asked
    except Exception:  # ImportError, or a broken install that fails while loading its libraries
        return False
    return True


def choose_decoder(requested: str, codec: str, index: FrameIndex, want_cuda: bool = False) -> str:
    """What decodes this video: "pyav", "dali-cpu" (DALI's CPU decoder) or "dali-gpu" (NVDEC). An explicit decoder
    is honoured or refused with a typed error. `want_cuda`: the caller asked for frames on a CUDA device, where
    "dali" is NVDEC and "auto" may use it (the output stays there). "pynvvideocodec" ("nvc-gpu") is NVDEC only."""
    if requested == "pyav":
        return "pyav"
    if requested == "pynvvideocodec":
        from videoitg.decode.nvc import NVC_CODECS  # torch: only where PyNvVideoCodec was asked for

        if not want_cuda or not _cuda():
            raise DecoderUnavailableError("decoder 'pynvvideocodec' decodes on NVDEC only: ask for frames on a CUDA "
                                          "device (of a machine with one)")
        if not nvc_available():
            raise DecoderUnavailableError("PyNvVideoCodec is not installed or cannot load here "
                                          "(pip install pynvvideocodec; it needs the NVIDIA driver)")
        if codec not in NVC_CODECS:
            raise UnsupportedCodecError(f"PyNvVideoCodec's decoder here takes {', '.join(sorted(NVC_CODECS))}, not "
                                        f"{codec}; use decoder='pyav'")
        return "nvc-gpu"
    if requested == "dali" and not want_cuda:
        _require_dali()
        if codec not in DALI_CPU_CODECS:
            raise UnsupportedCodecError(f"DALI's CPU decoder cannot decode {codec} (it supports "
                                        f"{', '.join(sorted(DALI_CPU_CODECS))}); use decoder='pyav'")
        return "dali-cpu"
    if requested == "dali":
        _require_dali()
        if not _cuda():
            raise DecoderUnavailableError("decoder 'dali' on a CUDA device needs a CUDA GPU; none is available")
        if codec not in DALI_GPU_CODECS:
            raise UnsupportedCodecError(f"DALI's GPU decoder cannot decode {codec}; use decoder='pyav'")
        return "dali-gpu"
    # auto: DALI frame numbers count frames in stream order, so timestamp-less or variable-rate streams,
    # whose numbering only the packet index gets right, stay on PyAV.
    regular = not index.vfr and not index.ordinal
    if regular and dali_available():
        if want_cuda and _cuda() and codec in DALI_GPU_CODECS:
            return "dali-gpu"
        if AUTO_PREFERS_DALI_CPU and codec in DALI_CPU_CODECS:
            return "dali-cpu"
    return "pyav"


def _cuda() -> bool:
    import torch  # only where frames on a CUDA device were asked for

    return torch.cuda.is_available()


def _require_dali() -> None:
    if not dali_available():
        raise DecoderUnavailableError("NVIDIA DALI is not installed (pip install 'videoitg-serve[dali]')")

