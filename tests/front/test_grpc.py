"""The front's gRPC port (grpc.py, grpc_calls.py) in this process in front of a grpcio stand-in for tritonserver:
a stop, the held-bytes budget, messages split anywhere, calls refused, displaced or timed out."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

grpc = pytest.importorskip("grpc", reason="the serve extra is not installed")

from benchmarks.serving.h2client import H2Client, prefix  # noqa: E402
from tests.support.front import LIVE, grpc_front, never, outcome, raw_frames, without_gc  # noqa: E402
from tests.support.server import quickest_async, settled  # noqa: E402
from videoitg.contract.protocol import TOP  # noqa: E402
from videoitg.front import bounds, config  # noqa: E402
from videoitg.front import grpc as grpc_port  # noqa: E402
from videoitg.front.grpc_policy import SERVICE  # noqa: E402


def test_a_stop_takes_the_calls_a_client_sent_before_it_read_the_goaway(monkeypatch: pytest.MonkeyPatch) -> None:
    """At a stop, a client may have sent a call before it read the GOAWAY (a grpcio client then fails the call with
    "Stream removed"). The first GOAWAY names the largest stream id and comes with a PING, so such a call is still
    taken and answered; the client's answer to the PING brings the GOAWAY naming the last call taken."""
    import h2.config
    import h2.connection
    from hpack import Decoder
    from hyperframe.frame import GoAwayFrame, HeadersFrame, PingFrame

    monkeypatch.setattr(grpc_port, "DRAIN_S", 10.0)  # far beyond the exchange, however busy the machine

    async def run() -> tuple[list[int], list[tuple[int, dict[str, str]]], float]:
        async with grpc_front() as (target, _, port):
            host, p = target.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(p))
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            writer.write(client.data_to_send())
            sid = client.get_next_available_stream_id()
            client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", LIVE),
                                      ("content-type", "application/grpc"), ("te", "trailers")])
            client.send_data(sid, prefix(0), end_stream=True)
            call = client.data_to_send()  # made before the stop, written after its first GOAWAY is read
            t0 = time.monotonic()
            stop = asyncio.ensure_future(port.stop(5.0))
            goaways: list[int] = []
            headers: list[tuple[int, dict[str, str]]] = []
            decoder = Decoder()
            async for frame in raw_frames(reader):
                if isinstance(frame, GoAwayFrame):
                    goaways.append(frame.last_stream_id)
                elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                    writer.write(call + PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]).serialize())
                elif isinstance(frame, HeadersFrame):
                    headers.append((frame.stream_id, {k.decode(): v.decode() for k, v in decoder.decode(frame.data,
                                                                                                         raw=True)}))
            await asyncio.wait_for(stop, 10)  # the frames end when the stop closes the connection
            writer.close()
            return goaways, headers, time.monotonic() - t0

    goaways, headers, took = asyncio.run(run())
    assert goaways == [2**31 - 1, 1], goaways
    assert [sid for sid, _ in headers] == [1, 1] and headers[1][1].get("grpc-status") == "0", headers
    assert took < grpc_port.DRAIN_S / 2, took  # the PING's answer ended the wait for calls sent before the GOAWAY


def test_a_stop_answers_or_refuses_every_call_whatever_is_in_flight() -> None:
    """Seeded runs of grpcio clients calling at random moments while tritonserver takes up to 0.3 s, a stop (2 s of
    grace) coming among them: every call is answered (OK) or refused as retryable (UNAVAILABLE), none is lost in
    between ("Stream removed", CANCELLED, INTERNAL), and nothing stays held or counted as being answered."""
    import random

    grpc = pytest.importorskip("grpc")

    async def delayed(message: bytes, context: Any) -> bytes:
        await asyncio.sleep(random.Random(message).choice((0, 0.01, 0.1, 0.3)))
        return b""

    async def run(seed: int) -> tuple[list[str], int, int]:
        rng = random.Random(seed)
        async with grpc_front({"ServerLive": delayed}) as (target, _, port):
            channels = [grpc.aio.insecure_channel(target) for _ in range(2)]
            calls = [c.unary_unary(LIVE) for c in channels]
            for c in calls:
                await c(b"")  # connected before the run
            outcomes, stop = [], None
            for _ in range(rng.randint(10, 40)):
                if stop is None and rng.random() < 0.15:
                    stop = asyncio.ensure_future(port.stop(2.0))
                message = b"%d" % rng.randrange(1 << 30)
                outcomes.append(asyncio.ensure_future(outcome(rng.choice(calls)(message), 10)))
                await asyncio.sleep(rng.choice((0, 0, 0.005, 0.05)))
            if stop is None:
                stop = asyncio.ensure_future(port.stop(2.0))
            await asyncio.wait_for(stop, 10)
            got = list(await asyncio.gather(*outcomes))
            for c in channels:
                await c.close()
            return got, port.budget.held, port.busy

    for seed in range(4):
        got, held, busy = asyncio.run(run(seed))
        lost = [o for o in got if o != "OK" and not o.startswith("UNAVAILABLE")]
        assert not lost and held == 0 and busy == 0, (seed, lost[:5], held, busy)


