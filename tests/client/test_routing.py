"""Several servers: routing by video (rendezvous hashing of the feature-cache digest), failover, and the transient /
row-error split, against three real tritonservers on loopback ports (CPU, tiny checkpoint). One of them is killed
(SIGKILL of its process group: the server and its python-backend stubs, as a crash or OOM kill ends them) while a
batch job has a request in flight on it."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.batch import INSTRUCTIONS, local_stream, make_clip, make_manifest
from tests.support.compare import SCORED, assert_records_close
from tests.support.server import metric_value, start
from videoitg.batch import runner, store
from videoitg.batch import servers as batch_servers  # `servers` is the fixture
from videoitg.batch.runner import BatchOptions, run_batch
from videoitg.batch.scorers import ScorerSpec
from videoitg.batch.servers import TritonScorer
from videoitg.client import routing
from videoitg.client.kserve import (
    NO_OPTIONS,
    NotCachedError,
    ReferenceUnusableError,
    RemoteError,
    UnavailableError,
    VideoITGClient,
    remote_error,
)
from videoitg.client.routing import ServerPool, is_transient, rank
from videoitg.commands.cli import main
from videoitg.launch import binaries
from videoitg.launch.ports import LOOPBACK, PORT_FLOOR, ServerError, check_ports_free, free_port
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.manifest.rows import Row, load_manifest
from videoitg.repository.generator import RepoSpec, build_repository


# ---- routing and error classification (no server) ---------------------------------------------------------------
def test_rank_is_stable_balanced_and_a_removed_server_moves_only_its_own_keys():
    servers = ["a:1", "b:1", "c:1"]
    keys = [f"k{i}" for i in range(3000)]
    first = {k: rank(servers, k)[0] for k in keys}
    assert first == {k: rank(list(reversed(servers)), k)[0] for k in keys}  # order of the list does not matter
    counts = collections.Counter(first.values())
    assert min(counts.values()) > 900, counts  # about 1000 each
    after = {k: rank(["a:1", "c:1"], k)[0] for k in keys}
    moved = [k for k in keys if after[k] != first[k]]
    assert all(first[k] == "b:1" for k in moved) and len(moved) == counts["b:1"]
    assert 0.4 < sum(after[k] == "a:1" for k in moved) / len(moved) < 0.6  # b's keys spread over the others


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_transport_failures_are_transient_and_bad_requests_are_not(protocol):
    c = VideoITGClient(f"127.0.0.1:{free_port()}", protocol=protocol, timeout_s=5)  # nothing listens there
    errors = {}
    cases = {"down": (b"x", "q"), "surrogate": (b"x", "bad \ud800"), "doc_id": (b"x", "q", None, 2**70)}
    for name, args in cases.items():
        with pytest.raises(Exception) as e:
            c.infer(*args)
        errors[name] = e.value
    assert is_transient(errors["down"])
    assert not is_transient(errors["surrogate"]) and not is_transient(errors["doc_id"])


def test_a_server_answer_maps_once_to_a_typed_error():
    """The client's one mapping from an answer to an error kind; routing and the client branch on the kinds."""
    assert type(remote_error("no features", "StatusCode.NOT_FOUND", digest_sent=True)) is NotCachedError
    assert type(remote_error("no features", "404", digest_sent=True)) is NotCachedError
    assert type(remote_error("model 'x' is not served", "404")) is RemoteError  # NOT_FOUND of no digest: a refusal
    ref = remote_error("VIDEO_URI: OutsideRootsError: /etc/passwd is outside the media roots", "StatusCode.INTERNAL")
    assert type(ref) is ReferenceUnusableError and ref.status == "StatusCode.INTERNAL"
    for status in ("StatusCode.UNAVAILABLE", "503"):
        assert type(remote_error("server is restarting", status)) is UnavailableError
        assert is_transient(remote_error("server is restarting", status))
    assert is_transient(remote_error("Stub process 'videoitg_vision_0_0' is not healthy.", "StatusCode.INTERNAL"))
    assert not is_transient(remote_error("INSTRUCTION: instruction is empty", "StatusCode.INVALID_ARGUMENT"))


# ---- three real servers ------------------------------------------------------------------------------------------
try:
    binaries.find_tritonserver()
    HAVE_SERVER = True
except binaries.ServingSetupError:  # pragma: no cover - the serve extra is part of [all]
    HAVE_SERVER = False
