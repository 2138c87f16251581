"""Fixtures shared by several test modules. Helpers (clips, tiny checkpoints, served repositories, ...) are plain
functions in `tests/support/`."""

from __future__ import annotations

import os

# Set before torch loads its OpenMP runtime; every process the tests start inherits it. Many torch processes share
# the cores here (the test workers, Ray workers, command-line subprocesses, beside the servers' stubs, which wait
# passively already: videoitg.launch.binaries.server_env), and an OpenMP thread that spins while it waits for work
# takes a core another process needs: the suite used 14-17% less CPU time with passive waits on a 2-core machine
# (benchmarks/RESULTS.md#the-test-suite).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# torch, transformers and the model are imported by the fixtures that use them, not here: pytest-xdist's controller
# loads this file too, runs no test, and starts the workers only after it (about 7 s of imports on a 2-core machine).
if TYPE_CHECKING:
    from benchmarks.answer.vlm import ServedVLM
    from tests.support.recording import RecordingRelay
    from tests.support.server import SharedServers
    from videoitg.engine_build.build import BuildReport
    from videoitg.launch.server import TritonServer
    from videoitg.model.grounding import VideoITG


@pytest.fixture(scope="session")
def scorer():
    """The in-process scorer on the embedded default checkpoint, with the servers' default sampling: what a served
    answer is compared with."""
    from videoitg.defaults import default_checkpoint
    from videoitg.pipeline.scorer import Scorer

    return Scorer(default_checkpoint())


@pytest.fixture(scope="module")
def tiny() -> VideoITG:
    """A tiny random VideoITG (vocabulary 300) in eval mode, its head re-initialised with a random bias."""
    import torch

    from tests.support.model import tiny_config
    from videoitg.model.grounding import VideoITG

    torch.manual_seed(0)
    model = VideoITG(tiny_config(vocab_size=300)).eval()
    model.reset_head()
    torch.nn.init.normal_(model.out_proj.bias)
    return model


@pytest.fixture(scope="session")
def shared_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServers]:
    """Real tritonservers shared by the modules that only send them ordinary requests, one per repository spec
    (`SharedServers`): a module fixture holds one with `yield from shared_servers.hold(spec)`."""
    from tests.support.server import SharedServers, skip_without_tritonserver

    skip_without_tritonserver()
    servers = SharedServers(tmp_path_factory)
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def cpu_server(shared_servers: SharedServers) -> Iterator[TritonServer]:
    """The session server: the CPU bls repository (embedded checkpoint, feature cache on) with two small limits and
    5-frame decode chunks (`CPU_SPEC`), held for the whole session."""
    from tests.support.server import CPU_SPEC

    yield from shared_servers.hold(CPU_SPEC)


@pytest.fixture(scope="module")
def server(cpu_server: TritonServer) -> TritonServer:
    """The session's CPU server, for the modules whose tests only read from it."""
    return cpu_server


@pytest.fixture(scope="module")
def clients(server: TritonServer) -> Iterator[dict]:
    """A gRPC and an HTTP client of `server`, by protocol name."""
    from videoitg.client.kserve import VideoITGClient

    with VideoITGClient(server.grpc_url, "grpc") as g, VideoITGClient(server.http_url, "http") as h:
        yield {"grpc": g, "http": h}


@pytest.fixture(scope="module")
def sample() -> tuple[Path, bytes, str]:
    """The package's sample video: its path, its bytes and its instruction."""
    from videoitg.synthetic.sample import sample_video

    path, instruction = sample_video()
    return path, path.read_bytes(), instruction


