"""The page at `/` of the front's HTTP port (docs/page.md): one HTML page, its script and its style sheet
(videoitg/front/page/, shipped in the wheel), on which a person scores a video and sees which frames were picked.

The page is a client of the public API like any other: its script sends KServe v2 inference requests of the public
model (and, with --answer-upstream, chat requests), which reach the same routes, bounds and checks as every
client's; it adds no capability. Served here: the three files, each with headers that let a browser run only them
(`HEADERS`), the index rendered once at start with the options a person may set (`page_options`, read from the
option rows) and the contract's names (`page_setup`), as JSON blocks that are data, never run."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from aiohttp import web

from videoitg.answer.chat import EXTENSION, PATHS
from videoitg.contract.parameters import MEDIA_ROOTS
from videoitg.contract.protocol import (
    APPLIED_RANKING_RULE,
    CACHE_HIT,
    DURATION,
    FRAME_FORMATS,
    FRAME_INDICES,
    INSTRUCTION,
    MOMENTS,
    OPTION_INPUTS,
    RANKING,
    SCORES,
    TIMESTAMPS,
    TOP,
    TOP_K_FRAMES,
    VIDEO,
    VIDEO_URI,
    TensorSpec,
    signatures,
)
from videoitg.front.config import FrontConfig
from videoitg.front.http import HttpPort, Route
from videoitg.front.policy import Reason, Refusal
from videoitg.request.options import OPTIONS

THUMBNAIL_SIZE = 160  # the picked frames' longer side on the page, in pixels
# The options the page sets itself, not a person: the picked frames come back as JPEG thumbnails, the server's own
# decode of the video (a browser could not seek every format the server decodes, nor to its exact frames).
PAGE_SETS: dict[str, Any] = {"frames": "jpeg", "frame_size": THUMBNAIL_SIZE}
# path -> (file in videoitg/front/page/, its Content-Type); the page names the other two relative to itself
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/page.js": ("page.js", "text/javascript; charset=utf-8"),
         "/page.css": ("page.css", "text/css; charset=utf-8")}
# The browser runs and loads only the page's own files: no inline script or style, no other origin; the picked
# frames are blob: images, a local video a blob: source; the icon is the empty data: URL (no /favicon.ico request).
CSP = "; ".join(("default-src 'self'", "img-src blob: data:", "media-src blob:", "object-src 'none'",
                 "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"))
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin",
           "Cross-Origin-Resource-Policy": "same-origin", "Cache-Control": "no-cache"}
_KINDS = {int: "int", float: "float", str: "str"}
_SIGNATURE = signatures("bls")[TOP]  # every input a client may send the public model
# JSON inside a <script> element: without `<`, `>` and `&` no text can close the element or open a comment; JSON's
# own escapes of them read back as the same characters (and U+2028/2029, which older readers took as line ends).
_SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028",
                   0x2029: "\\u2029"}


def _input(spec: TensorSpec) -> dict[str, Any]:
    """An input as a request names it: its name, KServe data type and shape with the batch axis ([1, 1])."""
    return {"name": spec.name, "datatype": spec.datatype, "shape": [1, *spec.dims]}


def page_options() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the options a person sets on the page, one field each: every selection option; those the page sets itself,
    each with its value, `PAGE_SETS`). The one reading of the option rows (`videoitg.request.options.OPTIONS`) and
    the inputs they travel in, so an option added there is on the page with no change to the page. `default`: what
    applies when it is left empty; `chat`: the chat request's `videoitg` object takes it too (the answer button
    sends it there)."""
    offered, fixed = [], []
    for name, o in OPTIONS.items():
        field = {"option": name, **_input(_SIGNATURE.input(OPTION_INPUTS[name])), "kind": _KINDS[o.kind],
                 "meaning": o.meaning, "default": o.default, "low": None if o.choices else o.low,
                 "high": None if o.choices else o.high, "choices": list(o.choices), "chat": o.chat}
        if name in PAGE_SETS:
            fixed.append({**field, "value": PAGE_SETS[name]})
        else:
            offered.append(field)
    return offered, fixed


