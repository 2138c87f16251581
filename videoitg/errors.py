"""Typed errors. Each names what was wrong, so a server can answer one request with it and keep serving."""

MAX_ERROR_CHARS = 1024  # of another server's error text passed on (tritonserver's, a video-LLM's)


def bounded_text(text: str) -> str:
    """`text` cut to MAX_ERROR_CHARS: another server's error can quote a client's bytes back at any length."""
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " [...]"


class VideoITGError(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(VideoITGError):
    """A checkpoint directory is missing files, or its tensors do not match the config."""


class InputError(VideoITGError):
    """A request is malformed: empty or over-long instruction, bad TOP_K, bad sampling parameters."""


class VideoDecodeError(InputError):
    """The video could not be decoded (corrupt, empty, unsupported codec, no video stream, too slow)."""


class EngineError(VideoITGError):
    """An engine directory is missing files or holds an engine this machine cannot use."""


class EngineMismatchError(EngineError):
    """An engine was built for another TensorRT version, GPU, precision or checkpoint."""


class BackendUnavailable(EngineError):
    """A runtime library (onnxruntime, TensorRT, TensorRT-LLM) or a GPU is not present on this machine."""


class NonFiniteError(VideoITGError):
    """The model gave NaN or infinite values: a fault of the checkpoint being served or of its numerics, never of
    the request (a server answers it as its own failure, 500-class)."""
