"""Instructions that are empty once normalised are refused wherever an instruction is checked: only bidi marks or
other characters that show nothing (`Limits.instruction_text`, the check the server's top-level model, `Scorer` and
batch share), or only the pad token the model never sees (`videoitg.request.text.encode_instruction`, used by the
grounding step, `Scorer`, batch, training and engine verification)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.batch import make_clip
from tests.support.model import one_torch_thread
from videoitg.batch.inprocess import InProcessScorer
from videoitg.batch.scorers import ScorerSpec, score_unit
from videoitg.blank_text import is_blank
from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError
from videoitg.manifest.rows import Row, load_manifest
from videoitg.pipeline.scorer import Scorer
from videoitg.request.limits import Limits
from videoitg.request.text import encode_instruction
from videoitg.sampling import SamplingParams
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer

# Only bidi marks, embeddings and isolates; the Arabic letter mark; a soft hyphen; tags; Hangul fillers; the
# braille blank; variation selectors; invisible operators: none of it is text.
SHOW_NOTHING = ["\u200e\u200f", "\u202a\u202b\u202c\u202d\u202e", "\u2066\u2067\u2068\u2069", "\u061c", "\u00ad",
                "\U000e0001\U000e0041", "\u3164\u115f\u1160\uffa0", "\u2800", "\ufe0f\U000e0100", "\u2061\u2062",
                " \u200b\u2060\ufeff\x00\u180e \u034f"]


@pytest.fixture(scope="module")
def scorer() -> Iterator[Scorer]:
    with one_torch_thread():
        yield Scorer(default_checkpoint(), sampling=SamplingParams(8, 4.0))


@pytest.mark.parametrize("text", SHOW_NOTHING)
def test_characters_that_show_nothing_are_an_empty_instruction(text: str) -> None:
    assert is_blank(text)
    with pytest.raises(InputError, match="instruction is empty"):
        Limits().instruction_text(text)
    with pytest.raises(InputError, match="instruction is empty"):
        Limits().instruction_text(text.encode("utf-8"))  # as the server receives it


@pytest.mark.parametrize("text", ["a\u200f", "\u202bשלום\u202c", "\u3164x", "😀\ufe0f", "-\u00ad-", "!"])
def test_text_around_them_is_kept(text: str) -> None:
    assert not is_blank(text) and Limits().instruction_text(text) == text


def test_the_pad_token_alone_is_an_empty_instruction(scorer, tmp_path: Path) -> None:
    """The released code drops the pad id before the model: '<|endoftext|>' alone was scored as an empty query."""
    pad = scorer.tokenizer.decode([scorer.tokenizer.pad_token_id])
    for text in (pad, pad * 3, f" {pad} \u200f{pad}\n"):
        with pytest.raises(InputError, match="empty once the pad token"):
            encode_instruction(scorer.tokenizer, text)
        with pytest.raises(InputError, match="empty once the pad token"):
            scorer.encode(text)
    assert len(encode_instruction(scorer.tokenizer, f"a{pad}")) >= 1  # text left: scored, the pad id dropped
    video = make_clip(tmp_path / "v.mp4", 0)
    with pytest.raises(InputError, match="empty once the pad token"):
        scorer.score(video, pad)
    with pytest.raises(InputError, match="instruction is empty"):
        scorer.score(video, "\u2067\u2069")


def test_batch_refuses_them_per_row(scorer, tmp_path: Path) -> None:
    video = make_clip(tmp_path / "v.mp4", 0)
    pad = scorer.tokenizer.decode([scorer.tokenizer.pad_token_id])
    rows = [{"id": "good", "instruction": "when is the red circle visible?"},
            {"id": "bidi", "instruction": "\u200e\u200f"}, {"id": "pad", "instruction": pad}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({**r, "video": video.name}) + "\n" for r in rows))
    m = load_manifest(tmp_path / "m.jsonl")
    assert [r.row_id for r in m.rows] == ["good", "pad"]
    assert [(r.row_id, r.reason) for r in m.rejected] == [("bidi", "missing or empty 'instruction'")]
    backend = InProcessScorer(ScorerSpec(checkpoint=str(default_checkpoint()), num_frames=8, target_fps=4.0))
    good, pad_row = score_unit(backend, m.rows)
    assert good.ok and not pad_row.ok and "empty once the pad token" in pad_row.record["reason"]
    hand_made = Row("x", 1, str(video.resolve()), "\u2066\u2069")  # rows built without load_manifest
    (out,) = score_unit(backend, [hand_made])
    assert not out.ok and "instruction is empty" in out.record["reason"]


# ---- text --------------------------------------------------------------------------------------------------------
def test_instruction_encoding_plain_format():
    tok = build_tiny_tokenizer()
    ids = encode_instruction(tok, "when is the red circle visible?")
    assert tok.decode(ids.tolist()) == "when is the red circle visible?\n"  # no BOS, no template, trailing \n
    with pytest.raises(InputError, match="empty"):
        encode_instruction(tok, "   ")
    with pytest.raises(InputError, match="more than the limit"):
        encode_instruction(tok, "red " * 50, max_tokens=10)
