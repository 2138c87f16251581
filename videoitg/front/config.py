"""The front's configuration (`FrontConfig`, written by the launcher as JSON) and what it counts (`FrontCounters`,
on the metrics page beside tritonserver's). Imported by the launcher: nothing here needs the serve extra."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from videoitg.front.bounds import BODY_IDLE_S, ByteBudget
from videoitg.front.policy import DEFAULT_MAX_TENSORS, KeyOutcome, Refusal

KEEPALIVE_S = 15.0  # to send a request's headers, and an idle keep-alive connection's life
# Liveness and readiness toward tritonserver: a Kubernetes probe gives up after 1 s (its default timeoutSeconds),
# so a tritonserver that does not answer (stopped, wedged) is reported not live or not ready within it.
HEALTH_TIMEOUT_S = 0.75
# tritonserver takes an inference only with this header and the key the launcher generated
# (`--http-restricted-api=inference:...`, `--grpc-restricted-protocol=inference:...`, Triton 2.51 and 2.71 alike,
# which prefixes the gRPC one): the front holds it and adds it to the inferences it passes on, so a local process
# that does not know the key cannot call a model, a step or the public one, on tritonserver's own ports. The key
# reaches the front in its environment (INFER_KEY_ENV), never on the front's command line; it is on tritonserver's,
# which any local user can read in /proc/PID/cmdline unless /proc is mounted with hidepid.
INFER_KEY_HEADER = "videoitg-infer-key"
GRPC_INFER_KEY_HEADER = "triton-grpc-protocol-" + INFER_KEY_HEADER
INFER_KEY_ENV = "VIDEOITG_FRONT_INFER_KEY"
# On the HTTP port and on the gRPC port, at most: lowered at start to fit the open-file limit. What a connection may
# hold bounds the front's memory with it (aiohttp's 512 KiB of read buffer, about 400 KiB of HTTP/2 buffers: about
# 700 MiB at 768 each; docs/front.md, "Bounded holding"); past it the connection idle longest makes room.
MAX_CONNECTIONS = 768
METRICS_CONNECTIONS = 32  # open connections on the metrics port (a scraper needs one or two)


@dataclass(frozen=True)
class FrontConfig:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    triton_http: str  # host:port of tritonserver's own endpoints
    triton_grpc: str
    triton_metrics: str
    models: tuple[str, ...]  # the models a client may use
    max_request_bytes: int
    shutdown_s: float = 10.0  # in-flight requests get this long on SIGTERM
    max_inputs: int = DEFAULT_MAX_TENSORS  # the public models' signature (`RepoSummary.signature_bound`)
    max_outputs: int = DEFAULT_MAX_TENSORS
    held_bytes: int = 1 << 30  # request body bytes held at once, all connections together (at least one request)
    # open client connections on each of the HTTP and gRPC ports (past it, the one idle longest is closed for a new
    # one), gRPC calls waiting for their message, and gRPC calls being answered; the process lowers it to fit its
    # open-file limit (`process.connection_cap`)
    max_connections: int = MAX_CONNECTIONS
    health_timeout_s: float = HEALTH_TIMEOUT_S  # liveness and readiness (server and model) toward tritonserver
    pass_timeout_s: float = 10.0  # metadata, config, statistics, metrics toward tritonserver
    infer_timeout_s: float = 300.0  # an inference toward tritonserver
    keepalive_s: float = KEEPALIVE_S  # to send a request's headers; an idle keep-alive connection's life
    body_idle_s: float = BODY_IDLE_S  # the longest wait for the next byte of a request body
    infer_key: str = ""  # the value of INFER_KEY_HEADER on every inference passed on ("": none sent)
    # The answer endpoint (front/answer.py, docs/answer.md): the video-LLM's OpenAI-compatible base URL (None: off),
    # the model name its requests are given (None: the client's), the bound on its answers.
    answer_upstream: str | None = None
    answer_model: str | None = None
    answer_timeout_s: float = 300.0
    # The largest video the public model takes as bytes (its max_video_bytes): a data URL holding more is refused
    # from its length (None: no bound but the request's).
    max_video_bytes: int | None = None
    # The page at / of the HTTP port (webpage.py, docs/page.md): on, off, or None: on where `host` is a loopback
    # address (`page_on`).
    page: bool | None = None
    # Read the launcher's notices on stdin (lost.py: a model's instance unloaded with requests in it); only the
    # launcher, which holds the other end of that pipe, sets it.
    launcher_notices: bool = False
    # Who may use the ports (contract/access.py): the clients' API keys (a file, re-read when it changes or on
    # SIGHUP; else $VIDEOITG_API_KEYS; neither: no key wanted), the certificate and key of TLS on all three ports
    # (None: plain TCP), and the file holding the video-LLM's key (the answer endpoint sends it as its own).
    api_key_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    answer_api_key_file: str | None = None

    @property
    def serves_page(self) -> bool:
        return page_on(self.host, self.page)

    def keyed(self, headers: dict[str, str]) -> dict[str, str]:
        """`headers` of an inference passed on to tritonserver, with the key its inference API asks for (if set)."""
        return {**headers, INFER_KEY_HEADER: self.infer_key} if self.infer_key else headers


def page_on(host: str, page: bool | None) -> bool:
    """Whether the front serves its page: as `page` says, else where it binds a loopback address only (a page
    on a public address is the operator's choice, `--page`)."""
    return page if page is not None else is_loopback(host)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or localhost): only this machine reaches it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost, or "" (every address)
        return False


