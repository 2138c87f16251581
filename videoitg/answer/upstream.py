"""The video-LLM behind the answer endpoint: any OpenAI-compatible API (vLLM, SGLang, trtllm-serve, `transformers
serve`) at a base URL, reached with aiohttp. Each failure is one typed `videoitg.answer.chat` error: refused (its status
and text), unreachable or broken off (502), too slow (504). A request whose caller goes away is cancelled: its
connection is closed, which is how these servers learn to stop generating.

aiohttp (the serve extra; about 0.1 s to import) is imported inside the methods that use it: `videoitg --help`
imports this module (`videoitg serve`'s flags are checked by `check_base_url`) and answers without that extra."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from videoitg.answer.chat import (
    Selection,
    UpstreamRefusedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    first_event,
    selection_event,
    split_event,
    with_selection,
)
from videoitg.errors import MAX_ERROR_CHARS, InputError, bounded_text

CONNECT_S = 5.0  # to open a connection to the video-LLM
TIMEOUT_S = 300.0  # a whole answer; in a streamed one, the longest wait for its next bytes
MAX_ANSWER_BYTES = 64 << 20  # a non-streamed answer, read whole
MAX_FIRST_EVENT = 1 << 20  # bytes of a stream held to find its first event (the selection goes into it)
PASS_HEADERS = ("Authorization",)  # of the client's request, sent on: the video-LLM's API key, if it has one


def check_base_url(url: str) -> str:
    """An OpenAI-compatible API's base URL (http or https, a host, no query), without a trailing slash."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
        raise InputError(f"answer upstream {url[:80]!r} must be an http(s) base URL such as http://127.0.0.1:8000/v1")
    return url.rstrip("/")


