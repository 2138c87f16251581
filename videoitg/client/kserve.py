"""Client of the served model (tritonclient, HTTP or gRPC): gives back the same `GroundingResult` as the in-process
`Scorer`, sending a video by path (under a media root the model announces), by digest (cached) or as its bytes
(docs/serving.md); with the server's API key and over TLS where it asks for them (`ClientAccess`)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videoitg.contract.access import CLIENT_KEY_ENV, GRPC_AUTHORIZATION, SCHEME, ClientAccess
from videoitg.contract.parameters import CHECKPOINT, MEDIA_ROOTS
from videoitg.contract.protocol import (
    CACHE_HIT,
    FRAME_FORMATS,
    FRAMES,
    GROUNDING,
    INSTRUCTION,
    MOMENTS,
    OPTION_INPUTS,
    RESULT_NAMES,
    TOP,
    TOP_K_FRAMES,
    VIDEO,
    VIDEO_DIGEST,
    VIDEO_URI,
    signatures,
)
from videoitg.contract.tensors import frames_from_outputs, result_from_outputs
from videoitg.errors import InputError, VideoITGError
from videoitg.outputs import GroundingResult
from videoitg.paths import MediaRoots, local_video
from videoitg.request.options import RequestOptions

REQUEST = signatures("bls")[TOP]  # every input a client may send (the ensemble takes a subset)
NO_OPTIONS = RequestOptions()  # the server's defaults


class RemoteError(VideoITGError):
    """The server refused or failed a request; the message is the server's (it names the step and the cause).
    `remote_error` maps an answer to the kind below once; callers branch on the kind, never on the text."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


class NotCachedError(RemoteError):
    """The server holds no features for the video named by its digest: send the bytes."""


class ReferenceUnusableError(RemoteError):
    """The server cannot read the video named by its path (not under its roots here, missing, references off):
    send the bytes."""


class UnavailableError(RemoteError):
    """The server is away (unreachable, restarting, a step whose stub is not healthy): not the request's fault."""


class KeyRefusedError(RemoteError):
    """The server wants an API key and none was sent, or the one sent is not one of its keys (HTTP 401, gRPC
    UNAUTHENTICATED): no request of this client's will pass."""


UNAUTHENTICATED = ("StatusCode.UNAUTHENTICATED", "401")


def key_refused(url: str, sent: bool, status: str | None) -> KeyRefusedError:
    """What a client says when the server refused its key: that it wants one, or that the one sent is not one of
    its keys, and where a key is given."""
    where = f"--api-key-file FILE, or ${CLIENT_KEY_ENV}; in Python api_key="
    if sent:
        return KeyRefusedError(f"{url}: the server refused the API key sent, which is not one of its keys (rotated "
                               f"out?): give a current one: {where}", status)
    return KeyRefusedError(f"{url}: the server wants an API key: give one: {where}", status)


NOT_FOUND = ("StatusCode.NOT_FOUND", "404")
UNAVAILABLE = ("StatusCode.UNAVAILABLE", "503")
# A reference the server cannot use although the model announced the root (another machine, another layout, the
# roots changed since they were read). Other refusals are the video's own.
_NOT_HERE = re.compile(r"\b(MediaNotFoundError|OutsideRootsError|ReferencesOffError): ")


def remote_error(message: str, status: str | None, digest_sent: bool = False) -> RemoteError:
    """The typed error of a server's answer (`status`: gRPC's `StatusCode.X` or the HTTP code as text)."""
    # A request to a dead python-backend stub fails as a server error whose only mark is python_backend's text
    # ("Stub process '...' is not healthy."): the one place the server's text decides the type.
    if status in UNAVAILABLE or "not healthy" in message:
        return UnavailableError(message, status)
    if _NOT_HERE.search(message):
        return ReferenceUnusableError(message, status)
    if digest_sent and status in NOT_FOUND:
        return NotCachedError(message, status)
    return RemoteError(message, status)


