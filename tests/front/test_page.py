"""The page at `/` of the front's HTTP port (webpage.py), without a browser: its options block read from the option
rows and escaped so no text can leave it, the files it loads (its own only), its script's text-only writing, its
headers (the content security policy, nosniff, no CORS), its routes on a running port in front of a stand-in for
tritonserver, and the page's on/off setting. The page in a real browser against a real server:
test_page_browser.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from tests.support.front import exchange, http_stand_in, status, upstream_echo
from videoitg.contract.protocol import OPTION_INPUTS, TOP, signatures
from videoitg.front import config, main, webpage
from videoitg.request.options import OPTIONS, RequestOptions

PAGE = Path(webpage.__file__).parent / "page"
HOSTILE = "</script><script>window.__pwned=1</script><!-- <img src=x onerror=alert(1)> & \u2028"


class Elements(HTMLParser):
    """Every start tag of an HTML text with its attributes, and the text inside each <script> element."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def front_config(**kw: Any) -> config.FrontConfig:
    return config.FrontConfig(**{"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "metrics_port": 0,
                                 "triton_http": "", "triton_grpc": "", "triton_metrics": "", "models": (TOP,),
                                 "max_request_bytes": 1 << 20, **kw})


def rendered(**kw: Any) -> str:
    return webpage.Page(front_config(**kw)).files["/"][0].decode()


# ---- the options block ---------------------------------------------------------------------------------------------
def test_the_page_offers_every_selection_option_from_its_row_and_sets_the_frames_itself() -> None:
    offered, fixed = webpage.page_options()
    assert [f["option"] for f in offered] == [n for n in OPTIONS if n not in webpage.PAGE_SETS]
    assert {"top_k", "ranking_rule"} <= {f["option"] for f in offered}
    assert [f["option"] for f in fixed] == ["frames", "frame_size"]
    served = signatures("bls")[TOP]
    for field in offered + fixed:
        row, spec = OPTIONS[field["option"]], served.input(OPTION_INPUTS[field["option"]])
        assert (field["name"], field["datatype"], field["shape"]) == (spec.name, spec.datatype, [1, 1])
        assert (field["meaning"], field["default"], field["choices"]) == (row.meaning, row.default, list(row.choices))
        assert field["chat"] is row.chat
        assert (field["low"], field["high"]) == ((None, None) if row.choices else (row.low, row.high))
    # what the page sets is a request the options accept: the top-K frames as thumbnail JPEGs
    values = {f["option"]: f["value"] for f in fixed}
    assert RequestOptions(**values).given() == {"frames": "jpeg", "frame_size": webpage.THUMBNAIL_SIZE}


def test_the_rendered_page_holds_the_options_and_the_setup_as_data() -> None:
    page = Elements(rendered(answer_upstream="http://127.0.0.1:9/v1"))
    blocks = {a.get("id"): text for (tag, a), text in zip([t for t in page.tags if t[0] == "script"], page.scripts,
                                                           strict=True) if a.get("type") == "application/json"}
    offered, fixed = webpage.page_options()
    assert json.loads(blocks["videoitg-options"]) == offered
    setup = json.loads(blocks["videoitg-setup"])
    assert setup["fixed"] == fixed and setup["model"] == TOP and setup["infer"] == f"v2/models/{TOP}/infer"
    assert setup["answer"] == {"chat": "v1/chat/completions", "models": "v1/models", "extension": "videoitg"}
    assert json.loads(Elements(rendered()).scripts[1])["answer"] is None  # no --answer-upstream: no answer button


@pytest.mark.parametrize("text", [HOSTILE, "<!--", "</SCRIPT >", "a\u2029b", "]]>&lt;"])
def test_json_in_a_script_element_cannot_end_it(text: str) -> None:
    block = webpage.script_json({"meaning": text, "list": [text]})
    assert not set(block) & {"<", ">", "&", "\u2028", "\u2029"}, block
    assert json.loads(block) == {"meaning": text, "list": [text]}


def test_a_hostile_option_row_stays_data_in_the_page() -> None:
    offered = [{"option": HOSTILE, "meaning": HOSTILE, "choices": [HOSTILE]}]
    template = webpage.page_file("index.html").decode()
    page = Elements(webpage.render_index(template, offered, {"answer": None, "note": HOSTILE}))
    assert [t for t, _ in page.tags].count("script") == 3 and "img" not in [t for t, _ in page.tags]
    assert json.loads(page.scripts[0]) == offered and json.loads(page.scripts[1])["note"] == HOSTILE
    with pytest.raises(ValueError, match="once"):
        webpage.render_index("<html></html>", offered, {})


# ---- the files: the page's own only, text never markup --------------------------------------------------------------
def test_the_page_loads_only_its_own_files_and_runs_no_inline_code() -> None:
    page = Elements(webpage.page_file("index.html").decode())
    own = {name for name, _ in webpage.FILES.values()}
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on") or a == "style"], (tag, attrs)
        if tag == "script":
            assert attrs.get("src") in own or attrs.get("type") == "application/json", attrs
        for a in ("src", "href"):
            if a in attrs:
                assert attrs[a] in own or attrs[a] == "data:,", (tag, attrs)
    assert page.scripts[2] == ""  # page.js, by src
    for name in own:  # no other origin named anywhere (the SVG namespace is a name, never fetched)
        text = webpage.page_file(name).decode().replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"https?:|//[a-z0-9]|@import", text, re.I) and "url(" not in text, name


