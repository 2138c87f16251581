"""A result handed to a video-LLM: the picked frames as images and the instruction as text, in one OpenAI-compatible
chat request (`POST /v1/chat/completions`), which vLLM, SGLang and trtllm-serve accept for their vision-language
models. Built from the `openai` SDK's own request types (`pip install openai`; in this project's `dev` and `llm`
extras), so the SDK checks its shape; docs/handoff.md is the recipe.

    from openai import OpenAI
    from videoitg.answer.handoff import chat_request
    request = chat_request("clip.mp4", result, model="Qwen/Qwen2.5-VL-7B-Instruct",
                           options=RequestOptions(top_k=32, frames="jpeg", frame_size=448))
    answer = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY").chat.completions.create(**request)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videoitg.errors import InputError
from videoitg.outputs import GroundingResult
from videoitg.request.options import NO_OPTIONS, RequestOptions, select

if TYPE_CHECKING:
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming


def frame_label(frame: int, timestamp: float) -> str:
    """The text part before each frame: its number and its time in the video."""
    return f"Frame {frame} at {timestamp:.1f} s:"


def frame_parts_json(frames: Iterable[tuple[int, float, bytes]]) -> bytes:
    """Chat content parts for frames given as (frame number, timestamp in seconds, JPEG bytes), in the order given
    (chronological is what a video-LLM expects), as JSON: for each, a text part `frame_label(...)`, then the JPEG as
    an `image_url` part holding a `data:image/jpeg;base64,...` URL; the parts joined by commas, without brackets, to
    be spliced into a request's content list. The one place frames become chat content: `frame_parts`, the
    `chat_request` helper and the served answer endpoint (`videoitg.answer.chat`) all build theirs here. Bytes, built
    without a JSON pass over the images (base64 is ASCII with nothing to escape): 32 frames at 448 px (1.9 MB) take
    a millisecond here, several through `json.dumps`."""
    return b",".join(b'{"type":"text","text":' + json.dumps(frame_label(n, t)).encode()
                     + b'},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,' + base64.b64encode(jpeg)
                     + b'"}}' for n, t, jpeg in frames)


def frame_parts(frames: Iterable[tuple[int, float, bytes]]) -> list[dict[str, Any]]:
    """`frame_parts_json` as a list of dicts of the openai SDK's `ChatCompletionContentPart*Param` shapes (the SDK is
    not needed to build them)."""
    return json.loads(b"[" + frame_parts_json(frames) + b"]")


def chat_request(video: str | Path, result: GroundingResult, model: str, *, options: RequestOptions = NO_OPTIONS,
                 question: str | None = None) -> CompletionCreateParamsNonStreaming:
    """The keyword arguments of `OpenAI().chat.completions.create(**request)` (and the JSON body of the HTTP
    request): one user message holding, for each frame `options` pick from the result (`select`) in chronological
    order, a text part "Frame N at T s:" and the frame as a JPEG data URL (decoded from `video` at its own size, or
    with the longer side `options.frame_size`), then the question (default: the result's instruction). `model`: the
    name the endpoint serves."""
    try:
        from openai.types.chat import ChatCompletionContentPartTextParam, ChatCompletionUserMessageParam
        from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
    except ImportError as e:
        raise InputError(f"the chat request is built with the openai SDK's types: pip install openai ({e})") from None
    # here, not at the top: the decoder (PyAV) is this helper's alone; the serving front builds its parts from
    # frames the server decoded (`frame_parts`) and never loads it
    from videoitg.decode.export import picked_images

    text = result.instruction if question is None else question
    if not text.strip():
        raise InputError("the question is empty (the result carries no instruction: pass question=...)")
    images = picked_images(video, result, select(result, options), options.frame_size or None, jpeg=True)
    parts: list[Any] = frame_parts((result.frame_indices[pos], result.timestamps[pos], jpeg) for pos, jpeg in images)
    parts.append(ChatCompletionContentPartTextParam(type="text", text=text))
    message = ChatCompletionUserMessageParam(role="user", content=parts)
    return CompletionCreateParamsNonStreaming(model=model, messages=[message])