@dataclass
class ServedResult:
    result: GroundingResult
    top_k_frames: list[int]
    cache_hit: bool
    sent_video: bool  # False: the server had the video's features, and only its digest (or its path) was sent
    outputs: dict[str, np.ndarray]
    # The top-K frames when asked for (`frames=`), chronological: JPEG file bytes ("jpeg") or [H, W, 3] uint8.
    frames: list[bytes] | list[np.ndarray] | None = None
    by_reference: bool = False  # the video was named by its path under a media root of the server

    def picked(self) -> list[int]:
        """The picked frames (`top_k_frames`) as positions into the result's per-frame lists, chronological."""
        return self.result.positions(self.top_k_frames)

    def images(self) -> list[np.ndarray]:
        """The frames asked for as RGB uint8 [H, W, 3] arrays (JPEGs decoded), chronological."""
        if self.frames is None:
            raise InputError("the request did not ask for frames: pass frames='jpeg' or 'uint8'")
        from PIL import Image

        return [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) if isinstance(f, bytes) else f
                for f in self.frames]

    @property
    def moments(self) -> list[tuple[float, float, float]]:
        """The server's moments `(start_s, end_s, score)`, best first, under the deployment's moment rule."""
        return [tuple(float(x) for x in m) for m in self.outputs[MOMENTS].reshape(-1, 3)]


def probe_protocol(url: str, timeout_s: float = 2.0, tls: bool = False) -> str | None:
    """What answers at HOST:PORT: "http" (an HTTP/1.1 reply, Triton's HTTP port), "grpc" (HTTP/2 frames, its gRPC
    port), or None (nothing listening, or neither); `tls`: asked over TLS (its certificate not checked: only the
    protocol is looked at, nothing is sent but a readiness request)."""
    host, _, port = url.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s) as raw:
            sock = raw
            if tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                ctx.set_alpn_protocols(["h2", "http/1.1"])
                sock = ctx.wrap_socket(raw, server_hostname=host.strip("[]") or None)
            sock.settimeout(timeout_s)
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: videoitg\r\nConnection: close\r\n\r\n")
            head = sock.recv(16)
    except (OSError, ValueError):
        return None
    if head.startswith(b"HTTP/1."):
        return "http"
    if len(head) >= 9 and head[3] == 0x04:  # an HTTP/2 SETTINGS frame: what a gRPC server sends first
        return "grpc"
    return None


def protocol_mismatch(url: str, protocol: str, tls: bool = False) -> str | None:
    """A hint when `url` speaks the other protocol than `protocol` (e.g. the HTTP port given with gRPC), or TLS
    where the client does not (`tls`), or the other way round; else None."""
    other = probe_protocol(url, tls=tls)
    if other is None and probe_protocol(url, tls=not tls) is not None:
        return (f"{url} does not speak TLS: connect without --ca-file / --tls" if tls else
                f"{url} speaks TLS: give --ca-file CA (the CA that signed its certificate; Python: ca_file=), or "
                "--tls where the system trusts it")
    if other is None or other == protocol:
        return None
    port = "HTTP port" if other == "http" else "gRPC port"
    return (f"{url} is Triton's {port}: it speaks {other}, not {protocol}; use --protocol {other} "
            f"(or the server's {protocol} port)")


def _module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as m
    elif protocol == "http":
        import tritonclient.http as m
    else:
        raise InputError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    return m


def request_inputs(m: Any, video: bytes | None, instruction: str, options: RequestOptions = NO_OPTIONS,
                   digest: str | None = None, uri: str | None = None) -> list:
    """The request's input tensors for tritonclient's module `m` (`tritonclient.http` or `.grpc`): VIDEO (the bytes),
    or when `video` is None VIDEO_URI (`uri`, a path under a media root of the server) or VIDEO_DIGEST alone.
    Only the options given are sent, each in its input (`protocol.OPTION_INPUTS`); the server applies its own
    defaults for the rest (its top-K and `ranking_rule` parameter, "released" unless configured; no frames)."""
    if video is not None:
        values: dict[str, Any] = {VIDEO: video}
    elif uri is not None:
        values = {VIDEO_URI: os.fsencode(uri)}
    else:
        values = {VIDEO_DIGEST: str(digest).encode()}
    values[INSTRUCTION] = instruction.encode("utf-8")
    for option, value in options.given().items():
        values[OPTION_INPUTS[option]] = value.encode() if isinstance(value, str) else value
    ins = []
    for name, value in values.items():
        spec = REQUEST.input(name)  # the name, dtype and shape the served model declares ([batch, 1])
        arr = np.array([[value]], dtype=spec.numpy)
        t = m.InferInput(name, list(arr.shape), spec.datatype)
        t.set_data_from_numpy(arr)
        ins.append(t)
    return ins


def served_result(arrays: dict[str, np.ndarray], instruction: str, name: str, sent_video: bool,
                  by_reference: bool = False) -> ServedResult:
    """The ServedResult of an answer's output tensors, under the ranking rule the server applied."""
    result = result_from_outputs(arrays, instruction, name)
    return ServedResult(result, arrays[TOP_K_FRAMES].reshape(-1).tolist(), bool(arrays[CACHE_HIT].reshape(-1)[0]),
                        sent_video, arrays, frames_from_outputs(arrays), by_reference)


