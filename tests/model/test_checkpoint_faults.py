"""Faults of a checkpoint and of its digest cache, as a deployment meets them: a damaged digest-cache entry is never
trusted (ignored, the file hashed again, the entry rewritten, the damage counted); a checkpoint with NaN or infinite
weights is refused at start naming it (in-process, and `videoitg serve`'s start check); NaN at a request is the
server's typed error, never a result; the weights loaded are the process's own and its identity theirs; an
unreadable checkpoint is a refusal naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support import ROOT
from tests.support.checkpoint_files import scale_weights_in_place
from videoitg.commands.cli import main as cli_main
from videoitg.defaults import default_checkpoint
from videoitg.errors import CheckpointError, NonFiniteError
from videoitg.launch.ports import free_ports
from videoitg.model import checkpoint as checkpoint_module
from videoitg.model import files
from videoitg.model.checkpoint import SCAN_CHUNK, all_finite, check_checkpoint, load_identified, nonfinite_count
from videoitg.model.files import DIGEST_CACHE, checkpoint_identity, digest_cache_damage
from videoitg.pipeline.scorer import Scorer

PATCH = "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"
DOWN = "model.layers.1.mlp.down_proj.weight"
TOL = 1e-6  # one process, the same weights and input scored twice: equal but for kernel scheduling


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))  # a digest cache of this test's own
    return tmp_path / "home"


def _copy(tmp_path: Path, name: str = "ckpt") -> Path:
    return Path(shutil.copytree(default_checkpoint(), tmp_path / name))


def _with_tensors(tmp_path: Path, change: Callable[[dict[str, torch.Tensor]], None], name: str = "ckpt") -> Path:
    """A copy of the embedded checkpoint whose weights `change` edits in place, written by plain safetensors."""
    ckpt = _copy(tmp_path, name)
    tensors = load_file(str(ckpt / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    return ckpt


# ---- the digest cache ----------------------------------------------------------------------------------------
def _flip(text: str, at: Callable[[str], int], bit: int) -> str:
    i = at(text)
    return text[:i] + chr(ord(text[i]) ^ bit) + text[i + 1:]


def _digest_at(text: str) -> int:
    """The first decimal digit of the first entry's digest."""
    entries = json.loads(text)["entries"]
    value = next(iter(entries.values()))
    start = text.index(value)
    return start + next(i for i, c in enumerate(value[:64]) if c.isdigit())


