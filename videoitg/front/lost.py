"""Requests a model's process took with it: the public inferences in flight toward tritonserver, by model, and the
launcher's notice that a model's instance was unloaded for a repair (its python-backend stub died, or the watchdog
killed it stopped or wedged). Tritonserver 2.51 never answers a request such an instance held, not even once the
model is loaded again, so the front answers each one itself (503 / UNAVAILABLE, `LOST`) instead of leaving its client
to wait for the front's 300 s bound.

The notices come on the front's stdin, a pipe only the launcher writes (`notice`: one line, `lost MODEL`): unlike a
signal, a line names the model (a repository with several public models loses only that model's requests), and
nothing that arrives, at any moment of the front's life, can end the front."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from videoitg.front.tritonserver import Answer, Upstream, UpstreamError

T = TypeVar("T")
LOST = "{model}: the model's process died while this request was in flight; try again"
# tritonserver's words for a served model that cannot take a request at this moment, in the server's own: it is
# unloaded while the launcher loads it again after a fault ("unknown model ... has no available versions": 404 /
# NOT_FOUND, which a client takes as final), its bounded queue is full (a request id and nothing else), or its stub
# died under the request ("Stub process 'videoitg_0_0' is not healthy.": the instance's name, not the model's).
# Only tritonserver's own words about the model asked for: a step's refusal the model passes on names the step.
_AWAY = re.compile(r"(?:\[request id: [^\]]*\] )?(?:Request for unknown model: '(?P<model>[^']*)' has no available "
                   r"versions|(?P<full>Exceeds maximum queue size)|Stub process '(?P<dead>[^']*)_\d+_\d+' is not "
                   r"healthy\.)")
AWAY = "{model}: not loaded at this moment (being loaded again after a fault); try again"
FULL = "{model}: OverloadedError: server busy: its queue of waiting requests is full; retry later"
# tritonserver itself out of reach (it is being started again after a crash or a restart of supervision's): the
# HTTP client's error, or grpcio's own words (never a model's, which start with its name) for a channel that cannot
# connect or lost its connection.
UNREACHABLE = "server unavailable: tritonserver did not answer ({why}); try again"
_NO_CONNECTION = re.compile(r"failed to connect to all addresses|Socket closed|Stream removed|Connection reset|"
                            r"Broken pipe|Connection refused|recvmsg:|GOAWAY received|Endpoint closing")
NOTICE = b"lost "
# The launcher's notices around a restart of tritonserver behind the running front (`InFlight.restarting`).
RESTARTING, RESTARTED = b"tritonserver restarting\n", b"tritonserver ready\n"
MAX_NOTICE = 1024  # bytes of one notice line; a model name is at most 256 characters
_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/[^/]+)?/infer")


class ModelLost(UpstreamError):
    """The request's model lost the instance that held it; the client should send it again."""

    def __init__(self, model: str) -> None:
        super().__init__(LOST.format(model=model))
        self.model = model


def while_away(model: str, text: str) -> str | None:
    """The words for a client (an UNAVAILABLE answer: 503, try again) where tritonserver's error `text` says that
    `model`, one the front serves, cannot take a request at this moment; None where it says something else."""
    m = _AWAY.fullmatch(text.strip())
    if m is None or (m["full"] is None and model not in (m["model"], m["dead"])):
        return None
    return (FULL if m["full"] else LOST if m["dead"] else AWAY).format(model=model)


def unreachable(details: str) -> str | None:
    """The words for a client where grpcio's `details` say tritonserver could not be reached; None otherwise."""
    return UNREACHABLE.format(why=details) if _NO_CONNECTION.match(details) else None


