"""The NVDEC decoders' start self-test: a few frames of a clip shipped in the package decoded with DALI (or
PyNvVideoCodec) and compared with PyAV's, before a decode step of that decoder accepts requests
(python_backend/decode.py) and, for dali on a GPU, before `videoitg serve` starts a server
(`videoitg/commands/repo.py`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from importlib import resources

from videoitg.decode.api import decode_video
from videoitg.decode.errors import DecoderUnavailableError
from videoitg.errors import VideoDecodeError
from videoitg.libraries import library_version
from videoitg.sampling import SamplingParams

SELF_TEST_CLIP = "assets/selftest/h264-128x96.mp4"  # 8 frames of H.264 4:2:0, 128x96, in the videoitg package
# What a CPU decode step checks at start: DALI's CPU decoder has no H.264 (8 frames of VP9 4:2:0, 128x96)
SELF_TEST_CPU_CLIP = "assets/selftest/vp9-128x96.webm"
SELF_TEST_MEAN_BOUND = 8.0  # mean |DALI - PyAV| in 0..255 units accepted (measured bounds: dali.PIXEL_BOUNDS)
# The self-test in a child process (`self_test_in_child`): importing torch and DALI, a CUDA context, one pipeline
# and three frames take seconds; a child past this bound is taken for a hung driver and the start is refused.
CHILD_TIMEOUT_S = 120.0


def self_test_clip(device: str) -> bytes:
    """The package's clip the self-test decodes on `device`: H.264 for NVDEC ("mixed"), VP9 for DALI's CPU
    decoder ("cpu"), which has no H.264."""
    return resources.files("videoitg").joinpath(SELF_TEST_CPU_CLIP if device == "cpu" else SELF_TEST_CLIP) \
        .read_bytes()


# device -> (the served decoder, what runs, its library's module and name)
SELF_TESTED = {"mixed": ("dali", "dali-gpu", "nvidia.dali", "DALI"), "cpu": ("dali", "dali-cpu", "nvidia.dali", "DALI"),
               "nvc": ("pynvvideocodec", "nvc-gpu", "PyNvVideoCodec", "PyNvVideoCodec")}


def self_test(device: str = "mixed", device_id: int = 0, clip: bytes | None = None) -> None:
    """Decode three frames of `clip` (default: the package's clip for `device`, `self_test_clip`) on `device`
    ("mixed": DALI on NVDEC, "cpu": DALI's CPU decoder, "nvc": PyNvVideoCodec on NVDEC) and compare them with PyAV's;
    raise DecoderUnavailableError in one line naming `--decoder pyav` when the decoder is missing, cannot decode the
    clip here, or decodes other pixels."""
    decoder, runs, module, library = SELF_TESTED[device]
    data = clip if clip is not None else self_test_clip(device)
    what = "a given clip" if clip is not None else ("a VP9 clip" if device == "cpu" else "an H.264 clip")
    params = SamplingParams(num_frames=3, target_fps=25.0)
    try:
        target = None if device == "cpu" else f"cuda:{device_id}"
        got = decode_video(data, image_size=64, params=params, decoder=decoder, device=target, output="float32")
        want = decode_video(data, image_size=64, params=params, decoder="pyav", output="float32")
        diff = float((got.pixel_values.float().cpu() - want.pixel_values).abs().mean()) * 127.5
        if got.frame_indices != want.frame_indices:
            raise VideoDecodeError(f"frames {got.frame_indices} decoded, PyAV's are {want.frame_indices}")
        if not diff <= SELF_TEST_MEAN_BOUND:
            raise VideoDecodeError(f"pixels differ from PyAV's by {diff:.1f} on average (bound "
                                   f"{SELF_TEST_MEAN_BOUND})")
    except Exception as e:  # every failure is the one-line refusal
        reason = " ".join(str(e).split()) or type(e).__name__
        version = library_version(module) or "not installed"
        raise DecoderUnavailableError(
            f"the {decoder} decoder ({runs}, {library} {version}) failed its start self-test on {what}: "
            f"{reason[:300]}; serve with --decoder pyav"
        ) from None


def _child_code(device: str) -> str:
    return f"from videoitg.decode.selftest import self_test; self_test(device={device!r})"


def self_test_in_child(device: str = "mixed", timeout_s: float = CHILD_TIMEOUT_S) -> None:
    """`self_test(device)` in a child process with this interpreter, what `videoitg serve` runs before a server
    starts: the launcher lives as long as the server and holds no CUDA context or DALI pipeline, and a driver that
    hangs cannot hold the start (the child is killed after `timeout_s`). Raises DecoderUnavailableError in one line
    ending "serve with --decoder pyav" when the self-test fails or runs out of time."""
    child = subprocess.Popen([sys.executable, "-c", _child_code(device)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a child stuck in the driver may not die at once
            child.communicate(timeout=5)
        raise DecoderUnavailableError(
            f"the dali decoder's start self-test ({device}) did not finish in {timeout_s:g} s (the GPU driver or "
            "NVDEC does not answer); serve with --decoder pyav") from None
    if child.returncode != 0:
        lines = stderr.strip().splitlines() or [f"exit code {child.returncode}"]
        name, _, message = lines[-1].partition(": ")
        if not name.endswith("DecoderUnavailableError"):
            message = f"the dali decoder's start self-test failed: {lines[-1]}; serve with --decoder pyav"
        raise DecoderUnavailableError(message)
