"""What the stub watchdog reads and does through tritonserver's own ports, with the launcher's key: the requests
waiting in each model's queue (its metrics), each model's state (its repository index), and a model loaded or
unloaded (over gRPC)."""

from __future__ import annotations

import json
import re
import urllib.request

from videoitg.launch.health import WATCH_TIMEOUT_S
from videoitg.launch.ports import ServerError

_PENDING = re.compile(r'^nv_inference_pending_request_count\{[^}]*model="([^"]+)"[^}]*\} (\S+)$', re.M)


def _get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}),
                                timeout=WATCH_TIMEOUT_S) as r:
        return r.read()


def waiting(metrics_url: str) -> dict[str, int]:
    """Requests waiting in each model's queue, not yet executing (tritonserver's
    `nv_inference_pending_request_count` on its own `metrics_url`, summed over versions); {} when it does not
    answer."""
    try:
        text = _get(metrics_url).decode(errors="replace")
    except (OSError, ValueError):
        return {}
    out: dict[str, int] = {}
    for m in _PENDING.finditer(text):
        out[m.group(1)] = out.get(m.group(1), 0) + int(float(m.group(2)))
    return out


def model_states(http_url: str, admin_headers: dict[str, str]) -> dict[str, str]:
    """Every model of the repository and its state (READY, LOADING, UNLOADING, UNAVAILABLE; '' for one never
    loaded), from the repository index of tritonserver's own `http_url` (with the launcher's key); {} when it does
    not answer."""
    try:
        index = json.loads(_get(f"http://{http_url}/v2/repository/index", b"{}", admin_headers))
    except (OSError, ValueError):
        return {}
    return {m["name"]: m.get("state", "") for m in index if isinstance(m, dict) and "name" in m}


def load_or_unload(grpc_url: str, model: str, action: str, admin_headers: dict[str, str]) -> None:
    """`action` ("load" or "unload") of `model` by tritonserver's own `grpc_url`. Over gRPC: tritonserver serves a
    model load on the thread of the connection that asked, and its HTTP threads also carry the front's pooled
    connections (health checks would wait behind a reload)."""
    # the serve extra; `videoitg serve --help` runs without it
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(grpc_url) as client:
        call = client.load_model if action == "load" else client.unload_model
        try:
            call(model, headers=admin_headers, client_timeout=600)
        except InferenceServerException as e:
            raise ServerError(f"{action} of '{model}' failed: {e.message()}") from None
