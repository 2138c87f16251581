"""`videoitg.python_backend.params`: a step loads only the weights its repository pins (`checkpoint_identity`), and
the top-level model keys its feature cache by that pin (no server: the loads are the steps' own calls)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.support.checkpoint_files import scale_weights_in_place
from videoitg.contract.parameters import TopParameters
from videoitg.defaults import default_checkpoint
from videoitg.errors import CheckpointError
from videoitg.model import checkpoint as checkpoint_module
from videoitg.model.files import checkpoint_identity
from videoitg.python_backend.params import StepAssets, feature_identity, instance_processes


@pytest.fixture()
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))  # this test's digest cache
    return Path(shutil.copytree(default_checkpoint(), tmp_path / "ckpt"))


def test_a_step_loads_the_pinned_weights_and_refuses_others_before_reading_any(
        checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: a step reloaded after its checkpoint's files were replaced served the new weights while the
    top-level model's cache still keyed features by the old identity."""
    pinned = checkpoint_identity(checkpoint)
    assets = StepAssets.resolve(None, str(checkpoint))
    model, _, identity = assets.load_served("vision", "cpu", torch.float32, pinned=pinned)
    assert identity == pinned and model is not None
    scale_weights_in_place(checkpoint / "model.safetensors")
    loads: list[object] = []
    real = checkpoint_module.load_checkpoint
    monkeypatch.setattr(checkpoint_module, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    for part in ("vision", "grounding"):
        with pytest.raises(CheckpointError) as e:
            assets.load_served(part, "cpu", torch.float32, pinned=pinned)
        assert str(e.value).startswith(f"{checkpoint}: changed on disk since this server's repository was built")
        assert f"the repository's is {pinned}" in str(e.value) and "restart the server to serve it" in str(e.value)
    assert loads == []  # refused before any weight was read
    unpinned = assets.load_served("vision", "cpu", torch.float32)[2]  # nothing pinned: the files as they are
    assert unpinned == checkpoint_identity(checkpoint) != pinned
    assert len(loads) == 1


def test_the_feature_cache_keys_by_the_pinned_identity(checkpoint: Path) -> None:
    pinned = checkpoint_identity(checkpoint)
    assets = StepAssets.resolve(None, str(checkpoint))
    scale_weights_in_place(checkpoint / "model.safetensors")  # the files change after the repository was written
    now = checkpoint_identity(checkpoint)
    assert now != pinned
    assert feature_identity(assets, TopParameters(checkpoint_identity=pinned)).split("|")[0] == pinned
    assert feature_identity(assets, TopParameters()).split("|")[0] == now  # not pinned: the files at its start


def test_the_processes_triton_starts_for_a_models_instances() -> None:
    """Each instance is a process; a KIND_GPU group has `count` on each GPU it lists (or on each visible GPU)."""
    gpu = {"instance_group": [{"kind": "KIND_GPU", "count": 4, "gpus": [0, 1]}]}
    assert instance_processes(gpu, gpus=1) == 8
    assert instance_processes(json.dumps(gpu), gpus=1) == 8  # as `initialize(args)["model_config"]` gives it
    assert instance_processes({"instance_group": [{"kind": "KIND_GPU", "count": 2}]}, gpus=3) == 6
    assert instance_processes({"instance_group": [{"kind": "KIND_CPU", "count": 3}]}, gpus=8) == 3
    assert instance_processes({}, gpus=2) == 1
