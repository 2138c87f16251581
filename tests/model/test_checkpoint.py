"""A checkpoint's identity (batch output folders, feature-cache keys, engine manifests) changes whenever any weight
byte changes, the digest cache never hides a rewrite, and a weight index names only files of its own directory."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.support import ROOT
from tests.support.model import plain_writer_checkpoint
from videoitg.batch.runner import BatchOptions, fingerprint
from videoitg.batch.scorers import ScorerSpec
from videoitg.batch.store import OutputStore
from videoitg.defaults import default_checkpoint
from videoitg.errors import CheckpointError, InputError
from videoitg.model import files
from videoitg.model.checkpoint import check_checkpoint, load_checkpoint, save_checkpoint
from videoitg.model.files import DIGEST_CACHE, cached_weight_hash, checkpoint_identity, weight_files
from videoitg.model.vision import embedding
from videoitg.pipeline.scorer import Scorer
from videoitg.train.tiny_tokenizer import build_tiny_checkpoint, build_tiny_tokenizer


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))  # a digest cache of this test's own


def _copy(tmp_path: Path, name: str = "ckpt") -> Path:
    return Path(shutil.copytree(default_checkpoint(), tmp_path / name))


def _rewrite_middle_tensor(path: Path, scale: float = 1.5) -> str:
    """Scale, in place, the elements of the tensor that holds the middle of a safetensors file, only those lying
    outside its first and last MiB; the header, the file size and (set back afterwards) the modification time stay
    as they were. Returns the tensor's name."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    mid = len(data) // 2 - 8 - n
    name, info = next((k, v) for k, v in header.items() if k != "__metadata__"
                      and v["data_offsets"][0] <= mid < v["data_offsets"][1])
    assert info["dtype"] == "F32"
    start, end = (8 + n + o for o in info["data_offsets"])
    a, b = max(start, 1 << 20), min(end, len(data) - (1 << 20))
    a += (a - start) % 4 and 4 - (a - start) % 4  # whole float32 elements
    b -= (b - start) % 4
    assert b - a >= 4
    t = np.frombuffer(bytes(data[a:b]), dtype=np.float32) * np.float32(scale)
    data[a:b] = t.tobytes()
    with path.open("r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    return name


def test_rewriting_tensors_in_the_middle_of_a_weight_file_changes_the_identity(tmp_path: Path) -> None:
    """The identity hashed each file's size and first and last MiB: tensors rewritten in between kept it, while the
    scores moved. Every byte counts now, the digest cache included (same size and modification time)."""
    ckpt = _copy(tmp_path)
    before = checkpoint_identity(ckpt)
    assert checkpoint_identity(ckpt) == before == checkpoint_identity(_copy(tmp_path, "moved"))  # contents, not path
    (weights,) = weight_files(ckpt)
    assert weights.stat().st_size > 2 << 20  # the rewritten tensor lies outside the first and last MiB
    name = _rewrite_middle_tensor(weights)
    after = checkpoint_identity(ckpt)
    assert after != before, name

    # ... and that checkpoint scores differently, so everything keyed by the identity must tell them apart.
    a, b = (Scorer(c) for c in (tmp_path / "moved", ckpt))
    assert (a.identity, b.identity) == (before, after)
    va, vb = (dict(m.named_parameters()) for m in (a.model, b.model))
    assert any(not torch.equal(va[k], vb[k]) for k in va)


def test_batch_output_folder_refuses_the_rewritten_checkpoint(tmp_path: Path) -> None:
    ckpt = _copy(tmp_path)
    opts = BatchOptions(str(tmp_path / "out"), ScorerSpec(checkpoint=str(ckpt)))
    OutputStore(opts.out_dir, fingerprint(opts)).close()
    _rewrite_middle_tensor(weight_files(ckpt)[0])
    with pytest.raises(InputError, match="different run configuration \\(checkpoint: "):
        OutputStore(opts.out_dir, fingerprint(opts))


def test_the_digest_cache_is_used_and_never_hides_a_rewrite(tmp_path: Path) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 4096)
    real = cached_weight_hash(f)
    cache = tmp_path / "home" / DIGEST_CACHE
    entries = json.loads(cache.read_text())["entries"]
    assert [v.split()[0] for v in entries.values()] == [real]
    (key,) = entries
    files._write_digest_cache(key, "0" * 64)  # a planted entry that verifies: read back, not recomputed
    assert cached_weight_hash(f) == "0" * 64
    st = f.stat()
    with f.open("r+b") as fh:
        fh.seek(2048)
        fh.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and modification time as the cached entry
    assert cached_weight_hash(f) not in ("0" * 64, real)
    cache.write_text("{torn")  # a damaged cache is ignored
    assert cached_weight_hash(f) == cached_weight_hash(f)


