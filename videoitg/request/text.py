"""Instruction -> token ids in the released `plain` format: tokens of `instruction + "\\n"`, no BOS, no chat
template, no timestamps (as released). The string is tokenized whole because "\\n" can merge with punctuation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from typing import Any

import torch

from videoitg.blank_text import EMPTY_INSTRUCTION, is_blank
from videoitg.config import VideoITGConfig
from videoitg.errors import InputError
from videoitg.request.limits import Limits


def encode_instruction(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int | None = None) -> torch.Tensor:
    if not isinstance(text, str):
        raise InputError(f"instruction must be a string, got {type(text).__name__}")
    if is_blank(text):
        raise InputError(EMPTY_INSTRUCTION)
    ids = tokenizer(text + "\n", add_special_tokens=False)["input_ids"]
    # The released code masks ids != pad and drops the masked ids before the model, in training (pad id forced to
    # 0) and in its evaluation wrapper (the tokenizer's pad id, else its eos id), so a token equal to that id
    # never reaches the model. Reproduce it so scores match the checkpoint.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is not None:
        kept = [i for i in ids if i != pad]
        if len(kept) < len(ids) and is_blank(tokenizer.decode(kept)):  # what the model would see: nothing
            raise InputError(f"instruction is empty once the pad token ({tokenizer.decode([pad])!r}), which never "
                             "reaches the model, is removed")
        ids = kept
    if max_tokens is not None and len(ids) > max_tokens:
        raise InputError(f"instruction has {len(ids)} tokens, more than the limit of {max_tokens}")
    return torch.tensor(ids, dtype=torch.long)


def instruction_ids(tokenizer: PreTrainedTokenizerBase, value: Any, config: VideoITGConfig, limits: Limits,
                    num_frames: int | None = None, check_tokens: bool = True) -> torch.Tensor:
    """Token ids of an instruction as it enters (str or UTF-8 bytes): the text checked once
    (`Limits.instruction_text`), tokenised, then held to the token bounds for a video of `num_frames` sampled frames
    (None: the worst case, before the video is decoded). `check_tokens=False` leaves the token bounds to a caller
    that fits the instruction itself (the released truncation)."""
    ids = encode_instruction(tokenizer, limits.instruction_text(value))
    if check_tokens:
        limits.check_instruction_tokens(len(ids), config, num_frames)
    return ids
