"""A generated multiple-choice set whose answer is visible only inside a short moment of a long clip, as a local
lmms-eval task, and the way to run `lmms-eval --model videoitg` in lmms-eval's own environment. What the
select-then-answer benchmark (`benchmarks.answer.bench_lmms_answer`) and tests/lmms/test_model.py run.

Each clip (128x128, `videoitg.synthetic.task`'s shapes) shows a red circle for MOMENT_S seconds only, together with one
other shape, the answer; the question is "What shape appears together with the red circle?" with four lettered
options. Three other shapes are each on screen for a longer stretch elsewhere in the clip, never with the red
circle: in TASK they are not among the options; in LURE_TASK they are the three wrong options (lures), so the
prompt names shapes that are on screen outside the moment. Letters are drawn at random, so an answer that never saw
the moment is right one time in four.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from videoitg.synthetic.task import Scene, Segment, ShapeObject, encode_video, render

ROOT = Path(__file__).resolve().parents[2]  # the repository
TASK = "videoitg_shapes_mc"
LURE_TASK = "videoitg_shapes_mc_lure"
QUESTION = "What shape appears together with the red circle?"
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
TARGET = ("red", "circle")
OPTION_COLOURS = ("green", "blue", "yellow")  # never red: one shape per colour in a frame with the target
OPTION_KINDS = ("circle", "square", "triangle")
MOMENT_S = 4
LETTERS = "ABCD"
SIZE, FPS, RADIUS = 128, 4, 11.0
# where each shape stands (still): the target, the answer, the three other options; far enough apart never to touch
SLOTS = ((34.0, 34.0), (94.0, 34.0), (24.0, 96.0), (64.0, 96.0), (104.0, 96.0))

# The local task: the documents' JSON lines, their video folder, prompts as lmms-eval's video MC tasks write them.
UTILS = '''import os
import re

VIDEOS = {videos!r}


def doc_to_visual(doc):
    return [os.path.join(VIDEOS, doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {{}}
    return kw.get("pre_prompt", "") + doc["question"] + "\\n" + "\\n".join(doc["options"]) + kw.get("post_prompt", "")


def process_results(doc, results):
    found = re.search(r"[A-D]", results[0].strip()[:1])
    return {{"accuracy": float(found is not None and found.group(0) == doc["answer"])}}


def mean(items):
    return sum(items) / max(len(items), 1)
'''
YAML = '''task: {task}
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
  max_new_tokens: {max_new_tokens}
  temperature: 0
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: !function utils.mean
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: {post!r}
'''


def _still(colour: str, kind: str, slot: tuple[float, float], appear: float, vanish: float) -> ShapeObject:
    return ShapeObject(colour, kind, RADIUS, appear, vanish, slot[0], slot[1], 0.0, [Segment(appear, vanish, "still")])


def make_doc(rng: np.random.Generator, video: Path, duration_s: int, lures: bool) -> dict[str, Any]:
    """One clip and its question: the moment at a random whole second; three other shapes (the wrong options when
    `lures`) each on screen for 8-16 s outside it (less in a clip too short for that). At least 8 s long."""
    if duration_s < MOMENT_S + 4:
        raise ValueError(f"a clip of {duration_s} s has no room beside a {MOMENT_S} s moment")
    combos = [(c, k) for c in OPTION_COLOURS for k in OPTION_KINDS]
    picks = [combos[int(i)] for i in rng.choice(len(combos), size=7, replace=False)]
    answer, wrong = picks[0], picks[1:4]
    shown = wrong if lures else picks[4:7]
    start = int(rng.integers(1, duration_s - MOMENT_S))
    objects = [_still(*TARGET, SLOTS[0], start, start + MOMENT_S), _still(*answer, SLOTS[1], start, start + MOMENT_S)]
    for slot, obj in zip(SLOTS[2:], shown, strict=True):
        free = [(0, start - 1), (start + MOMENT_S + 1, duration_s)]  # a second's gap on either side of the moment
        free = [(a, b) for a, b in free if b - a >= 2]
        a, b = free[int(rng.integers(len(free)))]
        length = int(rng.integers(min(8, b - a), min(16, b - a) + 1))  # shorter only where a short clip has no room
        appear = int(rng.integers(a, b - length + 1))
        objects.append(_still(*obj, slot, appear, appear + length))
    scene = Scene(SIZE, SIZE, FPS, duration_s * FPS, objects)
    encode_video(render(scene).frames, video, FPS)
    options = [[answer, *wrong][int(i)] for i in rng.permutation(4)]
    return {"video": video.name, "question": QUESTION,
            "options": [f"{LETTERS[i]}. {c} {k}" for i, (c, k) in enumerate(options)],
            "answer": LETTERS[options.index(answer)], "moment": [start, start + MOMENT_S], "duration_s": duration_s,
            "elsewhere": [f"{c} {k}" for c, k in shown]}


def write_set(out: str | Path, n: int, seed: int = 0, duration_s: int = 60, lures: bool = False) -> Path:
    """`n` clips under `out/videos/` and their documents in `out/docs.jsonl`; returns the documents' path."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    docs = [make_doc(rng, out / "videos" / f"mc_{i:03d}.mp4", duration_s, lures) for i in range(n)]
    path = out / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def write_task(folder: str | Path, docs: str | Path, videos: str | Path, task: str = TASK,
               max_new_tokens: int = 4) -> Path:
    """The local lmms-eval task `task` over the documents `docs` (videos under `videos`) in `folder/task/`: give
    lmms-eval `--include_path folder`."""
    d = Path(folder) / task
    d.mkdir(parents=True, exist_ok=True)
    (d / "utils.py").write_text(UTILS.format(videos=str(Path(videos).resolve())))
    (d / f"{task}.yaml").write_text(YAML.format(task=task, docs=Path(docs).resolve(), post=POST_PROMPT,
                                                max_new_tokens=max_new_tokens))
    return Path(folder)