def test_a_refused_grpc_message_is_not_kept_after_its_answer() -> None:
    """An 8 MiB ModelInfer refused by tritonserver (here a stand-in that refuses every one), and one refused by the
    front's own checks: once each is answered, the front holds neither message. The abort's traceback held the
    handler's frame, and so the message, until a garbage collection."""
    grpc = pytest.importorskip("grpc")
    from tritonclient.grpc import service_pb2

    size = 8 << 20

    def request(shape: list[int]) -> bytes:
        req = service_pb2.ModelInferRequest(model_name=TOP)
        req.inputs.add(name="VIDEO", datatype="BYTES", shape=shape)
        req.raw_input_contents.append(b"\0" * size)
        return req.SerializeToString()

    async def refuse(raw: bytes, context: Any) -> bytes:
        del raw  # what the front must do too: the abort's traceback holds this frame
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "NotAVideoError: not a video")

    async def run() -> tuple[list[str], int]:
        answers = []
        async with grpc_front({"ModelInfer": refuse}, max_request_bytes=64 << 20) as (target, _, _), \
                grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
            call = channel.unary_unary(f"/{SERVICE}/ModelInfer")
            base = tracemalloc.get_traced_memory()[0]
            for shape in ([1, 1], [1, -1]):  # refused by the stand-in; by the front (a negative dimension)
                message = request(shape)
                try:
                    await call(message, timeout=10)
                except grpc.aio.AioRpcError as e:
                    answers.append(e.details())
                    e.__traceback__ = None  # the client's own call keeps no message either
                del message
            held = tracemalloc.get_traced_memory()[0] - base
        return answers, held

    answers, held = without_gc(run())
    assert "NotAVideoError" in answers[0] and "negative dimension" in answers[1], answers
    assert held < size // 2, f"{held >> 20} MiB still held after both answers"


