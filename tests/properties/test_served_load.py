"""The real tritonserver on the CPU repository under load (VIDEOITG_LOAD_CLIENTS / VIDEOITG_LOAD_SECONDS), bad inputs,
overload and a killed stub: every answer checked, the server keeps serving (VIDEOITG_RELIABILITY_REPORT=DIR writes
the figures)."""

from __future__ import annotations

import functools
import os
import signal
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from benchmarks.clips import random_clip
from tests.support.batch import assert_rows_close, check_shards, comparable, local_stream, make_manifest, read_jsonl
from tests.support.fuzz import FFMPEG_ERRORS, mutate, seed_bytes
from tests.support.server import report, skip_without_tritonserver, start, stub_pids
from tests.support.video import truncate, unknown_codec, write_audio_only, write_clip, write_empty_stream
from videoitg.batch import runner, store
from videoitg.batch.runner import BatchOptions, run_batch
from videoitg.batch.scorers import ScorerSpec
from videoitg.client import routing
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.contract.protocol import DECODE
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.manifest.rows import load_manifest
from videoitg.repository.generator import RepoSpec, build_repository
from videoitg.request.limits import Limits
from videoitg.request.options import RequestOptions
from videoitg.synthetic.sample import sample_video

pytestmark = pytest.mark.server
TOL = 1e-5
LOAD_CLIENTS = int(os.environ.get("VIDEOITG_LOAD_CLIENTS", "4"))
LOAD_SECONDS = float(os.environ.get("VIDEOITG_LOAD_SECONDS", "10"))

skip_without_tritonserver()


small_clip = functools.partial(random_clip, size=48)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The module's own server, not a shared one: its tests overload it, kill a stub and then the server itself."""
    repo = build_repository(RepoSpec(target="cpu"), tmp_path_factory.mktemp("repo"))
    log = tmp_path_factory.mktemp("log") / "tritonserver.log"
    opts = ServerOptions(exit_timeout_s=3)
    srv = start(TritonServer(repo, opts, log_path=log), timeout_s=300)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, str]:

    path, instruction = sample_video()
    return path.read_bytes(), instruction


