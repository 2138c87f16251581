"""Caches and checkpoints on the real tritonserver, as a deployment meets their faults: a damaged digest cache
neither stops the server nor a model's reload (the damaged entry ignored, rewritten, counted on the metrics page by
the model that found it, the top-level one included); NaN scores are the server's failure (500-class, counted),
never an answer; a checkpoint file rewritten in place while the server holds it changes nothing served. The server is
this module's own: its home and checkpoint are broken on purpose. Its repository is written before the checkpoint is
in place (as `repo build --no-bundle` of a path only the serving host has), so it pins no identity and every model,
the top-level one included, takes the checkpoint's identity from its files, reading the digest cache, when it
loads (the pinned case: tests/python_backend/test_videoitg_bls_faults.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from safetensors.torch import load_file, save_file

from benchmarks.clips import random_clip
from tests.support.checkpoint_files import scale_weights_in_place
from tests.support.compare import assert_results_close
from tests.support.server import (
    metric_value,
    skip_without_tritonserver,
    start,
    stopped_cleanly,
    stub_pids,
    wait_until,
)
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.defaults import default_checkpoint
from videoitg.errors import NonFiniteError
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.model import files
from videoitg.model.files import DIGEST_CACHE, checkpoint_identity
from videoitg.pipeline.scorer import Scorer
from videoitg.repository.generator import RepoSpec, build_repository

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


def _damaged(srv: TritonServer, model: str) -> float:
    """`model`'s count of damaged digest-cache entries on the metrics page (one series per model: it adds up over
    the model's reloads)."""
    return metric_value(srv.metrics(), "videoitg_cache_entries_damaged", model=model, cache="file_digests")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("faults")
    repo = build_repository(RepoSpec(target="cpu", checkpoint=str(root / "ckpt")), tmp_path_factory.mktemp("repo"))
    ckpt = Path(shutil.copytree(default_checkpoint(), root / "ckpt"))  # in place once the repository is written
    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors[EMBED][RARE] = float("nan")  # passes the test input at load; NaN for the instructions that hold it
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDEOITG_HOME", str(root / "home"))  # the server's and this module's digest cache
        scorer = Scorer(ckpt)
        _damage_digest_cache(root / "home")  # the server starts on a damaged digest cache
        srv = start(TritonServer(repo, ServerOptions(), log_path=root / "tritonserver.log"))
        yield Deployment(srv, scorer, ckpt, root / "home")
        failed = stopped_cleanly(srv)
        assert failed is None, failed


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
    before = _damaged(srv, "videoitg_vision")  # what its first stub found at the start, if it read the cache first
    _damage_digest_cache(deployment.home)
    dead = stub_pids(srv)["videoitg_vision"]
    os.kill(dead, signal.SIGKILL)  # as the kernel's OOM killer does; the watchdog reloads the model

    def reloaded() -> bool:
        return stub_pids(srv).get("videoitg_vision", dead) != dead and srv.is_ready()

    assert wait_until(reloaded, 120), srv.log_tail()
    assert _damaged(srv, "videoitg_vision") - before == 1  # the new stub found the damaged entry, and only it
    assert files._read_digest_cache()[1] == 0
    clip = random_clip(deployment.home.parent / "reloaded.mp4", seed=11, seconds=2)  # cold: through the new stub
    with VideoITGClient(srv.grpc_url, "grpc") as client:
        assert_results_close(client.score(clip, "when?"), deployment.scorer.score(clip, "when?"))


def test_damage_the_top_level_model_finds_shows_on_the_metrics_page(deployment: Deployment,
                                                                    sample: tuple[Path, bytes, str]) -> None:
    """The top-level model took the checkpoint's identity through the digest cache, but damage it found there was
    counted nowhere: only the vision and grounding steps reported `videoitg_cache_entries_damaged`."""
    srv = deployment.server
    before = _damaged(srv, "videoitg")  # the counter outlives a stub: its first found the damage at the start
    _damage_digest_cache(deployment.home)
    dead = stub_pids(srv)["videoitg"]
    os.kill(dead, signal.SIGKILL)  # the watchdog reloads it: its new stub reads the damaged cache

    def reloaded() -> bool:
        return stub_pids(srv).get("videoitg", dead) != dead and srv.is_ready()

    assert wait_until(reloaded, 120), srv.log_tail()
    assert _damaged(srv, "videoitg") - before == 1  # the new stub found the damaged entry, and only it
    assert files._read_digest_cache()[1] == 0
    path, _, instruction = sample
    with VideoITGClient(srv.grpc_url, "grpc") as client:
        assert_results_close(client.score(path, instruction), deployment.scorer.score(path, instruction))


def test_nan_scores_are_the_servers_failure_never_an_answer(deployment: Deployment,
                                                            sample: tuple[Path, bytes, str]) -> None:
    """Catches: NaN weights in the language model served as an answer (200, every score NaN, a ranking of NaNs)."""
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
    scale_weights_in_place(ckpt / "model.safetensors")
    assert checkpoint_identity(ckpt) != served_identity
    path, _, instruction = sample
    clip = random_clip(deployment.home.parent / "after.mp4", seed=12, seconds=2)
    with VideoITGClient(deployment.server.grpc_url, "grpc") as client:
        cached = client.infer(path, instruction)
        cold = client.infer(clip, "when?")
    assert cached.cache_hit and not cold.cache_hit
    assert_results_close(cached.result, scorer.score(path, instruction))
    assert_results_close(cold.result, scorer.score(clip, "when?"))