def test_a_message_split_anywhere_across_data_frames_is_passed_on_byte_for_byte() -> None:
    """A ModelInfer whose prefix and message arrive in DATA frames of 1, 2 and 4 bytes and then larger ones reaches
    tritonserver unchanged; one with a byte past its length, in the frame that completes it, is refused."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=TOP)
    req.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1])
    req.raw_input_contents.append(hashlib.sha256(b"video").digest() * 4096)  # 128 KiB
    raw = req.SerializeToString()
    got: list[bytes] = []

    async def infer(message: bytes, context: Any) -> bytes:
        got.append(message)
        return service_pb2.ModelInferResponse(model_name=TOP).SerializeToString()

    async def run() -> tuple[tuple[str, str], tuple[str, str]]:
        async with grpc_front({"ModelInfer": infer}, max_request_bytes=1 << 20) as (target, _, _):
            client = await H2Client().connect(target)
            answers = []
            for extra in (b"", b"x"):
                sid, whole = client.open(), prefix(len(raw)) + raw + extra
                cuts = [0, 1, 3, 7, 50_000, len(whole)]
                for a, b in itertools.pairwise(cuts):
                    await client.send(sid, whole[a:b], end=b == len(whole))
                answers.append(await client.status(sid))
            await client.close()
            return answers[0], answers[1]

    whole, over = asyncio.run(run())
    assert whole == ("0", "") and got == [raw], (whole, [len(g) for g in got])
    assert over[0] == "3" and "exactly one request message" in over[1], over


def test_grpc_message_bytes_are_held_within_the_front_budget_and_released() -> None:
    """Streams that declare large messages, send part and wait: a message's buffer is taken from the front's budget
    (shared with HTTP) before it grows, to at most twice what arrived; a stream whose buffer does not fit is refused
    (RESOURCE_EXHAUSTED, `overloaded`), and what was held goes back when the client goes. grpcio's own server held
    every partial message whole, with no bound."""
    sent = 200_000

    async def run() -> tuple[list[int], list[tuple[str, str]], tuple[str, str], int, config.FrontCounters]:
        async with grpc_front(max_request_bytes=1 << 20, held_bytes=1 << 20) as (target, counters, port):
            client = await H2Client().connect(target)
            held, sids = [0], []
            while len(sids) < 8 and "grpc-status" not in client.trailers.get(sids[-1] if sids else 0, {}):
                sids.append(client.open())
                await client.send(sids[-1], prefix(1000_000) + b"v" * sent)
                await settled(lambda: port.budget.held - held[-1] >= sent  # room for all it sent, or refused
                              or "grpc-status" in client.trailers.get(sids[-1], {}), 10)
                held.append(port.budget.held)
            answers = [await client.status(sid, 0.2) for sid in sids]
            own = await H2Client().connect(target)  # an ordinary call still fits beside those held
            live = own.open("ServerLive")
            await own.send(live, prefix(0), end=True)
            answered = await own.status(live)
            await client.close()
            await own.close()
            await asyncio.sleep(0.3)
            return held, answers, answered, port.budget.held, counters

    held, answers, answered, after, counters = asyncio.run(run())
    kept = len(answers) - 1  # every stream but the last is held
    assert kept >= 2 and answers[:kept] == [("open", "")] * kept, answers
    assert answers[-1][0] == "8" and "too many request bodies" in answers[-1][1], answers
    assert all(sent <= b - a <= 2 * sent for a, b in itertools.pairwise(held[:kept + 1])), held
    assert max(held) <= 1 << 20, held
    assert answered == ("0", ""), answered
    assert after == 0 and counters.rejected == {("grpc", "overloaded"): 1}, (after, counters.rejected)


def test_a_whole_grpc_message_is_held_at_its_exact_size_until_answered() -> None:
    """A message that arrived in several DATA frames is handed over as its buffer, which is then exactly the message:
    its size is what stays taken from the budget while it is answered, and nothing once it is."""
    body = hashlib.sha256(b"message").digest() * (450_000 // 32)  # 450 KB: 7 DATA frames of at most 64 KiB
    arrived, answer = asyncio.Event(), asyncio.Event()
    got: list[bytes] = []

    async def slow(message: bytes, context: Any) -> bytes:
        got.append(message)
        arrived.set()
        await answer.wait()
        return b""

    async def run() -> tuple[int, tuple[str, str], int]:
        async with grpc_front({"ServerLive": slow}, max_request_bytes=1 << 20) as (target, _, port):
            client = await H2Client().connect(target)
            sid = client.open("ServerLive")
            await client.send(sid, prefix(len(body)) + body, end=True)
            await asyncio.wait_for(arrived.wait(), 10)
            while_answered = port.budget.held
            answer.set()
            answered = await client.status(sid)
            await client.close()
            await settled(lambda: port.budget.held == 0, 2)
            return while_answered, answered, port.budget.held

    while_answered, answered, after = asyncio.run(run())
    assert while_answered == len(body), while_answered
    assert answered == ("0", "") and got == [body], (answered, [len(g) for g in got])
    assert after == 0, after


def test_a_call_cancelled_in_the_bytes_that_complete_it_is_not_counted_as_answered() -> None:
    """A whole message and the call's RST_STREAM in one write: the front starts the call's answer and cancels it
    before it has run. Counted as being answered for ever, such calls would soon have every later call refused
    `overloaded` (at most `max_connections` are answered at once)."""

    async def run() -> tuple[int, tuple[str, str], dict]:
        async with grpc_front(max_connections=2) as (target, counters, port):
            client = await H2Client().connect(target)
            for _ in range(2):
                sid = client.open("ServerLive")
                client.h2.send_data(sid, prefix(0), end_stream=True)
                client.h2.reset_stream(sid)
                client.flush()
            await settled(lambda: port.busy == 0 and any(c.h2.highest_inbound_stream_id == sid
                                                         for c in port.connections), 2)
            busy = port.busy
            sid = client.open("ServerLive")
            await client.send(sid, prefix(0), end=True)
            answered = await client.status(sid)
            await client.close()
            return busy, answered, dict(counters.rejected)

    busy, answered, rejected = asyncio.run(run())
    assert busy == 0 and answered == ("0", ""), (busy, answered, rejected)


def test_the_grpc_budget_is_what_open_calls_hold_whatever_clients_send() -> None:
    """Seeded random clients (calls opened on three connections, some with a short grpc-timeout; messages sent
    whole, in part, past their declared length or compressed; calls cancelled, connections dropped, PINGs and
    window settings; upstream answers delayed or failing): between any two steps the budget holds exactly the
    buffers of the calls still open, never more than its limit, and only open calls wait for their message; once
    every client is gone nothing is held and no call is counted as being answered. A buffer kept after its call
    ended, or released twice, breaks the first equality."""
    import random

    import h2.exceptions
    import h2.settings

    grpc = pytest.importorskip("grpc")

    async def live(message: bytes, context: Any) -> bytes:
        rng = random.Random(len(message))
        await asyncio.sleep(rng.choice((0, 0, 0.002, 0.02)))
        if rng.random() < 0.2:  # tritonserver's own error, its text long
            await context.abort(rng.choice(list(grpc.StatusCode)[1:]), "e" * 5000)
        return message[:64] if rng.random() < 0.8 else b"a" * 200_000  # an answer of several frames

    def held_by_calls(port: Any) -> int:
        return sum(call.taken for conn in port.connections for call in conn.calls.values())

    def waiting_not_open(port: Any) -> int:
        open_calls = {id(call) for conn in port.connections for call in conn.calls.values()}
        return sum(id(call) not in open_calls for call in port.waiting.calls)

    async def step(rng: random.Random, clients: list[H2Client], target: str) -> None:
        i = rng.randrange(len(clients))
        client, sids = clients[i], [s for s in clients[i].h2.streams if s % 2]
        action = rng.choice(("open", "open", "send", "send", "send", "reset", "drop", "pause", "ping", "settings"))
        try:
            if action == "ping":
                client.h2.ping(rng.randbytes(8))
                client.flush()
            elif action == "settings":
                window = rng.choice((1, 65535, 1 << 20))
                client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
                client.flush()
            elif action == "open" or not sids:
                timeout = {"grpc-timeout": rng.choice(("1m", "10m"))} if rng.random() < 0.2 else {}
                sid = client.open(rng.choice(("ServerLive", "ServerLive", "ModelInfer", "ServerMetadata")), **timeout)
                declared = rng.choice((0, 100, 40_000, 300_000, 900_000))
                body = min(declared, rng.choice((0, 50, declared, declared)))
                await client.send(sid, prefix(declared, compressed=rng.random() < 0.05) + b"m" * body,
                                  end=rng.random() < (0.8 if body == declared else 0.2))
            elif action == "send":
                await client.send(rng.choice(sids), b"n" * rng.choice((1, 1000, 70_000, 300_000)),
                                  end=rng.random() < 0.4)
            elif action == "reset":
                client.h2.reset_stream(rng.choice(sids))
                client.flush()
            elif action == "drop":
                await client.close()
                clients[i] = await H2Client(acknowledge=rng.random() < 0.7).connect(target)
            else:
                await asyncio.sleep(rng.choice((0.001, 0.01, 0.05)))
        except (h2.exceptions.ProtocolError, OSError, asyncio.TimeoutError):
            pass  # the front ended the stream or the connection first: what clients see, not a failure

    async def run() -> tuple[list[str], int, int, int]:
        limit = 1_500_000  # under two of the largest messages: some calls are refused `overloaded`
        faults: list[str] = []
        async with grpc_front({"ServerLive": live, "ServerMetadata": live}, max_request_bytes=1 << 20,
                              held_bytes=limit) as (target, _, port):
            for seed in range(24):
                rng = random.Random(seed)
                clients = [await H2Client(acknowledge=rng.random() < 0.7).connect(target) for _ in range(3)]
                for n in range(30):
                    await step(rng, clients, target)
                    await asyncio.sleep(0)
                    if port.budget.held != held_by_calls(port) or port.budget.held > limit or waiting_not_open(port):
                        faults.append(f"seed {seed} step {n}: budget {port.budget.held}, calls hold "
                                      f"{held_by_calls(port)}, limit {limit}; {waiting_not_open(port)} calls "
                                      "waiting that are not open")
                for client in clients:
                    await client.close()
            gone = await settled(lambda: not port.connections and port.busy == 0, 10)
            return faults, port.budget.held, len(port.waiting.calls), int(not gone)

    faults, after, waiting, open_left = asyncio.run(run())
    assert not faults, faults[:5]
    assert (after, waiting, open_left) == (0, 0, 0), (after, waiting, open_left)


def test_a_grpc_message_that_stops_arriving_or_trickles_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that sends its headers and then nothing, or part of its message and then nothing, ends once no byte
    came for `body_idle_s`; one that keeps sending a byte at a time, declaring a 64 MiB message, once it falls
    behind MIN_BODY_RATE by more than BODY_GRACE_S (DEADLINE_EXCEEDED, counted `body_timeout`), not 64 s on. A
    client calling all along on its own connection is answered every time."""
    # The trickle sends a byte every ~50 ms: a pause of a busy machine under the idle bound (0.6 s, under the grace
    # so the silent calls end as stalled) does not end it as stalled instead
    monkeypatch.setattr(bounds, "BODY_GRACE_S", 1.5)

    async def run() -> tuple[list[tuple[str, str]], list[str], config.FrontCounters]:
        grpc = pytest.importorskip("grpc")
        async with grpc_front(body_idle_s=0.6, max_request_bytes=64 << 20) as (target, counters, _):
            client = await H2Client().connect(target)
            silent, part, trickle = client.open(), client.open(), client.open()
            await client.send(part, prefix(100) + b"v" * 10)
            await client.send(trickle, prefix(64 << 20))
            t0, answers = time.monotonic(), []
            async with grpc.aio.insecure_channel(target) as channel:
                call = channel.unary_unary(LIVE)
                while time.monotonic() - t0 < 3.0:
                    answers.append(await outcome(call(b"")))
                    if "grpc-status" not in client.trailers.get(trickle, {}):
                        await client.send(trickle, b"v")
                    await asyncio.sleep(0.05)
            ended = [await client.status(sid, 0.1) for sid in (silent, part, trickle)]
            await client.close()
            return ended, answers, counters

    ended, answers, counters = asyncio.run(run())
    assert [e[0] for e in ended] == ["4"] * 3, ended
    assert "stalled" in ended[0][1] and "stalled" in ended[1][1] and "slower than" in ended[2][1], ended
    assert len(answers) > 5 and set(answers) == {"OK"}, answers
    assert counters.rejected == {("grpc", "body_timeout"): 3}, counters.rejected


