"""`lmms-eval --model videoitg`: grounding as an lmms-eval model (registered by the `lmms_eval.models` entry
point, see `videoitg.lmms.tasks`). Imported by lmms-eval only; it needs the `lmms` extra.

    lmms-eval --model videoitg --tasks videomme \\
        --model_args checkpoint=/ckpt/VideoITG-8B,output_dir=/out/itg          # in-process
        --model_args server=127.0.0.1:8001,protocol=grpc,output_dir=/out/itg  # through `videoitg serve`

For every `generate_until` request it scores the document's video against the request's `contexts` and appends
the record to `output_dir/<task>/results.jsonl` (the upstream keys `index`, `logits`, `num_frames`, `contexts`,
`video_path`, `doc_id`, then ours: timestamps, scores, moments, `task`, `split`): the file lmms-eval's answering
models read as `frame_indices_jsonl`. A doc_id already in that file is not scored again (a rerun resumes). The
text answer lmms-eval receives is empty: grounding selects frames, it does not answer the task. `ranking_rule=` and
(in-process) `truncate=` choose the released or the exact behaviour (`videoitg.lmms.tasks.model_options`,
docs/lmms-eval.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmms_eval.api.model import lmms
from tqdm import tqdm

from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError
from videoitg.jsonio import loads, text_lines
from videoitg.lmms.tasks import _request_fields, doc_videos, model_options
from videoitg.outputs import DEFAULT_RANKING_RULE, write_results_jsonl
from videoitg.pipeline.scorer import Scorer
from videoitg.request.options import RequestOptions


class VideoITGModel(lmms):
    is_simple = True

    def __init__(self, checkpoint: str | None = None, server: str | None = None, protocol: str = "grpc",
                 output_dir: str = "videoitg_results", top_k: int | str | None = None, device: str = "cpu",
                 dtype: str = "auto", num_frames: int | str = 512, target_fps: float | str = 1.0,
                 sampling_rule: str = "eval", ranking_rule: str | None = None, truncate: bool | str = False,
                 **kwargs: Any) -> None:
        super().__init__()
        if checkpoint and server:
            raise InputError("model_args: give checkpoint= (in-process) or server= (a running server), not both")
        opts = model_options(device=device, dtype=dtype, num_frames=num_frames, target_fps=target_fps,
                             sampling_rule=sampling_rule, top_k=top_k, ranking_rule=ranking_rule, truncate=truncate,
                             server=server)
        self.out = Path(output_dir)
        self.top_k, self.ranking_rule = opts.top_k, opts.ranking_rule
        self.server, self.protocol = server, protocol
        if server:
            from videoitg.serving.client import VideoITGClient  # tritonclient: the optional `serve` extra

            self.client, self.scorer = VideoITGClient(server, protocol), None
        else:
            self.client = None
            self.scorer = Scorer(checkpoint or default_checkpoint(), device=opts.device, dtype=opts.dtype,
                                 sampling=opts.sampling, ranking_rule=opts.ranking_rule or DEFAULT_RANKING_RULE,
                                 truncate=opts.truncate)

    def _done(self, path: Path) -> set[int]:
        done: set[int] = set()
        if path.is_file():
            for _, line, problem in text_lines(path):
                try:
                    if problem is None:
                        done.add(int(loads(line)["doc_id"]))
                except (ValueError, KeyError, TypeError):  # JSONProblem is a ValueError: the line is redone
                    continue
        return done

    def _score(self, video: str, instructions: list[str]) -> list:
        if self.scorer is not None:
            return self.scorer.score_many(video, instructions)  # one decode and vision pass for all of them
        return [self.client.score(video, text, RequestOptions(top_k=self.top_k, ranking_rule=self.ranking_rule))
                for text in instructions]

    def generate_until(self, requests) -> list[str]:
        # Group by (task, video): a video's questions share one decode and one vision pass.
        groups: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
        for req in requests:
            ctx, doc_id, task, split = _request_fields(req.args)
            videos = doc_videos(req.args[2](self.task_dict[task][split][doc_id])) if callable(req.args[2]) else ()
            if len(videos) != 1:
                raise InputError(f"{task} doc_id {doc_id}: {len(videos)} videos among its visuals (grounding needs "
                                 "exactly one)")
            groups.setdefault((task, videos[0]), []).append((ctx, int(doc_id), split))
        done = {task: self._done(self.out / task / "results.jsonl") for task, _ in groups}
        bar = tqdm(total=len(requests), desc="videoitg grounding", disable=self.rank != 0)
        for (task, video), items in groups.items():
            todo = [it for it in items if it[1] not in done[task]]
            bar.update(len(items) - len(todo))
            if not todo:
                continue
            results = self._score(video, [ctx for ctx, _, _ in todo])
            records = [res.to_record(doc_id, video, top_k=self.top_k, task=task, split=split)
                       for res, (_, doc_id, split) in zip(results, todo, strict=True)]
            path = self.out / task / "results.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_results_jsonl(path, records)  # appended per video: an interrupted run keeps what it scored
            done[task].update(doc_id for _, doc_id, _ in todo)
            bar.update(len(todo))
        bar.close()
        return [""] * len(requests)

    def generate_until_multi_round(self, requests) -> list[str]:
        return self.generate_until(requests)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        raise NotImplementedError("videoitg scores frames; it has no likelihood of an answer")
