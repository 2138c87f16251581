"""TLS on the front's ports (`--tls-cert-file`, `--tls-key-file`): each connection's handshake, within a bound,
before the port's own protocol sees a byte (`Handshake`), and the ports' contexts, made again when the certificate's
files change or on SIGHUP (`Certificates`): a new connection gets the new certificate, one open keeps its own."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import Any

from videoitg.contract.access import server_context
from videoitg.errors import InputError

# What each port's clients negotiate: gRPC clients insist on h2; the HTTP and metrics ports speak HTTP/1.1.
ALPN = {"http": ("http/1.1",), "grpc": ("h2",), "metrics": ("http/1.1",)}


class Handshake(asyncio.Protocol):
    """A new connection's TLS handshake (`loop.start_tls`, at most `timeout_s`), then `inner` is given the TLS
    transport as its connection. A handshake that fails or times out closes the connection, and `inner` never hears
    of it. `ended(ok)` is called once either way (a port counts a connection from its accept on)."""

    def __init__(self, inner: Any, ctx: ssl.SSLContext, timeout_s: float,
                 ended: Callable[[bool], None] | None = None):
        self.inner, self.ctx, self.timeout_s, self.ended = inner, ctx, timeout_s, ended
        self.task: asyncio.Task | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing read before start_tls takes the transport over (it resumes reading)
        self.task = asyncio.ensure_future(self._start(transport))

    async def _start(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(transport, self.inner, self.ctx, server_side=True,
                                       ssl_handshake_timeout=self.timeout_s)
        except Exception:  # a client that is not TLS, does not trust the certificate, went, or took too long
            transport.abort()
            self._failed()
            return
        if tls is None or getattr(self.inner, "closed", False):  # the port gave the connection up meanwhile
            if tls is not None:
                tls.abort()
            self._failed()
            return
        self._end(True)
        self.inner.connection_made(tls)

    def _failed(self) -> None:
        self._end(False)

    def _end(self, ok: bool) -> None:
        if not self.done:
            self.done = True
            if self.ended is not None:
                self.ended(ok)

    def connection_lost(self, exc: Exception | None) -> None:
        """The client went before the handshake began."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._failed()

    def data_received(self, data: bytes) -> None:  # reading is paused until start_tls: never called
        pass

    def eof_received(self) -> bool | None:
        return None


class Certificates:
    """The TLS contexts of the front's ports, one per port kind (`ALPN`), from one certificate and key. `refresh`
    makes them again when a file changed; a certificate that does not load leaves the one in force."""

    def __init__(self, cert_file: str, key_file: str):
        self.cert_file, self.key_file = cert_file, key_file
        self._seen = self._stat()
        self.contexts = self._contexts()

    def _contexts(self) -> dict[str, ssl.SSLContext]:
        return {port: server_context(self.cert_file, self.key_file, alpn) for port, alpn in ALPN.items()}

    def context(self, port: str) -> ssl.SSLContext:
        """The context a new connection to `port` ("http", "grpc", "metrics") handshakes with."""
        return self.contexts[port]

    def _stat(self) -> tuple[tuple[int, ...] | None, ...]:
        out = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
                out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def refresh(self) -> str | None:
        """Load the certificate again if its files changed: what happened, for the log (None: no change)."""
        if self._stat() == self._seen:
            return None
        return self.reload()

    def reload(self) -> str:
        self._seen = self._stat()
        try:
            self.contexts = self._contexts()  # all made before any is used
        except InputError as e:
            return f"TLS certificate not loaded again ({e}); the one in force stays"
        return f"TLS certificate loaded again from {self.cert_file}"