def test_grpc_calls_refused_by_their_headers_or_message_prefix() -> None:
    """Refused before the message's bytes are kept: a length over the bound (at its prefix), a compressed message
    or encoding, a method the front does not serve, a call that is not gRPC; a connection past the port's cap, with
    a call open on every other one, is closed at once. Each counted by its reason."""
    async def run() -> tuple[dict[str, tuple[str, str]], bytes, config.FrontCounters]:
        grpc = pytest.importorskip("grpc")
        async with grpc_front(max_request_bytes=1 << 20, max_connections=2) as (target, counters, port):
            client = await H2Client().connect(target)
            answers = {}
            big = client.open()
            await client.send(big, prefix(2 << 20) + b"v" * 100)
            answers["too large"] = await client.status(big)
            flag = client.open()
            await client.send(flag, prefix(4, compressed=True) + b"abcd", end=True)
            answers["compressed flag"] = await client.status(flag)
            gzipped = client.open("ServerLive", **{"grpc-encoding": "gzip"})
            answers["grpc-encoding"] = await client.status(gzipped)
            admin = client.open("RepositoryModelLoad")
            answers["model load"] = await client.status(admin)
            async with grpc.aio.insecure_channel(target) as channel:  # the second connection
                answers["live"] = ("0", "") if await outcome(channel.unary_unary(LIVE)(b"")) == "OK" else ("?", "")
                stall = channel.stream_unary(LIVE)(never())  # a call open on each connection: neither is idle
                pending = client.open()
                await client.send(pending, prefix(10))
                assert await settled(lambda: len(port.waiting.calls) == 2, 10), port.waiting.calls  # both open
                third_reader, _ = await asyncio.open_connection(*target.rsplit(":", 1))
                third = await asyncio.wait_for(third_reader.read(), 5)
                stall.cancel()
            await client.close()
            return answers, third, counters

    answers, third, counters = asyncio.run(run())
    assert answers["too large"][0] == "8" and "over the server's limit of 1048576" in answers["too large"][1], answers
    assert answers["compressed flag"][0] == answers["grpc-encoding"][0] == "12", answers
    assert answers["model load"][0] == "12" and "Method not found" in answers["model load"][1], answers
    assert answers["live"] == ("0", "") and third == b"", (answers, third)
    assert counters.rejected == {("grpc", "too_large"): 1, ("grpc", "encoding"): 2, ("grpc", "route"): 1,
                                 ("grpc", "connections"): 1}, counters.rejected


