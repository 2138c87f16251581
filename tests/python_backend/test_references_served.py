"""A served video named by reference (VIDEO_URI under `--media-root`), on the real tritonserver: a clip over the
upload limit is served from where it lies, equal to the in-process result; every hostile reference is refused with
its own typed error that quotes at most a short prefix of it; a file replaced under its name is scored anew (the
feature cache keys a reference by its content); and a server started without a media root refuses references."""

from __future__ import annotations

import json
import os
import queue
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import tritonclient.grpc as grpc

from benchmarks.clips import random_clip
from tests.support.compare import SCORED, assert_records_close, assert_results_close
from tests.support.server import skip_without_tritonserver
from videoitg.batch.scorers import ScorerSpec
from videoitg.batch.servers import TritonScorer
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.commands.cli import main
from videoitg.manifest.rows import Row
from videoitg.paths import SHOWN_CHARS
from videoitg.repository.generator import RepoSpec
from videoitg.request.limits import served_defaults
from videoitg.request.options import RequestOptions

pytestmark = pytest.mark.server
skip_without_tritonserver()

UPLOAD_LIMIT = 4096  # bytes: every clip here is larger, so only a reference can bring it
INSTRUCTION = "when does the square move?"


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def server(media, shared_servers):
    spec = RepoSpec(target="cpu", limits=served_defaults().replace(max_bytes=UPLOAD_LIMIT), stream_frames=5,
                    media_roots=(str(media.resolve()),))
    yield from shared_servers.hold(spec)


@pytest.fixture(scope="module")
def client(server):
    with VideoITGClient(server.grpc_url, "grpc") as c:
        yield c


def refusal(client: VideoITGClient, reference: str | bytes) -> RemoteError:
    raw = reference if isinstance(reference, bytes) else os.fsencode(reference)
    inputs = client.inputs(None, INSTRUCTION, uri=os.fsdecode(raw))
    with pytest.raises(RemoteError) as e:
        client._infer(inputs, INSTRUCTION, "", False)
    return e.value


def test_a_reference_over_the_upload_limit_is_served_like_in_process(client, media, scorer) -> None:
    data = random_clip(media / "big.mp4", seed=11)
    assert len(data) > UPLOAD_LIMIT
    with pytest.raises(RemoteError, match="VideoTooLargeError") as e:  # the bytes: refused, naming the flag
        client.infer(data, INSTRUCTION)
    assert "--max-video-bytes" in str(e.value) and "VIDEO_URI" in str(e.value)
    assert client.media_roots().roots == (str(media.resolve()),)  # announced by the model's parameters
    out = client.infer(media / "big.mp4", INSTRUCTION, RequestOptions(top_k=3))
    assert out.by_reference and not out.sent_video and not out.cache_hit
    ref = scorer.score(data, INSTRUCTION)
    assert_results_close(out.result, ref)
    assert out.top_k_frames == out.result.top_k_frames(3)
    again = client.infer(data, INSTRUCTION, path=media / "big.mp4")  # bytes in hand, the file named instead
    assert again.by_reference and again.cache_hit
    assert_results_close(again.result, ref)


def test_every_hostile_reference_is_refused_with_a_typed_error(client, media, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(random_clip(outside / "secret.mp4", seed=12))
    os.symlink(outside / "secret.mp4", media / "escape.mp4")
    os.symlink(outside, media / "linked")
    os.symlink("/dev/zero", media / "zero.mp4")
    os.mkfifo(media / "pipe.mp4")
    (media / "folder").mkdir()
    cases = {
        f"{media}/../{outside.parent.name}/outside/secret.mp4": "OutsideRootsError",
        str(media / "escape.mp4"): "OutsideRootsError",  # a symlink out of the root
        str(media / "linked" / "secret.mp4"): "OutsideRootsError",  # a symlinked parent directory
        str(outside / "secret.mp4"): "OutsideRootsError",
        "/dev/zero": "OutsideRootsError",
        str(media / "zero.mp4"): "OutsideRootsError",
        str(media / "pipe.mp4"): "NotARegularFileError",  # answered at once: the open never blocks
        str(media / "missing.mp4"): "MediaNotFoundError",
        str(media / "folder"): "NotARegularFileError",
        "big.mp4": "InvalidReferenceError",  # relative
        "https://example.com/v.mp4": "InvalidReferenceError",
        str(media / ("x" * 1000)): "MediaNotFoundError",
        b"/" + b"y" * 5000: "InvalidReferenceError",
    }
    for reference, error in cases.items():
        t0 = time.monotonic()
        e = refusal(client, reference)
        assert time.monotonic() - t0 < 10
        assert e.status == "StatusCode.INVALID_ARGUMENT", (reference, str(e))
        assert f"videoitg: {error}: " in str(e), (reference, str(e))
        assert len(str(e)) < 300 and "x" * (SHOWN_CHARS + 1) not in str(e) and "yyyy" * 20 not in str(e)
        assert str(outside) not in str(e)


def _decode_step(server, reference: str) -> list:
    """The answers of the (streaming) decode step, called directly with a reference."""
    t = grpc.InferInput("VIDEO_URI", [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[reference.encode()]], object))
    answers: queue.SimpleQueue = queue.SimpleQueue()
    c = grpc.InferenceServerClient(server.internal_grpc_url)  # behind the front: clients cannot reach it
    try:
        c.start_stream(callback=lambda result, error: answers.put(error if error is not None else result),
                       headers=server.inference_headers("grpc"))
        c.async_stream_infer("videoitg_decode", [t])
        return [answers.get(timeout=60)]
    finally:
        c.stop_stream()
        c.close()


