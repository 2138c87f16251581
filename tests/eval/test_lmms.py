"""lmms-eval: the real package (0.7.x) on a small local task, no hub. A task's doc_ids and full prompts reach
grounding exactly, through `videoitg manifest --from-lmms-eval` and through `lmms-eval --model videoitg`.

lmms-eval is the optional `lmms` extra (docs/lmms-eval.md): without it these tests skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (optional extra `lmms`: docs/lmms-eval.md)")

from videoitg.cli import main
from videoitg.clips import random_clip
from videoitg.lmms.tasks import task_requests
from videoitg.manifest import load_manifest

POST = "\nAnswer with the option's letter from the given choices directly."
DOCS = [
    {"video": "a.mp4", "question": "Which shape is green?", "options": ["A. square", "B. circle"], "answer": "A"},
    {"video": "a.mp4", "question": "When does it move left?", "options": ["A. early", "B. late"], "answer": "B"},
    {"video": "b.mp4", "question": "What colour is the circle?", "options": ["A. red", "B. blue"], "answer": "A"},
]
UTILS = '''import os

def doc_to_visual(doc):
    return [os.path.join(os.environ["VIDEOITG_TEST_VIDEOS"], doc["video"])]

def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    return kw.get("pre_prompt", "") + doc["question"] + "\\n" + "\\n".join(doc["options"]) + kw.get("post_prompt", "")

def process_results(doc, results):
    return {"answer_match": float(results[0].strip().startswith(doc["answer"]))}

def mean(items):
    return sum(items) / max(len(items), 1)
'''
YAML = '''task: videoitg_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
process_results: !function utils.process_results
metric_list:
  - metric: answer_match
    aggregation: !function utils.mean
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: "\\nAnswer with the option's letter from the given choices directly."
'''


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lmms")
    (root / "videos").mkdir()
    for i, name in enumerate(("a.mp4", "b.mp4")):
        random_clip(root / "videos" / name, seed=i)
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tdir = root / "tasks" / "videoitg_local_mc"
    tdir.mkdir(parents=True)
    (tdir / "utils.py").write_text(UTILS)
    (tdir / "videoitg_local_mc.yaml").write_text(YAML.format(docs=docs))
    return {"root": root, "tasks": root / "tasks", "videos": root / "videos"}


@pytest.fixture()
def offline(task, monkeypatch) -> None:
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(task["root"] / "hf"),
                 "VIDEOITG_TEST_VIDEOS": str(task["videos"])}.items():
        monkeypatch.setenv(k, v)


def _expected() -> list[tuple[int, str, str]]:
    return [(i, d["question"] + "\n" + "\n".join(d["options"]) + POST, d["video"]) for i, d in enumerate(DOCS)]


def test_task_requests_are_lmms_evals_own(task, offline) -> None:
    reqs = task_requests(["videoitg_local_mc"], task["tasks"])
    got = [(r.doc_id, r.contexts, Path(r.videos[0]).name) for r in reqs]
    assert got == _expected() and {r.split for r in reqs} == {"test"}


def test_manifest_from_lmms_eval(task, offline, tmp_path: Path) -> None:
    out = tmp_path / "manifest.jsonl"
    assert main(["manifest", "--from-lmms-eval", "videoitg_local_mc", "--include-path", str(task["tasks"]),
                 "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["doc_id"], r["instruction"], Path(r["video"]).name) for r in rows] == _expected()
    m = load_manifest(out, [task["videos"]])  # a valid batch manifest: row ids are the doc_ids
    assert not m.rejected and [r.row_id for r in m.rows] == ["0", "1", "2"]
    assert main(["manifest", "--from-lmms-eval", "no_such_task", "--include-path", str(task["tasks"]),
                 "--out", str(out)]) == 2


def test_lmms_eval_runs_videoitg_as_a_model(task, offline, tmp_path: Path) -> None:
    """The real `lmms-eval` CLI with `--model videoitg` (entry point), in-process scoring: one results.jsonl record
    per doc_id with the task's contexts; a rerun scores nothing twice."""
    out = tmp_path / "itg"
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "videoitg", "--tasks", "videoitg_local_mc",
           "--include_path", str(task["tasks"]), "--model_args", f"output_dir={out},top_k=4", "--batch_size", "1"]
    env = {**os.environ, "VIDEOITG_HOME": str(tmp_path / "home")}
    for _ in range(2):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    recs = [json.loads(x) for x in (out / "videoitg_local_mc" / "results.jsonl").read_text().splitlines()]
    assert [(x["doc_id"], x["contexts"], Path(x["video_path"]).name) for x in recs] == _expected()
    for x in recs:
        assert sorted(x["index"]) == x["frame_indices"] and len(x["top_k"]) == 4 and x["moments"]
        assert x["task"] == "videoitg_local_mc" and x["split"] == "test"
