"""`videoitg batch --ray-address` against a real multi-node Ray cluster on this machine: a head and worker nodes
started as separate processes with `ray start` (each its own temp dir, loopback only, token authentication, a small
object store), the tiny embedded checkpoint and short clips. The nodes' Python finds a `videoitg` that refuses to
import and the driver runs outside the checkout, so the workers can only run the code `--ship-code` sends them (a
run without it fails on the decoy).

- One job, two runs of the same command. The first: its worker node's raylet is SIGKILLed mid-job. The head has no
  CPUs, so nothing can run until a node returns: the driver waits (Ray restarts the pool's actor once a node has
  room), and a SIGTERM stops it with every received row saved. The plain rerun, after a replacement node joined
  (as an autoscaler or a Kubernetes pod would bring one): that node dies mid-job too, another replacement joins
  while the driver waits, and the same run finishes on its own (actor restart + retry of the unit that was in
  flight): every good row exactly once, equal to in-process scores, the bad rows only in errors.jsonl.

Every listening socket of the cluster and the driver is on 127.0.0.1. Ray's CLI maps a loopback address to the
machine's external one, so the head runs with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (which Ray refuses for a
worker node) and worker nodes run Ray's own `ray start` entry point with only that mapping turned off
(`WORKER_NODE`); the driver gets `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` as docs/batch.md says. Nodes are stopped by
killing the process sessions this test created, never with `ray stop` (it stops every Ray on the machine).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import require
from tests.support.batch import SAMPLING_ARGS, make_manifest, reference_record
from tests.support.compare import SCORED, assert_records_close
from tests.support.ray import REPO, kill_session, non_loopback_listeners, records, session_pids
from videoitg.defaults import default_checkpoint
from videoitg.launch.ports import free_ports
from videoitg.manifest.rows import load_manifest
from videoitg.pipeline.scorer import Scorer
from videoitg.sampling import SamplingParams

require(("ray", "pyarrow", "pandas"), "ray[data] (the batch extra) is not installed")  # Ray runs in subprocesses

pytestmark = pytest.mark.slow

TOP_K = 3
# 48 good rows, one per shard: enough that a node killed after the second finished row is killed mid-job (16 could
# all finish in the moment between seeing the second row and the kill)
VIDEOS, PER_VIDEO = 4, 12
# `ray start` on a worker node, with one change: keep 127.0.0.1 as the node and GCS address instead of replacing it
# by the machine's external address (Ray does that so that other machines can reach the node; here none must).
WORKER_NODE = ("import sys; import ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
               "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")
STARTED = "Ray runtime started"


def _comm_and_cmdline(pid: int) -> tuple[str, str]:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "", ""
    return comm, cmd


class Node:
    """One `ray start --block` process and everything it starts, in a session of its own."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], temp_dir: Path) -> None:
        self.name, self.temp_dir = name, temp_dir
        self.log = temp_dir / "ray-start.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=temp_dir,
                                         start_new_session=True)

    def wait_started(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if STARTED in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"ray node {self.name} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def pids(self) -> list[int]:
        return session_pids(self.proc.pid)

    def find(self, prefix: str) -> list[int]:
        """Live processes of this node whose name (comm) or command line starts with `prefix`."""
        out = []
        for pid in self.pids():
            comm, cmd = _comm_and_cmdline(pid)
            if comm.startswith(prefix) or cmd.startswith(prefix):
                out.append(pid)
        return out

    def stop(self) -> None:
        kill_session(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class Cluster:
    """A head without CPUs (so work can only land on worker nodes) and worker nodes added on demand."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vray", dir="/tmp"))  # short: Ray's socket paths live under it
        self.address = ""  # the head's, once it is started
        token = secrets.token_hex(32)
        base = {k: v for k, v in os.environ.items()
                if k not in ("PYTHONPATH", "RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
        # The nodes' Python finds a `videoitg` that refuses to import: the workers can only run the code the driver
        # ships (`--ship-code`), as on a cluster whose image does not have the project.
        decoy = self.root / "decoy" / "videoitg"
        decoy.mkdir(parents=True)
        (decoy / "__init__.py").write_text('raise ImportError("videoitg was not shipped to this node")\n')
        self.node_env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
                         "PYTHONPATH": str(decoy.parent)}
        # The driver: this checkout first, the cluster's token, and 127.0.0.1 kept as the address to connect to.
        self.driver_env = {**self.node_env, "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        self.nodes: list[Node] = []

    # Ray's defaults are fixed ports (8265, 10001, 52365, 10002-19999): another Ray on the machine would clash. A
    # node's ports are picked in one go, so no two of them can be the same; every node reserves a dashboard and a
    # client-server port (10001 and 8265 unless given), so those are picked too, or a random pick could equal them.
    NODE_PORTS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                  "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
                  "--dashboard-port", "--ray-client-server-port")
    HEAD_PORTS = ("--port",)

    def _start(self, name: str, args: list[str], env: dict[str, str], launcher: list[str],
               port_options: tuple[str, ...] = ()) -> Node:
        temp = self.root / name
        temp.mkdir()
        options = (*self.NODE_PORTS, *port_options)
        ports = dict(zip(options, free_ports(len(options)), strict=True))
        if "--port" in ports:
            self.address = f"127.0.0.1:{ports['--port']}"
        cmd = [*launcher, "start", *args, "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp),
               "--object-store-memory", str(80 * 1024 * 1024), "--block",
               "--min-worker-port", "0", "--max-worker-port", "0",
               *(x for option, port in ports.items() for x in (option, str(port)))]
        node = Node(name, cmd, env, temp)
        self.nodes.append(node)
        node.wait_started()
        return node

    def start_head(self) -> Node:
        ray_cli = [str(Path(sys.executable).parent / "ray")]
        return self._start("head", ["--head", "--num-cpus", "0", "--include-dashboard", "false",
                                    "--dashboard-host", "127.0.0.1", "--disable-usage-stats"],
                           {**self.node_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, ray_cli, self.HEAD_PORTS)

    def add_worker(self) -> Node:
        name = f"worker{sum(n.name.startswith('worker') for n in self.nodes) + 1}"
        return self._start(name, ["--address", self.address, "--num-cpus", "1"], self.node_env,
                           [sys.executable, "-c", WORKER_NODE])

    def all_pids(self) -> list[int]:
        return [p for n in self.nodes for p in n.pids()]

    def stop_workers(self) -> None:
        for node in self.nodes[1:]:
            node.stop()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.start_head()
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def _fresh_workers(cluster: Cluster) -> Iterator[None]:
    """Each test starts with the head alone and leaves no worker node behind."""
    yield
    cluster.stop_workers()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cluster")
    manifest, _good, bad = make_manifest(root, VIDEOS, PER_VIDEO)
    checkpoint = str(default_checkpoint())
    scorer = Scorer(checkpoint, sampling=SamplingParams(num_frames=8, target_fps=4.0))
    rows = [r for r in load_manifest(manifest).rows if r.row_id not in bad]
    reference = {r.row_id: reference_record(scorer.score(r.video, r.instruction), r, TOP_K) for r in rows}
    return {"manifest": manifest, "bad": bad, "checkpoint": checkpoint, "reference": reference}


def _cmd(cluster: Cluster, media: dict, out: Path) -> list[str]:
    # Ungrouped, one row per shard: the slowest way through, so a node can be killed mid-job.
    return [sys.executable, "-m", "videoitg", "batch", str(media["manifest"]), "--out", str(out),
            "--checkpoint", media["checkpoint"], "--ray-address", cluster.address, "--ship-code",
            "--workers", "1", "--top-k", str(TOP_K), "--no-progress", "--no-group", "--shard-rows", "1",
            *SAMPLING_ARGS]


class Driver:
    """`videoitg batch` in a session of its own; its output goes to files (a pipe nobody reads while the test waits
    could fill with the dying worker's log and stall the driver)."""

    def __init__(self, cluster: Cluster, media: dict, out: Path, name: str) -> None:
        self.stdout, self.stderr = out.parent / f"{name}.stdout", out.parent / f"{name}.stderr"
        with open(self.stdout, "wb") as o, open(self.stderr, "wb") as e:
            # Not from the checkout: Ray adds the driver's working directory to the workers' import path, which on
            # one machine would let them import the project without `--ship-code`.
            self.proc = subprocess.Popen(_cmd(cluster, media, out), cwd=out.parent, env=cluster.driver_env, stdout=o,
                                         stderr=e, start_new_session=True)

    def err_tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:]

    def finish(self, timeout_s: float = 240) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=timeout_s)
        finally:
            self.kill()
        return self.proc.returncode, self.stdout.read_text(), self.stderr.read_text(errors="replace")

    def kill(self) -> None:
        kill_session(self.proc.pid)  # the driver and anything it left behind


def _result_shards(out: Path) -> int:
    return len(list((out / "shards").glob("*.results.jsonl"))) if (out / "shards").is_dir() else 0


def _kill_mid_job(cluster: Cluster, node: Node, driver: Driver, out: Path, shards: int) -> list[str]:
    """Wait until the output holds `shards` result shards, checking that everything listens on loopback only and
    that the pool's actor runs on `node`; then SIGKILL the node's raylet. Returns the non-loopback listeners seen."""
    exposed: list[str] = []
    on_node = False
    deadline, scan = time.monotonic() + 180, 0.0
    while time.monotonic() < deadline and driver.proc.poll() is None and _result_shards(out) < shards:
        if time.monotonic() >= scan:  # scans of /proc cost tens of ms on a busy machine: twice a second
            exposed += non_loopback_listeners(cluster.all_pids() + session_pids(driver.proc.pid))
            on_node = on_node or bool(node.find("ray::MapWorker"))
            scan = time.monotonic() + 0.5
        time.sleep(0.05)
    on_node = on_node or bool(node.find("ray::MapWorker"))
    assert driver.proc.poll() is None, "the run ended before the node could be killed: " + driver.err_tail()
    assert on_node, "the pool's actor did not run on the worker node"
    raylet = node.find("raylet")
    assert len(raylet) == 1, raylet
    os.kill(raylet[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while node.find("raylet") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not node.find("raylet")
    return exposed


def _assert_exactly_once(out: Path, media: dict, summary: dict) -> None:
    reference, bad = media["reference"], media["bad"]
    assert summary["merged"]["missing"] == 0
    shard_rows = collections.Counter(r["row_id"] for r in records(sorted((out / "shards").glob("*.results.jsonl"))))
    assert set(shard_rows) == set(reference), "a good row is missing from the shards"
    results = records([out / "results.jsonl"])
    assert sorted(r["row_id"] for r in results) == sorted(reference), "a row is missing or doubled in results.jsonl"
    for r in results:  # computed on another node's worker: within tolerance of the in-process reference
        assert_records_close(r, reference[r["row_id"]], fields=(*SCORED, "doc_id", "contexts"))
    errors = {e["row_id"]: e["stage"] for e in records([out / "errors.jsonl"])}
    assert {k: v for k, v in errors.items() if not k.startswith("line-")} == bad
    for f in (out / "shards").glob("*.jsonl"):  # every shard is whole: temp file + rename
        for line in f.read_text().splitlines():
            json.loads(line)


def test_worker_nodes_killed_mid_job_stop_then_resume_on_replacements_exactly_once(cluster: Cluster, media: dict,
                                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    node = cluster.add_worker()
    driver = Driver(cluster, media, out, "run1")
    try:
        exposed = _kill_mid_job(cluster, node, driver, out, shards=2)
        # No node has a CPU now: the driver neither fails nor finishes, it waits for room for its actor.
        time.sleep(3)
        assert driver.proc.poll() is None, "the driver ended while the cluster had no worker node: " + driver.err_tail()
        driver.proc.send_signal(signal.SIGTERM)  # what a job controller sends to stop it
        rc, _, stderr = driver.finish(timeout_s=60)
    finally:
        driver.kill()
    assert exposed == [], f"listening on non-loopback addresses: {exposed}"
    assert rc == 128 + signal.SIGTERM, stderr[-3000:]
    assert "rerun the same command to resume" in stderr
    first = records(sorted((out / "shards").glob("*.results.jsonl")))
    assert 2 <= len(first) < len(media["reference"]), "the kill did not land mid-job"
    assert not (out / "results.jsonl").exists()

    # The plain rerun on a replacement node, which dies mid-job in its turn; another replacement joins while the
    # driver waits, and the run finishes on its own.
    node = cluster.add_worker()
    driver = Driver(cluster, media, out, "run2")
    try:
        exposed = _kill_mid_job(cluster, node, driver, out, shards=_result_shards(out) + 2)
        done_before = len(records(sorted((out / "shards").glob("*.results.jsonl"))))
        cluster.add_worker()
        rc, stdout, stderr = driver.finish()
    finally:
        driver.kill()
    assert exposed == [], f"listening on non-loopback addresses: {exposed}"
    assert rc == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_already_done"] >= len(first)
    # Every row of the manifest: the good ones and the two that fail (a corrupt video, an over-long instruction).
    assert summary["rows_ok"] + summary["rows_failed"] + summary["rows_already_done"] == len(media["reference"]) + 2
    assert done_before < len(media["reference"]), "the second kill did not land mid-job"
    assert summary["workers_used"] == 2  # the actor on the dead node, then its restart on the replacement
    _assert_exactly_once(out, media, summary)
