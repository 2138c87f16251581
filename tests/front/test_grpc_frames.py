"""The gRPC port's HTTP/2 frames (grpc_frames.py) bounded before h2 reads them: floods, a frame or header block
over its bound, SETTINGS, a client that reads nothing, a DATA frame's repr."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

grpc = pytest.importorskip("grpc", reason="the serve extra is not installed")

from benchmarks.serving.h2client import H2Client, prefix  # noqa: E402
from tests.support.front import LIVE, grpc_front, outcome  # noqa: E402
from tests.support.server import settled  # noqa: E402
from videoitg.front import config, grpc_calls, grpc_frames  # noqa: E402


@pytest.mark.parametrize("flood", ["ping", "reset", "window"])
def test_a_connection_flooding_frames_that_carry_nothing_is_told_to_calm_down(flood: str) -> None:
    """5000 PINGs, WINDOW_UPDATEs, or calls opened and reset at once (a rapid reset), in one write: the front works
    through them a batch of frames per turn of its loop, so a client calling meanwhile is answered, then ends the
    flooding connection (GOAWAY ENHANCE_YOUR_CALM, counted `flood`) with nothing of its calls left behind."""

    async def run() -> tuple[int | None, list[str], config.FrontCounters, int, int]:
        grpc = pytest.importorskip("grpc")
        async with grpc_front() as (target, counters, port), grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(LIVE)
            assert await outcome(call(b"")) == "OK"
            client = await H2Client().connect(target)
            for i in range(5000):
                if flood == "ping":
                    client.h2.ping(i.to_bytes(8, "big"))
                elif flood == "window":
                    client.h2.increment_flow_control_window(1)
                else:
                    client.h2.reset_stream(client.open("ServerLive"))
            client.flush()
            answers = [await outcome(call(b""), 5) for _ in range(20)]
            await asyncio.wait_for(client.task, 10)  # the front closes the connection
            return client.goaway, answers, counters, len(port.waiting.calls), port.budget.held

    goaway, answers, counters, waiting, held = asyncio.run(run())
    assert goaway == 11 and set(answers) == {"OK"}, (goaway, answers)  # 11: ENHANCE_YOUR_CALM
    assert counters.rejected == {("grpc", "flood"): 1} and waiting == 0 and held == 0, counters.rejected
    assert grpc_frames.FLOOD_FRAMES < 5000


def test_a_data_frames_repr_names_its_length_without_reading_it() -> None:
    """h2 builds repr(frame) of every frame it receives; once the gRPC port has started, a DATA frame's is cheap
    (hyperframe's serialized and hexlified the whole payload)."""
    from hyperframe.frame import DataFrame

    async def run() -> str:
        async with grpc_front():
            return repr(DataFrame(1, data=b"v" * 65536))

    assert grpc_frames.DataFrame is DataFrame and asyncio.run(run()).endswith("data=<65536 bytes>")


def test_a_frame_over_the_size_bound_ends_the_connection_from_its_header() -> None:
    """A frame header announcing 16 MiB (the front allows 64 KiB): refused at once (GOAWAY FRAME_SIZE_ERROR, counted
    `syntax`), not waited for."""
    async def run() -> tuple[int | None, float, config.FrontCounters]:
        async with grpc_front() as (target, counters, _):
            client = await H2Client().connect(target)
            t0 = time.monotonic()
            client.writer.write(((16 << 20) - 1).to_bytes(3, "big") + b"\0\0\0\0\0\1" + b"v" * 1000)  # DATA, stream 1
            await asyncio.wait_for(client.task, 5)
            return client.goaway, time.monotonic() - t0, counters

    goaway, took, counters = asyncio.run(run())
    assert goaway == 6 and took < 2 and counters.rejected == {("grpc", "syntax"): 1}, (goaway, took, counters.rejected)


def test_a_header_block_is_bounded_before_it_is_decoded() -> None:
    """A HEADERS frame and CONTINUATION frames of 16 KiB each, never ending the block (h2 gathers up to 64 frames
    of the largest size before refusing): the front ends the connection once the block passes twice the metadata
    bound (GOAWAY ENHANCE_YOUR_CALM, counted `header_size`)."""

    def frame(kind: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([kind, 0]) + (1).to_bytes(4, "big") + payload

    async def run() -> tuple[int | None, config.FrontCounters]:
        async with grpc_front() as (target, counters, _):
            client = await H2Client().connect(target)
            block = b"\x00" * (16 << 10)
            client.writer.write(frame(0x1, block) + b"".join(frame(0x9, block) for _ in range(8)))
            await asyncio.wait_for(client.task, 5)
            return client.goaway, counters

    goaway, counters = asyncio.run(run())
    assert 9 * (16 << 10) > 2 * grpc_frames.MAX_METADATA
    assert goaway == 11 and counters.rejected == {("grpc", "header_size"): 1}, (goaway, counters.rejected)


def test_a_client_that_reads_none_of_its_answers_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls whose answers (4 MiB each) the client never reads: once the front's writes back up for KEEPALIVE_S it
    stops reading the client and then drops the connection (a transport's close waits for its queue to be written:
    it would never end), with nothing of its calls left behind. A client that opens its windows to 0 instead gets
    its call cancelled after KEEPALIVE_S (counted `read_timeout`)."""
    import h2.config
    import h2.connection
    import h2.settings

    monkeypatch.setattr(grpc_calls, "KEEPALIVE_S", 1.0)

    async def big(raw: bytes, context: Any) -> bytes:
        return b"a" * (4 << 20)

    async def run() -> tuple[int, int, int, tuple[str, str], config.FrontCounters]:
        async with grpc_front({"ServerLive": big}) as (target, counters, port):
            c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            c.initiate_connection()
            c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            c.increment_flow_control_window(2**31 - 1 - 65535)
            for _ in range(16):
                sid = c.get_next_available_stream_id()
                c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", LIVE),
                                     ("content-type", "application/grpc")])
                c.send_data(sid, prefix(0), end_stream=True)
            _, writer = await asyncio.open_connection(*target.rsplit(":", 1))
            writer.write(c.data_to_send())  # and never read
            zero = await H2Client().connect(target)
            zero.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            zero.flush()
            sid = zero.open("ServerLive")
            await zero.send(sid, prefix(0), end=True)
            status = await zero.status(sid, 5)
            await settled(lambda: len(port.connections) == 1, 10)
            writer.close()
            await zero.close()
            return len(port.connections), port.busy, port.budget.held, status, counters

    connections, busy, held, status, counters = asyncio.run(run())
    assert connections == 1 and busy == 0 and held == 0, (connections, busy, held)  # only `zero` is left
    # the zero-window call, and those of the 16 whose answers waited out KEEPALIVE_S before their connection went
    assert status[0] == "reset" and set(counters.rejected) == {("grpc", "read_timeout")}, (status, counters.rejected)
    assert 1 <= counters.rejected["grpc", "read_timeout"] <= 17, counters.rejected


def test_settings_frames_beyond_what_a_client_needs_end_the_connection() -> None:
    """h2 keeps every setting id it is sent and walks them all on each SETTINGS frame: one of 1000 settings is
    refused from its length (`flood`)."""
    async def run() -> tuple[int | None, config.FrontCounters]:
        async with grpc_front() as (target, counters, _):
            client = await H2Client().connect(target)
            payload = b"".join((0x100 + i).to_bytes(2, "big") + (1).to_bytes(4, "big") for i in range(1000))
            client.writer.write(len(payload).to_bytes(3, "big") + b"\x04\x00\x00\x00\x00\x00" + payload)
            await asyncio.wait_for(client.task, 5)
            return client.goaway, counters

    goaway, counters = asyncio.run(run())
    assert goaway == 11 and counters.rejected == {("grpc", "flood"): 1}, (goaway, counters.rejected)


def test_a_long_lived_connection_remembers_a_bounded_number_of_closed_calls() -> None:
    """Catches: h2 remembered how each of a connection's last 65,536 calls ended, about 128 bytes each, so every
    long-lived client connection grew the front by up to 8 MiB (768 connections: 6 GiB), and the soak's front grew
    for its whole 30 minutes. A connection now remembers its last CLOSED_STREAMS."""
    batches = 3 * grpc_frames.CLOSED_STREAMS // 128

    async def run() -> list[int]:
        # health_timeout_s: 128 liveness calls at once on a loaded 2-core machine can pass the default 1 s
        async with grpc_front(health_timeout_s=30.0) as (target, _counters, port), \
                grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(LIVE)
            for _ in range(batches):
                assert set(await asyncio.gather(*(outcome(call(b"")) for _ in range(128)))) == {"OK"}
            return [len(conn.h2._closed_streams) for conn in port.connections]  # h2's record of the ended calls

    assert asyncio.run(run()) == [grpc_frames.CLOSED_STREAMS]