def test_a_grpc_call_waiting_for_its_message_is_displaced_by_a_newer_one() -> None:
    """With every waiting place taken by streams that sent their headers and then wait, a new call is answered: the
    stream waiting longest ends (RESOURCE_EXHAUSTED, counted as `stalled`). A call carries exactly one message."""

    grpc = pytest.importorskip("grpc")

    async def run() -> tuple[str, list[str], list[str], config.FrontCounters]:
        async with grpc_front(max_connections=4) as (target, counters, port), \
                grpc.aio.insecure_channel(target) as channel:
            stalls = [channel.stream_unary(LIVE)(never()) for _ in range(4)]
            assert await settled(lambda: len(port.waiting.calls) == 4, 10), port.waiting.calls  # every place taken
            answered = await outcome(channel.unary_unary(LIVE)(b""))
            ended = [await outcome(stall, 0.5) for stall in stalls]

            async def messages(n: int) -> AsyncIterator[bytes]:
                for _ in range(n):
                    yield b""

            counts = [await outcome(channel.stream_unary(LIVE)(messages(n))) for n in (0, 2)]
        return answered, ended, counts, counters

    answered, ended, counts, counters = asyncio.run(run())
    assert answered == "OK", answered
    displaced = [e for e in ended if e.startswith("RESOURCE_EXHAUSTED")]
    assert len(displaced) == 1 and "had not arrived" in displaced[0] and ended.count("open") == 3, ended
    assert all("exactly one request message" in c for c in counts), counts
    # a cancel is a RST_STREAM, not counted; a call that ends its side with no message (or two) is
    assert counters.rejected == {("grpc", "stalled"): 1, ("grpc", "structure"): 2}, counters.rejected


