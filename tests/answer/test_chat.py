"""The answer endpoint's policy without a server: which chat requests are taken and how each refusal reads, the one
bounded JSON reading (a client's body, the video-LLM's bytes), the video a `video_url` names, what the video-LLM is
sent, and the selection in a plain and a streamed answer, each event of a stream checked."""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from videoitg.answer import chat as answer
from videoitg.answer.bounded_json import MAX_INT_DIGITS, MAX_JSON_ITEMS, load_json, unencodable
from videoitg.answer.chat import (
    DEFAULT_FRAME_SIZE,
    VIDEO_READ,
    Selection,
    check_file,
    forwarded,
    forwarded_bytes,
    load_body,
    parse_chat,
    video_source,
    with_selection,
    without_video,
)
from videoitg.answer.errors import (
    ChatRequestError,
    OptionError,
    UpstreamRefusedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    VideoPartError,
    VideoRefusedError,
)
from videoitg.answer.handoff import frame_label, frame_parts
from videoitg.answer.relay import EventRelay, event_data, selection_event, strict_json
from videoitg.paths import MediaRoots
from videoitg.request.options import MAX_FRAME_SIZE as MAX_FRAMES_SIZE
from videoitg.request.options import MAX_TOP_K, RequestOptions

VIDEO = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42").decode()


def chat(*content: Any, earlier: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [*(earlier or []), {"role": "user", "content": list(content)}], **fields}


def video(url: str = VIDEO) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": url}}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def test_a_request_names_its_video_question_and_defaults() -> None:
    body = chat(text("When does the dog jump?"), video(), temperature=0.2, max_tokens=9, stream=True)
    q = parse_chat(body)
    assert (q.message, q.part, q.video_url) == (0, 1, VIDEO)
    assert q.question == "When does the dog jump?"
    assert q.options == RequestOptions(frames="jpeg", frame_size=DEFAULT_FRAME_SIZE)  # top_k: the server's default
    assert q.body == body  # every field kept as it came


def test_text_parts_join_into_the_question_and_the_extension_is_read_and_removed() -> None:
    earlier = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": "hello"}]
    body = chat(text(" Look: "), video(), text("what colour is it?"), earlier=earlier,
                videoitg={"top_k": 8, "frame_size": 0})
    q = parse_chat(body)
    assert (q.message, q.part) == (3, 1)
    assert q.question == "Look:\nwhat colour is it?"
    assert (q.options.top_k, q.options.frame_size) == (8, 0)  # 0: the video's own size
    assert "videoitg" not in q.body and q.body["messages"] == body["messages"]


