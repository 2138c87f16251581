"""A result handed to a video-LLM: the top-K frames as images and the instruction as text, in one OpenAI-compatible
chat request (`POST /v1/chat/completions`), which vLLM, SGLang and trtllm-serve accept for their vision-language
models. Built from the `openai` SDK's own request types (`pip install openai`; in this project's `dev` and `llm`
extras), so the SDK checks its shape; docs/handoff.md is the recipe.

    from openai import OpenAI
    from videoitg.handoff import chat_request
    request = chat_request("clip.mp4", result, model="Qwen/Qwen2.5-VL-7B-Instruct", k=32, size=448)
    answer = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY").chat.completions.create(**request)
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from videoitg.errors import InputError
from videoitg.export import top_k_images
from videoitg.outputs import DEFAULT_TOP_K, GroundingResult

if TYPE_CHECKING:
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming


def chat_request(video: str | Path, result: GroundingResult, model: str, *, k: int = DEFAULT_TOP_K,
                 size: int | None = None, question: str | None = None) -> CompletionCreateParamsNonStreaming:
    """The keyword arguments of `OpenAI().chat.completions.create(**request)` (and the JSON body of the HTTP
    request): one user message holding, for each of the result's top-K frames in chronological order, a text part
    "Frame N at T s:" and the frame as a JPEG data URL (decoded from `video` at its own size, or with the longer
    side `size`), then the question (default: the result's instruction). `model`: the name the endpoint serves."""
    try:
        from openai.types.chat import (
            ChatCompletionContentPartImageParam,
            ChatCompletionContentPartTextParam,
            ChatCompletionUserMessageParam,
        )
        from openai.types.chat.chat_completion_content_part_image_param import ImageURL
        from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
    except ImportError as e:
        raise InputError(f"the chat request is built with the openai SDK's types: pip install openai ({e})") from None
    text = result.instruction if question is None else question
    if not text.strip():
        raise InputError("the question is empty (the result carries no instruction: pass question=...)")
    parts: list[ChatCompletionContentPartTextParam | ChatCompletionContentPartImageParam] = []
    for pos, jpeg in top_k_images(video, result, k, size, jpeg=True):
        parts.append(ChatCompletionContentPartTextParam(
            type="text", text=f"Frame {result.frame_indices[pos]} at {result.timestamps[pos]:.1f} s:"))
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        parts.append(ChatCompletionContentPartImageParam(type="image_url", image_url=ImageURL(url=url)))
    parts.append(ChatCompletionContentPartTextParam(type="text", text=text))
    message = ChatCompletionUserMessageParam(role="user", content=parts)
    return CompletionCreateParamsNonStreaming(model=model, messages=[message])
