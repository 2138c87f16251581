"""The DALI decoder: one pipeline for DALI's CPU decoder (VP8/VP9/MJPEG) and NVDEC ("mixed"), with FFmpeg's
YUV -> RGB and the squash in the graph, uint8 frames out; `DaliSession` runs it as one session of a decode pool
(`videoitg.decode.pool`: a request's pieces on several pipelines at once, or on one pipeline fed a batch of pieces)
(docs/decoding.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # DALI is an optional extra: its types only name what the functions take
    from nvidia.dali.data_node import DataNode
    from nvidia.dali.pipeline import Pipeline

import contextlib

import numpy as np
import torch

from videoitg.decode.colour import DALI_RGB_TO_YUV, YuvSignal, chroma_inverse_taps, dali_colour_params
from videoitg.decode.errors import VideoDecodeError
from videoitg.decode.pieces import cut
from videoitg.decode.sessions import Session, Video, Work

DALI_PIN = "2.4.0"  # nvidia-dali-cuda130 in the image (videoitg/assets/compat.json), the version the tests run

# DALI materialises every frame a run asks for at full size with a few working buffers each, so a piece fed to one
# pipeline run holds at most RUN_BYTES of that working set (a pool of N NVDEC pipelines: up to N x RUN_BYTES).
RUN_BYTES = 2 * 1024**3
WORK_BYTES_PER_PIXEL = 80  # DALI's buffers per decoded pixel (measured ~72 on CPU): the RGB, Y, U/V, float32 terms
# The documented bound of DALI's frames against FFmpeg's (PyAV's) after the squash to 384, in 0..255 units:
# (max, mean, p99.9) of |difference| by content, measured on the CPU decoder (benchmarks/RESULTS.md, "DALI pixels";
# tests/decode/test_dali.py and the GPU check's nvdec part assert it).
PIXEL_BOUNDS: dict[str, tuple[float, float, float]] = {
    "edges": (120.0, 2.3, 48.0),  # sharp saturated colour edges on black, lossless: DALI's own clipping remains
    "camera": (10.0, 0.25, 4.0),  # camera-like gradients, a disc, sensor noise
    "photo": (16.0, 0.3, 5.0),  # a real photograph under a camera move
}


def ffmpeg_rgb(video: DataNode, colour: DataNode) -> DataNode:  # uint8 FHWC, float32 [3, 3] -> uint8 FHWC
    """FFmpeg's RGB24 from DALI's decoded RGB (videoitg/decode/colour.py), for the video read as `colour`
    (`dali_colour_params`).

    Where FFmpeg uses its fixed-point converter (4:2:0 / 4:2:2 of even height): recover the decoded Y per pixel and
    the chroma per block (box mean, then the inverse of DALI's interpolation on each subsampled axis of even
    extent), round them to the sample values, replicate the chroma over its block and convert with FFmpeg's
    fixed-point rule for the video's matrix and range. Elsewhere FFmpeg takes swscale's generic path, whose pixels
    are DALI's own up to the matrix (measured: equal for BT.601): DALI's RGB mapped onto the tagged matrix. Both
    are computed and the flag in `colour` keeps one."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    full, sub_h, sub_v, fixed = colour[0, 0], colour[0, 1], colour[0, 2], colour[2, 2]
    y_scale = 1.0 - (1.0 - full) * (36.0 / 255.0)  # DALI's full-scale BT.601 inverse -> the tagged range
    c_scale = 1.0 - (1.0 - full) * (31.0 / 255.0)
    # Y: DALI's BT.601 inverse, rounded to the sample value
    y = fn.coord_transform(video, M=types.Constant(DALI_RGB_TO_YUV[:1]) * y_scale, T=16.0 * (1.0 - full),
                           dtype=types.UINT8)
    # U, V: block means of the RGB, T^-1 along each subsampled axis, the chroma rows rounded to the sample values,
    # replicated over the block
    means = fn.tensor_resize(video, scales=fn.stack(1.0 / (1.0 + sub_v), 1.0 / (1.0 + sub_h)), axes=[1, 2],
                            interp_type=types.INTERP_LINEAR, antialias=False, dtype=types.FLOAT)
    taps = chroma_inverse_taps()
    delta = np.zeros_like(taps)
    delta[len(taps) // 2] = 1.0
    across = types.Constant(delta[None]) + sub_h * types.Constant((taps - delta)[None])
    down = types.Constant(delta[:, None]) + sub_v * types.Constant((taps - delta)[:, None])
    means = fn.filter(fn.filter(means, across, border="reflect_1001"), down, border="reflect_1001")
    uv = fn.cast(fn.coord_transform(means, M=types.Constant(DALI_RGB_TO_YUV[1:]) * c_scale, T=128.0),
                 dtype=types.UINT8)  # rounds to nearest, saturates
    uv = fn.tensor_resize(uv, scales=fn.stack(1.0 + sub_v, 1.0 + sub_h), axes=[1, 2],
                         interp_type=types.INTERP_NN, antialias=False)
    # FFmpeg's five products (Y - y0) yc, (V - 128) vr, (U - 128) ug, (V - 128) vg, (U - 128) ub, each / 8192 and
    # floored, summed per channel; every value is exact in float32
    products = fn.coord_transform(fn.cat(y, uv, axis=3), M=_product_matrix(colour), T=_product_offsets(colour),
                                  dtype=types.FLOAT)
    fixed_rgb = fn.coord_transform(dmath.floor(products), M=types.Constant(_SUMS) * fixed)
    generic_rgb = fn.coord_transform(video, M=_tagged_matrix(colour, y_scale, c_scale) * (1.0 - fixed),
                                     dtype=types.FLOAT)
    return fn.cast(fixed_rgb + generic_rgb, dtype=types.UINT8)  # rounds to nearest, saturates to 0..255


# the five products as rows over (Y, U, V), with the COLOUR entry holding each coefficient; R, G, B sum them
_PRODUCTS = ((0, (1, 0)), (2, (1, 1)), (1, (2, 0)), (2, (2, 1)), (1, (1, 2)))  # (Y|U|V column, COLOUR entry)
_SUMS = np.array([[1, 1, 0, 0, 0], [1, 0, 1, 1, 0], [1, 0, 0, 0, 1]], np.float32)
# the same coefficients as FFmpeg's matrix over (Y - y0, U - 128, V - 128): (row, column, COLOUR entry)
_MATRIX = ((0, 0, (1, 0)), (1, 0, (1, 0)), (2, 0, (1, 0)), (0, 2, (1, 1)), (1, 1, (2, 0)), (1, 2, (2, 1)),
           (2, 1, (1, 2)))


def _mask(shape: tuple[int, int], row: int, col: int, value: float = 1.0) -> np.ndarray:
    m = np.zeros(shape, np.float32)
    m[row, col] = value
    return m


def _product_matrix(colour: DataNode) -> DataNode:  # [5, 3] on the CPU
    import nvidia.dali.types as types

    rows = [types.Constant(_mask((5, 3), k, col, 1.0 / 8192)) * colour[i, j] for k, (col, (i, j)) in
            enumerate(_PRODUCTS)]
    return rows[0] + rows[1] + rows[2] + rows[3] + rows[4]


def _product_offsets(colour: DataNode) -> DataNode:  # [5]: each product's -y0 or -128 times its coefficient, / 8192
    import nvidia.dali.fn as fn

    first = -16.0 * (1.0 - colour[0, 0]) * colour[1, 0]
    return fn.stack(first, *(-128.0 * colour[i, j] for _, (i, j) in _PRODUCTS[1:])) * (1.0 / 8192)


def _tagged_matrix(colour: DataNode, y_scale: DataNode, c_scale: DataNode) -> DataNode:  # [3, 3]
    # DALI's RGB -> the tagged matrix's RGB
    import nvidia.dali.types as types

    # FFmpeg's matrix (coefficients / 8192) @ diag(y_scale, c_scale, c_scale) @ DALI's inverse, term by term
    terms = []
    for row, col, (i, j) in _MATRIX:
        block = _mask((3, 3), row, col, 1.0 / 8192) @ DALI_RGB_TO_YUV
        terms.append(types.Constant(block.astype(np.float32)) * (colour[i, j] * (y_scale if col == 0 else c_scale)))
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def video_pipeline(device: str = "cpu", image_size: int = 384, batch_size: int = 1, num_threads: int = 2,
                   device_id: int | None = None):  # -> nvidia.dali.Pipeline
    """Decode the given frame numbers of each encoded video (a batch: one piece a sample), convert to FFmpeg's RGB
    (`ffmpeg_rgb`, the "COLOUR" input), squash to S x S (cubic, antialiased) in uint8, layout FCHW uint8 (the
    frames PyAV's decoder gives, within `PIXEL_BOUNDS`; normalised where the model runs).
    device: "cpu" or "mixed" (NVDEC + GPU conversion/resize); on "mixed" the batch's samples decode at once on
    `num_threads` NVDEC sessions."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    if device not in ("cpu", "mixed"):
        raise ValueError(f"device must be 'cpu' or 'mixed', got {device!r}")
    if device_id is None:
        device_id = 0 if device == "mixed" else None

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=1)
    def pipe():  # -> DataNodes
        encoded = fn.external_source(name="VIDEO", dtype=types.UINT8, ndim=1, device="cpu")
        frames = fn.external_source(name="FRAMES", dtype=types.INT32, ndim=1, device="cpu")
        colour = fn.external_source(name="COLOUR", dtype=types.FLOAT, ndim=2, device="cpu")  # [3, 3]
        video = fn.decoders.video(encoded, frames=frames, pad_mode="edge", device=device)  # F,H,W,C uint8
        video = fn.resize(ffmpeg_rgb(video, colour), size=[image_size, image_size], mode="stretch",
                          interp_type=types.INTERP_CUBIC, antialias=True)  # uint8 in, uint8 out (rounded)
        return fn.transpose(video, perm=[0, 3, 1, 2], output_layout="FCHW")

    return pipe()


def full_size_rgb(data: bytes, frame_numbers: list[int], colour: YuvSignal | None,
                  device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Diagnostics (tests, benchmarks, the GPU check): the given frames at full size, as DALI's decoder outputs them
    and after `ffmpeg_rgb`, both uint8 [F, H, W, 3] on the host. device: "cpu" or "mixed"."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def(batch_size=1, num_threads=2, device_id=0 if device == "mixed" else None, prefetch_queue_depth=1)
    def pipe():  # -> DataNodes
        encoded = fn.external_source(name="VIDEO", dtype=types.UINT8, ndim=1, device="cpu")
        col = fn.external_source(name="COLOUR", dtype=types.FLOAT, ndim=2, device="cpu")
        video = fn.decoders.video(encoded, frames=np.asarray(frame_numbers, np.int32).tolist(), device=device)
        return video, ffmpeg_rgb(video, col)

    p = pipe()
    p.build()
    p.feed_input("VIDEO", [np.frombuffer(data, dtype=np.uint8)])
    p.feed_input("COLOUR", [colour_input(colour)])
    raw, rgb = p.run()
    if device == "mixed":
        raw, rgb = raw.as_cpu(), rgb.as_cpu()
    return np.asarray(raw.as_tensor())[0], np.asarray(rgb.as_tensor())[0]


def max_frames(size_wh: tuple[int, int]) -> int:
    """Sampled frames of a width x height video one pipeline run may hold (RUN_BYTES of working set)."""
    w, h = size_wh
    return max(1, RUN_BYTES // max(1, w * h * WORK_BYTES_PER_PIXEL))


class DaliSession(Session):
    """One DALI pipeline of a decode pool, built in its thread on first use (one per frame size). `device`: "cpu"
    (DALI's CPU decoder) or "mixed" (NVDEC on GPU `device_id`, the frames copied out on the session's own CUDA
    stream). `batch` > 1: the pipeline is fed that many pieces at once, which DALI's mixed decoder decodes on as many
    NVDEC sessions (its own threads) while one pool thread feeds them."""

    def __init__(self, device: str = "mixed", device_id: int = 0, number: int = 0, batch: int = 1) -> None:
        if device not in ("cpu", "mixed"):
            raise ValueError(f"device must be 'cpu' or 'mixed', got {device!r}")
        self.dali_device, self.device_id, self.batch = device, device_id, batch
        self.name = f"dali-{'gpu' if device == 'mixed' else 'cpu'}:{number}" + (f"x{batch}" if batch > 1 else "")
        self.device = torch.device("cuda", device_id) if device == "mixed" else None
        self._pipes: dict[int, Pipeline] = {}
        self._stream: torch.cuda.Stream | None = None

    def max_frames(self, video: Video) -> int:
        return max_frames(video.size_wh)

    def _pipeline(self, image_size: int) -> Pipeline:
        if image_size not in self._pipes:
            p = video_pipeline(device=self.dali_device, image_size=image_size, batch_size=self.batch,
                               num_threads=max(2, self.batch),
                               device_id=self.device_id if self.dali_device == "mixed" else None)
            p.build()
            self._pipes[image_size] = p
        return self._pipes[image_size]

    def run(self, work: list[Work]) -> None:
        with torch.cuda.device(self.device) if self.device is not None else contextlib.nullcontext():
            if self.device is not None and self._stream is None:
                self._stream = torch.cuda.Stream(self.device)
            pipe = self._pipeline(work[0].job.video.image_size)
            pieces = [cut(w.job.video.data, w.job.video.index, w.plan, w.job.video.frame_numbers) for w in work]
            wanted = [np.unique(np.asarray(p.frames, np.int32)) for p in pieces]  # DALI decodes each frame once
            pipe.feed_input("VIDEO", [np.frombuffer(p.data, dtype=np.uint8) for p in pieces])
            pipe.feed_input("FRAMES", wanted)
            pipe.feed_input("COLOUR", [colour_input(_sized(w.job.video)) for w in work])
            try:
                (result,) = pipe.run()
            except RuntimeError as e:  # DALI raises RuntimeError for every pipeline failure: not a codec verdict
                self._pipes.pop(work[0].job.video.image_size, None)  # a failed pipeline is no longer valid
                raise VideoDecodeError(f"DALI ({self.dali_device}) failed: {failure_reason(e)}") from None
            for k, (w, p, frames) in enumerate(zip(work, pieces, wanted, strict=True)):
                rows = np.searchsorted(frames, np.asarray(p.frames, np.int32))  # each sampled frame's row
                w.job.put(w.plan, self._rows(result[k], len(frames), w.job.video.image_size, rows), self._stream)

    def _rows(self, frames: object, n: int, size: int, rows: np.ndarray) -> torch.Tensor | np.ndarray:
        """One sample's frames ([n, 3, S, S] uint8) in the piece's order: on the host (the CPU decoder), or copied
        device to device on the session's stream (DALI may reuse its output at the next run: `Job.put` waits for the
        copy before this session runs again)."""
        shape = tuple(frames.shape())
        if shape != (n, 3, size, size):
            raise VideoDecodeError(f"DALI returned frames of shape {shape}, expected {(n, 3, size, size)}")
        if self.device is None:
            return np.asarray(frames)[rows]
        from nvidia.dali.plugin.pytorch import feed_ndarray  # optional dependency; device to device, no host trip

        with torch.cuda.stream(self._stream):  # made, filled, read and freed on the session's stream
            out = torch.empty((n, 3, size, size), dtype=torch.uint8, device=self.device)
            feed_ndarray(frames, out, cuda_stream=self._stream)
            return out[torch.from_numpy(rows).to(self.device, non_blocking=True)]

    def close(self) -> None:
        self._pipes.clear()


def _sized(video: Video) -> YuvSignal:
    """The video's colour signal with its frame size (DALI's chroma steps need it)."""
    import dataclasses

    w, h = video.size_wh
    return video.colour if video.colour.width else dataclasses.replace(video.colour, width=w, height=h)


def colour_input(signal: YuvSignal | None) -> np.ndarray:
    """The pipeline's "COLOUR" input for a video whose first frame FFmpeg reads as `signal`
    (`videoitg.decode.colour.dali_colour_params`; None: an untagged limited-range 4:2:0 video)."""
    return dali_colour_params(signal)


# Lines of a DALI pipeline error that frame the reason rather than state it
_FRAME_LINES = ("Critical error in pipeline", "Current pipeline object is no longer valid", "C++ context:")


def failure_reason(error: BaseException) -> str:
    """What a DALI pipeline error says went wrong, on one line: the text after the operator's traceback
    ("encountered:") where DALI gives one, without the lines that frame it."""
    text = str(error)
    if "encountered:" in text:
        text = text.split("encountered:", 1)[1]
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(_FRAME_LINES)]
    return " ".join(kept)[:300] or type(error).__name__