def health(url: str) -> tuple[bool, float]:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as r:
            ok = r.status == 200
    except OSError:
        ok = False
    return ok, time.monotonic() - t0


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a LISTEN socket on `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                found.add(addr)
    return found


# 127.0.0.1 in /proc/net/tcp, the same as an IPv4-mapped address in tcp6, and ::1.
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_server_listens_on_loopback_only(server) -> None:
    for port in (server.http_port, server.grpc_port, server.metrics_port):
        addrs = listening_addresses(port)
        assert addrs and addrs <= LOOPBACK, f"port {port} listens on {addrs}, not only on loopback"


# ---- load ------------------------------------------------------------------------------------------------------
def test_load_concurrent_clients_with_health_checks(server, scorer, sample, tmp_path: Path) -> None:
    data, instruction = sample
    warm = [(data, f"{instruction} {w}") for w in ("", "(again)", "in the first half?", "near the end?")]
    # Cold requests among the warm ones: each client sends a fresh video every 4th request.
    cold = [small_clip(tmp_path / f"cold{i}.mp4", seed=100 + i) for i in range(3 * LOAD_CLIENTS)]
    cold_jobs = [(v, "when does something move?") for v in cold]
    refs = {(id(v), t): scorer.score(v, t).logits for v, t in warm + cold_jobs}
    stop = threading.Event()
    lat: list[float] = []
    failures: list[str] = []
    checks: list[tuple[bool, float]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        protocol = "grpc" if i % 2 == 0 else "http"
        url = server.grpc_url if protocol == "grpc" else server.http_url
        mine = [cold_jobs[j] for j in range(i, len(cold_jobs), LOAD_CLIENTS)]
        with VideoITGClient(url, protocol, timeout_s=120) as c:
            n = 0
            while not stop.is_set():
                video, text = mine.pop() if n % 4 == 3 and mine else warm[(i + n) % len(warm)]
                t0 = time.monotonic()
                try:
                    got = c.score(video, text)
                    diff = float(np.abs(np.asarray(got.logits) - np.asarray(refs[(id(video), text)])).max())
                    if diff > TOL:
                        raise AssertionError(f"logits differ from in-process by {diff}")
                except Exception as e:  # any failure of a good request counts
                    with lock:
                        failures.append(f"{protocol}: {type(e).__name__}: {e}")
                else:
                    with lock:
                        lat.append(time.monotonic() - t0)
                n += 1

    def poll() -> None:
        while not stop.is_set():
            r = health(server.http_url)
            with lock:
                checks.append(r)
            time.sleep(0.25)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(LOAD_CLIENTS)]
    threads.append(threading.Thread(target=poll))
    t_start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(LOAD_SECONDS)
    stop.set()
    for t in threads:
        t.join(180)
    wall = time.monotonic() - t_start
    assert not any(t.is_alive() for t in threads), "a client hung"
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else [float("nan")] * 99
    figures = {"clients": LOAD_CLIENTS, "seconds": round(wall, 1), "requests_ok": len(lat),
               "requests_failed": len(failures), "cold_videos": len(cold_jobs),
               "throughput_rps": round(len(lat) / wall, 2), "p50_ms": round(1000 * q[49], 1),
               "p99_ms": round(1000 * q[98], 1), "max_ms": round(1000 * max(lat), 1),
               "health_checks": len(checks), "health_failed": sum(1 for ok, _ in checks if not ok),
               "health_max_ms": round(1000 * max(d for _, d in checks), 1)}
    report("load", figures)
    print("load:", figures)
    assert not failures, failures[:5]
    assert len(lat) >= 2 * LOAD_CLIENTS
    assert figures["health_failed"] == 0 and len(checks) >= LOAD_SECONDS * 2, figures


# ---- bad inputs through the server ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, str]]:
    """Every bad input of tests/decode/test_errors.py (and the fuzzers' finds) -> (bytes, expected text)."""
    d = tmp_path_factory.mktemp("bad")
    mp4 = write_clip(d / "ok.mp4", frames=40)
    webm = write_clip(d / "t.webm", codec="libvpx-vp9", frames=40)
    fs = write_clip(d / "fs.mp4", frames=40, faststart=True)
    cases = {
        # Seeded: FFmpeg reads some random 4 KiB as a subtitle stream ("no video stream"), a different typed error.
        "random bytes": (np.random.default_rng(0).bytes(4096), "NotAVideoError"),
        "text file": (b"not a video\n" * 50, "NotAVideoError"),
        "truncated mp4 (index at end)": (truncate(mp4, d / "cut.mp4", 0.6).read_bytes(), "TruncatedVideoError"),
        "truncated mp4 (faststart)": (truncate(fs, d / "fs_cut.mp4", 0.6).read_bytes(), "TruncatedVideoError"),
        "truncated webm": (truncate(webm, d / "t_cut.webm", 0.6).read_bytes(), "TruncatedVideoError"),
        "webm cut in its header": (truncate(webm, d / "t_head.webm", 0.05).read_bytes(), "TruncatedVideoError"),
        "audio only": (write_audio_only(d / "a.m4a").read_bytes(), "NoVideoStreamError"),
        "zero frames": (write_empty_stream(d / "zero.avi").read_bytes(), "NoFramesError"),
        "8K frames": (write_clip(d / "8k.mp4", frames=1, width=7680, height=4320).read_bytes(),
                      "VideoTooLargeError"),
        "5 h duration": (write_clip(d / "long.mkv", frames=3, pts=[0, 9_000_000, 18_000_000],
                                    time_base=Fraction(1, 1000)).read_bytes(), "VideoTooLargeError"),
        "unknown codec": (unknown_codec(write_clip(d / "m.mkv", codec="mjpeg", frames=5), d / "u.mkv").read_bytes(),
                          "UnsupportedCodecError"),
    }
    for i, (seed, ops, where) in enumerate(FFMPEG_ERRORS):
        # Once raw FFmpeg errors, now handled by the decoder: a typed error, or (damaged packets skipped) a
        # normal result. Either is correct; what must not happen is an untyped INTERNAL error.
        cases[f"fuzz find {i}: {where}"] = (mutate(seed_bytes(seed), ops), None)
    return cases


def test_every_bad_video_gets_its_error_and_server_keeps_serving(server, sample, bad_videos) -> None:
    data, instruction = sample
    outcomes = {}
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=120) as c:
        for name, (video, expect) in bad_videos.items():
            try:
                c.score(video, instruction)
                assert expect is None, f"{name}: served, but {expect} was expected"
                outcomes[name] = {"status": "OK (damaged packets skipped)", "message": ""}
            except RemoteError as e:
                msg, status = str(e), e.status
                outcomes[name] = {"status": status, "message": msg[:200]}
                assert (expect or "VideoDecodeError") in msg or expect is None, f"{name}: {msg}"
                # a typed input error is the client's fault, not the server's
                assert status == "StatusCode.INVALID_ARGUMENT", f"{name}: {status} {msg}"
            assert c.score(data, instruction).logits, name  # the next good request is served
        assert server.is_ready()
    report("bad_inputs", outcomes)


def test_bad_instructions_and_top_k(server, sample) -> None:

    data, instruction = sample
    cases = {
        "empty": (b"", "INSTRUCTION: instruction is empty", None),
        "blank": (b" \n\t ", "INSTRUCTION: instruction is empty", None),
        "invalid UTF-8": (b"\xff\xfe when", "UTF-8", None),
        "over the byte limit": (b"a" * (70 * 1024), r"over the limit of 65536 bytes \(max_instruction_bytes\)",
                                None),
        "over the token limit": (b"red " * 5000, r"InstructionTooLongError: .*max_instruction_tokens=1024", None),
        "TOP_K 0": (instruction.encode(), "TOP_K", 0),
        "TOP_K negative": (instruction.encode(), "TOP_K", -3),
    }
    c = grpc.InferenceServerClient(server.grpc_url)
    try:
        for name, (text, expect, k) in cases.items():
            ins = [grpc.InferInput("VIDEO", [1, 1], "BYTES"), grpc.InferInput("INSTRUCTION", [1, 1], "BYTES")]
            ins[0].set_data_from_numpy(np.array([[data]], dtype=object))
            ins[1].set_data_from_numpy(np.array([[text]], dtype=object))
            if k is not None:
                ins.append(grpc.InferInput("TOP_K", [1, 1], "INT32"))
                ins[2].set_data_from_numpy(np.array([[k]], dtype=np.int32))
            with pytest.raises(InferenceServerException, match=expect) as ei:
                c.infer("videoitg", ins)
            assert ei.value.status() == "StatusCode.INVALID_ARGUMENT", f"{name}: {ei.value}"
    finally:
        c.close()


def test_bad_inputs_do_not_fail_batch_mates(server, scorer, sample, bad_videos) -> None:
    data, instruction = sample
    ref = scorer.score(data, instruction).logits
    bad = [v for v, expect in bad_videos.values() if expect is not None]  # inputs that must fail
    jobs = [(v, instruction, False) for v in bad] + [(data, instruction, True)] * len(bad)

    def call(job):
        video, text, good = job
        with VideoITGClient(server.grpc_url, "grpc", timeout_s=120) as c:
            try:
                return good, c.score(video, text).logits
            except RemoteError as e:
                return good, e

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(call, jobs[::2] + jobs[1::2]))
    for good, out in got:
        if good:
            assert not isinstance(out, Exception), out
            assert float(np.abs(np.asarray(out) - np.asarray(ref)).max()) <= TOL
        else:
            assert isinstance(out, RemoteError)
    assert server.is_ready()


# ---- overload: the top-level line's bounds (Limits.max_in_flight) -----------------------------------------------
@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory):
    """A server of max_in_flight 1: 4 requests at once and a line of 32, so that a burst of clients goes past
    them."""
    repo = build_repository(RepoSpec(target="cpu", limits=Limits().replace(max_in_flight=1)),
                            tmp_path_factory.mktemp("repo"))
    srv = start(TritonServer(repo, ServerOptions(exit_timeout_s=3),
                             log_path=tmp_path_factory.mktemp("log") / "tritonserver.log"), timeout_s=300)
    yield srv
    srv.stop()


def test_overload_past_the_line_is_refused_and_server_keeps_serving(small_server, scorer, sample,
                                                                      tmp_path: Path) -> None:
    """Far more simultaneous requests than the top-level model works on, and its line hold (48 against
    36): each is answered correctly or refused with UNAVAILABLE "server busy" (at once past the line, after its wait
    in it), never with another error, and the server stays ready. A cold 120-frame video: its decode runs while the
    rest arrive, and each hit's grounding takes long enough that the requests overlap. A machine busy enough to
    stagger the clients' threads past the decode may answer every one: then the burst is not an overload, and it is
    sent again with a new cold video and twice the clients (at most three bursts)."""
    data, instruction = sample
    server = small_server
    for burst, n in enumerate((48, 96, 192)):
        video = small_clip(tmp_path / f"overload{burst}.mp4", seed=999 + burst, seconds=120, fps=1)
        ok, refused = _overload_burst(server, scorer.score(video, instruction).logits, video, instruction, n)
        assert ok and max(ok) <= TOL, ok
        assert server.is_ready()
        if refused:
            break
    report("overload", {"requests": n, "bursts": burst + 1, "answered": len(ok), "refused": len(refused),
                        "refusal_max_ms": round(1000 * max(refused), 1) if refused else None})
    assert refused, f"none of {n} simultaneous requests was refused: the line is not bounded"
    with VideoITGClient(server.grpc_url, "grpc") as c:
        assert c.score(data, instruction).logits  # served again


def _overload_burst(server, logits: list[float], video: bytes, instruction: str, n: int) -> tuple[list, list]:
    """`n` clients send the same request at once (connected first, released by a barrier): the answered requests'
    max |logit - `logits`| and the refused requests' times to the refusal. Any other error fails the test."""
    ref = np.asarray(logits)
    clients = [grpc.InferenceServerClient(server.grpc_url) for _ in range(n)]
    released = threading.Barrier(n)

    def call(i: int):
        ins = [grpc.InferInput("VIDEO", [1, 1], "BYTES"), grpc.InferInput("INSTRUCTION", [1, 1], "BYTES")]
        ins[0].set_data_from_numpy(np.array([[video]], dtype=object))
        ins[1].set_data_from_numpy(np.array([[instruction.encode()]], dtype=object))
        assert clients[i].is_server_ready()  # connected before the barrier: no handshake inside the burst
        released.wait()
        t0 = time.monotonic()
        try:
            out = clients[i].infer("videoitg", ins, client_timeout=120).as_numpy("LOGITS").reshape(-1)
            return "ok", float(np.abs(out - ref).max()), time.monotonic() - t0
        except InferenceServerException as e:
            return f"{e.status()}: {e.message()}", None, time.monotonic() - t0

    try:
        with ThreadPoolExecutor(n) as ex:
            got = list(ex.map(call, range(n)))
    finally:
        for c in clients:
            c.close()

    def refusal(kind: str) -> bool:  # the top-level model's bound
        return kind.startswith("StatusCode.UNAVAILABLE") and "server busy" in kind

    other = [kind for kind, _, _ in got if kind != "ok" and not refusal(kind)]
    assert not other, other[:3]
    return [d for kind, d, _ in got if kind == "ok"], [t for kind, _, t in got if refusal(kind)]


# ---- fault: a python-backend stub killed mid-request ------------------------------------------------------------
FAULT: dict[str, object] = {}


def test_decode_stub_killed_mid_request(server, sample, tmp_path: Path) -> None:

    data, instruction = sample
    long_clip = small_clip(tmp_path / "long.mp4", seed=7, seconds=300, fps=2, size=48)  # ~300 sampled frames
    before = stub_pids(server)
    assert DECODE in before, before
    box: dict[str, object] = {}

    def request() -> None:
        t0 = time.monotonic()
        with VideoITGClient(server.grpc_url, "grpc", timeout_s=120) as c:
            try:
                box["result"] = c.score(long_clip, instruction)
            except RemoteError as e:
                box["error"] = e
        box["seconds"] = time.monotonic() - t0

    def cpu_ticks(pid: int) -> int:  # utime + stime of the decode stub
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    idle = cpu_ticks(before[DECODE])
    th = threading.Thread(target=request)
    th.start()
    # Kill once the stub is busy with this request (30 ms of CPU), not after a fixed sleep: on an idle machine
    # the ~600-frame decode can finish in well under a second, and a fixed delay then lands after it.
    deadline = time.monotonic() + 30
    while cpu_ticks(before[DECODE]) - idle < 3 and time.monotonic() < deadline and th.is_alive():
        time.sleep(0.005)
    os.kill(before[DECODE], signal.SIGKILL)
    th.join(150)
    assert not th.is_alive(), "the in-flight request hung after its decode stub died"
    assert "error" in box, f"the request survived its decode stub being killed: {box}"
    # failed cleanly, naming the broken step: tritonserver's "not healthy", or the top-level model's word once the
    # step was repaired (`contract.repairs`), whichever comes first
    assert "videoitg_decode: StepUnavailableError" in str(box["error"]), box["error"]
    assert box["seconds"] < 60

    # Did the server heal itself, or at least say it is not ready? (Triton 2.51's python backend does neither.)
    fresh = small_clip(tmp_path / "fresh.mp4", seed=8)
    healed = unready = False
    deadline = time.monotonic() + 20  # a watchdog reload takes ~9 s here
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        while time.monotonic() < deadline and not (healed or unready):
            unready = not health(server.http_url)[0] or not c.is_ready()
            try:
                c.score(fresh, instruction)
                healed = True
            except RemoteError:
                time.sleep(1)
        FAULT.update(healed=healed, unready=unready, cached_video_served=bool(c.score(data, instruction).logits))
        # The recovery the serving layer can drive (see docs/reliability.md): reload the model whose stub died.
        admin = http.InferenceServerClient(server.internal_http_url)
        t0 = time.monotonic()
        admin.load_model(DECODE, headers=server.admin_headers())  # the model-repository API needs the key
        FAULT["reload_s"] = round(time.monotonic() - t0, 1)
        admin.close()
        assert stub_pids(server).get(DECODE) not in (None, before[DECODE])  # a new stub process
        assert c.score(fresh, instruction).logits  # the next cold request works
    assert server.is_ready()
    report("fault_stub", {k: v if isinstance(v, (bool, float, int)) else str(v) for k, v in FAULT.items()})


def test_server_heals_or_reports_unready_by_itself() -> None:
    if not FAULT:
        pytest.skip("test_decode_stub_killed_mid_request did not run")
    assert FAULT["healed"] or FAULT["unready"], FAULT


# ---- fault: the server killed during a Triton-backed batch job ----------------------------------------------------
BATCH: dict[str, object] = {}


def test_server_killed_during_batch_job(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Last in the module: it kills the module's server. The batch driver runs in this process without Ray
    (see tests/batch/test_runner_faults.py for why); the rows go to the real server through the batch Triton scorer."""

    manifest_path, good, bad = make_manifest(tmp_path / "media", videos=4, per_video=4)
    manifest = load_manifest(manifest_path)
    spec = ScorerSpec(kind="triton", servers=(server.grpc_url,), max_in_flight=1,
                      options=RequestOptions(top_k=3),
                      protocol="grpc")

    def opts(out: Path, **kw) -> BatchOptions:
        return BatchOptions(out_dir=str(out), scorer=spec, progress=False, group_by_video=False, shard_rows=1,
                            **kw)

    def slow_stream(units, o):
        for line in local_stream(units, o):  # a window to kill in: one row per unit, 0.2 s apart
            time.sleep(0.2)
            yield line

    monkeypatch.setattr(runner, "_stream", slow_stream)

    monkeypatch.setattr(routing, "BACKOFF_S", (0.2, 0.5))  # give up on the dead server quickly
    clean = tmp_path / "clean"
    run_batch(manifest, opts(clean))  # the same job without a fault: what the resumed job must equal
    want = {r["row_id"]: comparable(r) for r in read_jsonl(clean / store.RESULTS)}
    assert len(want) == len(good)

    out = tmp_path / "out"
    box: dict[str, object] = {}

    def job() -> None:
        try:
            box["summary"] = run_batch(manifest, opts(out))
        except Exception as e:  # recorded: how the job ends is what is measured
            box["error"] = e

    th = threading.Thread(target=job)
    th.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / store.SHARD_DIR).glob("*.results.jsonl"))) < 4:
        time.sleep(0.05)
    ports = (server.http_port, server.grpc_port, server.metrics_port)
    victims = [server.pid, *stub_pids(server).values()]
    for pid in victims:  # the server and its stubs, as a crash or an OOM kill would end them
        os.kill(pid, signal.SIGKILL)
    th.join(180)
    assert not th.is_alive(), "the batch job hung after its server died"
    server.stop()
    first_ok = len(read_jsonl(out / store.RESULTS)) if (out / store.RESULTS).exists() else 0
    check_shards(out)
    server_errors = [e for e in read_jsonl(out / store.ERRORS) if e.get("stage") == "server"] \
        if (out / store.ERRORS).exists() else []
    BATCH.update(first_run_ok=first_ok, first_run_raised=repr(box.get("error")), rows=len(good),
                 rows_failed_as_server_errors=len(server_errors))
    assert 0 < check_shards(out) < len(good) + len(bad), "the kill did not land mid-job"

    # The server comes back on the same address; the same job is run again.
    repo = server.repository
    again = TritonServer(repo, ServerOptions(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                                             exit_timeout_s=3), log_path=tmp_path / "restarted.log")
    again.start(timeout_s=300)
    try:
        s2 = run_batch(manifest, opts(out))
        plain = {r["row_id"] for r in read_jsonl(out / store.RESULTS)}
        BATCH.update(plain_rerun_ok=len(plain), plain_rerun_missing=len(set(want) - plain))
        s3 = run_batch(manifest, opts(out, retry_errors=True))  # what a retry recovers (docs/reliability.md)
    finally:
        again.stop()
    results = read_jsonl(out / store.RESULTS)
    ids = [r["row_id"] for r in results]
    assert len(ids) == len(set(ids)), "a row was doubled"
    assert_rows_close(results, want)
    assert {e["row_id"] for e in read_jsonl(out / store.ERRORS)} == {e["row_id"] for e in read_jsonl(clean /
                                                                                                    store.ERRORS)}
    assert s3["merged"]["missing"] == 0 and s2["merged"]["duplicates_dropped"] == 0
    report("fault_batch_server", {k: v if isinstance(v, (int, float, bool)) else str(v) for k, v in BATCH.items()})


def test_plain_rerun_after_server_death_loses_nothing() -> None:
    if not BATCH:
        pytest.skip("test_server_killed_during_batch_job did not run")
    assert BATCH["plain_rerun_missing"] == 0, BATCH
