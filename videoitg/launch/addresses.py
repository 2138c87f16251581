"""Where a launched server answers and what unlocks it (`Addresses`, a base of `server.TritonServer`): the public
ports (the front's) and tritonserver's own loopback ones, their URLs and scheme (TLS), and the keys the launcher
generates for its own calls with the headers that carry them."""

from __future__ import annotations

import secrets
import ssl

from videoitg.contract.access import ClientAccess, own_certificate_context
from videoitg.front.config import GRPC_INFER_KEY_HEADER, INFER_KEY_HEADER
from videoitg.launch.front_process import front_environment
from videoitg.launch.options import ServerOptions, own_key
from videoitg.launch.ports import LOOPBACK
from videoitg.launch.triton_command import ADMIN_HEADER, GRPC_ADMIN_HEADER


class Addresses:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.server_id = f"videoitg-{secrets.token_hex(8)}"  # `GET /v2` names it: proves the answering server is ours
        self._admin_key = secrets.token_urlsafe(32)
        self._infer_key = secrets.token_urlsafe(32)
        self.http_port = self.grpc_port = self.metrics_port = 0  # the public ports, the front's
        self._triton_ports = (0, 0, 0)  # tritonserver's own http, grpc, metrics ports, on loopback

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.scheme}://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def scheme(self) -> str:
        """"https" where the public ports serve TLS (`--tls-cert-file`), else "http"."""
        return "https" if self.options.tls_cert_file else "http"

    @property
    def _own_tls(self) -> ssl.SSLContext | None:
        """How the launcher reaches its own front over TLS: trusting exactly the server's certificate."""
        return own_certificate_context(self.options.tls_cert_file) if self.options.tls_cert_file else None

    def client_access(self) -> ClientAccess:
        """What a client of this server sends and trusts: a key it takes now, its certificate as the CA (for the
        launcher's own checks and tests; a client is given these by the operator)."""
        return ClientAccess(own_key(self.options), self.options.tls_cert_file is not None, self.options.tls_cert_file)

    @property
    def internal_http_url(self) -> str:
        """tritonserver's own HTTP endpoint, behind the front: every model and (with `admin_headers`) the admin
        APIs. For the launcher and its tests only."""
        return f"{LOOPBACK}:{self._triton_ports[0]}"

    @property
    def internal_grpc_url(self) -> str:
        return f"{LOOPBACK}:{self._triton_ports[1]}"

    @property
    def _internal_metrics_url(self) -> str:
        """tritonserver starts its metrics service last: once it answers, tritonserver started all it serves."""
        return f"http://{LOOPBACK}:{self._triton_ports[2]}/metrics"

    @property
    def _client_host(self) -> str:
        return LOOPBACK if self.options.host in ("0.0.0.0", "") else self.options.host

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that unlock the restricted APIs: for the launcher itself (the watchdog) and its tests only."""
        return {(GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER): self._admin_key}

    def inference_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that let an inference reach tritonserver's own ports: for callers that go there on purpose
        (tests of the steps, benchmarks of the front's cost); every other caller goes through the front."""
        return {(GRPC_INFER_KEY_HEADER if protocol == "grpc" else INFER_KEY_HEADER): self._infer_key}

    def front_environment(self) -> dict[str, str]:
        """The front's process environment: this one's, with its memory settings and the inference key."""
        return front_environment(self._infer_key)
