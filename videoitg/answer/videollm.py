"""The video-LLM behind the answer endpoint: any OpenAI-compatible API (vLLM, SGLang, trtllm-serve, `transformers
serve`) at a base URL, reached with aiohttp. Everything it sends is read by the one bounded JSON reading of a
client's body (`videoitg.answer.chat.load_json`) and its status mapped by one rule (`answered_status`); each failure
is one typed `videoitg.answer.chat` error: refused (its status and text), unreachable, broken off or malformed
(502), too slow (504). Credentials in the base URL are sent as HTTP basic authentication and never appear in a
message. A request whose caller goes away is cancelled: its connection is closed, which is how these servers
learn to stop generating. A kept connection idles at most KEEPALIVE_S, below the 5 s after which uvicorn (vLLM,
SGLang, trtllm-serve, `transformers serve`) closes one; a request sent on a kept connection the video-LLM closed as
it arrived (within RACE_S, no answer begun) is sent again once, on a new connection (`ChatUpstream._send`).

aiohttp (the serve extra; about 0.1 s to import) is imported inside the methods that use it: `videoitg --help`
imports this module (`videoitg serve`'s flags are checked by `check_base_url`) and answers without that extra."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from videoitg.answer.bounded_json import Budget, load_json
from videoitg.answer.chat import Selection, with_selection
from videoitg.answer.errors import OverloadedError, UpstreamRefusedError, UpstreamTimeoutError, UpstreamUnavailableError
from videoitg.answer.relay import MAX_EVENT_BYTES, EventRelay
from videoitg.contract.access import SecretFile
from videoitg.errors import MAX_ERROR_CHARS, InputError, bounded_text

CONNECT_S = 5.0  # to open a connection to the video-LLM
TIMEOUT_S = 300.0  # a whole answer; in a streamed one, the longest wait for its next bytes
MAX_ANSWER_BYTES = 64 << 20  # a non-streamed answer, read whole (the endpoint: its bound on a client's body)
KEEPALIVE_S = 4.0  # a kept connection's longest idle before it is closed, not reused: below uvicorn's 5 s
RACE_S = 1.0  # a kept connection closed within this of the request's sending: the idle close's race, sent again
PASS_HEADERS = ("Authorization",)  # of the client's request, sent on (unless told not to): the video-LLM's API key


def _without_credentials(url: str) -> str:
    """`url` with no user or password in it."""
    u = urlsplit(url)
    return urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, u.query, u.fragment))


def check_base_url(url: str) -> str:
    """An OpenAI-compatible API's base URL (http or https, a host, no query), without a trailing slash."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
        raise InputError(f"answer upstream {_without_credentials(url)[:80]!r} must be an http(s) base URL such as "
                         "http://127.0.0.1:8000/v1")
    return url.rstrip("/")


def unreachable(e: Exception) -> str:
    """Why a connection to the video-LLM failed, and what to do: a name that does not resolve, a certificate not
    accepted, a TLS handshake that failed, nothing listening."""
    import aiohttp

    if isinstance(e, aiohttp.ClientConnectorDNSError):
        return (f"its host name {e.host} does not resolve here: check the host of --answer-upstream and this "
                "machine's DNS (in a cluster: the Service's name and namespace)")
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        why = getattr(e.certificate_error, "verify_message", "") or type(e.certificate_error).__name__
        return (f"its TLS certificate is not accepted ({why}): give `videoitg serve` the CA that signed it "
                "(SSL_CERT_FILE=ca.pem), or name the host its certificate is for in --answer-upstream")
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "it closed the connection without an answer: check its log (it may have stopped or restarted)"
    if isinstance(e, aiohttp.ClientSSLError):
        return "the TLS handshake failed: check that it serves https on that port, or use http:// for it"
    if isinstance(e, aiohttp.ClientConnectorError):
        return (f"nothing answers at {e.host}:{e.port} ({e.strerror or e.os_error}): start the video-LLM there, "
                "or correct --answer-upstream")
    return "check that it runs and that --answer-upstream names it"


def answered_status(status: int) -> int | None:
    """The one rule for the video-LLM's HTTP status: None for an answer (2xx); its own status for a refusal (4xx,
    5xx), passed on to the client; 502 for anything else (a 1xx as a final answer, a redirect, which is never
    followed, a status outside 100-599): no answer the client can be given."""
    if 200 <= status <= 299:
        return None
    return status if 400 <= status <= 599 else 502