def test_the_external_vision_tower_is_part_of_the_identity(tmp_path: Path) -> None:
    ckpt, tower = _copy(tmp_path), tmp_path / "siglip"
    tower.mkdir()
    (tower / "config.json").write_text("{}")
    (tower / "model.safetensors").write_bytes(b"tower weights")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["mm_vision_tower"] = str(tower)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    before = checkpoint_identity(ckpt)
    (tower / "model.safetensors").write_bytes(b"tower weightz")
    assert checkpoint_identity(ckpt) != before
    other = tmp_path / "other"
    shutil.copytree(tower, other)
    assert checkpoint_identity(ckpt, vision_tower=other) == checkpoint_identity(ckpt)  # same bytes, same id


def _sharded(tmp_path: Path) -> Path:
    ckpt = _copy(tmp_path)
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00001.safetensors")
    return ckpt


def _index(ckpt: Path, weight_map: object) -> None:
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("name", ["../outside/model.safetensors", "../../x.safetensors", "/tmp/x.safetensors",
                                  "sub/model.safetensors", "..", "model.bin", ".hidden.safetensors", 7])
def test_an_index_naming_files_elsewhere_is_refused(tmp_path: Path, name: object) -> None:
    """`../../x.safetensors` in model.safetensors.index.json loaded weights from outside the checkpoint."""
    ckpt = _sharded(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(ckpt / "model-00001-of-00001.safetensors", outside / "model.safetensors")
    with safe_open(str(outside / "model.safetensors"), framework="pt") as sf:
        keys = list(sf.keys())
    _index(ckpt, {k: name for k in keys})
    for load in (check_checkpoint, load_checkpoint, checkpoint_identity):
        with pytest.raises(CheckpointError, match="the index may name only \\*.safetensors files in the checkpoint"):
            load(ckpt)


def test_a_truncated_or_wrong_index_is_one_checkpoint_error(tmp_path: Path) -> None:
    ckpt = _sharded(tmp_path)
    with safe_open(str(ckpt / "model-00001-of-00001.safetensors"), framework="pt") as sf:
        weight_map = {k: "model-00001-of-00001.safetensors" for k in sf.keys()}
    _index(ckpt, weight_map)
    assert check_checkpoint(ckpt) is not None  # the sharded layout loads
    index = ckpt / "model.safetensors.index.json"
    text = index.read_text()
    index.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=f"unreadable weight index: {index}:\\d+: not valid JSON"):
        check_checkpoint(ckpt)
    index.write_text('{"weight_map": []}')
    with pytest.raises(CheckpointError, match="no 'weight_map' object"):
        check_checkpoint(ckpt)
    _index(ckpt, {**weight_map, "extra.weight": "model-00002-of-00002.safetensors"})
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors named by the index are missing"):
        check_checkpoint(ckpt)


def test_a_config_json_nested_too_deeply_is_a_checkpoint_error(tmp_path: Path) -> None:
    ckpt = _copy(tmp_path)
    (ckpt / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="config.json: JSON nested more than"):
        check_checkpoint(ckpt)
    (ckpt / "config.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(CheckpointError, match="config.json:1: not valid UTF-8"):
        check_checkpoint(ckpt)


# ---- checkpoint --------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_single_and_sharded(tmp_path, tiny):
    tok = build_tiny_tokenizer()
    S = tiny.config.vision.image_size
    pv, ids = torch.randn(4, 3, S, S), torch.tensor([3, 1, 4, 1, 5])
    with torch.no_grad():
        want = tiny(pv, ids)
    for name, shard in (("single", None), ("sharded", 20_000)):
        d = save_checkpoint(tiny, tmp_path / name, tok, max_shard_bytes=shard)
        if shard:
            assert (d / "model.safetensors.index.json").exists() and len(list(d.glob("model-*.safetensors"))) > 2
        model, tok2 = load_checkpoint(d)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny.state_dict().items())  # bit for bit
        with torch.no_grad():  # the forward within float32 rounding (kernels may differ by CPU and alignment)
            torch.testing.assert_close(model(pv, ids), want, rtol=1e-5, atol=1e-5)
        assert tok2("when is the red circle visible?\n")["input_ids"] == tok("when is the red circle visible?\n")[
            "input_ids"]
        # Re-saving a loaded checkpoint gives the same tokenizer files (no loader-only keys written into them).
        again = save_checkpoint(model, tmp_path / f"{name}-again", tok2)
        for f in ("tokenizer_config.json", "tokenizer.json"):
            assert (again / f).read_text() == (d / f).read_text(), f