needs_server = pytest.mark.skipif(not HAVE_SERVER, reason="no tritonserver (the serve extra)")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three servers of the module's own, not shared ones: routing needs three, and the last test kills one."""
    repo = build_repository(RepoSpec(target="cpu"), tmp_path_factory.mktemp("repo"))
    logs = tmp_path_factory.mktemp("logs")
    srvs = [TritonServer(repo, ServerOptions(exit_timeout_s=5), log_path=logs / f"s{i}.log") for i in range(3)]
    errs: list[BaseException] = []

    def start_one(s: TritonServer) -> None:
        try:
            start(s, timeout_s=300)  # once more where tritonserver aborted on its known upstream bug
        except BaseException as e:
            errs.append(e)

    threads = [threading.Thread(target=start_one, args=(s,)) for s in srvs]
    [t.start() for t in threads]
    [t.join() for t in threads]
    try:
        if errs:
            raise errs[0]
        yield srvs
    finally:
        stops = [threading.Thread(target=s.stop) for s in srvs]
        [t.start() for t in stops]
        [t.join() for t in stops]


def same_result(got: dict, want: dict) -> None:
    assert_records_close(got, want, fields=(*SCORED, "num_frames", "contexts", "doc_id"))


def dead_address_before(url: str, key: str) -> str:
    """A loopback address nothing listens on that `rank` puts before `url` for `key`. A random address comes first
    only as often as `url`'s weight for `key` allows (with `url` the first of three servers, none of 64 random
    addresses does in 3 runs of 67), so every port from PORT_FLOOR up is a candidate, in random order."""
    pick = random.SystemRandom()
    for port in pick.sample(range(PORT_FLOOR, 1 << 16), (1 << 16) - PORT_FLOOR):
        dead = f"{LOOPBACK}:{port}"
        if rank([dead, url], key)[0] != dead:
            continue
        try:
            check_ports_free(LOOPBACK, [port])
        except ServerError:  # something holds it
            continue
        return dead
    raise AssertionError(f"no free loopback port ranks before {url} for this key")


@needs_server
@pytest.mark.server
def test_score_cli_routes_by_video_and_skips_a_dead_server(servers, scorer, tmp_path, capsys):
    video = make_clip(tmp_path / "v.mp4", seed=11)
    key = routing.routing_key(video.read_bytes())
    urls = [s.grpc_url for s in servers]
    assert main(["score", str(video), "-i", INSTRUCTIONS[0], "--top-k", "3", "--output", str(tmp_path / "r.jsonl"),
                 *[a for u in urls for a in ("--server", u)]]) == 0
    assert f"server: {rank(urls, key)[0]} (grpc)" in capsys.readouterr().out
    ref = scorer.score(video, INSTRUCTIONS[0])
    want = ref.to_record(None, str(video), picked=ref.top_k_positions(3))
    same_result(json.loads((tmp_path / "r.jsonl").read_text()), want)

    first = rank(urls, key)[0]  # the server that scored the video for the CLI
    dead = dead_address_before(first, key)
    pool = ServerPool([dead, first], backoff_s=())
    served, url = pool.infer(video.read_bytes(), INSTRUCTIONS[0])
    assert url == first and pool.state[dead].down and pool.state[dead].failed_over == 1
    assert served.cache_hit  # the same server scored this video for the CLI a moment ago


@needs_server
@pytest.mark.server
def test_hostile_rows_are_row_errors_at_once(servers, tmp_path):
    """A lone-surrogate instruction sent to the servers is the row's error at once, not a server outage (retries,
    then a stopped job with none of the good rows written). (A doc_id of 2**70 is refused when the manifest is
    read: tests/batch/test_runner.py.)"""
    video = str(make_clip(tmp_path / "v.mp4", seed=12))
    rows = [Row("good", 1, video, INSTRUCTIONS[0], doc_id=1), Row("surrogate", 2, video, "bad \ud800", doc_id=2),
            Row("good2", 4, video, INSTRUCTIONS[2], doc_id=4)]
    scorer = TritonScorer(ScorerSpec(kind="triton", servers=tuple(s.grpc_url for s in servers), max_in_flight=2))
    t0 = time.monotonic()
    out = scorer.score_unit(rows)
    assert time.monotonic() - t0 < 30  # at once: retried as an outage, the unit took ~60 s before it stopped
    assert [o.ok for o in out] == [True, False, True]
    assert "surrogates not allowed" in out[1].record["reason"]
    assert all(not st.down for st in scorer.servers.state.values())  # no server was blamed


