"""lmms-eval's own requests, so grounding sees exactly the `doc_id`s and `contexts` a task gives a model.

Upstream VideoITG runs grounding as an lmms-eval model: for every request of a task (Video-MME, ...), it scores
the task's video against the task's full prompt (`contexts`: option prompt + question + options) and writes a
`results.jsonl` record keyed by the task's `doc_id`; the answering video-LLM then reads its frames from that file.
Two ways to do the same here, both from lmms-eval's own task objects (never re-implemented prompts):

- `videoitg manifest --from-lmms-eval TASK --out manifest.jsonl` (`write_manifest`): the task's requests as a
  batch manifest (`video`, `instruction` = contexts, `doc_id`, `task`, `split`), for `videoitg batch`.
- `lmms-eval --model videoitg --model_args checkpoint=DIR|server=HOST:PORT,output_dir=OUT --tasks TASK`
  (`VideoITGModel` in `videoitg/lmms/model.py`, registered through the `lmms_eval.models` entry point): lmms-eval
  drives the scoring and `OUT/results.jsonl` is written as the upstream writer does, plus our fields.

lmms-eval is an optional extra (`pip install videoitg-serve[lmms]`): it pins `av<16` and pulls ~70 packages, so it
is kept out of the main environment (docs/lmms-eval.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoitg.errors import InputError
from videoitg.pipeline.scorer import parse_dtype
from videoitg.sampling import SamplingParams
from videoitg.writes import write_whole

MODEL_NAME = "videoitg"  # the --model name; tasks pick their prompt variant (lmms_eval_specific_kwargs) by it
OUTPUT_DIR = "videoitg_results"  # model_args output_dir unless a run names one


@dataclass(frozen=True)
class LmmsRequest:
    task: str
    split: str
    doc_id: int
    contexts: str  # the task's full prompt, exactly as lmms-eval hands it to a model
    videos: tuple[str, ...]  # the document's visuals that are video files


def _flag(value: Any) -> bool:
    """A boolean model_arg: lmms-eval hands `truncate=true` over as True, other spellings as strings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off", "none"):
        return False
    raise InputError(f"model_args: expected true or false, got {value!r}")


@dataclass(frozen=True)
class ModelOptions:
    """`--model videoitg` model_args, resolved as the in-process `Scorer` takes them (docs/lmms-eval.md)."""

    device: str
    dtype: Any  # torch.dtype: videoitg.pipeline.scorer.parse_dtype (float16 on a GPU as released, float32 on CPU)
    sampling: Any  # videoitg.sampling.SamplingParams
    truncate: bool


def model_options(*, device: str = "cpu", dtype: str = "auto", num_frames: int | str = 512,
                  target_fps: float | str = 1.0, sampling_rule: str = "eval", truncate: bool | str = False,
                  server: str | None = None) -> ModelOptions:
    """model_args arrive as strings (or as lmms-eval converted them): check and resolve them, without loading a
    model. `truncate` is an in-process option: a server always refuses an over-long instruction."""
    cut = _flag(truncate)
    if cut and server:
        raise InputError("model_args: truncate= is an in-process option (checkpoint=); a server always refuses an "
                         "over-long instruction")
    return ModelOptions(device=str(device), dtype=parse_dtype(str(dtype), str(device)),
                        sampling=SamplingParams(int(num_frames), float(target_fps), sampling_rule), truncate=cut)


def _require_lmms_eval():
    try:
        import lmms_eval  # noqa: F401
    except ImportError as e:
        raise InputError("this needs lmms-eval, an optional extra: pip install 'videoitg-serve[lmms]' "
                         "(in its own environment: docs/lmms-eval.md)") from e


def load_tasks(task_names: list[str], include_path: str | Path | None = None,
               model_name: str = MODEL_NAME) -> dict[str, Any]:
    """lmms-eval Task objects by name (groups flattened), prompts set up for `model_name`."""
    _require_lmms_eval()
    from lmms_eval.tasks import TaskManager, get_task_dict  # lmms-eval: an optional extra, imported where used

    tm = None
    if include_path:  # local tasks only: index just that folder (lmms-eval's own ~340 task folders take seconds)
        tm = TaskManager("WARNING", include_path=str(include_path), include_defaults=False, model_name=model_name)
        if not all(t in tm.all_tasks for t in task_names):
            tm = None
    if tm is None:
        tm = TaskManager("WARNING", include_path=str(include_path) if include_path else None, model_name=model_name)
    unknown = [t for t in task_names if t not in tm.all_tasks]
    if unknown:
        raise InputError(f"lmms-eval has no task {', '.join(unknown)}"
                         + ("" if include_path else " (a local task needs --include-path DIR)"))
    return dict(_flatten(get_task_dict(task_names, tm)))


def _flatten(d: dict) -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v)
        elif v is not None:
            yield (getattr(k, "group_name", None) or str(k)), v


def doc_videos(visuals: Any) -> tuple[str, ...]:
    """The video files among a document's visuals (lmms-eval gives paths for videos, PIL images for images)."""
    items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
    out = []
    for v in items:
        if isinstance(v, (list, tuple)):
            out += doc_videos(v)
        elif isinstance(v, (str, Path)):
            out.append(str(v))
    return tuple(out)


def task_requests(task_names: list[str], include_path: str | Path | None = None, model_name: str = MODEL_NAME,
                  limit: int | None = None) -> list[LmmsRequest]:
    """Every request lmms-eval would send a model for these tasks (rank 0 of 1, no chat template, no few-shot
    beyond the task's own config), with the document's video files."""
    out: list[LmmsRequest] = []
    for name, task in load_tasks(task_names, include_path, model_name).items():
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        for inst in task.instances:
            ctx, doc_id, task_name, split = _request_fields(inst.arguments)
            doc = task.dataset[split][doc_id]
            out.append(LmmsRequest(task_name or name, split, int(doc_id), ctx, doc_videos(task.doc_to_visual(doc))))
    return out


def _request_fields(args: tuple) -> tuple[str, int, str, str]:
    """(contexts, doc_id, task, split) from an Instance's arguments, for both request layouts of lmms-eval 0.7:
    simple tasks (ctx, gen_kwargs, doc_to_visual, doc_id, task, split) and message tasks (ctx, doc_to_messages,
    gen_kwargs, doc_id, task, split)."""
    if len(args) < 6:
        raise InputError(f"unexpected lmms-eval request layout ({len(args)} arguments)")
    return str(args[0]), args[-3], args[-2], args[-1]


def manifest_rows(requests: list[LmmsRequest]) -> tuple[list[dict[str, Any]], list[str]]:
    """Batch manifest rows (one per request with exactly one video) and a reason for each request left out."""
    rows, skipped = [], []
    many_tasks = len({r.task for r in requests}) > 1
    for r in requests:
        if len(r.videos) != 1:
            skipped.append(f"{r.task} doc_id {r.doc_id}: {len(r.videos)} videos among its visuals (grounding needs "
                           "exactly one)")
            continue
        row = {"video": r.videos[0], "instruction": r.contexts, "doc_id": r.doc_id, "task": r.task, "split": r.split}
        if many_tasks:
            row["id"] = f"{r.task}/{r.doc_id}"  # doc_ids restart at 0 per task: the row id must not
        rows.append(row)
    return rows, skipped


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path

