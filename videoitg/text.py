"""Instruction -> token ids in the released `plain` format: tokens of `instruction + "\\n"`, no BOS, no chat
template, no timestamps (spec §1.5). The string is tokenized whole because "\\n" can merge with punctuation."""

from __future__ import annotations

import torch

from videoitg.errors import InputError


def encode_instruction(tokenizer, text: str, max_tokens: int | None = None) -> torch.Tensor:
    if not isinstance(text, str):
        raise InputError(f"instruction must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError("instruction is empty")
    ids = tokenizer(text + "\n", add_special_tokens=False)["input_ids"]
    # The released code masks ids != pad and drops the masked ids before the model, in training (pad id forced to
    # 0) and in its evaluation wrapper (the tokenizer's pad id, else its eos id), so a token equal to that id
    # never reaches the model (spec §3). Reproduce it so scores match the checkpoint.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is not None:
        ids = [i for i in ids if i != pad]
    if max_tokens is not None and len(ids) > max_tokens:
        raise InputError(f"instruction has {len(ids)} tokens, more than the limit of {max_tokens}")
    return torch.tensor(ids, dtype=torch.long)
