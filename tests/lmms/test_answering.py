"""Select, then answer, for lmms-eval's requests (`videoitg.lmms.answering`), without lmms-eval: the model_args'
checks, the task's generation settings, which frames each selection sends, and what a real OpenAI-compatible
server (the fixed-rule shape reader, `benchmarks.answer.shape_reader`) receives and answers. Through real lmms-eval:
tests/lmms/test_model.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the video-LLM client (the serve or lmms extra)")

from benchmarks.answer.shape_reader import MODEL, ShapeReader, serve_reader
from benchmarks.answer.shapes_mc import contexts, write_set
from videoitg.answer.chat import DEFAULT_FRAME_SIZE, Selection
from videoitg.answer.errors import UpstreamUnavailableError
from videoitg.decode.export import frame_images
from videoitg.errors import InputError
from videoitg.eval.metrics import uniform_indices
from videoitg.launch.ports import free_port
from videoitg.lmms.answering import (
    Answerer,
    AnswerOptions,
    Sampled,
    answer_field,
    answer_options,
    answer_text,
    chosen_positions,
    generation_fields,
    run_settings,
    same_run,
    uniform_record,
)
from videoitg.outputs import DEFAULT_TOP_K
from videoitg.request.options import RequestOptions
from videoitg.sampling import SamplingParams


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, dict]]:
    """Two generated questions (20 s clips): (video, document)."""
    out = tmp_path_factory.mktemp("mc")
    docs = write_set(out, 2, seed=7, duration_s=20)
    return [(out / "videos" / d["video"], d) for d in map(json.loads, docs.read_text().splitlines())]


@pytest.fixture(scope="module")
def reader() -> Iterator[ShapeReader]:
    with serve_reader() as r:
        yield r


def test_answer_options_are_checked() -> None:
    assert answer_options() is None  # grounding only
    with pytest.raises(InputError, match="selection need answer_upstream"):
        answer_options(selection="uniform")
    opts = answer_options(upstream="http://127.0.0.1:9/v1/", top_k="8")
    assert opts == AnswerOptions("http://127.0.0.1:9/v1", None, "videoitg",
                                 RequestOptions(top_k=8, frames="jpeg", frame_size=DEFAULT_FRAME_SIZE))
    assert answer_options(upstream="http://h:1/v1").top_k == DEFAULT_TOP_K
    assert answer_options(upstream="http://h:1/v1", frame_size=0, selection="uniform",
                          model="m").frame_size is None  # the video's own size
    for bad, match in [({"selection": "random"}, "selection must be one of videoitg, uniform"),
                       ({"top_k": 0}, "top_k must be an integer from 1"),
                       ({"top_k": "4.5"}, "top_k must be an integer"),
                       ({"frame_size": -1}, "frame_size must be an integer from 0")]:
        with pytest.raises(InputError, match=match):
            answer_options(upstream="http://h:1/v1", **bad)
    with pytest.raises(InputError, match="must be an http"):
        answer_options(upstream="ftp://h/v1")


def test_generation_fields_follow_the_task() -> None:
    videomme = {"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False,
                "until": ["\n\n"]}
    assert generation_fields(videomme) == {"max_tokens": 16, "temperature": 0.0, "top_p": 1.0}
    assert generation_fields({}) == {"temperature": 0.0}  # greedy, as lmms-eval's OpenAI models send
    assert generation_fields({"temperature": 0.7, "max_new_tokens": 256}) == {"max_tokens": 256, "temperature": 0.7}


def test_selections_pick_positions(scorer, mc) -> None:
    video, doc = mc[0]
    result = scorer.score(video, contexts(doc))
    t = len(result.frame_indices)
    four, uniform = (answer_options(upstream="http://h:1/v1", top_k=k, selection=s)
                     for k, s in ((4, "videoitg"), (4, "uniform")))
    assert chosen_positions(four, t, result) == result.top_k_positions(4)
    assert chosen_positions(uniform, t) == uniform_indices(t, 4) == [2, 7, 12, 17]
    assert chosen_positions(answer_options(upstream="http://h:1/v1", top_k=64, selection="uniform"), t) == list(
        range(t))  # no more frames than the video has
    with pytest.raises(InputError, match="needs a grounding result"):
        chosen_positions(four, t)


def test_uniform_chooses_from_the_frames_scoring_decodes(scorer, mc, reader: ShapeReader) -> None:
    """`sampled` is the sampling the scorer decodes (plan_decode): uniform and videoitg choose from one list."""
    video, doc = mc[0]
    result = scorer.score(video, contexts(doc))
    answerer = Answerer(answer_options(upstream=reader.base_url, selection="uniform"), SamplingParams())
    sampled = answerer.sampled(video)
    assert sampled.frames == result.frame_indices
    assert sampled.timestamps == pytest.approx(result.timestamps, abs=1e-9)


def _sent_parts(body: dict) -> list[dict]:
    (message,) = body["messages"]
    return message["content"]


def test_the_reader_gets_the_frames_and_the_prompt(mc, reader: ShapeReader) -> None:
    """One request per document: for each frame sent, its label and its JPEG (`frame_images`' bytes), then the
    task's prompt, with the task's generation fields; the reader's rule answers from those frames alone."""
    video, doc = mc[0]
    answerer = Answerer(answer_options(upstream=reader.base_url, top_k=3, frame_size=0), SamplingParams())
    assert answerer.model == MODEL  # none given: the first the upstream lists
    sampled = answerer.sampled(video)
    a, b = doc["moment"]
    inside = [(f, t) for f, t in zip(sampled.frames, sampled.timestamps, strict=True) if a <= t < b][:3]
    outside = [(f, t) for f, t in zip(sampled.frames, sampled.timestamps, strict=True) if not a - 1 <= t < b + 1][:3]
    try:
        before = len(reader.asked)
        text, sent = answerer.ask(video, contexts(doc), {"max_new_tokens": 4}, *map(list, zip(*inside, strict=True)))
        assert text == doc["answer"]  # the moment's frames: the rule reads the answer
        missed, _ = answerer.ask(video, contexts(doc), {"max_new_tokens": 4}, *map(list, zip(*outside, strict=True)))
        assert missed == "A"  # no red circle seen: the first option
    finally:
        answerer.close()
    asked = reader.asked[before]
    assert asked.images == 3 and reader.asked[before + 1].images == 3
    parts = _sent_parts(asked.body)
    jpegs = frame_images(video, [f for f, _ in inside], None, jpeg=True)
    labels = [f"Frame {f} at {t:.1f} s:" for f, t in inside]
    assert [p["text"] for p in parts[:-1:2]] == labels
    assert [base64.b64decode(p["image_url"]["url"].partition(",")[2]) for p in parts[1::2]] == jpegs
    assert parts[-1] == {"type": "text", "text": contexts(doc)}
    assert {k: v for k, v in asked.body.items() if k != "messages"} == {"model": MODEL, "max_tokens": 4,
                                                                         "temperature": 0.0}
    assert sent.frames == [f for f, _ in inside] and sent.jpegs == jpegs


def test_an_unreachable_video_llm_fails_before_anything_runs() -> None:
    with pytest.raises(UpstreamUnavailableError, match="cannot be reached"):
        Answerer(answer_options(upstream=f"http://127.0.0.1:{free_port()}/v1"), SamplingParams())


def test_answer_text() -> None:
    assert answer_text({"choices": [{"message": {"content": "B"}}]}, "u") == "B"
    assert answer_text({"choices": [{"message": {"content": None, "tool_calls": []}}]}, "u") == ""
    with pytest.raises(InputError, match="not text"):
        answer_text({"choices": [{"message": {"content": [{"type": "text"}]}}]}, "u")


def test_records_say_what_was_sent_and_a_rerun_knows_its_own(mc) -> None:
    opts = answer_options(upstream="http://h:1/v1", top_k=2, selection="uniform", frame_size=0)
    sent = Selection([0, 40], [0.0, 10.0], [], [], [b"", b""], 0.0)
    field = answer_field(opts, "m", sent, "C")
    assert field == {"selection": "uniform", "top_k": 2, "frame_size": 0, "model": "m", "frames": [0, 40],
                     "timestamps": [0.0, 10.0], "text": "C"}
    assert same_run(field, opts, "m")
    assert not same_run(field, opts, "other") and not same_run(None, opts, "m")
    assert not same_run(field, answer_options(upstream="http://h:1/v1", top_k=4, selection="uniform", frame_size=0),
                        "m")
    assert run_settings(None) == "grounding only, no answer"
    assert run_settings(field) == "selection=uniform, top_k=2, frame_size=0, model=m"
    video, _ = mc[0]
    rec = uniform_record(3, video, "ctx", Sampled([0, 4], [0.0, 1.0]), task="t", split="test")
    assert rec == {"contexts": "ctx", "video_path": str(video.resolve()), "doc_id": 3, "frame_indices": [0, 4],
                   "timestamps": [0.0, 1.0], "task": "t", "split": "test"}


def test_an_adaptive_selection_is_sent_and_recorded(scorer, mc) -> None:
    """`min_score=` / `coverage=` model_args pick what is sent (`select`), at most top_k; the record's settings name
    them, so a rerun with other ones is another run."""
    video, doc = mc[0]
    result = scorer.score(video, contexts(doc))
    opts = answer_options(upstream="http://h:1/v1", top_k="8", coverage="0.5", min_score="0.25")
    assert (opts.options.coverage, opts.options.min_score, opts.top_k) == (0.5, 0.25, 8)
    t = len(result.frame_indices)
    scores, best = result.scores, result.ranking[:8]
    held = next((n for n in range(1, 9) if sum(scores[p] for p in best[:n]) >= 0.5 * sum(scores)), 8)  # coverage
    want = sorted(p for p in best[:held] if scores[p] >= 0.25) or [best[0]]  # then min_score, the best always
    assert chosen_positions(opts, t, result) == want
    sent = Selection([0], [0.0], [], [], [b""], 0.0)
    field = answer_field(opts, "m", sent, "A")
    assert (field["coverage"], field["min_score"], field["top_k"]) == (0.5, 0.25, 8)
    assert same_run(field, opts, "m")
    assert not same_run(field, answer_options(upstream="http://h:1/v1", top_k=8, coverage=0.6, min_score=0.25), "m")
    with pytest.raises(InputError, match="model_args: coverage must be a number from 0 to 1"):
        answer_options(upstream="http://h:1/v1", coverage="most")