@pytest.mark.parametrize(("body", "error", "match"), [
    ([], ChatRequestError, "must be a JSON object"),
    ({"model": "m"}, ChatRequestError, "'messages' must be a non-empty list"),
    ({"messages": ["hi"]}, ChatRequestError, "'messages' must be a non-empty list"),
    (chat(text("q")), VideoPartError, "holds 0 video parts"),
    (chat(text("q"), video(), video()), VideoPartError, "holds 2 video parts"),
    (chat(text("q"), earlier=[{"role": "user", "content": [video()]}]), VideoPartError,
     r"video part is in messages\[0\]: it must be in the last user message \(messages\[1\]\)"),
    ({"messages": [{"role": "system", "content": [video()]}]}, VideoPartError, "no user message"),
    (chat(video()), VideoPartError, "has no question"),
    (chat(text("  "), video()), VideoPartError, "has no question"),
    (chat(text("q"), {"type": "video_url", "video_url": "x"}), VideoPartError, "with a string 'url'"),
    (chat({"type": "text", "text": 3}, video()), ChatRequestError, "string 'text'"),
])
def test_requests_without_one_video_and_a_question_are_refused(body: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as e:
        parse_chat(body)
    assert e.value.status == 400


def test_the_extension_takes_the_adaptive_selection() -> None:
    q = parse_chat(chat(text("q"), video(), videoitg={"top_k": 16, "min_score": 0.5, "coverage": 0.9}))
    assert q.options == RequestOptions(top_k=16, min_score=0.5, coverage=0.9, frames="jpeg",
                                       frame_size=DEFAULT_FRAME_SIZE)


@pytest.mark.parametrize(("options", "match"), [
    ({"top_k": 0}, f"top_k must be an integer from 1 to {MAX_TOP_K}, got 0"),
    ({"top_k": MAX_TOP_K + 1}, f"got {MAX_TOP_K + 1}"),
    ({"top_k": "8"}, 'got "8"'),
    ({"top_k": 8.0}, "got 8.0"),
    ({"top_k": True}, "got true"),
    ({"top_k": [1]}, "got list"),
    ({"frame_size": -1}, f"frame_size must be an integer from 0 to {MAX_FRAMES_SIZE}"),
    ({"frame_size": MAX_FRAMES_SIZE + 1}, "frame_size"),
    ({"topk": 3}, "has no field 'topk'"),
    ({"min_score": 1.5}, "videoitg.min_score must be a number from 0 to 1, got 1.5"),
    ({"coverage": "all"}, 'videoitg.coverage must be a number from 0 to 1, got "all"'),
    ({"ranking_rule": "exact"}, "has no field 'ranking_rule'"),
])
def test_bad_extension_fields_are_refused_by_name(options: dict[str, Any], match: str) -> None:
    with pytest.raises(OptionError, match=match) as e:
        parse_chat(chat(text("q"), video(), videoitg=options))
    assert e.value.status == 400 and e.value.body()["error"]["code"] == "videoitg_option"
    with pytest.raises(OptionError, match="must be an object"):
        parse_chat(chat(text("q"), video(), videoitg=[8]))


@pytest.mark.parametrize(("raw", "match"), [
    (b"\xff{}", "not valid UTF-8"),
    (b"{", "not valid JSON"),
    (b'{"a": NaN}', "not valid JSON"),
    (b'{"temperature": 1e400}', "number out of range"),  # would be sent on as Infinity, which is not JSON
    (b"[" * 65 + b"]" * 65, "nests more than 64 levels"),
])
def test_bodies_that_are_not_json_are_refused(raw: bytes, match: str) -> None:
    with pytest.raises(ChatRequestError, match=match):
        load_body(raw)
    assert load_body(b'{"a": [1]}') == {"a": [1]}


def test_a_body_is_bounded_in_elements_before_it_is_parsed_and_read_from_its_chunks() -> None:
    at_bound = b"[" + b"0," * (MAX_JSON_ITEMS - 1) + b"0]"  # one '[' and MAX_JSON_ITEMS - 1 commas
    assert len(load_body(at_bound)) == MAX_JSON_ITEMS
    for over in (b"[" + b"{}," * MAX_JSON_ITEMS + b"{}]", json.dumps({"text": "," * (MAX_JSON_ITEMS + 1)}).encode()):
        with pytest.raises(ChatRequestError, match=f"more than {MAX_JSON_ITEMS} objects, lists and commas"):
            load_body(over)
    body = json.dumps({"a": ["é" * 3, {"b": None}]}, ensure_ascii=False).encode()
    chunks = [body[i:i + 3] for i in range(0, len(body), 3)]  # characters split across chunks
    assert load_body(chunks) == load_body(body) == {"a": ["ééé", {"b": None}]} and chunks == []
    # A byte that is not UTF-8 is named where it is in the body, whichever chunk it came in.
    for raw in ([b'{"a": "\xc3', b'\xa9\xff"}'], b'{"a": "\xc3\xa9\xff"}'):
        with pytest.raises(ChatRequestError, match="invalid start byte at byte 9"):
            load_body(raw)
    with pytest.raises(ChatRequestError, match="unexpected end of data at byte 1"):
        load_body([b'"', b"\xc3"])
    assert load_body(b"[" + b"9" * MAX_INT_DIGITS + b", -" + b"9" * MAX_INT_DIGITS + b"]")[1] == -(10 ** 100 - 1)
    with pytest.raises(ChatRequestError, match=f"an integer of more than {MAX_INT_DIGITS} digits"):
        load_body(b'{"seed": -' + b"9" * (MAX_INT_DIGITS + 1) + b"}")


def test_a_data_url_is_decoded_in_slices_as_one_piece_would_be(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answer, "B64_SLICE", 8)
    for n in (99, 100, 101):  # each padding: none, "==", "="
        data = os.urandom(n)
        source = video_source("data:video/mp4;base64," + base64.b64encode(data).decode(), None)
        assert source.size == n and source.decode() == data
    for text in ("AAAAAA==AAAAAAAA", "AAAAAAAAAAA", "AAAA*AAA", "AAAAAAAAAAAé", "AAA====="):  # padding inside, ...
        with pytest.raises(ValueError):
            base64.b64decode(text, validate=True)
        with pytest.raises(VideoRefusedError, match="base64 of the video/mp4 data URL is malformed"):
            video_source("data:video/mp4;base64," + text, None).decode()


def test_a_data_urls_size_is_checked_from_its_length_before_anything_is_decoded() -> None:
    """A data URL over the bound is refused from its length alone (nothing decoded: its base64 is not even valid
    here); one within it is decoded straight into one buffer of its size, never held twice."""
    with pytest.raises(VideoRefusedError, match=r"video of 750 bytes, over this server's bound of 749 bytes .*file://"):
        video_source("data:video/mp4;base64," + "*" * 1000, None, 749)
    assert video_source("data:video/mp4;base64," + "*" * 1000, None, 750).size == 750
    data = os.urandom(8 << 20)
    source = video_source("data:video/mp4;base64," + base64.b64encode(data).decode(), None, len(data))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        decoded = source.decode()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert decoded == data
    assert peak < len(data) + 3 * answer.B64_SLICE, peak  # the buffer, and a slice being decoded


def test_without_video_keeps_no_reference_to_the_url_and_forwards_the_same() -> None:
    body = chat(text("Look:"), video(), text("what happens?"), stream=True)
    before = json.dumps(body)
    q = parse_chat(body)
    light = without_video(q)
    assert json.dumps(body) == before and q.video_url == VIDEO
    assert light.video_url == "" and VIDEO not in json.dumps(light.body)
    assert light.body["messages"][0]["content"][1] == VIDEO_READ
    sel = selection()
    assert forwarded(light, sel) == forwarded(q, sel)
    assert json.loads(forwarded_bytes(light, sel, "m2")) == forwarded(q, sel, "m2")


def test_a_data_url_gives_its_bytes_and_other_urls_are_refused(tmp_path: Path) -> None:
    assert video_source(VIDEO, MediaRoots()).decode() == b"\x00\x00\x00\x18ftypmp42"
    for url, match in [("data:video/mp4;base64,%%%", "base64 of the video/mp4 data URL is malformed"),
                       ("data:video/mp4;base64,", "holds no bytes"),
                       ("data:image/png;base64,AAAA", "data:video/<type>;base64"),
                       ("https://example.com/v.mp4", "nothing is fetched from the network"),
                       ("clip.mp4", "nothing is fetched")]:
        with pytest.raises(VideoRefusedError, match=match) as e:
            video_source(url, MediaRoots.of([tmp_path]))
        assert e.value.body()["error"]["code"] == "video_refused"


def test_a_file_url_is_named_only_under_the_media_roots_and_never_read(tmp_path: Path) -> None:
    root, other = tmp_path / "media", tmp_path / "other"
    root.mkdir()
    other.mkdir()
    (root / "a.mp4").write_bytes(b"video bytes")
    (other / "b.mp4").write_bytes(b"secret")
    os.symlink(other / "b.mp4", root / "link.mp4")
    os.mkfifo(root / "fifo.mp4")
    roots = MediaRoots.of([root])
    path = video_source(f"file://{root}/a.mp4", roots)
    assert path == (root / "a.mp4").resolve()
    check_file(path)  # opened with the roots' checks, then closed
    for url, kind in [(f"file://{other}/b.mp4", "OutsideRootsError"), (f"file://{root}/link.mp4", "OutsideRootsError"),
                      (f"file://{root}/../other/b.mp4", "OutsideRootsError"),
                      ("file://host/x.mp4", "InvalidReferenceError")]:
        with pytest.raises(VideoRefusedError, match=f"video_url .*{kind}"):
            video_source(url, roots)
    with pytest.raises(VideoRefusedError, match=r"off on this server.*ReferencesOffError"):
        video_source(f"file://{root}/a.mp4", MediaRoots())
    with pytest.raises(VideoRefusedError, match="NotARegularFileError"):
        check_file(video_source(f"file://{root}/fifo.mp4", roots))
    (root / "a.mp4").unlink()
    with pytest.raises(VideoRefusedError, match="MediaNotFoundError"):
        check_file(path)


def selection(k: int = 2) -> Selection:
    return Selection([10 * (i + 1) for i in range(k)], [0.4 * (i + 1) for i in range(k)], [0.5] * k,
                     [[0.0, 1.0, 0.9]], [bytes([i]) * 3 for i in range(k)], 0.25)


def test_the_forwarded_request_replaces_the_video_part_and_keeps_everything_else() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = chat(text("Look:"), video(), text("what happens?"), earlier=[{"role": "system", "content": "Be brief."}],
                temperature=0.0, max_tokens=5, stream=True, tools=tools, videoitg={"top_k": 2})
    before = json.dumps(body)
    q = parse_chat(body)
    sel = selection()
    out = forwarded(q, sel)
    assert json.dumps(body) == before  # the caller's request is not changed
    assert {k: v for k, v in out.items() if k != "messages"} == {k: v for k, v in body.items()
                                                                 if k not in ("messages", "videoitg")}
    assert out["messages"][0] == body["messages"][0]
    content = out["messages"][1]["content"]
    assert content[0] == text("Look:") and content[-1] == text("what happens?")
    assert content[1:-1] == frame_parts(zip(sel.frames, sel.timestamps, sel.jpegs, strict=True))
    assert content[1] == text(frame_label(10, 0.4)) == text("Frame 10 at 0.4 s:")
    assert content[2]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(b"\x00" * 3).decode()
    assert forwarded(q, sel, model="served-name")["model"] == "served-name"
    # The bytes sent on are the same request, the frames spliced in without a JSON pass over them.
    assert json.loads(forwarded_bytes(q, sel)) == out
    assert json.loads(forwarded_bytes(q, sel, "served-name")) == forwarded(q, sel, model="served-name")
    assert json.loads(forwarded_bytes(q, Selection([], [], [], [], [], 0.0))) == forwarded(
        q, Selection([], [], [], [], [], 0.0))
    tricky = parse_chat(chat(text('"quotes" \\ \u2028 é'), video(), text("</end>")))
    assert json.loads(forwarded_bytes(tricky, sel)) == forwarded(tricky, sel)


def test_the_selection_field() -> None:
    sel = selection()
    answer = {"id": "x", "choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": 7}}
    out = with_selection(answer, sel)
    assert "videoitg" not in answer and {k: v for k, v in out.items() if k != "videoitg"} == answer
    assert out["videoitg"] == {"frames": [10, 20], "timestamps": [0.4, 0.8], "scores": [0.5, 0.5],
                               "moments": [[0.0, 1.0, 0.9]], "select_s": 0.25}
    assert json.loads(event_data(selection_event(sel)))["videoitg"] == sel.field()
    assert event_data(b"event: x\ndata: a\ndata:b\n\n") == b"a\nb"
    with pytest.raises(ValueError):
        strict_json({"score": float("nan")})  # what the endpoint answers is JSON