class ChatUpstream:
    """An OpenAI-compatible API at `base_url` (e.g. http://127.0.0.1:8000/v1): its chat completions and model list.
    `timeout_s` bounds a whole answer (a streamed one: the wait for each of its pieces); CONNECT_S the connection,
    MAX_ANSWER_BYTES a non-streamed answer."""

    def __init__(self, base_url: str, timeout_s: float = TIMEOUT_S):
        self.base_url = check_base_url(base_url)
        self.timeout_s = timeout_s
        self._session: Any = None

    def _client(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            # trust_env off: no proxy from the environment; the front reaches the address it was given, and no other
            self._session = aiohttp.ClientSession(trust_env=False, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @contextlib.asynccontextmanager
    async def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                      stream: bool = False) -> AsyncIterator[Any]:
        """The video-LLM's answer (an aiohttp ClientResponse with status < 400, its body unread) for the block; a
        typed error otherwise (reading it: `read_json`, `chunks`). An exception leaving the block (the caller
        cancelled, its client gone) closes the connection, so the video-LLM stops."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None if stream else self.timeout_s, sock_connect=CONNECT_S,
                                        sock_read=self.timeout_s)
        sent = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json",
                **{k: headers[k] for k in PASS_HEADERS if headers and k in headers}}  # a client request's: any case
        url = self.base_url + path
        try:
            resp = await self._client().request(method, url, data=body, headers=sent, timeout=timeout,
                                                allow_redirects=False)
        except (asyncio.TimeoutError, TimeoutError):  # aiohttp's too (ServerTimeoutError is one)
            raise self._timeout() from None
        except aiohttp.ClientError as e:
            raise UpstreamUnavailableError(f"the video-LLM at {self.base_url} cannot be reached "
                                           f"({type(e).__name__}: {str(e)[:200]})") from None
        try:
            if resp.status >= 400:
                text = await self._error_text(resp)
                raise UpstreamRefusedError(f"the video-LLM at {self.base_url} answered {resp.status}: {text}",
                                           resp.status)
            yield resp
        except BaseException:
            resp.close()  # not returned to the pool: the video-LLM sees the connection close and stops
            raise
        finally:
            resp.release()

    def _timeout(self) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(f"the video-LLM at {self.base_url} did not answer within {self.timeout_s:g} s")

    async def _error_text(self, resp: Any) -> str:
        import aiohttp

        try:
            raw = await _read_upto(resp, MAX_ERROR_CHARS * 4)
        except (asyncio.TimeoutError, TimeoutError):
            raise self._timeout() from None
        except aiohttp.ClientError:
            raw = b"(its error text broke off)"
        text = raw.decode("utf-8", "replace")
        try:  # the OpenAI shape {"error": {"message": ...}}, FastAPI's {"detail": ...}, or plain text
            obj = json.loads(text)
            err = obj.get("error", obj.get("detail", obj)) if isinstance(obj, dict) else obj
            text = err.get("message", json.dumps(err)) if isinstance(err, dict) else str(err)
        except ValueError:
            pass
        return bounded_text(text)

    async def read_json(self, resp: Any) -> dict[str, Any]:
        """A non-streamed answer's JSON object, read whole (at most MAX_ANSWER_BYTES)."""
        import aiohttp

        try:
            raw = await _read_upto(resp, MAX_ANSWER_BYTES + 1)
        except (asyncio.TimeoutError, TimeoutError):
            raise self._timeout() from None
        except aiohttp.ClientError as e:
            raise UpstreamUnavailableError(f"the video-LLM's answer broke off ({type(e).__name__})") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise UpstreamUnavailableError(f"the video-LLM's answer is over {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamUnavailableError(f"the video-LLM answered {resp.status} without a JSON object "
                                           f"({raw[:80]!r})")
        return answer

    async def chunks(self, resp: Any) -> AsyncIterator[bytes]:
        """A streamed answer's bytes as they arrive."""
        import aiohttp

        try:
            async for chunk in resp.content.iter_any():
                yield chunk
        except (asyncio.TimeoutError, TimeoutError):
            raise self._timeout() from None
        except aiohttp.ClientError as e:
            raise UpstreamUnavailableError(f"the video-LLM's stream broke off ({type(e).__name__})") from None

    async def models(self, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The video-LLM's model list (`GET /models`), as it answers it."""
        async with self.request("GET", "/models", None, headers) as resp:
            return await self.read_json(resp)

    async def first_model(self) -> str:
        """The id of the first model the video-LLM lists: the `model` of a request that names none."""
        data = (await self.models()).get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "id" not in data[0]:
            raise UpstreamUnavailableError(f"the video-LLM at {self.base_url} lists no model: name one (--model)")
        return str(data[0]["id"])

    async def complete(self, body: bytes, selection: Selection,
                       headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The non-streamed answer to `body` (the forwarded request's JSON, `forwarded_bytes`) with the `videoitg`
        field added."""
        async with self.request("POST", "/chat/completions", body, headers) as resp:
            return with_selection(await self.read_json(resp), selection)


async def _read_upto(resp: Any, n: int) -> bytes:
    """An answer's body up to its end or `n` bytes, whichever comes first, however many pieces it arrives in."""
    pieces, have = [], 0
    while have < n and (piece := await resp.content.read(n - have)):
        pieces.append(piece)
        have += len(piece)
    return b"".join(pieces)


async def selection_stream(chunks: AsyncIterator[bytes], selection: Selection) -> AsyncIterator[bytes]:
    """A streamed answer's bytes with the selection in its first event: the first data event holding a JSON object
    gets the `videoitg` field (`first_event`); where the first data event holds none (or none comes within
    MAX_FIRST_EVENT bytes), an event of the selection alone goes first. Everything after passes as it came."""
    held = b""
    async for chunk in chunks:
        held += chunk
        while (split := split_event(held)) is not None:
            event, held = split
            if (done := first_event(event, selection)) is not None or b"data:" in event:
                yield done if done is not None else selection_event(selection) + event
                if held:
                    yield held
                async for rest in chunks:
                    yield rest
                return
            yield event  # a comment or retry line before any data
        if len(held) > MAX_FIRST_EVENT:
            break
    yield selection_event(selection) + held
    async for rest in chunks:
        yield rest