def error_text(body: bytes) -> str:
    """tritonserver's error text in an HTTP error `body` (its JSON `error`), else the body as text."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")


def notice(model: str) -> bytes:
    """The launcher's line telling the front that `model`'s instance was unloaded with requests in it."""
    return NOTICE + model.encode("utf-8", "surrogateescape") + b"\n"


class Held:
    """One inference of `model` in flight. It counts as held by the model's instance once its request is whole at
    tritonserver (`sent`): a body still arriving when the instance went is passed on to the next one."""

    def __init__(self, in_flight: InFlight, model: str) -> None:
        self.in_flight, self.model = in_flight, model
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def sent(self) -> None:
        self.in_flight.models.setdefault(self.model, set()).add(self.lost)

    async def pieces(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`body` passed on as it comes; the request is whole at tritonserver after its last piece."""
        async for piece in body:
            yield piece
        self.sent()

    async def race(self, call: Awaitable[T]) -> T:
        """`call`'s result, or ModelLost as soon as the launcher says the model lost this request (the call is then
        cancelled: an HTTP request's connection closed, a gRPC call cancelled)."""
        task = asyncio.ensure_future(call)
        task.add_done_callback(_retrieved)
        try:
            await asyncio.wait((task, self.lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            held = self.in_flight.models.get(self.model)
            if held is not None:
                held.discard(self.lost)
            if not task.done():  # lost, or this request's own task was cancelled (its client went)
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        raise ModelLost(self.model)


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A call given up for a lost model may still end in an error of its own: taken here, never logged as lost."""
    if not task.cancelled():
        task.exception()


class InFlight:
    """The public inferences in flight, by model (`Held`), and `lost`: those of a model whose instance went; and
    `restarting`: whether the launcher is starting tritonserver again (the front then answers liveness itself:
    the launcher supervises that start, bounded, and stops the front too where it fails)."""

    def __init__(self) -> None:
        self.models: dict[str, set[asyncio.Future[None]]] = {}
        self.restarting = False

    def hold(self, model: str) -> Held:
        return Held(self, model)

    def lost(self, model: str) -> int:
        """Ends every request of `model` held by its instance now, with ModelLost; how many."""
        held = self.models.pop(model, set())
        for f in held:
            if not f.done():
                f.set_result(None)
        return len(held)

    async def read_notices(self, pipe: Any) -> None:
        """The launcher's notices on `pipe` (the front's stdin), until it closes: each `lost MODEL` line ends that
        model's held requests, `RESTARTING` and `RESTARTED` set `restarting`, each said on stdout (the server log).
        Anything else is ignored."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_NOTICE)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than any notice: not the launcher's
                    continue
                if not line:
                    return
                if line.startswith(NOTICE) and line.endswith(b"\n"):
                    model = line[len(NOTICE):-1].decode("utf-8", "surrogateescape")
                    n = self.lost(model)
                    print(f"videoitg front: '{model}' was unloaded for a repair; {n} of its requests in flight "
                          "answered 503 / UNAVAILABLE (its process died with them)", flush=True)
                elif line in (RESTARTING, RESTARTED) and self.restarting != (line == RESTARTING):
                    self.restarting = line == RESTARTING
                    print("videoitg front: " + ("tritonserver is being started again: liveness answered here "
                                                "until it is ready" if self.restarting else
                                                "tritonserver is ready: liveness is its own again"), flush=True)
        finally:
            transport.close()


class WatchedUpstream(Upstream):
    """tritonserver's HTTP port (`Upstream`), each inference held (`InFlight`) until it is answered: the front's
    own inferences (`HttpPort.forward`) and its answer endpoint's."""

    def __init__(self, address: str, in_flight: InFlight) -> None:
        super().__init__(address)
        self.in_flight = in_flight

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes | AsyncIterator[bytes] | None, timeout_s: float) -> Answer:
        m = _INFER_PATH.fullmatch(path) if method == "POST" else None
        if m is None:
            return await super().request(method, path, headers, body, timeout_s)
        held = self.in_flight.hold(m.group(1))
        if body is None or isinstance(body, (bytes, bytearray)):
            held.sent()
        else:
            body = held.pieces(body)
        return await held.race(super().request(method, path, headers, body, timeout_s))