# ---- the same request as raw KServe v2 HTTP bytes: for a caller with its own connection to tritonserver (the
# front's answer endpoint), built and read by tritonclient's own functions
def output_names(options: RequestOptions) -> list[str]:
    """The outputs to ask for: the result's, and the frames' output when `options` asks for frames."""
    return [*RESULT_NAMES, *([FRAME_FORMATS[options.frames]] if options.frames is not None else [])]


def http_request_body(video: bytes | bytearray | None, instruction: str, options: RequestOptions = NO_OPTIONS,
                      uri: str | None = None) -> tuple[list[bytes | bytearray], dict[str, str]]:
    """(body, headers) of a KServe v2 HTTP inference request of a video, as its bytes or (`video` None) by reference
    (`uri`: VIDEO_URI, its path under a media root of the server), asking for the result outputs and, with
    `options.frames`, the top-K frames: POST it to /v2/models/videoitg/infer. The body is a list of pieces to send
    one after the other (their lengths sum to its Content-Length): the video's bytes are one of them, never copied,
    and go first among the binary data as tritonclient would put them (a BYTES element: its length as 4 bytes
    little-endian, then its bytes); every other input is built by tritonclient's own functions."""
    import tritonclient.http as m

    outputs = [m.InferRequestedOutput(n, binary_data=True) for n in output_names(options)]
    inputs = request_inputs(m, None if video is None else b"", instruction, options, uri=uri)
    if video is not None:  # a stand-in, replaced below by the video itself
        inputs = [t for t in inputs if t.name() != VIDEO]
    body, json_size = m.InferenceServerClient.generate_request_body(inputs, outputs)
    header, rest = body[:json_size or len(body)], body[json_size or len(body):]
    pieces: list[bytes | bytearray] = [header, rest]
    if video is not None:
        request = json.loads(header)
        spec = REQUEST.input(VIDEO)
        request["inputs"].insert(0, {"name": VIDEO, "shape": [1, 1], "datatype": spec.datatype,
                                     "parameters": {"binary_data_size": 4 + len(video)}})
        header = json.dumps(request, separators=(",", ":")).encode()
        pieces = [header, struct.pack("<I", len(video)), video, rest]
    return pieces, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}


def http_served_result(body: bytes, header_length: str | None, instruction: str) -> ServedResult:
    """The ServedResult of a KServe v2 HTTP answer (status 200) to `http_request_body`'s request; InputError when
    its bytes are not such an answer."""
    import tritonclient.http as m

    try:
        r = m.InferResult.from_response_body(body, header_length=None if header_length is None else int(header_length))
        arrays = {o["name"]: r.as_numpy(o["name"]) for o in r.get_response()["outputs"]}
        return served_result(arrays, instruction, "", True)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"malformed inference answer from the server ({type(e).__name__}: {str(e)[:120]})") from None


# Videos from this size on are first named by their digest alone (`infer`): below it, sending the bytes costs less
# than the extra round trip a first request pays.
DIGEST_FIRST_BYTES = 1 << 20


class _KeyHeader:
    """tritonclient's plugin that adds the API key to every request: a header on HTTP, metadata on gRPC."""

    def __init__(self, key: str):
        self._value = f"{SCHEME} {key}"

    def __call__(self, request: Any) -> None:
        request.headers[GRPC_AUTHORIZATION] = self._value

    def __repr__(self) -> str:
        return "_KeyHeader(...)"


