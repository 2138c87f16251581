"""The decoders a caller may name, one vocabulary in-process (`decode_video(decoder=...)`, `Scorer`, `score
--decoder`) and served (`serve --decoder`, the decode step's `decoder` parameter). The decoding itself lives in
`videoitg/decode/` (`choice.choose_decoder` picks what runs; `videoitg.python_backend.step_decoder` runs a served
one)."""

from __future__ import annotations

from dataclasses import dataclass

from videoitg.errors import InputError


@dataclass(frozen=True)
class Decoder:
    name: str
    summary: str
    # Served: the decode step's PIXEL_VALUES type ("UINT8": resized frames, normalised by the vision step; "FP32":
    # SigLIP pixel values made where the frames were decoded) and whether the BLS model's decode step streams them.
    # None: not a served decoder.
    served_pixels: str | None = None
    streams: bool = False
    # Where its decode step runs on the gpu target: "gpu" (a GPU instance, NVDEC) or "cpu"; "gpu only": it has no CPU
    # decoder, so a cpu repository cannot serve it.
    placement: str = "cpu"


DECODERS: dict[str, Decoder] = {d.name: d for d in (
    Decoder("auto", "NVDEC (DALI) where the frames go to a CUDA device and DALI numbers the stream's frames as PyAV "
            "does, PyAV otherwise"),
    Decoder("pyav", "PyAV (FFmpeg) on the CPU cores: every codec", "UINT8", streams=True),
    Decoder("dali", "NVIDIA DALI: NVDEC on a CUDA device, a request's pieces on every decode engine of the card and "
            "PyAV threads on the spare cores when all are busy (served: PyAV for the streams NVDEC cannot number), "
            "its CPU decoder otherwise (VP8, VP9, MJPEG)", "UINT8", streams=True, placement="gpu"),
    Decoder("pynvvideocodec", "NVIDIA PyNvVideoCodec: NVDEC on a CUDA device only (H.264, HEVC, AV1, VP8, VP9 in 8-bit "
            "4:2:0), a request's pieces on every decode engine, PyAV's pixels", "UINT8", streams=True,
            placement="gpu only"),
)}
SERVED = tuple(name for name, d in DECODERS.items() if d.served_pixels is not None)


def decoder(name: str, served: bool = False) -> Decoder:
    """The decoder `name` names (`served`: one a decode step runs); InputError listing the names otherwise."""
    names = SERVED if served else tuple(DECODERS)
    if name not in names:
        raise InputError(f"decoder must be one of {', '.join(names)}, got {str(name)[:32]!r}")
    return DECODERS[name]