def test_at_the_cap_the_oldest_connection_without_a_call_is_told_goaway_for_a_new_one() -> None:
    """With the gRPC port's cap reached, a new connection is taken by ending the connection with no open call idle
    longest (GOAWAY, then closed); one whose call's message is still arriving is never the one ended."""

    async def run() -> tuple[int | None, tuple[str, str], str, tuple[str, str], str]:
        async with grpc_front(max_connections=2) as (target, counters, _):
            idle = await H2Client().connect(target)
            sid = idle.open("ServerLive")
            await idle.send(sid, prefix(0), end=True)
            assert await idle.status(sid) == ("0", "")
            arriving = await H2Client().connect(target)
            waiting = arriving.open("ServerLive")
            await arriving.send(waiting, prefix(100) + b"v" * 10)
            async with grpc.aio.insecure_channel(target) as channel:
                answered = await outcome(channel.unary_unary(LIVE)(b""))
            await asyncio.wait_for(idle.task, 5)  # the front closed it
            await arriving.send(waiting, b"v" * 90, end=True)
            finished = await arriving.status(waiting)
            await idle.close()
            await arriving.close()
            return idle.goaway, await idle.status(sid), answered, finished, counters.text()

    goaway, before, answered, finished, text = asyncio.run(run())
    assert goaway == 0 and before == ("0", ""), (goaway, before)  # NO_ERROR: a graceful end
    assert answered == "OK" and finished == ("0", ""), (answered, finished)
    assert 'videoitg_front_idle_closed{protocol="grpc"} 1' in text, text