def test_the_decode_step_checks_a_clients_reference_itself(server, media, tmp_path) -> None:
    (tmp_path / "other.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "other.mp4", media / "step-escape.mp4")
    (answer,) = _decode_step(server, str(media / "step-escape.mp4"))
    assert isinstance(answer, Exception) and "videoitg_decode: OutsideRootsError: " in str(answer)


def test_a_file_replaced_under_its_name_is_scored_anew(client, media, scorer) -> None:
    name = media / "replaced.mp4"
    first = random_clip(name, seed=21)
    a = client.infer(name, INSTRUCTION)
    assert a.by_reference and not a.cache_hit
    assert_results_close(a.result, scorer.score(first, INSTRUCTION))
    second = random_clip(media / "incoming.mp4", seed=22)
    os.replace(media / "incoming.mp4", name)  # a new file under the same name
    b = client.infer(name, INSTRUCTION)
    assert not b.cache_hit  # keyed by content, not by name: never the stale features
    assert_results_close(b.result, scorer.score(second, INSTRUCTION))
    with open(name, "r+b") as f:  # rewritten in place: same file, new content
        f.write(first)
        f.truncate()
    c = client.infer(name, INSTRUCTION)
    assert c.cache_hit  # the first clip's content again: its features are the cached ones
    assert_results_close(c.result, scorer.score(first, INSTRUCTION))


def test_references_are_off_by_default(cpu_server, media) -> None:
    random_clip(media / "off.mp4", seed=31)
    with VideoITGClient(cpu_server.grpc_url, "grpc") as c:
        assert not c.media_roots()
        e = refusal(c, str(media / "off.mp4"))
        assert e.status == "StatusCode.INVALID_ARGUMENT" and "videoitg: ReferencesOffError: " in str(e)
        assert "--media-root" in str(e)
        out = c.infer(media / "off.mp4", INSTRUCTION)  # a path the server cannot open: the client sends the bytes
    assert out.sent_video and not out.by_reference


def test_score_and_batch_over_the_server_name_the_file(server, media, scorer, tmp_path, capsys,
                                                       monkeypatch) -> None:
    """`videoitg score --server` and the batch Triton backend send the path of a file under the announced root:
    a clip over the upload limit is scored, as in-process."""

    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))
    data = random_clip(media / "cli.mp4", seed=41)
    assert len(data) > UPLOAD_LIMIT
    assert main(["score", str(media / "cli.mp4"), "-i", INSTRUCTION, "--server", server.grpc_url, "--top-k", "3",
                 "--output", str(tmp_path / "r.jsonl")]) == 0
    assert "named by its path" in capsys.readouterr().out
    ref = scorer.score(data, INSTRUCTION)
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert_records_close(record, ref.to_record(picked=ref.top_k_positions(3)), fields=SCORED)
    video = str((media / "cli.mp4").resolve())
    rows = [Row("r0", 1, video, INSTRUCTION, doc_id=0)]
    (out,) = TritonScorer(ScorerSpec(kind="triton", servers=(server.grpc_url,), max_in_flight=1,
                                     options=RequestOptions(top_k=3))
                           ).score_unit(rows)
    assert out.ok, out.record
    ref = scorer.score(Path(video), INSTRUCTION)
    want = ref.to_record(doc_id=0, video_path=video, picked=ref.top_k_positions(3))
    assert_records_close(out.record, want, fields=SCORED)


@pytest.fixture(scope="module")
def unstreamed(media, shared_servers):
    spec = RepoSpec(target="cpu", limits=served_defaults().replace(max_bytes=UPLOAD_LIMIT), stream_frames=0,
                    media_roots=(str(media.resolve()),))
    yield from shared_servers.hold(spec)


def test_a_reference_through_the_unstreamed_decode_step(unstreamed, media, scorer) -> None:
    data = random_clip(media / "whole.mp4", seed=51)
    with VideoITGClient(unstreamed.grpc_url, "grpc") as c:
        out = c.infer(media / "whole.mp4", INSTRUCTION)
    assert out.by_reference and not out.cache_hit
    assert_results_close(out.result, scorer.score(data, INSTRUCTION))
