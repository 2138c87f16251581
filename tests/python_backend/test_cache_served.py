"""Caches and checkpoints on the real tritonserver, as a deployment meets their faults: a damaged digest cache
neither stops the server nor a step's reload (the damaged entry ignored, rewritten, counted on the metrics page);
NaN scores are the server's failure (500-class, counted), never an answer; a checkpoint file rewritten in place while
the server holds it changes nothing served. The server is this module's own: its home and checkpoint are broken
on purpose."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from safetensors.torch import load_file, save_file

from benchmarks.clips import random_clip
from tests.support.compare import assert_results_close
from tests.support.server import metric_value, served, skip_without_tritonserver, stub_pids, wait_until
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.defaults import default_checkpoint
from videoitg.errors import NonFiniteError
from videoitg.launch.server import TritonServer
from videoitg.model import files
from videoitg.model.files import DIGEST_CACHE, checkpoint_identity
from videoitg.pipeline.scorer import Scorer
from videoitg.repository.generator import RepoSpec

pytestmark = pytest.mark.server
EMBED = "model.embed_tokens.weight"
RARE = 90  # the tiny tokenizer's "z": its embedding is NaN here, so an instruction holding it scores NaN
NAN_INSTRUCTION = "where is the zebra?"

skip_without_tritonserver()


@dataclass
class Deployment:
    server: TritonServer
    scorer: Scorer  # in-process, on the checkpoint as the server loaded it
    checkpoint: Path
    home: Path


def _damage_digest_cache(home: Path) -> None:
    """One bit of the first entry's digest flipped so that it is no longer hex: what made every load fail."""
    cache = home / DIGEST_CACHE
    d = json.loads(cache.read_text())
    key, value = next(iter(d["entries"].items()))
    i = next(i for i, c in enumerate(value) if c.isdigit())
    d["entries"][key] = value[:i] + chr(ord(value[i]) ^ 0x40) + value[i + 1:]
    cache.write_text(json.dumps(d))


def _scale_weights_in_place(path: Path, scale: float = 1.5) -> None:
    """Every float32 weight scaled, written into the same file (same inode, same size), as `cp` over it leaves it."""
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    for name, info in header.items():
        if name != "__metadata__":
            a, b = (8 + n + o for o in info["data_offsets"])
            data[a:b] = (np.frombuffer(bytes(data[a:b]), np.float32) * np.float32(scale)).tobytes()
    with path.open("r+b") as f:
        f.write(data)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("faults")
    ckpt = Path(shutil.copytree(default_checkpoint(), root / "ckpt"))
    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors[EMBED][RARE] = float("nan")  # passes the test input at load; NaN for the instructions that hold it
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDEOITG_HOME", str(root / "home"))  # the server's and this module's digest cache
        scorer = Scorer(ckpt)
        _damage_digest_cache(root / "home")  # the server starts on a damaged digest cache
        servers = served(RepoSpec(target="cpu", checkpoint=str(ckpt)), tmp_path_factory)
        yield Deployment(next(servers), scorer, ckpt, root / "home")
        next(servers, None)  # stopped cleanly


def test_a_damaged_digest_cache_does_not_stop_the_server(deployment: Deployment,
                                                         sample: tuple[Path, bytes, str]) -> None:
    """One flipped bit in file-digests.json: `videoitg serve` did not start, every model failing to load."""
    path, _, instruction = sample
    with VideoITGClient(deployment.server.grpc_url, "grpc") as client:
        assert_results_close(client.score(path, instruction), deployment.scorer.score(path, instruction))
    assert files._read_digest_cache()[1] == 0  # rewritten: every entry verifies


def test_a_steps_reload_never_reads_a_damaged_entry_as_data(deployment: Deployment) -> None:
    """The watchdog's reload of a dead stub read the damaged entry and failed, again and again."""
    srv = deployment.server
    _damage_digest_cache(deployment.home)
    dead = stub_pids(srv)["videoitg_vision"]
    os.kill(dead, signal.SIGKILL)  # as the kernel's OOM killer does; the watchdog reloads the model

    def reloaded() -> bool:
        return stub_pids(srv).get("videoitg_vision", dead) != dead and srv.is_ready()

    assert wait_until(reloaded, 120), srv.log_tail()
    assert metric_value(srv.metrics(), "videoitg_cache_entries_damaged", model="videoitg_vision",
                        cache="file_digests") == 1  # the new stub found the damaged entry, and only it
    assert files._read_digest_cache()[1] == 0
    clip = random_clip(deployment.home.parent / "reloaded.mp4", seed=11, seconds=2)  # cold: through the new stub
    with VideoITGClient(srv.grpc_url, "grpc") as client:
        assert_results_close(client.score(clip, "when?"), deployment.scorer.score(clip, "when?"))


def test_nan_scores_are_the_servers_failure_never_an_answer(deployment: Deployment,
                                                            sample: tuple[Path, bytes, str]) -> None:
    """NaN weights in the language model were served: 200, every score NaN and a ranking of NaNs."""
    path = sample[0]
    with pytest.raises(NonFiniteError):
        deployment.scorer.score(path, NAN_INSTRUCTION)
    srv = deployment.server
    before = srv.metrics()
    for url, protocol, status in ((srv.grpc_url, "grpc", "StatusCode.INTERNAL"), (srv.http_url, "http", "500")):
        with VideoITGClient(url, protocol) as client, pytest.raises(RemoteError) as e:
            client.score(path, NAN_INSTRUCTION)
        assert e.value.status == status, (protocol, e.value.status, str(e.value))
        assert "videoitg_grounding: NonFiniteError: the language model's logits" in str(e.value)
    after = srv.metrics()
    for model in ("videoitg", "videoitg_grounding"):
        assert (metric_value(after, "videoitg_requests", model=model, outcome="failure")
                - metric_value(before, "videoitg_requests", model=model, outcome="failure")) == 2, model
        assert (metric_value(after, "videoitg_requests", model=model, outcome="rejected")
                == metric_value(before, "videoitg_requests", model=model, outcome="rejected")), model


def test_a_checkpoint_rewritten_in_place_changes_nothing_served(deployment: Deployment,
                                                                sample: tuple[Path, bytes, str]) -> None:
    """New weights copied over the checkpoint file while the server ran: cold requests were scored with them (the
    steps' tensors were the file's mapped pages), a cache hit with neither (old features through the new model)."""
    ckpt, scorer = deployment.checkpoint, deployment.scorer
    served_identity = scorer.identity
    _scale_weights_in_place(ckpt / "model.safetensors")
    assert checkpoint_identity(ckpt) != served_identity
    path, _, instruction = sample
    clip = random_clip(deployment.home.parent / "after.mp4", seed=12, seconds=2)
    with VideoITGClient(deployment.server.grpc_url, "grpc") as client:
        cached = client.infer(path, instruction)
        cold = client.infer(clip, "when?")
    assert cached.cache_hit and not cold.cache_hit
    assert_results_close(cached.result, scorer.score(path, instruction))
    assert_results_close(cold.result, scorer.score(clip, "when?"))