def test_health_calls_are_answered_within_a_second_when_tritonserver_does_not_answer() -> None:
    """ServerLive, ServerReady and ModelReady toward a tritonserver that answers nothing: UNAVAILABLE within 1 s
    (metadata keeps its 10 s bound)."""

    async def never(raw: bytes, context: Any) -> bytes:
        await asyncio.sleep(60)
        return b""

    async def run() -> list[tuple[str, float]]:
        methods = {m: never for m in ("ServerLive", "ServerReady", "ModelReady")}
        async with grpc_front(methods, pass_timeout_s=10.0) as (target, _, _), \
                grpc.aio.insecure_channel(target) as channel:
            await channel.channel_ready()  # the bound is the call's, not the connection's
            took = []
            for method in methods:
                got, s = await quickest_async(
                    lambda method=method: outcome(channel.unary_unary(f"/{SERVICE}/{method}")(b""), 10), 1.0)
                took.append((got.split(":")[0], round(s, 2)))
            return took

    took = asyncio.run(run())
    assert all(code == "UNAVAILABLE" and s < 1.0 for code, s in took), took


def test_the_inference_key_goes_with_every_modelinfer_passed_on_and_a_clients_never_does() -> None:
    """The gRPC port adds the key to each ModelInfer it passes on, as metadata, and passes on no client's."""
    from tritonclient.grpc import service_pb2

    seen: list[dict[str, str]] = []

    async def record(raw: bytes, context: Any) -> bytes:
        seen.append(dict(context.invocation_metadata()))
        return b""

    request = service_pb2.ModelInferRequest(model_name=TOP)
    request.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(b"\x01\x00\x00\x00v")

    async def run() -> list[str]:
        async with grpc_front({"ModelInfer": record, "ServerLive": record}, infer_key="the-key") as (target, _, _), \
                grpc.aio.insecure_channel(target) as channel:
            mine = (("triton-grpc-protocol-videoitg-infer-key", "mine"),)
            return [await outcome(channel.unary_unary(f"/{SERVICE}/ModelInfer")(request.SerializeToString(),
                                                                                 metadata=mine)),
                    await outcome(channel.unary_unary(LIVE)(b"", metadata=mine))]

    assert asyncio.run(run()) == ["OK", "OK"]
    assert seen[0].get("triton-grpc-protocol-videoitg-infer-key") == "the-key", seen
    assert "triton-grpc-protocol-videoitg-infer-key" not in seen[1], seen


def test_answer_frames_stay_within_http2s_initial_frame_size_whatever_the_client_advertises() -> None:
    """Catches: a 21 KiB answer went out as one DATA frame to a client that had advertised larger frames, and
    grpc-core, which checks a frame against the settings it has seen acknowledged, refused it ("Frame size 21347 is
    larger than max frame size 16384"): every DATA frame the front sends is at most 16,384 bytes."""
    import h2.config
    import h2.connection
    import h2.settings
    from hyperframe.frame import DataFrame, HeadersFrame

    answer = bytes(range(256)) * 160  # 40 KiB

    async def large(message: bytes, context: Any) -> bytes:
        return answer

    async def run() -> list[int]:
        async with grpc_front({"ServerLive": large}) as (target, _, _port):
            host, p = target.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(p))
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            codes = h2.settings.SettingCodes
            client.local_settings = h2.settings.Settings(client=True, initial_values={
                codes.MAX_FRAME_SIZE: 1 << 20, codes.INITIAL_WINDOW_SIZE: 1 << 20})
            client.initiate_connection()
            sid = client.get_next_available_stream_id()
            client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", LIVE),
                                      ("content-type", "application/grpc"), ("te", "trailers")])
            client.send_data(sid, prefix(0), end_stream=True)
            writer.write(client.data_to_send())
            sizes, got = [], b""
            async for frame in raw_frames(reader):
                if isinstance(frame, DataFrame) and frame.stream_id == sid:
                    sizes.append(len(frame.data))
                    got += frame.data
                elif isinstance(frame, HeadersFrame) and "END_STREAM" in frame.flags:
                    break
            writer.close()
            assert got[5:] == answer
            return sizes

    sizes = asyncio.run(run())
    assert sizes and max(sizes) <= 16384, sizes
