"""PyNvVideoCodec (NVIDIA's NVDEC library for Python, the version in NVC_PIN) as a decode-pool session: each piece's
Matroska bytes (`videoitg.decode.pieces.cut`) are demuxed from memory by PyNvVideoCodec's demuxer and decoded on an
NVDEC session of their own; each sampled frame's NV12 surface is converted on the GPU to the S x S frame PyAV gives
(`videoitg.decode.nv12`: FFmpeg's colour conversion and Pillow's resize in integers, no full-size float frame).

The calls, checked against PyNvVideoCodec 2.2.4 (its wheel's Python sources, samples and bound signatures):
`CreateDemuxer(callable)` (a callback filling the demuxer's bytearray, returning the bytes written, 0 at the end),
`demuxer.GetNvCodecId()`, `CreateDecoder(gpuid=, codec=, cudacontext=0, cudastream=0, usedevicememory=True)`
(0: the device's primary context, torch's, and the default stream), `decoder.Decode(packet)` (a list of decoded
frames, display order, the decoder's default latency; `Decode(PacketData())`, an empty packet, ends the stream and
hands over the frames the decoder still holds), `decoder.WaitOnCUStream(stream)` (the decoder's post-processing
finished before that stream reads), a decoded frame's `__dlpack__` (NV12 on the device: the Y plane, then U and V
interleaved; the decoder reuses its surfaces, so each wanted frame is copied out before the next `Decode`). Not run
on a GPU: the GPU check (`benchmarks/gpu/gpu_decode.py`) times it and compares its frames with
PyAV's; its tests skip where PyNvVideoCodec cannot be imported (it needs a driver).
"""

from __future__ import annotations

import numpy as np
import torch

from videoitg.decode.errors import VideoDecodeError
from videoitg.decode.nv12 import check_signal, nv12_to_frames
from videoitg.decode.pieces import cut
from videoitg.decode.sessions import Session, Video, Work

NVC_PIN = "2.2.4"  # pynvvideocodec in the image (deploy/Dockerfile), the API this module was written for
NVC_CODECS = frozenset({"h264", "hevc", "av1", "vp8", "vp9"})  # 8-bit 4:2:0 of these decode to NV12 on NVDEC
CONVERT_FRAMES = 16  # NV12 frames converted together (each a copy of the decoder's surface until then)


class _Feeder:
    """The bytes of a piece, handed to PyNvVideoCodec's demuxer in the pieces its buffer takes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def __call__(self, buffer: bytearray) -> int:
        n = min(len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


class NvcSession(Session):
    """One NVDEC session of PyNvVideoCodec per piece, on GPU `device_id`; frames converted on the session's own
    CUDA stream."""

    def __init__(self, device_id: int = 0, number: int = 0) -> None:
        self.device_id = device_id
        self.device = torch.device("cuda", device_id)
        self.name = f"nvc-gpu:{number}"
        self._stream: torch.cuda.Stream | None = None

    def run(self, work: list[Work]) -> None:
        import PyNvVideoCodec as nvc  # optional dependency: imported where NVDEC runs

        with torch.cuda.device(self.device):
            if self._stream is None:
                self._stream = torch.cuda.Stream(self.device)
            for w in work:
                self._piece(nvc, w)

    def _piece(self, nvc: object, w: Work) -> None:
        v: Video = w.job.video
        check_signal(v.colour, v.name)
        piece = cut(v.data, v.index, w.plan, v.frame_numbers)
        wanted = sorted(set(piece.frames))
        row = {local: k for k, local in enumerate(wanted)}
        size, (width, height) = v.image_size, v.size_wh
        out = torch.empty((len(wanted), 3, size, size), dtype=torch.uint8, device=self.device)
        batch: list[tuple[int, torch.Tensor]] = []

        def convert() -> None:
            frames = nv12_to_frames([f for _, f in batch], width, height, size, v.colour)
            out[torch.tensor([k for k, _ in batch], device=self.device)] = frames
            batch.clear()

        demuxer = nvc.CreateDemuxer(_Feeder(piece.data))
        decoder = nvc.CreateDecoder(gpuid=self.device_id, codec=demuxer.GetNvCodecId(), cudacontext=0, cudastream=0,
                                    usedevicememory=True)
        shown = 0  # the piece's frames out of the decoder so far (display order: frame `shown` is next)
        with torch.cuda.stream(self._stream):
            def take(frames: list) -> None:
                nonlocal shown
                if frames:  # the decoder's post-processing of these surfaces done before this stream reads them
                    decoder.WaitOnCUStream(self._stream.cuda_stream)
                for frame in frames:
                    if shown in row:
                        batch.append((row[shown], torch.from_dlpack(frame).clone()))  # the surface is reused
                        if len(batch) == CONVERT_FRAMES:
                            convert()
                    shown += 1

            for packet in demuxer:
                v.deadline.check("decoding with PyNvVideoCodec")
                take(decoder.Decode(packet))
                if shown > wanted[-1]:
                    break  # every sampled frame of the piece is out: the rest need not decode
            if shown <= wanted[-1]:  # the frames the decoder still holds: an empty packet is the end of the stream
                take(decoder.Decode(nvc.PacketData()))
            if batch:
                convert()
        if shown <= wanted[-1]:
            raise VideoDecodeError(f"NVDEC gave {shown} frames of the piece's {piece.count or 'unknown count'}; "
                                   f"frame {wanted[-1]} of it was sampled")
        rows = torch.from_numpy(np.searchsorted(np.asarray(wanted), np.asarray(piece.frames))).to(self.device)
        with torch.cuda.stream(self._stream):
            w.job.put(w.plan, out[rows], self._stream)
