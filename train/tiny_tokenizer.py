"""A tiny byte-level BPE tokenizer (Qwen2-style), built offline from a fixed corpus: the synthetic checkpoint's
tokenizer. The same corpus and size always give the same vocabulary; nothing is downloaded. And a random checkpoint
of the tiny preset with it (`build_tiny_checkpoint`), what the tests and the benchmarks build small models from."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from videoitg.config import VideoITGConfig, preset
from videoitg.model.checkpoint import save_checkpoint
from videoitg.model.variant_b import model_class

_CORPUS = [
    "when is the {c} {s} visible?", "when does the {s} move {d}?", "find the moment the {c} {s} moves {d}.",
    "which frames matter for this video?", "when does the {c} {s} appear and when does it vanish?",
    "Please respond with only the letter of the correct answer.", "What happens in the video? A. B. C. D.",
]
_WORDS = dict(c=["red", "green", "blue", "yellow", "white", "purple"], s=["circle", "square", "triangle", "star"],
              d=["left", "right", "up", "down"])


def build_tiny_tokenizer(vocab_size: int = 512):
    """A PreTrainedTokenizerFast with byte-level BPE; the same corpus and size always give the same vocab."""
    texts = []
    for t in _CORPUS:
        for c in _WORDS["c"]:
            for s in _WORDS["s"]:
                for d in _WORDS["d"]:
                    texts.append(t.format(c=c, s=s, d=d) + "\n")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def build_tiny_checkpoint(out: str | Path, seed: int = 0, cfg: VideoITGConfig | None = None) -> Path:
    """A random checkpoint of the tiny preset (or of `cfg`) with the tiny tokenizer, written in the released layout
    (embedded tower, seeded weights): what the tests and the benchmarks build small models from."""
    tokenizer = build_tiny_tokenizer()
    cfg = cfg or preset("tiny", vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = model_class(cfg)(cfg)
    model.reset_head()
    return save_checkpoint(model, out, tokenizer)
