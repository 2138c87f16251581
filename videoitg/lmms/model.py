"""`lmms-eval --model videoitg`: grounding as an lmms-eval model (registered by the `lmms_eval.models` entry
point, see `videoitg.lmms.tasks`). Imported by lmms-eval only; it needs the `lmms` extra.

    lmms-eval --model videoitg --tasks videomme \\
        --model_args checkpoint=/ckpt/VideoITG-8B,output_dir=/out/itg          # in-process
        --model_args server=127.0.0.1:8001,protocol=grpc,output_dir=/out/itg  # through `videoitg serve`
        --model_args server=HOST:8001,api_key_file=/run/keys/videoitg,ca_file=/run/ca.pem,output_dir=/out/itg

For every `generate_until` request it scores the document's video against the request's `contexts` and appends
the record to `output_dir/<task>/results.jsonl` (the upstream keys `index`, `logits`, `num_frames`, `contexts`,
`video_path`, `doc_id`, then ours: timestamps, scores, moments, `task`, `split`): the file lmms-eval's answering
models read as `frame_indices_jsonl`. A doc_id already in that file is not scored again (a rerun resumes).
Every request option is a model_arg of its own name (`top_k=`, `ranking_rule=`, ...: `videoitg.request.options`);
`ranking_rule=` and (in-process) `truncate=` choose the released or the exact behaviour
(`videoitg.lmms.tasks.model_options`, docs/lmms-eval.md). A server that wants a key or speaks TLS: `api_key_file=`
(else $VIDEOITG_API_KEY), `ca_file=` or `tls=true`.

Without `answer_upstream=` the text lmms-eval receives is empty: grounding selects frames, it does not answer. With
it, each document's frames go with the task's prompt to that video-LLM and its text comes back, so the task's metric
scores it (`videoitg.lmms.answering`): `selection=videoitg` (default) sends the frames the options pick (the top-K,
or fewer with an adaptive option), `selection=uniform` K evenly spaced ones of the same sampled frames (no grounding
model is loaded); each record gets an `answer` object, and a rerun hands back the answers of the doc_ids already
there.

    lmms-eval --model videoitg --tasks videomme \\
        --model_args checkpoint=/ckpt/VideoITG-8B,output_dir=/out/itg32,answer_upstream=http://127.0.0.1:8000/v1,top_k=32
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError
from videoitg.jsonio import loads, text_lines
from videoitg.lmms.answering import (
    Answerer,
    answer_field,
    answer_options,
    chosen_positions,
    run_settings,
    same_run,
    uniform_record,
)
from videoitg.lmms.tasks import OUTPUT_DIR, _flag, _request_fields, doc_videos, model_options
from videoitg.outputs import write_results_jsonl
from videoitg.pipeline.scorer import Scorer
from videoitg.request.options import OPTIONS, RequestOptions, recorded, records_picks

log = logging.getLogger(__name__)
# what lmms-eval itself adds to the model_args (its --batch_size and --device; --max_batch_size)
LMMS_CONFIG = frozenset({"batch_size", "max_batch_size"})


class VideoITGModel(lmms):
    is_simple = True

    def __init__(self, checkpoint: str | None = None, server: str | None = None, protocol: str = "grpc",
                 output_dir: str = OUTPUT_DIR, device: str = "cpu", dtype: str = "auto",
                 num_frames: int | str = 512, target_fps: float | str = 1.0, sampling_rule: str = "eval",
                 truncate: bool | str = False, answer_upstream: str | None = None, answer_model: str | None = None,
                 selection: str | None = None, vision_tower: str | None = None, api_key_file: str | None = None,
                 ca_file: str | None = None, tls: bool | str = False, **kwargs: Any) -> None:
        """model_args; besides these, every request option (`videoitg.request.options.OPTIONS`: top_k,
        ranking_rule, frame_size, ...) by its name, but `frames`, which this model sets itself."""
        super().__init__()
        named = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTIONS and k != "frames"}
        unknown = sorted(set(kwargs) - LMMS_CONFIG)
        if unknown:  # a misspelt option would otherwise run with its default
            raise InputError(f"model_args: --model videoitg takes no {', '.join(unknown)} (docs/lmms-eval.md)")
        if checkpoint and server:
            raise InputError("model_args: give checkpoint= (in-process) or server= (a running server), not both")
        if not server and (api_key_file or ca_file or _flag(tls)):
            raise InputError("model_args: api_key_file=, ca_file= and tls= are a server's: give server= too")
        request = RequestOptions.from_text({k: v for k, v in named.items() if k != "frame_size"}, "model_args:")
        opts = model_options(device=device, dtype=dtype, num_frames=num_frames, target_fps=target_fps,
                             sampling_rule=sampling_rule, truncate=truncate, server=server)
        answering = answer_options(upstream=answer_upstream, model=answer_model, selection=selection, **named)
        self.out = Path(output_dir)
        self.request = request  # the grounding records' options (their `top_k` field: the frames picked)
        self.server, self.protocol = server, protocol
        self.client = self.scorer = None
        # the video-LLM first: an upstream that cannot be reached fails the run before a model loads
        self.answerer = Answerer(answering, opts.sampling) if answering is not None else None
        if answering is not None and answering.selection == "uniform":
            return  # uniform frames need no grounding model
        if server:
            from videoitg.client.kserve import VideoITGClient  # tritonclient: the optional `serve` extra

            self.client = VideoITGClient(server, protocol, api_key_file=api_key_file, ca_file=ca_file, tls=_flag(tls))
        else:
            self.scorer = Scorer(checkpoint or default_checkpoint(), device=opts.device, dtype=opts.dtype,
                                 sampling=opts.sampling, truncate=opts.truncate, vision_tower=vision_tower)

    def _done(self, path: Path) -> dict[int, dict]:
        """The first record of each doc_id already in `path` (a rerun scores and answers none of them again)."""
        done: dict[int, dict] = {}
        if path.is_file():
            for _, line, problem in text_lines(path):
                try:
                    if problem is None:
                        rec = loads(line)
                        done.setdefault(int(rec["doc_id"]), rec)
                except (ValueError, KeyError, TypeError):  # JSONProblem is a ValueError: the line is redone
                    continue
        return done

    def _score(self, video: str, instructions: list[str]) -> list[tuple[Any, list[int] | None]]:
        """Each instruction's result and the picks its record stores (`recorded`): through a server, the server's
        own (its deployment's top_k where the run names none)."""
        if self.scorer is not None:
            # one decode and vision pass for all of them
            results = self.scorer.score_many(video, instructions, options=self.request)
            return [(res, recorded(res, self.request)) for res in results]
        served = [self.client.infer(video, text, self.request) for text in instructions]
        return [(s.result, s.picked() if records_picks(self.request) else None) for s in served]

    @staticmethod
    def _write(path: Path, records: list[dict]) -> None:
        """Records appended after the file's last whole line; a torn one (an interrupted run's) is set aside."""
        torn = write_results_jsonl(path, records)
        if torn:
            log.warning("%s ended in a torn line (%d bytes, from an interrupted write): set aside in %s.torn",
                        path, torn, path)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        # Group by (task, video): a video's questions share one decode and one vision pass.
        groups: dict[tuple[str, str], list[tuple[str, int, str, Any, int]]] = {}
        for n, req in enumerate(requests):
            ctx, doc_id, task, split = _request_fields(req.args)
            videos = doc_videos(req.args[2](self.task_dict[task][split][doc_id])) if callable(req.args[2]) else ()
            if len(videos) != 1:
                raise InputError(f"{task} doc_id {doc_id}: {len(videos)} videos among its visuals (grounding needs "
                                 "exactly one)")
            groups.setdefault((task, videos[0]), []).append((ctx, int(doc_id), split, req.args[1], n))
        done = {task: self._done(self.out / task / "results.jsonl") for task, _ in groups}
        texts = [""] * len(requests)
        bar = tqdm(total=len(requests), desc="videoitg " + ("answering" if self.answerer else "grounding"),
                   disable=self.rank != 0)
        try:
            for (task, video), items in groups.items():
                todo = [it for it in items if it[1] not in done[task]]
                for it in items:
                    if it[1] in done[task] and self.answerer is not None:
                        texts[it[4]] = self._stored_answer(task, done[task][it[1]], it[1])
                bar.update(len(items) - len(todo))
                if not todo:
                    continue
                path = self.out / task / "results.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                if self.answerer is not None:
                    for it, rec, text in self._answer(task, video, todo):
                        self._write(path, [rec])  # one at a time: a failed answer keeps those before it
                        done[task][it[1]] = rec
                        texts[it[4]] = text
                        bar.update(1)
                    continue
                results = self._score(video, [it[0] for it in todo])
                records = [res.to_record(doc_id, video, picked=picked, task=task, split=split)
                           for (res, picked), (_, doc_id, split, _, _) in zip(results, todo, strict=True)]
                self._write(path, records)  # appended per video: an interrupted run keeps what it scored
                done[task].update((rec["doc_id"], rec) for rec in records)
                bar.update(len(todo))
        finally:
            bar.close()
            if self.answerer is not None:
                self.answerer.close()
        return texts

    def _answer(self, task: str, video: str, todo: list[tuple[str, int, str, Any, int]]):
        """(item, record, the video-LLM's text) for each document of one video, as each is answered."""
        answerer = self.answerer
        opts = answerer.options
        if opts.selection == "videoitg":
            results = self._score(video, [it[0] for it in todo])
        else:
            sampled = answerer.sampled(video)
        for i, it in enumerate(todo):
            ctx, doc_id, split, gen_kwargs, _ = it
            if opts.selection == "videoitg":
                res = results[i][0]
                pos = chosen_positions(opts, len(res.frame_indices), res)
                frames, times, scores = ([res.frame_indices[p] for p in pos], [res.timestamps[p] for p in pos],
                                         [res.scores[p] for p in pos])
                rec = res.to_record(doc_id, video, picked=pos, task=task, split=split)
            else:
                pos = chosen_positions(opts, len(sampled.frames))
                frames, times, scores = [sampled.frames[p] for p in pos], [sampled.timestamps[p] for p in pos], None
                rec = uniform_record(doc_id, video, ctx, sampled, task=task, split=split)
            text, sent = answerer.ask(video, ctx, gen_kwargs, frames, times, scores)
            rec["answer"] = answer_field(opts, answerer.model, sent, text)
            yield it, rec, text

    def _stored_answer(self, task: str, record: dict, doc_id: int) -> str:
        """The text a rerun hands back for a doc_id already answered in output_dir, by a run of these settings."""
        field = record.get("answer")
        if not same_run(field, self.answerer.options, self.answerer.model):
            raise InputError(f"{self.out / task / 'results.jsonl'} already holds doc_id {doc_id} from another run "
                             f"({run_settings(field)}): give each run its own output_dir")
        return field["text"]

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        return self.generate_until(requests)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("videoitg scores frames; it has no likelihood of an answer")