def held_budget(cfg: FrontConfig) -> ByteBudget:
    """The request bytes both ports may hold at once (at least one request's)."""
    return ByteBudget(max(cfg.held_bytes, cfg.max_request_bytes))


class FrontCounters:
    """What the front answered itself, on the metrics page beside tritonserver's: `videoitg_front_rejected{protocol,
    reason}` (the client's fault: a Refusal's reason's label) and `videoitg_front_unavailable{protocol}`
    (tritonserver did not answer within its bound, or could not be reached, or the model's process died with the
    request in it), `videoitg_front_idle_closed{protocol}` (idle connections closed at the connection cap to take
    a new one), and with API keys `videoitg_front_api_key{protocol,outcome}` (each request's key checked: accepted,
    missing, wrong; never the key)."""

    def __init__(self) -> None:
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.unavailable: Counter[str] = Counter()
        self.idle_closed: Counter[str] = Counter()
        self.answers: Counter[tuple[str, int]] = Counter()  # the answer endpoint's errors: (code, status)
        self.keys: Counter[tuple[str, str]] = Counter()  # (protocol, KeyOutcome's value)

    def key_checked(self, protocol: str, outcome: KeyOutcome) -> None:
        self.keys[protocol, outcome.value] += 1

    def answer_failed(self, code: str, status: int) -> None:
        self.answers[code, status] += 1

    def reject(self, protocol: str, refusal: Refusal) -> None:
        if refusal.reason.label is not None:
            self.rejected[protocol, refusal.reason.label] += 1

    def text(self) -> str:
        lines = ["# HELP videoitg_front_rejected requests the front refused for the client's fault, by reason",
                 "# TYPE videoitg_front_rejected counter"]
        lines += [f'videoitg_front_rejected{{protocol="{p}",reason="{r}"}} {n}'
                  for (p, r), n in sorted(self.rejected.items())]
        lines += ["# HELP videoitg_front_unavailable requests answered unavailable: tritonserver did not answer, or "
                  "the model's process died while they were in flight",
                  "# TYPE videoitg_front_unavailable counter"]
        lines += [f'videoitg_front_unavailable{{protocol="{p}"}} {n}' for p, n in sorted(self.unavailable.items())]
        lines += ["# HELP videoitg_front_idle_closed idle connections closed at the connection cap for a new one",
                  "# TYPE videoitg_front_idle_closed counter"]
        lines += [f'videoitg_front_idle_closed{{protocol="{p}"}} {n}' for p, n in sorted(self.idle_closed.items())]
        lines += ["# HELP videoitg_front_answer_failed answer-endpoint requests answered with an error of their own "
                  "(the request, the selection or the video-LLM), by code and status",
                  "# TYPE videoitg_front_answer_failed counter"]
        lines += [f'videoitg_front_answer_failed{{code="{c}",status="{s}"}} {n}'
                  for (c, s), n in sorted(self.answers.items())]
        if self.keys:
            lines += ["# HELP videoitg_front_api_key requests whose API key was checked, by outcome",
                      "# TYPE videoitg_front_api_key counter"]
            lines += [f'videoitg_front_api_key{{protocol="{p}",outcome="{o}"}} {n}'
                      for (p, o), n in sorted(self.keys.items())]
        return "\n".join(lines) + "\n"