@pytest.mark.parametrize("external_tower", [False, True])
def test_checkpoint_from_a_plain_safetensors_writer_loads(tmp_path, tiny, external_tower):
    d = plain_writer_checkpoint(tmp_path, tiny, external_tower)
    model, _ = load_checkpoint(d)
    for k, v in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_mismatched_checkpoint_names_every_tensor(tmp_path, tiny):
    d = plain_writer_checkpoint(tmp_path, tiny, external_tower=False)
    sd = load_file(str(d / "model.safetensors"))
    del sd["out_proj.weight"]
    sd["model.norm.weight"] = torch.ones(7)
    sd["model.extra_thing"] = torch.ones(2)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    msg = str(e.value)
    assert "missing tensor out_proj.weight (expected shape (1, 64))" in msg
    assert "tensor model.norm.weight has shape (7,), expected (64,)" in msg
    assert "unexpected tensor model.extra_thing" in msg


def test_corrupt_and_pickle_checkpoints_are_refused(tmp_path, tiny):
    d = save_checkpoint(tiny, tmp_path / "c", build_tiny_tokenizer())
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:100])
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_checkpoint(d)
    (d / "model.safetensors").unlink()
    torch.save({}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle weights are refused"):
        load_checkpoint(d)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path / "nothing")


def test_missing_tower_is_a_clear_error_not_a_download(tmp_path, tiny):
    d = plain_writer_checkpoint(tmp_path, tiny, external_tower=False)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["vision_config"]
    cfg["mm_vision_tower"] = "google/siglip-so400m-patch14-384"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="nothing is fetched from a hub"):
        load_checkpoint(d)


def test_checkpoint_identity_changes_with_weights(tmp_path):
    a = build_tiny_checkpoint(tmp_path / "a", seed=0)
    b = build_tiny_checkpoint(tmp_path / "b", seed=1)
    c = build_tiny_checkpoint(tmp_path / "c", seed=0)
    assert checkpoint_identity(a) == checkpoint_identity(c) != checkpoint_identity(b)


def test_load_one_half_reads_only_its_tensors(tmp_path, tiny):
    d = save_checkpoint(tiny, tmp_path / "c", build_tiny_tokenizer())
    S = tiny.config.vision.image_size
    pv, ids = torch.randn(5, 3, S, S), torch.tensor([3, 1, 4])
    vision, _ = load_checkpoint(d, part="vision", with_tokenizer=False)
    grounding, tok = load_checkpoint(d, part="grounding")
    assert not any(k.startswith("model.layers.") for k in vision.state_dict())
    assert not any(k.startswith("model.vision_tower.") for k in grounding.state_dict())
    with torch.no_grad():
        split = grounding.score_features([vision.visual_features(pv)], [ids])[0]
        # two models, two code paths: equal within float32 rounding (kernels may differ by CPU and alignment)
        torch.testing.assert_close(split, tiny(pv, ids), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown model part"):
        load_checkpoint(d, part="llm")


def test_eagle_base_checkpoint_starts_a_grounding_run(tmp_path, tiny):
    """The released recipe starts from the Eagle video-LLM: it has an lm_head and no out_proj."""
    d = save_checkpoint(tiny, tmp_path / "base", build_tiny_tokenizer())
    sd = load_file(str(d / "model.safetensors"))
    del sd["out_proj.weight"], sd["out_proj.bias"]
    sd["lm_head.weight"] = torch.zeros(300, 64)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing tensor out_proj.weight"):
        load_checkpoint(d)
    torch.manual_seed(0)
    model, _ = load_checkpoint(d, init_missing_head=True, attention="causal")
    assert type(model).__name__ == "VideoITGAnchor" and model.config.attention == "causal"
    assert torch.equal(model.out_proj.bias, torch.zeros(1)) and model.out_proj.weight.abs().sum() > 0
    assert torch.equal(model.model.norm.weight, tiny.model.norm.weight)


def test_a_load_builds_the_model_without_importing_sympy() -> None:
    """`load_checkpoint` builds the model on the meta device with no random init (`vision.embedding`): torch's
    `normal_` on meta would import sympy and 800 other modules, seconds of CPU in every served step's start. Run in
    a fresh interpreter: this one has imported everything already."""
    code = ("import sys, torch; from videoitg.defaults import default_checkpoint; "
            "from videoitg.model.checkpoint import load_checkpoint; load_checkpoint(default_checkpoint()); "
            "print('sympy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr[-2000:]


def test_the_embeddings_random_init_is_torchs() -> None:
    """Off the meta device `embedding` draws N(0, 1) as `nn.Embedding` does, from the same generator state."""
    torch.manual_seed(5)
    want = torch.nn.Embedding(7, 3).weight
    torch.manual_seed(5)
    got = embedding(7, 3).weight
    assert torch.equal(got, want) and got.requires_grad
    with torch.device("meta"):
        assert embedding(7, 3).weight.is_meta