def contexts(doc: dict[str, Any]) -> str:
    """The prompt lmms-eval builds for a document of the local task (`doc_to_text` with the default variant)."""
    return doc["question"] + "\n" + "\n".join(doc["options"]) + POST_PROMPT


# ---- lmms-eval's own environment -----------------------------------------------------------------------------------
def lmms_python() -> Path | None:
    """The interpreter of lmms-eval's environment (scripts/lmms_env.sh): $VIDEOITG_LMMS_PYTHON, else the default
    venv beside the main one, if it exists."""
    given = os.environ.get("VIDEOITG_LMMS_PYTHON")
    if given:
        return Path(given)
    default = ROOT / ".venv-lmms" / "bin" / "python"
    return default if default.is_file() else None


def lmms_env(tmp: str | Path, **extra: str) -> dict[str, str]:
    """The environment an lmms-eval run gets: offline (nothing from a hub), its caches under `tmp`."""
    tmp = Path(tmp)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": str(tmp / "hf"), "VIDEOITG_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", **extra}


def lmms_eval_run(tasks: str | Path, model_args: dict[str, Any], output_path: str | Path, task: str = TASK,
                  limit: int | None = None) -> dict[str, Any]:
    """One `lmms-eval --model videoitg` evaluation of the local task(s) `task` (comma-separated) under `tasks`, as
    lmms-eval's options (its command line's names), writing its results under `output_path`."""
    run = {"model": "videoitg", "model_args": ",".join(f"{k}={v}" for k, v in model_args.items()), "tasks": task,
           "include_path": str(tasks), "batch_size": "1", "output_path": str(output_path)}
    return run | ({"limit": limit} if limit else {})


def command_line(run: dict[str, Any]) -> str:
    """The `lmms-eval` command line of one evaluation."""
    return "lmms-eval " + " ".join(f"--{k} {v}" for k, v in run.items())


# lmms-eval indexes its own ~340 task folders for each evaluation of a `--config` list (about 7 CPU s each on 2
# cores); the process running several indexes them once and hands each evaluation its own copy. Every other folder
# (the local task's) is read each time, as lmms-eval reads it.
INDEX_ONCE = """
import copy, os
import lmms_eval.tasks as _tasks
_own = os.path.dirname(os.path.abspath(_tasks.__file__)) + "/"
_read, _seen = _tasks.TaskManager._get_task_and_group, {}
def _index(self, task_dir):
    if task_dir != _own:
        return _read(self, task_dir)
    if task_dir not in _seen:
        _seen[task_dir] = _read(self, task_dir)
    return copy.deepcopy(_seen[task_dir])
_tasks.TaskManager._get_task_and_group = _index
"""


def run_lmms_eval(python: str | Path, runs: list[dict[str, Any]], workdir: str | Path, env: dict[str, str],
                  timeout_s: float = 600, first: str = "") -> subprocess.CompletedProcess:
    """The evaluations `runs`, in order, by one lmms-eval process (`lmms-eval --config FILE` of several: its imports,
    about 13 s of CPU, and the index of its own tasks (`INDEX_ONCE`) are paid once); `first`: Python code that process
    runs before. lmms-eval's command line is called as a function, as `python -m lmms_eval` calls it. A RuntimeError
    with the end of its output when it fails or an evaluation wrote no results (lmms-eval logs an evaluation's error
    and goes on to the next)."""
    config = Path(workdir) / f"lmms-eval-{len(list(Path(workdir).glob('lmms-eval-*.json')))}.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(runs, indent=1))  # YAML: lmms-eval reads it with yaml.safe_load
    code = (f"{INDEX_ONCE}\n{first}\nimport sys\nfrom lmms_eval.__main__ import cli_evaluate\n"
            f"sys.argv = ['lmms-eval', '--config', {str(config)!r}]\ncli_evaluate()\n")
    r = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, timeout=timeout_s)
    missing = [run["output_path"] for run in runs if not list(Path(run["output_path"]).rglob("*_results.json"))]
    if r.returncode != 0 or missing:
        raise RuntimeError(f"lmms-eval exited {r.returncode}, no results under {missing}:\n{r.stdout[-3000:]}\n"
                           f"{r.stderr[-3000:]}")
    return r


def results_file(output_path: str | Path) -> Path:
    """The newest results file lmms-eval wrote under `output_path`."""
    found = sorted(Path(output_path).rglob("*_results.json"), key=lambda p: p.name)
    if not found:
        raise FileNotFoundError(f"no lmms-eval results file under {output_path}")
    return found[-1]
