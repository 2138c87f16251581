"""`videoitg.python_backend.request`: the checks a client's request inputs meet first."""

from __future__ import annotations

import numpy as np
import pytest

from videoitg.decode.errors import VideoTooLargeError
from videoitg.digest import video_digest
from videoitg.errors import InputError
from videoitg.outputs import SelectionOptions
from videoitg.python_backend.request import MAX_OPTION_BYTES, parse_options, parse_request
from videoitg.request.limits import InstructionTooLongError, Limits
from videoitg.request.options import RequestOptions

TEXT = np.array([[b"when?"]], object)
EIGHT = SelectionOptions(8)


def one(value: object) -> np.ndarray:
    return np.array([[value]], object)


def test_inputs_are_read_by_name_and_absent_options_take_the_deployments() -> None:
    req = parse_request({"VIDEO": one(b"v"), "INSTRUCTION": one(b"hi")}, EIGHT)
    assert (req.video, req.instruction, req.options) == (b"v", "hi", RequestOptions(top_k=8, ranking_rule="released"))
    req = parse_request({"VIDEO": one(b"v"), "INSTRUCTION": one(b"hi"), "TOP_K": np.array([[3]], np.int32),
                         "RANKING_RULE": one(b"exact")}, SelectionOptions(8, "released"))
    assert (req.options.top_k, req.options.ranking_rule) == (3, "exact")
    assert parse_request({"VIDEO": one(b"v"), "INSTRUCTION": one(b"hi")},
                         SelectionOptions(5, "exact")).options.ranking_rule == "exact"
    # The same option checks serve the selection step.
    assert parse_options({}).with_defaults(SelectionOptions(5, "exact")) == RequestOptions(top_k=5,
                                                                                          ranking_rule="exact")
    with pytest.raises(InputError, match="TOP_K must be an integer from 1 .* got 0"):
        parse_options({"TOP_K": np.array([[0]], np.int32)})


def test_parse_request_errors() -> None:
    bad = [
        ({"VIDEO": one(b""), "INSTRUCTION": one(b"hi")}, "VIDEO: video input is empty"),
        ({"VIDEO": one(b"v"), "INSTRUCTION": one(b"  ")}, "INSTRUCTION: instruction is empty"),
        ({"VIDEO": one(b"v"), "INSTRUCTION": one(b"\xff\xfe")}, "UTF-8"),
        ({"VIDEO": one(b"v"), "INSTRUCTION": one(b"x" * 70000)}, "max_instruction_bytes"),
        ({"VIDEO": np.array([[b"v", b"w"]], object), "INSTRUCTION": one(b"hi")}, "one video per request"),
        ({"VIDEO": one(b"v"), "INSTRUCTION": one(b"hi"), "TOP_K": np.array([[0]], np.int32)}, "TOP_K"),
        ({"VIDEO": one(b"v")}, "INSTRUCTION is missing"),
        ({"VIDEO": one("text"), "INSTRUCTION": one(b"hi")}, "VIDEO must hold the encoded video file's bytes"),
    ]
    for inputs, msg in bad:
        with pytest.raises(InputError, match=msg):
            parse_request(inputs, EIGHT)
    lim = Limits().replace(max_bytes=4, max_instruction_bytes=3)
    with pytest.raises(InputError, match=r"VIDEO: video input is 5 bytes, over the 4 byte limit \(max_video_bytes\)"):
        parse_request({"VIDEO": one(b"vvvvv"), "INSTRUCTION": one(b"hi")}, EIGHT, lim)
    with pytest.raises(InstructionTooLongError, match="over the limit of 3 bytes"):
        parse_request({"VIDEO": one(b"v"), "INSTRUCTION": one(b"four")}, EIGHT, lim)
    assert parse_request({"VIDEO": one(b"vvvv"), "INSTRUCTION": one(b"hi!")}, EIGHT, lim).options.top_k == 8