class VideoITGClient:
    """A running server's client. Who it is to the server: `api_key` (else `api_key_file`'s first key, else
    $VIDEOITG_API_KEY's), and TLS with `ca_file` (the CA that signed the server's certificate) or `tls` (the
    system's CAs); or all of it as `access`."""

    def __init__(self, url: str, protocol: str = "grpc", model: str = TOP, timeout_s: float = 600.0,
                 digest_first_bytes: int = DIGEST_FIRST_BYTES, *, api_key: str | None = None,
                 api_key_file: str | os.PathLike[str] | None = None, ca_file: str | os.PathLike[str] | None = None,
                 tls: bool = False, access: ClientAccess | None = None):
        self.access = access or ClientAccess.of(api_key, api_key_file, ca_file, tls)
        self.protocol, self.model, self.timeout_s = protocol, model, timeout_s
        self.digest_first_bytes = digest_first_bytes
        self._input_names: set[str] | None = None  # the served model's inputs (asked once)
        self._media_roots: MediaRoots | None = None  # where the model takes a video by reference (asked once)
        self._m = _module(protocol)
        url = url.split("://", 1)[-1]  # tritonclient wants host:port
        self.url = url
        kw: dict[str, Any] = {}
        if protocol == "http":
            kw = {"connection_timeout": timeout_s, "network_timeout": timeout_s}
            if self.access.tls:
                import functools

                import gevent.ssl

                kw.update(ssl=True, ssl_context_factory=functools.partial(gevent.ssl.create_default_context,
                                                                          cafile=self.access.ca_file))
        elif self.access.tls:
            kw = {"ssl": True, "root_certificates": self.access.ca_file}
        self._client = self._m.InferenceServerClient(url, **kw)
        if self.access.key:
            self._client.register_plugin(_KeyHeader(self.access.key))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> VideoITGClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:
            return False

    def inputs(self, video: bytes | None, instruction: str, options: RequestOptions = NO_OPTIONS,
               digest: str | None = None, uri: str | None = None) -> list:
        """`request_inputs` with this client's protocol."""
        return request_inputs(self._m, video, instruction, options, digest, uri)

    def _key_error(self, e: Exception) -> KeyRefusedError | None:
        """The KeyRefusedError of a server's answer that refused this client's key (None: another answer)."""
        status = e.status() if hasattr(e, "status") and callable(e.status) else None
        return key_refused(self.url, self.access.key is not None, status) if status in UNAUTHENTICATED else None

    def accepts(self, name: str) -> bool:
        """Whether the served model takes the input `name`; False while the server does not say. KeyRefusedError
        when it wants a key this client does not have."""
        if self._input_names is None:
            try:
                md = self._client.get_model_metadata(self.model, **({"as_json": True} if self.protocol == "grpc"
                                                                     else {}))
            except Exception as e:  # unknown for now: ask again next time
                if (refused := self._key_error(e)) is not None:
                    raise refused from None
                return False
            self._input_names = {i.get("name") for i in md.get("inputs", [])}
        return name in self._input_names

    def accepts_digest(self) -> bool:
        """Whether the served model takes VIDEO_DIGEST (the BLS repository does; the ensemble has no cache)."""
        return self.accepts(VIDEO_DIGEST)

    def media_roots(self) -> MediaRoots:
        """The directories under which the served model takes a video by reference: its `media_roots` parameter
        (none where it announces none, e.g. an older repository or an ensemble)."""
        if self._media_roots is None:
            params = self.model_parameters()
            if not params:  # unknown for now: send bytes, ask again next time
                return MediaRoots()
            try:
                self._media_roots = MediaRoots.from_parameter(params.get(MEDIA_ROOTS))
            except (ValueError, TypeError):
                self._media_roots = MediaRoots()
        return self._media_roots

    def reference(self, path: str | Path) -> str | None:
        """The path to send as VIDEO_URI for a local file (absolute, symlinks followed), or None when it lies under
        no media root the served model announces."""
        return os.path.realpath(path) if self.media_roots().contains(path) else None

    def model_config(self, model: str | None = None) -> dict[str, Any]:
        """A served model's config as JSON (KServe's model configuration extension); {} when the server does not
        say. KeyRefusedError when it wants a key this client does not have."""
        try:
            if self.protocol == "grpc":
                return self._client.get_model_config(model or self.model, as_json=True).get("config", {})
            return self._client.get_model_config(model or self.model)
        except Exception as e:  # the config is informative: a server that does not answer has none
            if (refused := self._key_error(e)) is not None:
                raise refused from None
            return {}

    def model_parameters(self, model: str | None = None) -> dict[str, str]:
        """The `parameters` of a served model's config (name -> string value); {} when the server does not say."""
        cfg = self.model_config(model)
        return {k: v.get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}

    def statistics(self, model: str) -> dict[str, Any]:
        """A served model's inference statistics (KServe's statistics extension: its first version's
        `model_stats` entry as JSON, counts and nanoseconds since the server started)."""
        kw: dict[str, Any] = {"as_json": True} if self.protocol == "grpc" else {}
        try:
            stats = self._client.get_inference_statistics(model_name=model, **kw).get("model_stats") or [{}]
        except Exception as e:
            if (refused := self._key_error(e)) is not None:
                raise refused from None
            raise
        return stats[0]

    def server_version(self) -> str | None:
        """The server's version (its metadata), None when it does not answer."""
        try:
            kw: dict[str, Any] = {"as_json": True} if self.protocol == "grpc" else {}
            return self._client.get_server_metadata(**kw).get("version")
        except Exception as e:
            if (refused := self._key_error(e)) is not None:
                raise refused from None
            return None

    def served_checkpoint(self) -> str | None:
        """The checkpoint the deployment serves: its `checkpoint` model parameter, on the top-level model (BLS) or
        the grounding step (an ensemble has no parameters of its own); "default" is the embedded tiny one. None
        when the server does not say."""
        for name in (self.model, GROUNDING):
            params = self.model_parameters(name)
            if CHECKPOINT in params:
                return params[CHECKPOINT]
        return None

    def infer(self, video: str | Path | bytes, instruction: str, options: RequestOptions = NO_OPTIONS,
              digest: str | None = None, path: str | Path | None = None) -> ServedResult:
        """`options` the server's defaults where None (its top-K and ranking rule, "released" unless configured;
        the result carries the rule the server applied). A file under a media root the model announces
        (`video` as a path, or `path`: the file the bytes `video` were read from) is named by its path and read by
        the server. Otherwise a video of `digest_first_bytes` or more is first named by its digest (`digest`, else
        computed here) where the model takes one: a server that has its features answers without the bytes
        crossing the wire; one that has not says NOT_FOUND and gets them.
        `options.frames` ("jpeg" | "uint8"): the answer also holds the top-K frames (`ServedResult.frames`), decoded
        by the server from the video, whose bytes are then always sent; `options.frame_size`: their longer side in
        pixels (None or 0: the video's own size)."""
        frames = options.frames
        if frames is not None:
            self._check_frames()
        video = local_video(video)  # a URL is refused: nothing is fetched
        file = path if isinstance(video, bytes) else video
        uri = None if file is None or frames is not None else self.reference(file)  # frames: the bytes go
        if uri is not None:
            try:
                return self._infer(self.inputs(None, instruction, options, uri=uri), instruction,
                                   "" if isinstance(video, bytes) else str(video), False, options, by_reference=True)
            except ReferenceUnusableError:
                pass  # the bytes go instead
        if isinstance(video, bytes):
            data = video
        else:
            try:
                data = Path(video).read_bytes()
            except OSError as e:
                raise InputError(f"cannot read video {video}: {e.strerror or e}") from None
        name = "" if isinstance(video, bytes) else str(video)
        if frames is None and len(data) >= self.digest_first_bytes and self.accepts_digest():
            from videoitg.digest import video_digest

            try:
                return self._infer(self.inputs(None, instruction, options, digest or video_digest(data)),
                                   instruction, name, False, options)
            except NotCachedError:
                pass  # the bytes go instead
        return self._infer(self.inputs(data, instruction, options), instruction, name, True, options)

    def _check_frames(self) -> None:
        """Refused before sending: a model that serves no frames."""
        if not self.accepts(FRAMES):
            raise InputError(f"{self.url}: model {self.model!r} does not serve frames (an ensemble deployment has no "
                             "video at selection time): serve the bls repository, or decode them locally "
                             "(videoitg.decode.export.picked_images)")

    def _infer(self, inputs: list, instruction: str, name: str, sent_video: bool,
               options: RequestOptions = NO_OPTIONS, by_reference: bool = False) -> ServedResult:
        names = output_names(options)
        outs = [self._m.InferRequestedOutput(n) for n in names]
        try:
            kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            r = self._client.infer(self.model, inputs, outputs=outs, **kw)
        except Exception as e:  # InferenceServerException: keep the server's own message
            status = e.status() if hasattr(e, "status") else None
            msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
            if (refused := self._key_error(e)) is not None:
                raise refused from None
            if status in (None, "StatusCode.UNAVAILABLE"):  # could not talk to it at all: the other protocol?
                hint = protocol_mismatch(self.url, self.protocol, self.access.tls)
                if hint:
                    raise remote_error(hint, status) from None  # same status: batch retries, then stops
            raise remote_error(msg, status, digest_sent=not sent_video and not by_reference) from None
        return served_result({n: r.as_numpy(n) for n in names}, instruction, name, sent_video, by_reference)

    def score(self, video: str | Path | bytes, instruction: str, options: RequestOptions = NO_OPTIONS
              ) -> GroundingResult | tuple[GroundingResult, list[np.ndarray]]:
        """The result; with `options.frames` ("jpeg" | "uint8", see `infer`), (result, its top-K frames as RGB
        uint8 [H, W, 3] arrays, chronological)."""
        served = self.infer(video, instruction, options)
        return served.result if options.frames is None else (served.result, served.images())