class ChatUpstream:
    """An OpenAI-compatible API at `base_url` (e.g. http://127.0.0.1:8000/v1): its chat completions and model list.
    `timeout_s` bounds a whole answer (a streamed one: the wait for each of its pieces); CONNECT_S the connection;
    `max_bytes` a non-streamed answer (an event of a stream: MAX_EVENT_BYTES). The video-LLM's key: `key_file`'s
    (`Authorization: Bearer ...`, the file read again when it changes), or a user and password in `base_url`
    (`Authorization: Basic ...`), and then a caller's own Authorization header is not sent: the operator's
    credentials win; without them, the caller's Authorization is passed on, unless `callers_key_passes` is off (the
    server has keys of its own: a caller's key is the server's, never the video-LLM's)."""

    def __init__(self, base_url: str, timeout_s: float = TIMEOUT_S, max_bytes: int = MAX_ANSWER_BYTES,
                 key_file: str | None = None, callers_key_passes: bool = True):
        url = check_base_url(base_url)
        u = urlsplit(url)
        self.base_url = _without_credentials(url)  # the address messages name
        self.timeout_s, self.max_bytes = timeout_s, max_bytes
        self._auth: str | None = None
        self._secrets: tuple[str, ...] = ()
        if u.username is not None or u.password is not None:
            user, password = unquote(u.username or ""), unquote(u.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._auth = f"Basic {token}"
            self._secrets = tuple(s for s in sorted({f"{user}:{password}", token, password, u.password or ""},
                                                    key=len, reverse=True) if s)
        if key_file is not None and self._auth is not None:
            raise InputError(f"the video-LLM's key is given twice (--answer-api-key-file and credentials in "
                             f"{self.base_url}'s URL): give one")
        self._key = None if key_file is None else SecretFile(key_file, "--answer-api-key-file")
        self.callers_key_passes = callers_key_passes
        self._session: Any = None
        self._once: Any = None

    def _client(self, new_connection: bool = False) -> Any:
        """The session requests are sent with: kept connections, or (`new_connection`) one made for each request."""
        import aiohttp

        if new_connection:
            if self._once is None or self._once.closed:
                self._once = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), trust_env=False,
                                                   auto_decompress=True)
            return self._once
        if self._session is None or self._session.closed:
            kept = aiohttp.TraceConfig()  # marks a request given a kept connection (its trace_request_ctx)
            kept.on_connection_reuseconn.append(_sent_on_kept)
            # trust_env off: no proxy from the environment; the front reaches the address it was given, and no other
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_S),
                                                  trust_env=False, auto_decompress=True, trace_configs=[kept])
        return self._session

    async def close(self) -> None:
        for session in (self._session, self._once):
            if session is not None:
                await session.close()

    def redacted(self, text: str) -> str:
        """`text` with the base URL's credentials, in any form they are sent, replaced by `***`."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def headers(self, given: Mapping[str, str] | None, stream: bool) -> dict[str, str]:
        """The headers a request is sent with: the operator's key or the base URL's credentials, else the caller's
        PASS_HEADERS where they pass."""
        passed = given if given and self.callers_key_passes else {}
        sent = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json",
                **{k: passed[k] for k in PASS_HEADERS if k in passed}}  # a client request's: any case
        if self._auth is not None:
            sent["Authorization"] = self._auth
        if self._key is not None:
            sent["Authorization"] = f"Bearer {self._key.value()}"
        return sent

    @contextlib.asynccontextmanager
    async def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                      stream: bool = False) -> AsyncIterator[Any]:
        """The video-LLM's answer (an aiohttp ClientResponse with a 2xx status, its body unread) for the block; a
        typed error otherwise (`answered_status`; reading it: `read_json`, `chunks`). An exception leaving the block
        (the caller cancelled, its client gone) closes the connection, so the video-LLM stops. Sent by `_send`."""
        resp = await self._send(method, path, body, headers, stream)
        try:
            status = answered_status(resp.status)
            if status == resp.status:
                text = await self._error_text(resp)
                raise UpstreamRefusedError(f"the video-LLM at {self.base_url} answered {status}: {text}", status)
            if status is not None:
                raise UpstreamUnavailableError(f"the video-LLM at {self.base_url} answered status {resp.status}, "
                                               "which is not an answer (a redirect is not followed)")
            yield resp
        except BaseException:
            resp.close()  # not returned to the pool: the video-LLM sees the connection close and stops
            raise
        finally:
            resp.release()

    async def _send(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None,
                    stream: bool) -> Any:
        """The video-LLM's response (its status and headers read). Sent on a kept connection that the video-LLM
        closed as the request arrived (within RACE_S, nothing answered: the race of its idle close), the request is
        sent again once, on a new connection (RFC 9112 9.3.1; a chat completion changes nothing on the video-LLM:
        sent twice, it is answered once); a new connection's failure, or a later one, is the answer."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None if stream else self.timeout_s, sock_connect=CONNECT_S,
                                        sock_read=self.timeout_s)
        on = {"kept": False}  # set by `_sent_on_kept`

        async def send(new_connection: bool) -> Any:
            return await self._client(new_connection).request(
                method, self.base_url + path, data=body, headers=self.headers(headers, stream), timeout=timeout,
                allow_redirects=False, trace_request_ctx=on)

        try:
            sent = time.monotonic()
            try:
                return await send(False)
            except aiohttp.ClientConnectorError:  # a new connection refused (aiohttp's own retry of a GET): no race
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if not on["kept"] or time.monotonic() - sent > RACE_S:
                    raise  # not the race: a connection that worked on the request, then broke, is the answer
            return await send(True)  # a kept connection closed as the request arrived: once more, on a new one
        except (asyncio.TimeoutError, TimeoutError):  # aiohttp's too (ServerTimeoutError is one)
            raise self._timeout() from None
        except aiohttp.ClientError as e:
            raise UpstreamUnavailableError(f"the video-LLM at {self.base_url} cannot be reached: {unreachable(e)} "
                                           f"({type(e).__name__}: {self.redacted(str(e)[:200])})") from None

    def _timeout(self) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(f"the video-LLM at {self.base_url} did not answer within {self.timeout_s:g} s")

    async def _error_text(self, resp: Any) -> str:
        """A refusal's text: the OpenAI shape's `error.message`, FastAPI's `detail`, or the body as text; cut to
        MAX_ERROR_CHARS, the credentials redacted."""
        import aiohttp

        try:
            raw = bytes(await _read_upto(resp, MAX_ERROR_CHARS * 4))
        except (asyncio.TimeoutError, TimeoutError):
            raise self._timeout() from None
        except aiohttp.ClientError:
            raw = b"(its error text broke off)"
        try:
            obj = load_json(raw, "the video-LLM's error", UpstreamUnavailableError)
        except UpstreamUnavailableError:
            text = raw.decode("utf-8", "replace")
        else:
            err = obj.get("error", obj.get("detail", obj)) if isinstance(obj, dict) else obj
            message = err.get("message") if isinstance(err, dict) else err
            text = message if isinstance(message, str) else json.dumps(err)
        return self.redacted(bounded_text(text))

    async def read_json(self, resp: Any, budget: Budget | None = None) -> dict[str, Any]:
        """A non-streamed answer's JSON object, read whole (at most `max_bytes`) by `load_json`; its bytes, and the
        copies its parse makes, held in `budget` while they exist (OverloadedError when there is no room: the
        server holds too much now)."""
        import aiohttp

        try:
            raw = await _read_upto(resp, self.max_bytes + 1, budget)
        except (asyncio.TimeoutError, TimeoutError):
            raise self._timeout() from None
        except aiohttp.ClientError as e:
            raise UpstreamUnavailableError(f"the video-LLM's answer broke off ({type(e).__name__})") from None
        held = len(raw)
        try:
            if held > self.max_bytes:
                raise UpstreamUnavailableError(f"the video-LLM's answer is over {self.max_bytes} bytes")
            pieces, raw = [raw], bytearray()
            answer = load_json(pieces, "the video-LLM's answer", UpstreamUnavailableError, budget)
        finally:
            if budget is not None:
                budget.give(held)
        if not isinstance(answer, dict):
            raise UpstreamUnavailableError(f"the video-LLM answered {resp.status} without a JSON object")
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

    async def models(self, headers: Mapping[str, str] | None = None, budget: Budget | None = None) -> dict[str, Any]:
        """The video-LLM's model list (`GET /models`), as it answers it."""
        async with self.request("GET", "/models", None, headers) as resp:
            return await self.read_json(resp, budget)

    async def first_model(self) -> str:
        """The id of the first model the video-LLM lists: the `model` of a request that names none."""
        data = (await self.models()).get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "id" not in data[0]:
            raise UpstreamUnavailableError(f"the video-LLM at {self.base_url} lists no model: name one (--model)")
        return str(data[0]["id"])

    async def complete(self, body: bytes, selection: Selection, headers: Mapping[str, str] | None = None,
                       budget: Budget | None = None) -> dict[str, Any]:
        """The non-streamed answer to `body` (the forwarded request's JSON, `forwarded_bytes`) with the `videoitg`
        field added."""
        async with self.request("POST", "/chat/completions", body, headers) as resp:
            return with_selection(await self.read_json(resp, budget), selection)