def page_setup(cfg: FrontConfig, fixed: list[dict[str, Any]], keys: bool = False) -> dict[str, Any]:
    """What the page's script reads besides the options: the public model's paths (relative to the page), the
    readiness route (the page waits for a server that starts), its inputs and the outputs it shows by role, the
    options the page sets (`fixed`), the parameter naming the media roots, the answer endpoint's paths when it is
    on (None: off), and whether the API wants a key (`keys`: the page asks for one and sends it)."""
    frames = FRAME_FORMATS[PAGE_SETS["frames"]]
    return {
        "model": TOP, "infer": f"v2/models/{TOP}/infer", "metadata": f"v2/models/{TOP}",
        "config": f"v2/models/{TOP}/config", "ready": "v2/health/ready", "media_roots": MEDIA_ROOTS,
        "thumbnail_size": THUMBNAIL_SIZE,
        "inputs": {"video": _input(_SIGNATURE.input(VIDEO)), "video_uri": _input(_SIGNATURE.input(VIDEO_URI)),
                   "instruction": _input(_SIGNATURE.input(INSTRUCTION))},
        "fixed": fixed,
        "outputs": {"scores": SCORES, "timestamps": TIMESTAMPS, "frame_indices": FRAME_INDICES, "ranking": RANKING,
                    "picked": TOP_K_FRAMES, "moments": MOMENTS, "duration": DURATION, "cache_hit": CACHE_HIT,
                    "applied_rule": APPLIED_RANKING_RULE, "frames": frames},
        "answer": {"chat": PATHS[0].lstrip("/"), "models": PATHS[1].lstrip("/"), "extension": EXTENSION}
        if cfg.answer_upstream else None,
        "keys": keys,
    }


def script_json(value: Any) -> str:
    """`value` as JSON that can stand inside a <script> element (`_SCRIPT_ESCAPES`); `json.loads` reads it back."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).translate(_SCRIPT_ESCAPES)


def render_index(template: str, offered: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    """index.html with its two data blocks filled: `{{options}}` (the offered options) and `{{setup}}`."""
    for marker in ("{{options}}", "{{setup}}"):
        if template.count(marker) != 1:
            raise ValueError(f"the page's index.html must hold {marker} once")
    return template.replace("{{options}}", script_json(offered)).replace("{{setup}}", script_json(setup))


def page_file(name: str) -> bytes:
    """A file of the page as shipped (videoitg/front/page/)."""
    return (resources.files("videoitg.front") / "page" / name).read_bytes()


class Page:
    """The page's files as this front serves them (path -> body, Content-Type): the index rendered once."""

    def __init__(self, cfg: FrontConfig, keys: bool = False):
        offered, fixed = page_options()
        self.files: dict[str, tuple[bytes, str]] = {}
        for path, (name, content_type) in FILES.items():
            body = page_file(name)
            if name == "index.html":
                body = render_index(body.decode(), offered, page_setup(cfg, fixed, keys)).encode()
            self.files[path] = body, content_type

    async def serve(self, port: HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        """GET or HEAD of one of the files; any other method is refused as the API refuses a route."""
        if request.method not in ("GET", "HEAD"):
            return port.refuse(Refusal(f"{request.method[:16]} {request.path} is not served (GET and HEAD only)",
                                       Reason.ROUTE))
        body, content_type = self.files[request.path]
        return web.Response(body=body, headers={**HEADERS, "Content-Type": content_type})


def page_routes(cfg: FrontConfig, keys: bool = False) -> dict[str, Route]:
    """The HTTP port's routes of the page (`HttpPort`'s `pages`): none when the front serves no page. `keys`: the
    API wants a key (the page's files do not)."""
    if not cfg.serves_page:
        return {}
    page = Page(cfg, keys)
    return dict.fromkeys(page.files, page.serve)
