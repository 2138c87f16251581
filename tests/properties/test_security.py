"""Security properties that are not about a request's video: weights never come from pickle, damaged
checkpoints are refused with `CheckpointError`. (Allowed roots: tests/properties/test_fuzz_requests.py; loopback
binding: tests/properties/test_served_load.py.)"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

import videoitg.model.checkpoint as checkpoint
import videoitg.model.variant_b as variant_b
from videoitg.defaults import default_checkpoint
from videoitg.errors import CheckpointError
from videoitg.model.checkpoint import load_checkpoint


class _Payload:
    """Unpickling this would create the marker file: the test proves the loader never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(default_checkpoint(), d)
    return d


def test_pickle_weights_are_refused_and_never_unpickled(ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    (ckpt / "model.safetensors").unlink()
    for name in ("pytorch_model.bin", "model.pt"):
        (ckpt / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="pickle weights are refused"):
        load_checkpoint(ckpt, with_tokenizer=False)
    assert not marker.exists()
    pickle.loads((ckpt / "model.pt").read_bytes())  # the payload is live: unpickling does create the marker
    assert marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "header length", "header json", "data cut"])
def test_damaged_safetensors_refused(ckpt: Path, damage: str) -> None:
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    n = int.from_bytes(data[:8], "little")
    out = {
        "truncated": data[:1000],
        "header length": (2**62).to_bytes(8, "little") + data[8:],
        "header json": data[:8] + b"{" * n + data[8 + n:],
        "data cut": data[:-4096],
    }[damage]
    f.write_bytes(out)
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt, with_tokenizer=False)


@pytest.mark.parametrize("edit", ["not json", "vision_config is a list", "hidden_size is a string"])
def test_damaged_config_json_refused(ckpt: Path, edit: str) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    text = {
        "not json": "{not json",
        "vision_config is a list": json.dumps({**cfg, "vision_config": [1]}),
        "hidden_size is a string": json.dumps({**cfg, "hidden_size": "abc"}),
    }[edit]
    (ckpt / "config.json").write_text(text)
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt, with_tokenizer=False)


ABSURD = {  # config.json edit -> words the one error must contain
    "100,000 text layers": ({"num_hidden_layers": 100_000}, "config.num_hidden_layers"),
    "100,000 vision layers": ({"vision_config": {"num_hidden_layers": 100_000}}, "vision_config.num_hidden_layers"),
    "zero heads": ({"num_attention_heads": 0}, "config.num_attention_heads"),
    "zero kv heads": ({"num_key_value_heads": 0}, "config.num_key_value_heads"),
    "zero patch size": ({"vision_config": {"patch_size": 0}}, "vision_config.patch_size"),
    "patch larger than image": ({"vision_config": {"patch_size": 10_000}}, "vision_config.patch_size"),
    "negative hidden size": ({"hidden_size": -64}, "config.hidden_size"),
    "negative vision width": ({"vision_config": {"intermediate_size": -1}}, "vision_config.intermediate_size"),
    "huge vocabulary": ({"vocab_size": 10**12}, "config.vocab_size"),
    "heads do not divide width": ({"num_attention_heads": 3}, "multiple of"),
    "nan epsilon": ({"rms_norm_eps": float("nan")}, "config.rms_norm_eps"),
    "zero token budget": ({"vision_token_num": 0}, "config.vision_token_num"),
    "unknown attention": ({"grounding_attention": "sideways"}, "grounding_attention"),
    "select layer outside tower": ({"mm_vision_select_layer": 99}, "mm_vision_select_layer"),
}


@pytest.mark.parametrize("case", list(ABSURD))
def test_absurd_config_refused_before_anything_is_built(ckpt: Path, case: str, monkeypatch) -> None:
    """One CheckpointError naming the field, raised by the config check: no model (not even on the meta device)
    is constructed, so 100,000 layers cost nothing."""
    edit, words = ABSURD[case]
    cfg = json.loads((ckpt / "config.json").read_text())
    for k, v in edit.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    (ckpt / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(variant_b, "model_class", lambda c: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match="config.json") as e:
        load_checkpoint(ckpt)
    assert words in str(e.value)


@pytest.mark.parametrize("text", ['{"version": "1.0", "model": {', "\x00\x01 not a tokenizer"])
def test_broken_tokenizer_refused_before_weights_load(ckpt: Path, text: str, monkeypatch) -> None:
    (ckpt / "tokenizer.json").write_text(text)
    monkeypatch.setattr(checkpoint, "index_tensors", lambda *a, **k: pytest.fail("weights were read"))
    with pytest.raises(CheckpointError, match="unreadable tokenizer"):
        load_checkpoint(ckpt)