async def _sent_on_kept(session: Any, trace: Any, params: Any) -> None:
    """aiohttp's trace of a request given a kept connection: marked in the request's trace_request_ctx."""
    trace.trace_request_ctx["kept"] = True


async def _read_upto(resp: Any, n: int, budget: Budget | None = None) -> bytearray:
    """An answer's body up to its end or `n` bytes, whichever comes first, however many pieces it arrives in,
    gathered in one buffer (the pieces leave no holes in the heap); each piece taken from `budget` before it is
    kept (the caller gives back the bytes returned)."""
    data, have = bytearray(), 0
    try:
        while have < n and (piece := await resp.content.read(n - have)):
            if budget is not None and not budget.take(len(piece)):
                raise OverloadedError("the server holds too many bytes now to read the video-LLM's answer: retry "
                                      "shortly")
            data += piece
            have += len(piece)
    except BaseException:
        if budget is not None:
            budget.give(have)
        raise
    return data


async def selection_stream(chunks: AsyncIterator[bytes], selection: Selection,
                           max_event: int = MAX_EVENT_BYTES) -> AsyncIterator[bytes]:
    """A streamed answer's bytes, event by event, checked and with the selection in its first data event
    (`EventRelay`); UpstreamUnavailableError where the stream breaks."""
    relay = EventRelay(selection, max_event)
    async for chunk in chunks:
        if out := relay.feed(chunk):
            yield out
    if out := relay.end():
        yield out
