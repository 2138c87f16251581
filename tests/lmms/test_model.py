"""lmms-eval: the real package (0.7.x) in its own environment (scripts/lmms_env.sh, which scripts/test.sh makes), on
a small local task of generated multiple-choice questions, no hub. A task's doc_ids and full prompts reach grounding
exactly, through `videoitg manifest --from-lmms-eval` and `lmms-eval --model videoitg`; with `answer_upstream=`, a
real OpenAI-compatible server (`transformers serve` with the tiny VLM, benchmarks/answer/vlm.py) answers each document
from exactly K frames, VideoITG's or uniform ones, and lmms-eval's metric scores its text.

lmms-eval runs in a subprocess of that environment's interpreter ($VIDEOITG_LMMS_PYTHON); where neither it nor the
default `.venv-lmms` exists (pytest run by hand), these tests skip and say how to make it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.answer.shapes_mc import (
    TASK,
    contexts,
    lmms_env,
    lmms_eval_run,
    lmms_python,
    results_file,
    run_lmms_eval,
    write_set,
    write_task,
)
from benchmarks.answer.vlm import ServedVLM
from tests.support.recording import RecordingRelay
from videoitg.commands.cli import main
from videoitg.decode import plan_decode
from videoitg.decode.export import frame_images
from videoitg.eval.metrics import uniform_indices
from videoitg.manifest.rows import load_manifest
from videoitg.sampling import SamplingParams

PYTHON = lmms_python()
if PYTHON is None:
    pytest.skip("lmms-eval's environment is not made: bash scripts/test.sh makes it (scripts/lmms_env.sh, "
                "docs/lmms-eval.md)", allow_module_level=True)
# a video-LLM server of the module's own: its tests run in one worker. The first test waits for `runs`: one lmms-eval
# process of four evaluations, about 20 CPU s (imports most of it; lmms-eval's own task index built once)
pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]

K = 3
SIZE = 64  # the frames' longer side sent to the tiny VLM


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three documents on two clips (the first clip asked twice, its options in another order: one decode for
    both), as the local task TASK."""
    root = tmp_path_factory.mktemp("lmms")
    docs_path = write_set(root / "set", 2, seed=3, duration_s=16)
    docs = [json.loads(x) for x in docs_path.read_text().splitlines()]
    docs.append({**docs[0], "options": [f"{'ABCD'[i]}. {o[3:]}" for i, o in enumerate(reversed(docs[0]["options"]))]})
    docs_path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    write_task(root / "tasks", docs_path, root / "set" / "videos")
    return {"root": root, "tasks": root / "tasks", "videos": root / "set" / "videos", "docs": docs}


def _expected(task: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(i, contexts(d), d["video"]) for i, d in enumerate(task["docs"])]


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _sent(relay: RecordingRelay) -> list[tuple[list[str], list[bytes], str]]:
    """Each chat request the video-LLM received, in order: (frame labels, JPEGs, the prompt)."""
    out = []
    for req in relay.received():
        if req.method == "POST" and req.path.endswith("/chat/completions"):
            (message,) = req.json()["messages"]
            parts = message["content"]
            out.append(([p["text"] for p in parts[:-1] if p["type"] == "text"],
                        [base64.b64decode(p["image_url"]["url"].partition(",")[2]) for p in parts
                         if p["type"] == "image_url"], parts[-1]["text"]))
    return out