def relayed(*chunks: bytes, max_event: int = 1 << 20) -> bytes:
    relay = EventRelay(selection(), max_event)
    return b"".join(relay.feed(c) for c in chunks) + relay.end()


def test_a_stream_is_checked_event_by_event_with_the_selection_in_its_first() -> None:
    sel = selection()
    first, second = b'data: {"id": "x", "choices": []}\r\n\r\n', b'data: {"id": "x", "choices": [1]}\n\n'
    stream = b": ping\n\n" + first + second + b"data: [DONE]\n\n"
    for cut in (1, 7, 40, len(stream)):  # events split anywhere across the chunks they arrive in
        out = relayed(*[stream[i:i + cut] for i in range(0, len(stream), cut)])
        ping, got, rest = out.split(b"\n\n", 2)
        assert ping == b": ping" and json.loads(event_data(got)) == {"id": "x", "choices": [], "videoitg": sel.field()}
        assert rest == second + b"data: [DONE]\n\n"  # the rest as it came
    out = relayed(b"data: [DONE]\n\n")  # no chunk before the end: the selection alone goes first
    assert json.loads(event_data(out.split(b"\n\n")[0]))["videoitg"] == sel.field()
    assert out.endswith(b"\n\ndata: [DONE]\n\n")
    assert json.loads(event_data(relayed(b": only a comment\n\n").split(b"\n\n")[1]))["videoitg"] == sel.field()