def test_the_script_writes_text_never_markup_and_names_no_option() -> None:
    script = webpage.page_file("page.js").decode()
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(",
                   "setTimeout(\"", "setAttribute(\"on", "javascript:"):
        assert unsafe not in script, unsafe
    offered = {f["option"] for f in webpage.page_options()[0]}
    for name in OPTIONS:  # the options come from the server's rows (the JSON block), never from this file
        assert f'"{name}"' not in script and f"'{name}'" not in script, name
        assert name not in offered or f".{name}" not in script, name


def test_the_headers_allow_only_the_pages_own_files() -> None:
    policy = {d.split()[0]: d.split()[1:] for d in webpage.CSP.split("; ")}
    assert policy["default-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["media-src"] == ["blob:"] and policy["img-src"] == ["blob:", "data:"]
    assert policy["object-src"] == ["'none'"] and policy["form-action"] == ["'none'"]
    assert not {"script-src", "style-src", "connect-src"} & set(policy)  # each of them 'self', by default-src
    assert not re.search(r"unsafe|\*|https?:", webpage.CSP)
    assert webpage.HEADERS["X-Content-Type-Options"] == "nosniff"
    assert not [h for h in webpage.HEADERS if h.lower().startswith("access-control")]


# ---- the routes on a running port ----------------------------------------------------------------------------------
@asynccontextmanager
async def page_front(**kw: Any) -> AsyncIterator[int]:
    """The public HTTP port as the front's process makes it (`main.http_port`), in front of a stand-in for
    tritonserver that says what reached it: its port."""
    up, up_port = await http_stand_in(upstream_echo)
    cfg = front_config(**{"triton_http": f"127.0.0.1:{up_port}", "shutdown_s": 1.0, **kw})
    counters = config.FrontCounters()
    port = main.http_port(cfg, counters, config.held_budget(cfg))
    await port.start()
    try:
        yield port.port
    finally:
        await port.stop()
        await up.cleanup()


def ask(method: str, path: str, *headers: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: x", "Connection: close", *headers, "", ""]).encode()


def headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def test_the_port_serves_the_page_its_files_and_nothing_else_there() -> None:
    origin = "Origin: http://evil.example"

    async def run() -> dict[str, bytes]:
        async with page_front() as port:
            asked = {"index": ask("GET", "/?from=a-link", origin), "head": ask("HEAD", "/"),
                     "js": ask("GET", "/page.js"), "css": ask("GET", "/page.css"),
                     "post": ask("POST", "/", "Content-Length: 0"), "preflight": ask("OPTIONS", "/", origin),
                     "other": ask("GET", "/index.html"), "api": ask("GET", "/v2/health/ready", origin)}
            return {name: await exchange(port, raw) for name, raw in asked.items()}

    got = asyncio.run(run())
    for name, content_type in (("index", "text/html"), ("js", "text/javascript"), ("css", "text/css")):
        h = headers_of(got[name])
        assert status(got[name]) == 200 and h["content-type"] == f"{content_type}; charset=utf-8", got[name][:300]
        assert h["content-security-policy"] == webpage.CSP and h["x-content-type-options"] == "nosniff", h
    assert b'id="videoitg-options">[{"option": "top_k"' in got["index"]
    js = got["js"].split(b"\r\n\r\n", 1)[1]
    assert js == webpage.page_file("page.js")
    head = got["head"].split(b"\r\n\r\n", 1)
    assert status(got["head"]) == 200 and head[1] == b"" and int(headers_of(got["head"])["content-length"]) > 1000
    for name in ("post", "preflight"):
        assert status(got[name]) == 404 and b"is not served (GET and HEAD only)" in got[name], got[name][:300]
    assert status(got["other"]) == 404 and b"this server answers health, metadata and inference" in got["other"]
    assert status(got["api"]) == 200  # the API as before, through the stand-in
    for name, answer in got.items():  # no other site's page may read an answer (no permissive CORS)
        assert "access-control-allow-origin" not in headers_of(answer), name


@pytest.mark.parametrize(("host", "page", "serves"), [
    ("127.0.0.1", None, True), ("localhost", None, True), ("::1", None, True), ("127.0.0.2", None, True),
    ("0.0.0.0", None, False), ("", None, False), ("10.1.2.3", None, False), ("my-host", None, False),
    ("0.0.0.0", True, True), ("127.0.0.1", False, False)])
def test_the_page_is_on_by_default_only_on_loopback(host: str, page: bool | None, serves: bool) -> None:
    assert config.page_on(host, page) is serves
    assert bool(webpage.page_routes(front_config(host=host, page=page))) is serves


def test_with_the_page_off_the_root_is_refused_as_any_path() -> None:
    async def run() -> bytes:
        async with page_front(page=False) as port:
            return await exchange(port, ask("GET", "/"))

    answer = asyncio.run(run())
    assert status(answer) == 404 and b"GET / is not served" in answer, answer[:300]


def test_the_serve_flag_reaches_the_fronts_config(tmp_path: Path) -> None:
    from videoitg.commands import serve
    from videoitg.launch.binaries import ServingSetupError
    from videoitg.launch.server import ServerOptions, TritonServer

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert [parser.parse_args(a).page for a in ([], ["--page"], ["--no-page"])] == [None, True, False]
    try:
        for page in (None, True, False):
            srv = TritonServer(tmp_path, ServerOptions(page=page, models=(TOP,)))
            assert json.loads(srv.front_command()[-1])["page"] is page
    except ServingSetupError as e:  # pragma: no cover - the serve extra is part of [all]
        pytest.skip(f"no tritonserver: {e}")