@pytest.fixture(scope="module")
def runs(task, vlm: ServedVLM, relay: RecordingRelay, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process of lmms-eval's environment (its imports are the cost): `task_requests` and `videoitg manifest
    --from-lmms-eval` of the task and of an unknown one, a misspelt model_arg; then lmms-eval's command line with
    four evaluations in order (`run_lmms_eval`: lmms-eval's own tasks indexed once): grounding only; answering
    through the tiny VLM (behind the recording relay) from VideoITG's frames, from uniform frames, and the uniform run
    again (a rerun)."""
    tmp = tmp_path_factory.mktemp("runs")
    got = tmp / "requests.json"
    first = f"""
import json
from pathlib import Path
from videoitg.commands.cli import main
from videoitg.lmms.tasks import task_requests
reqs = [[r.doc_id, r.contexts, r.videos, r.split] for r in task_requests([{TASK!r}], {str(task["tasks"])!r})]
codes = [main(["manifest", "--from-lmms-eval", name, "--include-path", {str(task["tasks"])!r},
               "--out", {str(tmp / "manifest.jsonl")!r}]) for name in ({TASK!r}, "no_such_task")]
from videoitg.lmms.model import VideoITGModel
try:
    VideoITGModel(selecton="uniform")  # misspelt
    refused = ""
except Exception as e:
    refused = f"{{type(e).__name__}}: {{e}}"
Path({str(got)!r}).write_text(json.dumps({{"requests": reqs, "codes": codes, "refused": refused}}))
"""
    upstream = f"http://127.0.0.1:{relay.port}/v1"

    def answering(sel: str) -> dict[str, Any]:
        return {"output_dir": tmp / sel, "answer_upstream": upstream, "answer_model": vlm.model, "top_k": K,
                "selection": sel, "frame_size": SIZE}

    evaluations = {"grounding": {"output_dir": tmp / "itg", "top_k": 4}, "videoitg": answering("videoitg"),
                   "uniform": answering("uniform"), "uniform-rerun": answering("uniform")}
    relay.clear()
    run_lmms_eval(PYTHON, [lmms_eval_run(task["tasks"], margs, tmp / "lmms" / name)
                           for name, margs in evaluations.items()], tmp, lmms_env(tmp), timeout_s=500, first=first)
    return {"tmp": tmp, "sent": _sent(relay), **json.loads(got.read_text()),
            "metric": {name: json.loads(results_file(tmp / "lmms" / name).read_text())["results"][TASK]
                       for name in evaluations}}


def test_task_requests_and_the_manifest_are_lmms_evals_own(task, runs) -> None:
    """`task_requests` and `videoitg manifest --from-lmms-eval`, in lmms-eval's environment: the task's doc_ids,
    contexts and videos; a valid batch manifest; an unknown task refused."""
    reqs = runs["requests"]
    assert [(i, c, Path(v[0]).name) for i, c, v, _ in reqs] == _expected(task) and {s for *_, s in reqs} == {"test"}
    assert runs["codes"] == [0, 2]
    out = runs["tmp"] / "manifest.jsonl"
    rows = _records(out)
    assert [(x["doc_id"], x["instruction"], Path(x["video"]).name) for x in rows] == _expected(task)
    m = load_manifest(out, [task["videos"]])  # a valid batch manifest: row ids are the doc_ids
    assert not m.rejected and [x.row_id for x in m.rows] == ["0", "1", "2"]


def test_a_misspelt_model_arg_is_refused(runs) -> None:
    """An unknown model_arg would otherwise run with the default of the one meant."""
    assert runs["refused"] == "InputError: model_args: --model videoitg takes no selecton (docs/lmms-eval.md)"


def test_lmms_eval_runs_videoitg_as_a_model(task, runs, tmp_path: Path) -> None:
    """The real `lmms-eval` with `--model videoitg` (entry point), in-process scoring, no answer_upstream: one
    results.jsonl record per doc_id with the task's contexts; its answers are empty, so `answer-table` refuses the
    run."""
    recs = sorted(_records(runs["tmp"] / "itg" / TASK / "results.jsonl"), key=lambda x: x["doc_id"])
    assert [(x["doc_id"], x["contexts"], Path(x["video_path"]).name) for x in recs] == _expected(task)
    for x in recs:
        assert sorted(x["index"]) == x["frame_indices"] and len(x["top_k"]) == 4 and x["moments"]
        assert x["task"] == TASK and x["split"] == "test" and "answer" not in x
    assert runs["metric"]["grounding"]["accuracy,none"] == 0.0  # empty texts
    assert main(["answer-table", str(runs["tmp"] / "lmms" / "grounding"), "--out", str(tmp_path / "t")]) == 2


def test_a_video_llm_answers_from_k_frames_of_either_selection(task, scorer, runs, vlm: ServedVLM) -> None:
    """`answer_upstream=` a real `transformers serve`: both selections complete, the video-LLM receives exactly K
    images per document, VideoITG's top K or K evenly spaced of the same sampled frames, each the JPEG
    `frame_images` makes, then the task's prompt; lmms-eval scores the texts with the task's metric; a rerun asks
    the video-LLM nothing and scores the same."""
    n = len(task["docs"])
    assert len(runs["sent"]) == 2 * n  # the rerun sent nothing
    for i, sel in enumerate(("videoitg", "uniform")):
        sent = runs["sent"][i * n:(i + 1) * n]
        recs = _records(runs["tmp"] / sel / TASK / "results.jsonl")  # in the order asked: by video
        assert sorted((x["doc_id"], x["contexts"]) for x in recs) == [(j, c) for j, c, _ in _expected(task)]
        for (labels, jpegs, prompt), rec in zip(sent, recs, strict=True):
            doc = task["docs"][rec["doc_id"]]
            video = task["videos"] / doc["video"]
            if sel == "videoitg":
                result = scorer.score(video, contexts(doc))
                pos = result.top_k_positions(K)
                frames, times = [result.frame_indices[p] for p in pos], [result.timestamps[p] for p in pos]
                assert rec["top_k"] == frames
            else:
                plan = plan_decode(video, params=SamplingParams())
                pos = uniform_indices(len(plan.frame_indices), K)
                frames, times = [plan.frame_indices[p] for p in pos], [plan.timestamps[p] for p in pos]
                assert rec["frame_indices"] == plan.frame_indices and "index" not in rec
            assert len(jpegs) == K and jpegs == frame_images(video, frames, SIZE, jpeg=True)
            assert labels == [f"Frame {f} at {t:.1f} s:" for f, t in zip(frames, times, strict=True)]
            assert prompt == contexts(doc)
            assert rec["answer"]["frames"] == frames and rec["answer"]["model"] == vlm.model
            assert isinstance(rec["answer"]["text"], str)
        scored = [float(r["answer"]["text"].strip()[:1] == task["docs"][r["doc_id"]]["answer"]) for r in recs]
        assert runs["metric"][sel]["accuracy,none"] == pytest.approx(sum(scored) / n)  # the texts, by the task
    assert runs["metric"]["uniform-rerun"]["accuracy,none"] == runs["metric"]["uniform"]["accuracy,none"]


def test_answer_table_of_the_two_runs(task, runs, vlm: ServedVLM, tmp_path: Path) -> None:
    """`videoitg answer-table` on lmms-eval's own results files: one line, a column per selection, each cell with the
    frames sent per document (K: every clip has more sampled frames), read from the runs' records."""
    out = tmp_path / "table"
    lmms = runs["tmp"] / "lmms"
    assert main(["answer-table", str(lmms / "videoitg"), str(lmms / "uniform"), "--out", str(out)]) == 0
    itg, uni = (runs["metric"][s]["accuracy,none"] for s in ("videoitg", "uniform"))
    assert out.with_suffix(".md").read_text().splitlines()[2:] == [
        f"| {TASK} | accuracy | {vlm.model} | {K} | {len(task['docs'])} | {itg:.4g} ({K} frames) "
        f"| {uni:.4g} ({K} frames) |"]
    assert out.with_suffix(".png").stat().st_size > 0