@pytest.fixture(scope="session")
def real_shape_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real-shape tier's checkpoint: the released widths, heads and head dims, one Qwen2 layer, two SigLIP layers,
    the tiny tokenizer's 413 tokens (`tests.support.model.real_shape_config`), random, bf16 on disk. Its tests run in
    one worker (`pytest_collection_modifyitems`), so it is written once."""
    from tests.support.model import build_real_shape_checkpoint

    return build_real_shape_checkpoint(tmp_path_factory.mktemp("real-shape") / "checkpoint")


@pytest.fixture(scope="session")
def real_shape_engines(real_shape_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`videoitg build --precision fp32 --targets onnx,tensorrt` of the real-shape checkpoint: both ONNX graphs with
    their manifests (the TensorRT plans are skipped with the reason where TensorRT is not importable)."""
    from videoitg.commands.cli import main as cli_main

    out = tmp_path_factory.mktemp("real-shape-engines")
    assert cli_main(["build", "--checkpoint", str(real_shape_checkpoint), "--out", str(out), "--precision", "fp32",
                     "--targets", "onnx,tensorrt"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, BuildReport]:
    """(checkpoint, engines, build report): a tiny checkpoint with a non-trivial head bias (seed 3) and `run_build` of
    it in fp32, both ONNX graphs with their manifests (the TensorRT parts skipped with the reason where TensorRT is
    not importable). Its tests run in the real-shape tier's worker (`pytest_collection_modifyitems`), so it is built
    once."""
    from videoitg.engine_build.build import BuildOptions, run_build
    from videoitg.train.tiny_tokenizer import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny-engines")
    checkpoint = build_tiny_checkpoint(root / "checkpoint", seed=3)
    return checkpoint, root / "engines", run_build(BuildOptions(checkpoint=checkpoint, out=root / "engines",
                                                                precision="fp32"))


def real_shape(item: pytest.Item) -> bool:
    """Whether a test uses an export the session makes once: the real-shape tier's checkpoint or engines, or the tiny
    engines."""
    return any(name.startswith("real_shape_") or name == "tiny_engines" for name in item.fixturenames)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which names each test's group from these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `--dist loadgroup` (scripts/test.sh; a group runs in one worker): every test on a shared server
    in one, so each shared server starts once in the suite, not once per worker that runs one of its tests; and the
    tests of a module that starts servers of its own (marked `server`) or makes costly module fixtures (`one_worker`)
    in one per module, so each of those is made once; and the real-shape tier's tests and those on the tiny engines,
    with the `server` and `one_worker` tests of their modules, in one, so those checkpoints and engines are made once
    and a module's own fixtures are not made twice; and the modules on the video-LLM server (`vlm`, one
    `transformers serve` for the session) in one."""
    real_shape_modules = {item.nodeid.split("::")[0] for item in items if real_shape(item)}
    vlm_modules = {item.nodeid.split("::")[0] for item in items if "vlm" in item.fixturenames}
    for item in items:
        module = item.nodeid.split("::")[0]
        one_worker = any(item.get_closest_marker(m) is not None for m in ("server", "one_worker"))
        if real_shape(item) or (one_worker and module in real_shape_modules):
            item.add_marker(pytest.mark.xdist_group("real-shape"))
        elif module in vlm_modules:
            item.add_marker(pytest.mark.xdist_group("video-llm"))
        elif "shared_servers" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("shared-servers"))
        elif one_worker:
            item.add_marker(pytest.mark.xdist_group(module))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (`one_torch_thread`)."""
    from tests.support.model import one_torch_thread

    with one_torch_thread():
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh VIDEOITG_HOME (generated checkpoints and sample videos go there)."""
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture(scope="session")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedVLM]:
    """A real OpenAI-compatible video-LLM server: `transformers serve` of the tiny VLM (benchmarks/answer/vlm.py), one
    for the session: its tests run in one worker (`pytest_collection_modifyitems`)."""
    pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving] (the dev extra)")
    from benchmarks.answer.vlm import build_tiny_vlm, serve_vlm

    d = tmp_path_factory.mktemp("vlm")
    with serve_vlm(build_tiny_vlm(d / "model"), d / "serve.log") as served:
        yield served


@pytest.fixture(scope="module")
def relay(vlm: ServedVLM) -> Iterator[RecordingRelay]:
    """A byte relay in front of `vlm` that records every request it passes on."""
    from tests.support.recording import RecordingRelay

    with RecordingRelay(f"127.0.0.1:{vlm.port}") as r:
        yield r
