"""JSON from other hands, read once under bounds (`load_json`): a client's request body and everything the video-LLM
sends (its answer, error text, model list, each event of a stream); the held bytes of its parse counted in a
`Budget`."""

from __future__ import annotations

import codecs
import json
import math
import re
from typing import Any, Protocol

from videoitg.answer.errors import AnswerError, OverloadedError
from videoitg.jsonio import MAX_JSON_DEPTH, nesting_over, no_constant

# Objects, lists and separators in a request, counted as its '{', '[' and ',' bytes before it is parsed (in its text
# too; base64 has none of them): a message needs a few, a tool's JSON schema some tens to hundreds, and a text of
# about 1 MB of prose (a comma every 15 characters or so) fits, more than a video-LLM's context holds. The costliest
# body at the bound (32,768 empty objects) parses in about 15 ms into 4.4 MiB; 24 MiB of them would take 6 s and
# 1.2 GiB.
MAX_JSON_ITEMS = 65_536
# Digits of an integer in a request (a seed or a token id has at most 20): Python converts one in time that grows
# with the square of its digits, 65 us for 4,300 (its own bound), which MAX_JSON_ITEMS of them would make 4 s.
MAX_INT_DIGITS = 100
COUNT_BYTES = 1 << 20  # of a body counted at once
# Bytes in memory per byte of a JSON text while it is parsed (`load_json`): its bytes and its text, then the text
# and the value, which takes up to a quarter more where its strings hold escapes (Python's writer over-allocates as
# it unescapes): 2.0 for a data-URL body given in one buffer, 2.2 where its '/' are escaped (benchmarks/
# answer_memory.py, RESULTS.md). Given in many small chunks, the chunks freed as their text is made leave holes in
# the heap that stay resident until it is trimmed: the endpoint gathers a body in one buffer.
PARSE_HOLD = 2.25
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class Budget(Protocol):
    """Where held bytes are counted (the front's `ByteBudget`, safe to use from worker threads): `take` says whether
    there is room."""

    def take(self, n: int) -> bool: ...

    def give(self, n: int) -> None: ...


class _Unbounded(ValueError):
    """A JSON value past a bound of `load_json` (raised from its parse hooks)."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: not a literal NaN or Infinity, yet a float that is one
        raise _Unbounded(f"holds a number out of range ({text[:40]})")
    return value


def _bounded_int(digits: str) -> int:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        raise _Unbounded(f"holds an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)


def load_json(body: bytes | list[bytes] | list[bytearray], what: str, error: type[AnswerError],
              budget: Budget | None = None) -> Any:
    """JSON from other hands, the one bounded reading of a client's body and of everything the video-LLM sends
    (its answer, error text, model list, each event of a stream): from its bytes or the chunks it came in (a list,
    emptied as it is read), at most MAX_JSON_ITEMS objects, lists and commas, UTF-8, no NaN or Infinity (nor a
    number that overflows to one), integers of at most MAX_INT_DIGITS digits, nesting at most MAX_JSON_DEPTH
    levels; else `error` naming `what` and what is wrong. The chunks are counted and decoded one at a time, so that
    in a worker thread the event loop runs between them; joining their text and the one JSON parse of it hold the
    GIL throughout (the loop waits about 45 ms for a 53 MiB body: `python -m benchmarks.answer.answer_parse`).
    `budget` (the caller counts the bytes given, which go as their text is made): the parse's copies beyond them,
    PARSE_HOLD times the text's size in memory less those bytes, are held in it while they exist (OverloadedError
    when there is no room). A text is wider than its UTF-8 where it holds a character past U+00FF (2 or 4 bytes
    each, for all of its characters)."""
    chunks = [body] if isinstance(body, bytes) else body
    given = sum(map(len, chunks))
    try:
        texts = _decoded(chunks, what, error)
    finally:
        chunks.clear()
    extra = max(0, int(PARSE_HOLD * _text_bytes(texts)) - given) if budget is not None else 0
    if budget is not None and not budget.take(extra):
        raise OverloadedError(f"the server holds too many bytes now to read {what}: retry shortly")
    try:
        text = texts[0] if len(texts) == 1 else "".join(texts)
        texts.clear()
        try:
            value = json.loads(text, parse_constant=no_constant, parse_float=_finite, parse_int=_bounded_int)
        except RecursionError:
            raise error(f"{what} nests more than {MAX_JSON_DEPTH} levels") from None
        except _Unbounded as e:
            raise error(f"{what} {e}") from None
        except ValueError as e:
            raise error(f"{what} is not valid JSON ({str(e)[:120]})") from None
        finally:
            text = ""
    finally:
        if budget is not None:
            budget.give(extra)
    if nesting_over(value, MAX_JSON_DEPTH):
        raise error(f"{what} nests more than {MAX_JSON_DEPTH} levels")
    return value


def _text_bytes(texts: list[str]) -> int:
    """What the one text joined from `texts` takes in memory: 1, 2 or 4 bytes a character, by the widest (text past
    U+00FF counted as 2 bytes a character, past U+FFFF as 4)."""
    width = 1
    for t in texts:
        if not t.isascii():
            width = max(width, 4 if _ASTRAL.search(t) else 2)
    return width * sum(map(len, texts))


def unencodable(value: Any) -> str | None:
    """Where in a parsed JSON value the first text that cannot be encoded as UTF-8 is (a string or a key, named
    as `messages[1].content[0].text`); None when all of it can. No recursion; paths are built only once such text
    is known to be there."""
    if not _walk(value, False):
        return None
    return _walk(value, True) or "the body"


def _walk(value: Any, named: bool) -> str | bool:
    """Whether `value` holds text that cannot be encoded (`named`: where, as `unencodable` names it)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            if _has_surrogate(v):
                return at if named else True
        elif isinstance(v, dict):
            for k, x in v.items():
                if _has_surrogate(k):
                    return f"a key of {at or 'the body'}" if named else True
                stack.append((x, (f"{at}.{k[:40]}" if at else k[:40]) if named else ""))
        elif isinstance(v, list):
            stack.extend((x, f"{at}[{i}]" if named else "") for i, x in enumerate(v))
    return False


def _has_surrogate(text: str) -> bool:
    if text.isascii():  # O(1): the string's own flag
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _decoded(chunks: list[bytes] | list[bytearray], what: str, error: type[AnswerError]) -> list[str]:
    """The text of a body's chunks (each decoded, then dropped from the list), once its count of '{', '[' and ','
    is known to be within MAX_JSON_ITEMS."""
    items = 0
    for chunk in chunks:
        for at in range(0, len(chunk), COUNT_BYTES):
            end = at + COUNT_BYTES
            items += chunk.count(b"{", at, end) + chunk.count(b"[", at, end) + chunk.count(b",", at, end)
        if items > MAX_JSON_ITEMS:
            raise error(f"{what} holds more than {MAX_JSON_ITEMS} objects, lists and commas (its '{{', '[' and "
                        "',' bytes, in its text too)")
    texts: list[str] = []
    before, pending = 0, b""  # the body's bytes before this chunk; the start of a character the last one cut
    for i, chunk in enumerate(chunks):
        data = pending + chunk if pending else chunk  # one buffer given whole is decoded in place, never copied
        try:
            text, used = codecs.utf_8_decode(data, "strict", i == len(chunks) - 1)
        except UnicodeDecodeError as e:
            raise error(f"{what} is not valid UTF-8 ({e.reason} at byte {before - len(pending) + e.start})") from None
        texts.append(text)
        pending = bytes(data[used:])
        before += len(chunk)
        chunks[i] = b""
        del data, chunk
    return texts
