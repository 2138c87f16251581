"""A streamed answer of the video-LLM relayed event by event (`EventRelay`): each server-sent event checked as it
arrives and passed on whole, the selection (`videoitg` field) in the first."""

from __future__ import annotations

import json
import re
from typing import Any

from videoitg.answer.bounded_json import load_json
from videoitg.answer.chat import EXTENSION, Selection, with_selection
from videoitg.answer.errors import UpstreamUnavailableError

MAX_EVENT_BYTES = 1 << 20  # one event of a streamed answer (a chat chunk holds a token, or a piece of a tool call)
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
DONE = b"[DONE]"  # the data of the event that ends an OpenAI stream


def event_data(event: bytes) -> bytes | None:
    """The `data` of one event (its data lines joined by newlines), None when it has none (a comment, a retry)."""
    lines = [line for line in re.split(rb"\r\n|\n|\r", event) if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines)


def selection_event(selection: Selection) -> bytes:
    """An event holding only the selection: a chunk with no choices, what goes first when the upstream's first
    data event holds no chunk (`[DONE]`), or it sent none."""
    chunk = {"object": "chat.completion.chunk", "choices": [], EXTENSION: selection.field()}
    return b"data: " + strict_json(chunk) + b"\n\n"


def strict_json(value: Any) -> bytes:
    """`value` as compact JSON, no NaN or Infinity (ValueError instead): what the endpoint answers is JSON."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


class EventRelay:
    """A streamed answer's bytes checked event by event as they arrive (`feed`, then `end`), each event passed on
    as it came once it is whole: a data event holds `[DONE]` or a JSON object read by `load_json` (the bounds of
    a client's body; at most `max_event` bytes), anything else breaks the stream (UpstreamUnavailableError), as
    does a stream that ends inside an event. The first data event holding an object gets the `videoitg` field; an
    event of the selection alone goes first where the first data event is `[DONE]` or none comes. Comments and
    other fields (`retry`, `id`) pass as they came."""

    def __init__(self, selection: Selection, max_event: int = MAX_EVENT_BYTES):
        self.selection, self.max_event = selection, max_event
        self.held = bytearray()  # the bytes of an event not whole yet
        self.scanned = 0  # of `held`, searched for an event's end
        self.first = True  # no data event yet

    def feed(self, chunk: bytes) -> bytes:
        """What to send on for `chunk`: the events it completes (b"" while none)."""
        held = self.held
        held += chunk
        out, at = [], 0
        while (m := _EVENT_END.search(held, max(at, self.scanned - 3))) is not None:
            out.append(self._event(bytes(held[at:m.end()])))
            at = self.scanned = m.end()
        del held[:at]
        self.scanned = len(held)
        if len(held) > self.max_event:
            raise UpstreamUnavailableError(f"the video-LLM's stream sent an event of more than {self.max_event} "
                                           "bytes")
        return b"".join(out)

    def end(self) -> bytes:
        """What to send on once the stream ended: the selection if no data event carried it."""
        if self.held.strip():
            raise UpstreamUnavailableError("the video-LLM's stream broke off inside an event")
        return selection_event(self.selection) if self.first else b""

    def _event(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is None:
            return event
        if data == DONE:
            first, self.first = self.first, False
            return selection_event(self.selection) + event if first else event
        chunk = load_json(data, "an event of the video-LLM's stream", UpstreamUnavailableError)
        if not isinstance(chunk, dict):
            raise UpstreamUnavailableError("an event of the video-LLM's stream holds no JSON object")
        if not self.first:
            return event
        self.first = False
        return b"data: " + strict_json(with_selection(chunk, self.selection)) + b"\n\n"
