"""A tiny vision-language model served by a real OpenAI-compatible server: Qwen2-VL's architecture and processor
with random weights and a tokenizer built here (nothing from a hub), behind `transformers serve` on CPU. What the
answer endpoint's tests and benchmark call as their upstream."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from videoitg.launch.ports import free_port
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer

IMAGE = "<image>"
SPECIAL = ["<|im_start|>", "<|im_end|>", IMAGE]
# A Qwen2-style chat layout; the processor expands each <image> to the tower's IMAGE_TOKENS patches.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_SIZE = 56  # the tower's input side: every image is resized to it
PATCH = 14
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # prompt tokens per image (no CLS token: every patch is kept)


def build_tiny_vlm(out: str | Path, seed: int = 0) -> Path:
    """A random LLaVA (a one-layer SigLIP tower, a one-layer Qwen2, width 32) with its processor and chat template,
    saved where `AutoModelForImageTextToText` / `AutoProcessor.from_pretrained(out)` load it. It needs no
    torchvision (PIL's image processor): Qwen2-VL's processor would (its video processor)."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, Qwen2Config, SiglipVisionConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    out = Path(out)
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL})
    tok.chat_template = CHAT_TEMPLATE
    end = tok.convert_tokens_to_ids("<|im_end|>")
    image = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image, tokenizer=tok, patch_size=PATCH,
                               vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE, image_token=IMAGE)
    cfg = LlavaConfig(
        vision_config=SiglipVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        text_config=Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
                                eos_token_id=end, pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids(IMAGE), vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_seq_length=IMAGE_TOKENS,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = end
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@dataclass
class ServedVLM:
    """A running `transformers serve` of one model: `base_url` is what an OpenAI client takes."""

    model: str  # the name requests use (the model's path: the server is pinned to it)
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@contextlib.contextmanager
def serve_vlm(model_dir: str | Path, log: str | Path, timeout_s: float = 180.0) -> Iterator[ServedVLM]:
    """`transformers serve MODEL_DIR` on a free loopback port, on CPU, one torch thread; stopped after the block."""
    port = free_port()
    model = str(Path(model_dir).resolve())
    cli = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    log = Path(log)
    with log.open("wb") as f:
        proc = subprocess.Popen([str(cli), "serve", model, "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu", "--dtype", "float32", "--log-level", "warning"],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
    served = ServedVLM(model, port, proc, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve not up in {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.25)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
