"""Security properties that are not about a request's video: weights never come from pickle, damaged
checkpoints are refused with `CheckpointError`. (Allowed roots: test_fuzz_requests.py; loopback binding:
test_reliability_serving.py.)"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from videoitg.checkpoint import load_checkpoint
from videoitg.defaults import default_checkpoint
from videoitg.errors import CheckpointError


class _Payload:
    """Unpickling this would create the marker file: the test proves the loader never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
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
