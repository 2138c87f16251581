"""Select, then answer, for lmms-eval's requests: with `answer_upstream=URL`, `lmms-eval --model videoitg` sends each
document's frames and the task's own prompt (`contexts`) to a video-LLM's OpenAI-compatible API and hands its text
back to lmms-eval, whose task metric scores it (docs/lmms-eval.md). Needs no lmms-eval itself: `VideoITGModel`
(`videoitg.lmms.model`) calls it.

The two selections differ only in which frames are sent: `videoitg` sends a grounding result's top-K frames,
`uniform` K evenly spaced frames (`videoitg.eval.metrics.uniform_indices`) of the same sampled frames
(`videoitg.decode.plan_decode`, the sampling scoring decodes). Both are decoded by `frame_images`, and the request is
built and sent by the answer endpoint's own code (`videoitg.answer.chat.parse_chat` + `forwarded_bytes`, whose frames
come from `videoitg.answer.handoff`; `videoitg.answer.videollm.ChatUpstream`): a video-LLM receives from this path
exactly what `videoitg serve --answer-upstream` would forward for the same frames.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from videoitg.answer.chat import DEFAULT_FRAME_SIZE, Selection, forwarded_bytes, parse_chat
from videoitg.answer.videollm import ChatUpstream, check_base_url
from videoitg.decode import plan_decode
from videoitg.decode.export import frame_images
from videoitg.errors import InputError
from videoitg.eval.metrics import uniform_indices
from videoitg.outputs import DEFAULT_TOP_K, GroundingResult, record_video_path
from videoitg.request.options import RequestOptions, select
from videoitg.sampling import SamplingParams

SELECTIONS = ("videoitg", "uniform")


@dataclass(frozen=True)
class AnswerOptions:
    """The model_args of select-then-answer, checked (`answer_options`)."""

    upstream: str  # the video-LLM's base URL
    model: str | None  # the model name sent; None: the first the upstream lists
    selection: str  # one of SELECTIONS
    # the frames sent per document: top_k (the `videoitg` selection's cap and the `uniform` count) and any other
    # selection option, as JPEGs with the longer side frame_size (0: the video's own size)
    options: RequestOptions

    @property
    def top_k(self) -> int:
        return DEFAULT_TOP_K if self.options.top_k is None else self.options.top_k

    @property
    def frame_size(self) -> int | None:
        return self.options.frame_size or None


def _given(value: Any) -> bool:
    return value not in (None, "", "None")


def answer_options(*, upstream: Any = None, model: Any = None, selection: Any = None, **named: Any
                   ) -> AnswerOptions | None:
    """model_args as lmms-eval hands them over (strings, or numbers it converted), checked; `named`: the request
    options among them by name (top_k, frame_size, ...: `RequestOptions.from_text`). None without `answer_upstream`
    (grounding only: then `answer_model`, `selection` and `frame_size` are errors)."""
    if not _given(upstream):
        given = [n for n, v in (("answer_model", model), ("selection", selection),
                                ("frame_size", named.get("frame_size"))) if _given(v)]
        if given:
            raise InputError(f"model_args: {', '.join(given)} need answer_upstream=URL (the video-LLM that answers)")
        return None
    chosen = str(selection) if _given(selection) else "videoitg"
    if chosen not in SELECTIONS:
        raise InputError(f"model_args: selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    options = RequestOptions.from_text({**named, "frames": "jpeg"}, "model_args:")
    sent = replace(options, top_k=DEFAULT_TOP_K if options.top_k is None else options.top_k,
                   frame_size=DEFAULT_FRAME_SIZE if options.frame_size is None else options.frame_size)
    return AnswerOptions(check_base_url(str(upstream)), str(model) if _given(model) else None, chosen, sent)


def generation_fields(gen_kwargs: Any) -> dict[str, Any]:
    """The chat request's generation fields from a task's `gen_kwargs`, mapped as lmms-eval's own OpenAI-compatible
    models map them: `max_new_tokens` -> `max_tokens`, `temperature` (default 0: greedy, as lmms-eval sends),
    `top_p` when the task sets it. `until` is not sent: a chat model ends its turn itself (lmms-eval's chat models
    drop it too); `do_sample` and `num_beams` have no chat-completions field."""
    kw = gen_kwargs if isinstance(gen_kwargs, dict) else {}
    out: dict[str, Any] = {}
    if kw.get("max_new_tokens") is not None:
        out["max_tokens"] = int(kw["max_new_tokens"])
    out["temperature"] = float(kw.get("temperature") or 0)
    if kw.get("top_p") is not None:
        out["top_p"] = float(kw["top_p"])
    return out


def chosen_positions(answer: AnswerOptions, num_frames: int, result: GroundingResult | None = None) -> list[int]:
    """Positions (into the sampled frames), chronological, of the frames `answer.selection` sends: those its
    options pick from the result (`videoitg`: `select`), or `top_k` evenly spaced ones (`uniform`); all frames when
    the video has no more than that."""
    if answer.selection == "videoitg":
        if result is None:
            raise InputError("selection=videoitg needs a grounding result")
        return select(result, answer.options)
    return uniform_indices(num_frames, answer.top_k)


@dataclass(frozen=True)
class Sampled:
    """A video's sampled frames: original frame numbers and their timestamps (seconds)."""

    frames: list[int]
    timestamps: list[float]