@pytest.mark.parametrize(("stream", "match"), [
    (b"data: {not json}\n\n", "event of the video-LLM's stream is not valid JSON"),
    (b"data: [1]\n\n", "holds no JSON object"),
    (b'data: {"a": NaN}\n\n', "not valid JSON"),
    (b'data: {"a": 1e400}\n\n', "number out of range"),
    (b"data: " + b"[" * 100_000 + b"\n\n", "more than 65536 objects, lists and commas"),
    (b"data: " + b"[" * 70 + b"]" * 70 + b"\n\n", "nests more than 64 levels"),
    (b'data: {"id": "x"}\n\ndata: {"a": ' + b"[" * 70 + b"]" * 70 + b"}\n\n", "nests more than 64 levels"),
    (b'data: {"id": "x"}\n\ndata: {"id": "y"', "broke off inside an event"),
    (b"data: " + b"x" * 200, "an event of more than 100 bytes"),
], ids=["not-json", "a-list", "nan", "overflow", "many-items", "deep", "deep-later", "cut", "long"])
def test_a_stream_that_is_not_events_of_json_objects_breaks(stream: bytes, match: str) -> None:
    """Each event read as a client's body is (`load_json`); whatever is not one breaks the stream, which the
    endpoint ends with an error event."""
    with pytest.raises(UpstreamUnavailableError, match=match):
        relayed(stream, max_event=100 if b"x" * 200 in stream else 1 << 20)