def test_parse_request_video_digest() -> None:
    """VIDEO_DIGEST names a video by the digest the server's cache is keyed by, instead of its bytes; bytes are
    always hashed by the server itself, so the two never come together."""
    d = video_digest(b"some video bytes")
    req = parse_request({"VIDEO_DIGEST": one(d.encode()), "INSTRUCTION": TEXT}, EIGHT)
    assert (req.video, req.digest, req.video_digest()) == (None, d, d)
    assert parse_request({"VIDEO": one(b"vid"), "INSTRUCTION": TEXT}, EIGHT).video_digest() == video_digest(b"vid")
    for digest, msg in ((d.upper(), "64 lower-case hex"), (d[3:], "'b3:'"), ("b3:" + "0" * 63, "'b3:'")):
        with pytest.raises(InputError, match=msg):
            parse_request({"VIDEO_DIGEST": one(digest.encode()), "INSTRUCTION": TEXT}, EIGHT)
    with pytest.raises(InputError, match="one of VIDEO, VIDEO_DIGEST or VIDEO_URI"):
        parse_request({"VIDEO": one(b"vid"), "VIDEO_DIGEST": one(d.encode()), "INSTRUCTION": TEXT}, EIGHT)
    with pytest.raises(InputError, match="VIDEO is missing"):
        parse_request({"INSTRUCTION": TEXT}, EIGHT)
    with pytest.raises(InputError, match="instruction is empty"):  # the instruction is checked either way
        parse_request({"VIDEO_DIGEST": one(d.encode()), "INSTRUCTION": one(b" ")}, EIGHT)


def test_a_digest_is_matched_whole() -> None:
    d = video_digest(b"v")
    assert parse_request({"VIDEO_DIGEST": one(d.encode()), "INSTRUCTION": TEXT}, EIGHT).digest == d
    for bad in (d + "\n", d + " ", "\n" + d):
        with pytest.raises(InputError, match="VIDEO_DIGEST must be"):
            parse_request({"VIDEO_DIGEST": one(bad.encode()), "INSTRUCTION": TEXT}, EIGHT)


def test_parse_request_ranking_rule_and_invisible_instruction() -> None:
    video, text = np.array([b"v"], dtype=object), np.array([b"when?"], dtype=object)
    assert parse_request({"VIDEO": video, "INSTRUCTION": text}).options.ranking_rule == "released"
    assert parse_request({"VIDEO": video, "INSTRUCTION": text},
                         SelectionOptions(8, "exact")).options.ranking_rule == "exact"
    rule = np.array([b"exact"], dtype=object)
    assert parse_request({"VIDEO": video, "INSTRUCTION": text, "RANKING_RULE": rule}).options.ranking_rule == "exact"
    with pytest.raises(InputError, match='RANKING_RULE must be one of released, exact, got "best"'):
        parse_request({"VIDEO": video, "INSTRUCTION": text, "RANKING_RULE": np.array([b"best"], dtype=object)})
    for junk in ("\u200b", "\x00\x00", "\ufeff \u2060"):
        with pytest.raises(InputError, match="INSTRUCTION: instruction is empty"):
            parse_request({"VIDEO": video, "INSTRUCTION": np.array([junk.encode()], dtype=object)})


def test_a_long_ranking_rule_is_refused_without_being_echoed() -> None:
    with pytest.raises(InputError) as e:
        parse_request({"VIDEO": one(b"vid"), "INSTRUCTION": TEXT, "RANKING_RULE": one(b"x" * (4 << 20))}, EIGHT)
    assert "RANKING_RULE" in str(e.value) and len(str(e.value)) < 200
    with pytest.raises(InputError) as e:  # within the byte bound but unknown: quoted, short
        parse_request({"VIDEO": one(b"vid"), "INSTRUCTION": TEXT, "RANKING_RULE": one(b"y" * MAX_OPTION_BYTES)},
                      EIGHT)
    assert "RANKING_RULE must be one of released, exact" in str(e.value) and len(str(e.value)) < 200


def test_an_oversized_upload_names_the_flag_and_the_reference_path() -> None:
    with pytest.raises(VideoTooLargeError, match="--max-video-bytes") as e:
        parse_request({"VIDEO": one(b"v" * 100), "INSTRUCTION": TEXT}, EIGHT, Limits().replace(max_bytes=10))
    assert "VIDEOITG_MAX_VIDEO_BYTES" in str(e.value) and "VIDEO_URI" in str(e.value)