class Recorder(ServerPool):
    """A ServerPool that records who answered each request and kills one server while a request is in flight on
    it, once `arm` is set."""

    calls: list[tuple[str, str, bool]] = []  # (video digest, server, cache hit)
    victim: TritonServer | None = None
    arm_after = 0  # kill once this many requests were answered
    killed = threading.Event()

    def __post_init__(self) -> None:
        super().__post_init__()
        real = self.client_factory

        def factory(url: str, **kw):
            c = real(url, **kw)
            infer = c.infer

            def infer_and_maybe_kill(*a, **k):
                v = Recorder.victim
                armed = v is not None and len(Recorder.calls) >= Recorder.arm_after
                if armed and url == v.grpc_url and not Recorder.killed.is_set():
                    Recorder.killed.set()
                    threading.Timer(0.02, os.killpg, (v.pid, signal.SIGKILL)).start()  # mid-request
                return infer(*a, **k)

            c.infer = infer_and_maybe_kill
            return c

        self.client_factory = factory

    def infer(self, video, instruction, options=NO_OPTIONS, key=None, path=None):
        served, url = super().infer(video, instruction, options, key, path)
        Recorder.calls.append((key or "", url, served.cache_hit))
        return served, url


@needs_server
@pytest.mark.server
def test_batch_over_three_servers_routes_by_video_and_survives_a_server_killed_mid_job(
        servers, scorer, tmp_path, monkeypatch):
    """Last in the module: it kills a server. The batch driver runs in this process without Ray (as in
    tests/batch/test_runner_faults.py); every row goes through the batch Triton scorer and the pool."""
    monkeypatch.setattr(batch_servers, "ServerPool", Recorder)
    monkeypatch.setattr(runner, "_stream", local_stream)
    urls = [s.grpc_url for s in servers]
    spec = ScorerSpec(kind="triton", servers=tuple(urls), max_in_flight=2, protocol="grpc")

    def job(name: str, videos: int, seed: int):
        path, good, bad = make_manifest(tmp_path / name, videos=videos, per_video=4, seed=seed)
        manifest = load_manifest(path)
        Recorder.calls = []
        yield manifest  # the caller looks at the videos before the run
        s = run_batch(manifest, BatchOptions(str(tmp_path / name / "out"), spec, progress=False, shard_rows=4))
        results = [json.loads(x) for x in (tmp_path / name / "out" / store.RESULTS).read_text().splitlines()]
        assert s["merged"]["missing"] == 0 and s["merged"]["duplicates_dropped"] == 0
        assert sorted(r["doc_id"] for r in results) == sorted(g["doc_id"] for g in good)  # each good row once
        for r in results:
            same_result(r, scorer.score(r["video_path"], r["contexts"]).to_record(r["doc_id"], r["video_path"]))
        errors = {json.loads(x)["row_id"] for x in (tmp_path / name / "out" / store.ERRORS).read_text().splitlines()}
        assert set(bad) <= errors  # the bad rows are their own errors, not retried elsewhere
        yield [c for c in Recorder.calls if c[0]]

    def computed() -> float:  # decode + vision runs, all servers (a batch-mate of a cached video counts none)
        return sum(metric_value(s.metrics(), "videoitg_feature_cache_misses") for s in servers if s.running)

    # 1. All servers up: every video on its first-ranked server, where its features are computed once.
    run = job("up", videos=6, seed=0)
    next(run)
    before = computed()
    calls = next(run)
    by_video = collections.defaultdict(set)
    for key, url, _ in calls:
        by_video[key].add(url)
    assert all(answered == {rank(urls, key)[0]} for key, answered in by_video.items())
    assert computed() - before == len(by_video) + 1  # one per video, and the corrupt video's failed attempt

    # 2. The server that ranks first for most videos is killed while a request is in flight on it, after 6 rows.
    run = job("kill", videos=8, seed=100)
    manifest = next(run)
    first = collections.Counter(rank(urls, routing.routing_key(Path(v).read_bytes()))[0]
                                for v in {r.video for r in manifest.rows})
    victim = next(s for s in servers if s.grpc_url == first.most_common(1)[0][0])
    Recorder.victim, Recorder.arm_after = victim, 6
    calls = next(run)
    assert Recorder.killed.is_set() and not victim.running
    survivors = [u for u in urls if u != victim.grpc_url]
    for key, url, _ in calls:
        assert url in (rank(urls, key)[0], rank(survivors, key)[0])  # its own server, or the next when that died
    moved = {key for key, url, _ in calls if url != victim.grpc_url and rank(urls, key)[0] == victim.grpc_url}
    assert moved, "no video failed over to another server"


def test_retry_waits_are_spread_around_their_base() -> None:
    """Clients refused together come back apart: each wait is its base on average, spread over [0.5, 1.5) times it."""
    from videoitg.client.routing import retry_wait

    waits = np.array([retry_wait(2.0) for _ in range(4000)])
    assert 1.0 <= waits.min() and waits.max() < 3.0
    assert abs(waits.mean() - 2.0) < 0.05 and waits.std() > 0.5