def test_the_video_llms_json_is_read_with_a_clients_bounds() -> None:
    what = "the video-LLM's answer"
    for raw, match in [(b"[" * 70 + b"]" * 70, "nests more than 64 levels"), (b"[" * 100_000, "more than 65536"),
                       (b'{"a": NaN}', "not valid JSON"),
                       (b'{"a": 1e400}', "number out of range"), (b"\xff", "not valid UTF-8"),
                       (b"[" + b"0," * (MAX_JSON_ITEMS + 1) + b"0]", "more than 65536 objects")]:
        with pytest.raises(UpstreamUnavailableError, match=f"{what} .*{match}") as e:
            load_json(raw, what, UpstreamUnavailableError)
        assert e.value.status == 502
    assert load_json(b'{"a": [1.5]}', what, UpstreamUnavailableError) == {"a": [1.5]}


def test_text_that_cannot_be_encoded_is_refused_naming_its_field() -> None:
    """A lone surrogate is valid JSON and not Unicode text: the instruction could not be encoded for the grounding
    server, nor the request for the video-LLM."""
    body = chat(text("fine"), video(), text("when? \ud800"))
    raw = json.dumps(body).encode()  # ASCII, the surrogate escaped
    with pytest.raises(ChatRequestError, match=r"messages\[0\]\.content\[2\]\.text holds text that cannot be "
                       r"encoded as UTF-8") as e:
        load_body(raw)
    assert e.value.status == 400
    with pytest.raises(ChatRequestError, match=r"a key of metadata"):
        load_body(json.dumps({**chat(text("q"), video()), "metadata": {"\udfff": 1}}).encode())
    assert unencodable(json.loads('{"a": ["\\ud83d\\ude00"]}')) is None  # a pair is one character
    assert load_body(json.dumps(chat(text("\U0001f600"), video())).encode())["messages"]


def test_upstream_errors_carry_their_status_in_the_openai_shape() -> None:
    e = UpstreamRefusedError("the video-LLM answered 422: bad", 422)
    assert e.status == 422
    assert e.body() == {"error": {"message": "the video-LLM answered 422: bad", "type": "upstream_error",
                                  "code": "upstream_refused"}}
    assert UpstreamUnavailableError("x").status == 502 and UpstreamTimeoutError("x").status == 504
