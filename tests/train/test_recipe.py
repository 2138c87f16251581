"""The training details of the released recipe (train/ = the original recipe), each against a hand-made record:
HW randomisation, the instruction as the released loader reads it, pad id 0, length-grouped sample order."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tests.support.train import small_config, small_dataset
from videoitg.config import preset
from videoitg.errors import InputError
from videoitg.request.text import encode_instruction
from videoitg.train.data import length_grouped_epoch_order, parse_records, released_length, sample_hw
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer
from videoitg.train.trainer import TrainConfig, Trainer, use_released_pad


# ---- HW randomisation -----------------------------------------------------------------------------------------
def test_hw_is_min_of_randint_up_to_the_budget_and_the_grid() -> None:
    """Released: HW = min(randint(vision_min_num, floor(sqrt(16384 / T))), 27). For T = 16 the budget's side is
    32, so HW = 27 whenever the draw is 27..32: probability 6/32, against 1/27 for randint(1, min(32, 27))."""
    cfg = preset("videoitg-7b")
    assert (cfg.budget_per_side(16), cfg.tokens_per_side(16), cfg.vision.grid) == (32, 27, 27)
    draws = [sample_hw(0, 0, p, 1, cfg.budget_per_side(16), cfg.vision.grid) for p in range(20000)]
    counts = Counter(draws)
    assert min(draws) == 1 and max(draws) == 27
    assert abs(counts[27] / len(draws) - 6 / 32) < 0.01
    assert all(abs(counts[h] / len(draws) - 1 / 32) < 0.005 for h in range(1, 27))
    # A long video (T = 512): budget side 5 < 27, uniform over 1..5.
    assert cfg.budget_per_side(512) == 5
    assert set(sample_hw(0, 0, p, 1, 5, 27) for p in range(500)) == {1, 2, 3, 4, 5}
    # Deterministic per (seed, epoch, position): ranks and resumed runs agree.
    assert sample_hw(3, 1, 77, 1, 32, 27) == sample_hw(3, 1, 77, 1, 32, 27)


# ---- the instruction as the released loader reads it ----------------------------------------------------------
def write_records(tmp_path: Path, records: list[dict]) -> Path:
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(records))
    return p


def test_instruction_is_the_question_without_image_tags_and_no_strip(tmp_path: Path) -> None:
    good, bad = parse_records(write_records(tmp_path, [
        {"video": "a.mp4", "question": "<image>\n  When does the dog jump? ", "clip_num": [0]},
        {"video": "b.mp4", "conversations": [{"from": "human", "value": "<image>\nignored: replaced by the video"},
                                             {"from": "gpt", "value": "Find the red car."}], "clip_num": [1]},
        {"video": "c.mp4", "conversations": [{"from": "human", "value": "<image>\nonly one turn"}],
         "clip_num": [0]},
        {"video": "d.mp4", "question": "<image>\nWhat is <image> here?", "clip_num": [0]},
        {"video": "e.mp4", "question": "<image>\n", "clip_num": [0]},
    ]))
    assert [r.question for r in good] == ["  When does the dog jump? ", "Find the red car."]
    assert [b.where.split("[")[1][0] for b in bad] == ["2", "3", "4"]
    assert "placeholder" in bad[1].reason and "empty" in bad[0].reason
    # Tokens: those of the released prompt "<image>" + question + "\n" after the image placeholder.
    tok = build_tiny_tokenizer()
    assert encode_instruction(tok, good[0].question).tolist() == \
        tok("  When does the dog jump? \n", add_special_tokens=False)["input_ids"]


# ---- pad id 0 ---------------------------------------------------------------------------------------------------
def qwen2_style_tokenizer():
    """Byte-level BPE whose id 0 is "!" (as in Qwen2's vocabulary), eos/pad "<|endoftext|>" at the end."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["stop! where is the dog?"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def test_pad_id_zero_drops_token_zero_in_training_and_at_inference(tmp_path: Path) -> None:
    tok = qwen2_style_tokenizer()
    assert tok.convert_ids_to_tokens(0) == "!"
    raw = tok("Stop! Now!\n", add_special_tokens=False)["input_ids"]
    assert 0 in raw
    assert encode_instruction(tok, "Stop! Now!").tolist() == raw  # the stock pad (<|endoftext|>) drops nothing
    use_released_pad(tok)  # what the trainer does, as the released one
    assert encode_instruction(tok, "Stop! Now!").tolist() == [i for i in raw if i != 0]
    tok.save_pretrained(str(tmp_path / "tok"))  # the checkpoint keeps it: inference drops the same tokens
    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again.pad_token_id == 0 and encode_instruction(again, "Stop! Now!").tolist() == [i for i in raw if i != 0]
    # The tiny tokenizer's id 0 is its pad token already: nothing changes for the synthetic checkpoint.
    tiny = build_tiny_tokenizer()
    assert tiny.pad_token_id == 0 == use_released_pad(build_tiny_tokenizer()).pad_token_id


def test_no_pad_token_falls_back_to_eos_as_the_released_wrapper() -> None:
    tok = qwen2_style_tokenizer()
    tok.pad_token = None
    eos = tok.eos_token_id
    ids = encode_instruction(tok, "where<|endoftext|>is").tolist()
    assert eos not in ids and ids


# ---- length-grouped order -----------------------------------------------------------------------------------
def test_length_grouped_order_sorts_each_global_batch_longest_first() -> None:
    lengths = [3, 9, 1, 7, 5, 2, 8, 6, 4, 10, 11, 12]
    order = length_grouped_epoch_order(lengths, micro_batch=1, chunks=4, seed=0, epoch=0)
    assert sorted(order) == list(range(12))
    for b in range(0, 12, 4):
        block = [lengths[i] for i in order[b : b + 4]]
        assert block == sorted(block, reverse=True)
    assert order == length_grouped_epoch_order(lengths, 1, 4, 0, 0)
    assert order != length_grouped_epoch_order(lengths, 1, 4, 0, 1)
    # micro-batches of 2 over 2 chunks: the released greedy split gives each micro-batch the same total length.
    lens = [10, 1, 1, 10]
    o2 = length_grouped_epoch_order(lens, micro_batch=2, chunks=2, seed=0, epoch=0)
    assert sorted(o2) == [0, 1, 2, 3] and [lens[i] for i in o2] == [10, 1, 10, 1]


def test_released_length_is_the_word_count_of_the_raw_record() -> None:
    assert released_length({"question": "<image>\nWhen does it jump?"}) == 5  # "<image>" counts, as released
    assert released_length({"conversations": [{"value": "<image>\na b"}, {"value": "c d e"}]}) == 6


def test_length_grouping_and_video_grouping_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="choose one"):
        Trainer(TrainConfig(data=[], out=str(tmp_path), group_by_length=True, group_by_video=4, device="cpu"))


def test_trainer_runs_with_the_length_grouped_order(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "data", videos=2, per_video=2)
    tr = Trainer(small_config(data, tmp_path / "run", max_steps=2, global_batch=2, group_by_length=True))
    tr.run()
    lengths = [released_length(s.record.raw) for s in tr.samples]
    assert tr._epoch_order(0) == length_grouped_epoch_order(lengths, 1, 2, 0, 0)