DAMAGE = {  # what a flipped bit, a torn write or a full disk leaves in the cache, and the entries it damages
    "digest bit, still hex": (lambda t: _flip(t, _digest_at, 0x01), 1),  # 0 <-> 1: a wrong digest that parses
    "digest bit, not hex": (lambda t: _flip(t, _digest_at, 0x40), 1),  # '0' -> 'p': bytes.fromhex fails
    "key bit": (lambda t: _flip(t, lambda s: s.index("model.safetensors"), 0x01), 1),
    "check bit": (lambda t: _flip(t, lambda s: s.index('"', _digest_at(s)) - 3, 0x01), 1),
    "JSON syntax": (lambda t: _flip(t, lambda s: 0, 0x01), 1),  # '{' -> 'z'
    "cut short": (lambda t: t[: len(t) // 2], 1),
    "zero bytes": (lambda t: "", 1),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_digest_cache_entry_is_ignored_rewritten_and_counted(tmp_path: Path, _home: Path,
                                                                       damage: str) -> None:
    """One flipped bit in file-digests.json: a ValueError from every load (no `videoitg serve`, no in-process
    score), or, worse, a wrong identity served from a digest that still parses."""
    ckpt = _copy(tmp_path)
    truth = checkpoint_identity(ckpt)
    cache = _home / DIGEST_CACHE
    change, damaged = DAMAGE[damage]
    cache.write_text(change(cache.read_text()))
    before = digest_cache_damage()
    assert checkpoint_identity(ckpt) == truth
    assert digest_cache_damage() == before + damaged
    entries, bad = files._read_digest_cache()  # rewritten: every entry verifies, the file's digest among them
    assert bad == 0 and len(entries) == 1
    assert checkpoint_identity(ckpt) == truth and digest_cache_damage() == before + damaged  # counted once


def test_score_works_with_a_damaged_digest_cache(tmp_path: Path, _home: Path, sample: tuple[Path, bytes, str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path, _, instruction = sample
    ckpt = _copy(tmp_path)
    checkpoint_identity(ckpt)
    cache = _home / DIGEST_CACHE
    cache.write_text(DAMAGE["digest bit, not hex"][0](cache.read_text()))
    assert cli_main(["score", str(path), "-i", instruction, "--checkpoint", str(ckpt)]) == 0, \
        capsys.readouterr().err
    assert files._read_digest_cache()[1] == 0


# ---- NaN and infinity --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn,
                                   torch.float8_e5m2])
def test_non_finite_values_are_found_and_counted_in_every_weight_dtype(dtype: torch.dtype) -> None:
    t = torch.linspace(-3, 3, 3 * SCAN_CHUNK // 2).to(dtype)
    assert all_finite(t) and nonfinite_count(t) == 0 and all_finite(t[:0])
    bad = [float("nan"), float("inf"), -float("inf")] if dtype != torch.float8_e4m3fn else [float("nan")] * 3
    for i, v in zip((0, SCAN_CHUNK + 5, len(t) - 1), bad, strict=True):  # in both chunks, at the edges
        t[i] = v
    assert not all_finite(t) and nonfinite_count(t) == 3
    assert nonfinite_count(torch.arange(5)) == 0  # integers hold no NaN


def _nan_in_vision(t: dict[str, torch.Tensor]) -> None:
    t[PATCH].view(-1)[5] = float("nan")


def _inf_in_llm(t: dict[str, torch.Tensor]) -> None:
    t[DOWN].view(-1)[7] = float("inf")


@pytest.mark.parametrize("change,tower,tensor", [(_nan_in_vision, "the vision tower", PATCH),
                                                 (_inf_in_llm, "the language model", DOWN)])
def test_a_checkpoint_with_non_finite_weights_is_refused_at_start_naming_it(
        tmp_path: Path, sample: tuple[Path, bytes, str], capsys: pytest.CaptureFixture[str],
        change: Callable[[dict[str, torch.Tensor]], None], tower: str, tensor: str) -> None:
    """Catches: NaN weights served (every score NaN from the language model, every request refused as the client's
    fault from the vision tower), and NaN written into results.jsonl with exit 0."""
    ckpt = _with_tensors(tmp_path, change)
    with pytest.raises(CheckpointError, match=f"^{ckpt}: {tower} gives NaN or infinite values on a test input"):
        Scorer(ckpt)
    with pytest.raises(CheckpointError, match=f"tensor {tensor} \\(model.safetensors\\) holds 1 NaN or infinite"):
        check_checkpoint(ckpt)

    path, _, instruction = sample
    out = tmp_path / "results.jsonl"
    assert cli_main(["score", str(path), "-i", instruction, "--checkpoint", str(ckpt), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"videoitg score: error: {ckpt}: {tower} gives NaN") and err.count("\n") == 1, err
    assert not out.exists()

    # `videoitg serve`'s start check refuses it before any server starts, naming the tensor
    ports = [str(p) for p in free_ports(3)]
    assert cli_main(["serve", "--checkpoint", str(ckpt), "--target", "cpu", "--http-port", ports[0],
                     "--grpc-port", ports[1], "--metrics-port", ports[2]]) == 2
    captured = capsys.readouterr()
    assert f"tensor {tensor} (model.safetensors) holds 1 NaN" in captured.err
    assert "starting tritonserver" not in captured.out


def test_non_finite_scores_at_a_request_are_the_servers_error(tmp_path: Path, sample: tuple[Path, bytes, str],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A tower that is finite on the start's test input (mid-grey frames) and overflows on real frames: the request
    gets NonFiniteError, never a result, and `videoitg score` exits non-zero writing nothing."""
    ckpt = _with_tensors(tmp_path, lambda t: t[PATCH].fill_(1e38))  # finite, but x * 1e38 summed overflows
    scorer = Scorer(ckpt)
    path, _, instruction = sample
    with pytest.raises(NonFiniteError, match="the model's logits \\(float32 on cpu\\) hold NaN or infinite values"):
        scorer.score(path, instruction)
    out = tmp_path / "results.jsonl"
    assert cli_main(["score", str(path), "-i", instruction, "--checkpoint", str(ckpt), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("videoitg score: error: the model's logits") and err.count("\n") == 1, err
    assert not out.exists()


# ---- the weights served --------------------------------------------------------------------------------------
def test_the_weights_loaded_are_the_processs_own_and_the_identity_theirs(tmp_path: Path,
                                                                         sample: tuple[Path, bytes, str]) -> None:
    """A weight file rewritten in place (as `cp` over it does) while a scorer held it: on a CPU in float32 the
    loaded tensors were the file's mapped pages, so the next request was scored with the new weights while the
    identity still named the old."""
    path, _, instruction = sample
    ckpt = _copy(tmp_path)
    scorer = Scorer(ckpt)
    held = {k: v.clone() for k, v in scorer.model.state_dict().items()}
    first, identity = scorer.score(path, instruction), scorer.identity
    scale_weights_in_place(ckpt / "model.safetensors")
    assert all(torch.equal(v, held[k]) for k, v in scorer.model.state_dict().items())
    again = scorer.score(path, instruction)
    assert np.abs(np.asarray(again.logits) - np.asarray(first.logits)).max() <= TOL
    assert scorer.identity == identity != checkpoint_identity(ckpt)
    reloaded = Scorer(ckpt)  # a new load takes the new weights and names them
    assert reloaded.identity == checkpoint_identity(ckpt)
    assert np.abs(np.asarray(reloaded.score(path, instruction).logits) - np.asarray(first.logits)).max() > 0.1


def test_a_checkpoint_written_while_it_loads_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity must be of the bytes loaded: a file written between the load and the hash is refused."""
    ckpt = _copy(tmp_path)
    real = checkpoint_module.load_checkpoint

    def load_then_written(*args: object, **kwargs: object) -> object:
        loaded = real(*args, **kwargs)
        scale_weights_in_place(ckpt / "model.safetensors")  # a copy arriving over the file meanwhile
        return loaded

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", load_then_written)
    with pytest.raises(CheckpointError, match=f"^{ckpt}: written while it was loaded \\(.*model.safetensors"):
        load_identified(ckpt)
    monkeypatch.setattr(checkpoint_module, "load_checkpoint", real)
    assert load_identified(ckpt)[2] == checkpoint_identity(ckpt)


# ---- an unreadable checkpoint --------------------------------------------------------------------------------
UNREADABLE = """
import json, sys
from videoitg.commands.cli import main
from videoitg.errors import CheckpointError
from videoitg.model.checkpoint import SCAN_CHUNK, all_finite, check_checkpoint, load_identified, nonfinite_count
from videoitg.model.files import checkpoint_identity
ckpt, video = sys.argv[1:3]
out = {}
for name, call in (("check", check_checkpoint), ("load", load_identified), ("identity", checkpoint_identity)):
    try:
        call(ckpt)
        out[name] = "no error"
    except CheckpointError as e:
        out[name] = str(e)
out["score"] = main(["score", video, "-i", "when?", "--checkpoint", ckpt])
print(json.dumps(out))
"""


def _without_dac_override() -> list[str]:
    """A command prefix under which file permissions hold: root's capabilities to pass them dropped."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): file permissions cannot be made to hold")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("what", ["directory", "weights"])
def test_an_unreadable_checkpoint_is_a_refusal_naming_it(tmp_path: Path, sample: tuple[Path, bytes, str],
                                                         what: str) -> None:
    """Catches: a checkpoint directory that cannot be read ending in a PermissionError traceback, not a refusal
    naming it."""
    ckpt = _copy(tmp_path)
    locked = ckpt if what == "directory" else ckpt / "model.safetensors"
    locked.chmod(0)
    try:
        r = subprocess.run(_without_dac_override() + [sys.executable, "-c", UNREADABLE, str(ckpt), str(sample[0])],
                           capture_output=True, text=True, cwd=ROOT, timeout=300,
                           env={**os.environ, "VIDEOITG_HOME": str(tmp_path / "home")})
    finally:
        locked.chmod(0o755)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out.pop("score") == 2
    for name, message in out.items():
        assert message.startswith(str(ckpt)) and "Permission denied" in message, (name, message)
    assert "Traceback" not in r.stderr and f"videoitg score: error: {ckpt}" in r.stderr, r.stderr[-3000:]