class Answerer:
    """The video-LLM at `options.upstream`, asked about one document at a time (`ask`), on an event loop of its
    own; `close` lets its connections go (a later `ask` opens new ones)."""

    def __init__(self, options: AnswerOptions, sampling: SamplingParams) -> None:
        self.options = options
        self.sampling = sampling
        self._loop: asyncio.AbstractEventLoop | None = None
        self._upstream: ChatUpstream | None = None
        try:  # the name every request carries: the one given, or the upstream's first
            self.model = options.model or self._run(lambda up: up.first_model())
        finally:
            self.close()

    def _run(self, call: Any) -> Any:
        if self._loop is None:
            self._loop, self._upstream = asyncio.new_event_loop(), ChatUpstream(self.options.upstream)
        return self._loop.run_until_complete(call(self._upstream))

    def sampled(self, video: str | Path) -> Sampled:
        """The sampled frames of `video` under this run's sampling, as scoring decodes them (`plan_decode`)."""
        plan = plan_decode(video, params=self.sampling)
        return Sampled(list(plan.frame_indices), list(plan.timestamps))

    def ask(self, video: str | Path, contexts: str, gen_kwargs: Any, frames: list[int], timestamps: list[float],
            scores: list[float] | None = None) -> tuple[str, Selection]:
        """The video-LLM's text for the task's prompt `contexts` asked about `frames` (original numbers,
        chronological) of `video`, and what was sent. One user message: the frames (a `Frame N at T s:` text part
        and a JPEG each, `videoitg.answer.handoff`), then the prompt, with the task's generation fields."""
        t0 = time.perf_counter()
        jpegs = frame_images(video, frames, self.options.frame_size, jpeg=True)
        selection = Selection(list(frames), list(timestamps), list(scores or []), [], list(jpegs),
                              time.perf_counter() - t0)
        body = {"model": self.model,
                "messages": [{"role": "user", "content": [
                    {"type": "video_url", "video_url": {"url": Path(video).resolve().as_uri()}},
                    {"type": "text", "text": contexts}]}],
                **generation_fields(gen_kwargs)}
        request = forwarded_bytes(parse_chat(body), selection)
        answer = self._run(lambda up: up.complete(request, selection))
        return answer_text(answer, self.options.upstream), selection

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._upstream.close())
            self._loop.close()
            self._loop = self._upstream = None


def answer_text(answer: dict[str, Any], upstream: str) -> str:
    """The text of a chat-completions answer's first choice; an InputError naming the upstream when it has none."""
    choices = answer.get("choices")
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) \
        else None
    content = message.get("content") if isinstance(message, dict) else None
    if content is None:
        return ""  # an answer with no text (a refusal, tool calls): lmms-eval scores it as given
    if not isinstance(content, str):
        raise InputError(f"the video-LLM at {upstream} answered a message content that is not text")
    return content


def answer_settings(options: AnswerOptions, model: str) -> dict[str, Any]:
    """How a run chose and sent frames: the selection, the request options (top_k, frame_size and any other it
    named) and the video-LLM; a rerun into the same output_dir reuses a record only if its settings are these."""
    given = {k: v for k, v in options.options.given().items() if k != "frames"}
    return {"selection": options.selection, **given, "frame_size": options.options.frame_size or 0, "model": model}


def answer_field(options: AnswerOptions, model: str, selection: Selection, text: str) -> dict[str, Any]:
    """The `answer` object of a results.jsonl record: how the frames were chosen, what was sent (`frames`: their
    numbers, so the frames used per document are counted from it), what came back."""
    return {**answer_settings(options, model), "frames": selection.frames,
            "timestamps": [round(t, 3) for t in selection.timestamps], "text": text}


def same_run(field: Any, options: AnswerOptions, model: str) -> bool:
    """Whether a record's `answer` object was written by a run with these settings (a rerun reuses its text)."""
    settings = answer_settings(options, model)
    return (isinstance(field, dict) and isinstance(field.get("text"), str)
            and {k: v for k, v in field.items() if k not in ("frames", "timestamps", "text")} == settings)


def run_settings(field: Any) -> str:
    """A record's `answer` settings as words, for the error of a rerun into another run's output_dir."""
    if not isinstance(field, dict):
        return "grounding only, no answer"
    return ", ".join(f"{k}={v}" for k, v in field.items() if k not in ("frames", "timestamps", "text"))


def uniform_record(doc_id: int, video: str | Path, contexts: str, sampled: Sampled, **extra: Any) -> dict[str, Any]:
    """A results.jsonl record of a `selection=uniform` document: no grounding ran, so no ranking (`index`) or
    scores, only the sampled frames it chose from."""
    return {"contexts": contexts, "video_path": record_video_path(video), "doc_id": doc_id,
            "frame_indices": sampled.frames, "timestamps": [round(t, 3) for t in sampled.timestamps], **extra}
