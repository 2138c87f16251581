"""A soak of `videoitg serve` (the CPU repository of the embedded checkpoint, its answer endpoint before a real
`transformers serve` video-LLM) on loopback: mixed traffic (cached and cold requests over HTTP and gRPC, the page's
calls, the answer endpoint) at --load of the capacity measured first (and measured again after), the feature cache
filled to its bound first (`fill_cache`), one python stub SIGKILLed every --kill-every-s (the models in turn), a
`videoitg batch` run through the server; every answer compared with the in-process scorer's, every process's
memory sampled. Judged by `benchmarks.serving.soak_judge`;
written to OUT/soak.json (the command, machine and date with every figure), OUT/attempts.csv.gz (every try: its
kind, when it was sent and answered, how it went) and OUT/soak.png.

    python -m benchmarks.serving.soak [--minutes 30] [--kill-every-s 300] [--load 0.8] [--out DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import datetime
import gzip
import heapq
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.clips import random_clip
from benchmarks.serving.soak_judge import P99_SPAN_S, Attempt, cpu_by_process, cpu_shares, judge, window_median
from videoitg.client.routing import BACKOFF_S, retry_wait
from videoitg.launch import procfs
from videoitg.launch.perf import distinct_copy
from videoitg.launch.ports import free_ports
from videoitg.perf.record import machine

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("videoitg", "videoitg_decode", "videoitg_vision", "videoitg_grounding")  # the python stubs killed in turn
# The mix, in order: each kind's share of the requests sent.
MIX = ("cached http", "cached grpc", "cold http", "cached grpc", "page", "cached http", "cold grpc", "answer",
       "cached http", "cached grpc")
INSTRUCTION = "When is the red circle visible?"
TOP_K = 4
ATOL = 1e-4  # served logits against the in-process scorer's (the tests hold 1e-5)
GIVE_UP_S = 120.0  # a request not answered right within this long is lost
CACHE_BYTES = 32 << 20  # the feature cache's bound, small so that it is meant to be full before the memory span
FILLED = 0.95  # the feature cache is filled to this share of its bound before the traffic
FILL_GIVE_UP_S = 600.0  # a fill that takes longer is stopped (the record says how full it got)
SAMPLE_S = 10.0  # between two memory samples
SENDERS = 64  # threads sending requests (a request waiting to be tried again holds none)
PROGRESS_S = 60.0  # a line of progress this often while the traffic runs


class Soak:
    """The server, its video-LLM and what the traffic sends and expects."""

    def __init__(self, work: Path, vlm: Any | None) -> None:
        from videoitg.defaults import default_checkpoint
        from videoitg.pipeline.scorer import Scorer
        from videoitg.synthetic.sample import sample_video

        self.work, self.vlm = work, vlm
        sample, _ = sample_video()
        self.clips = [sample.read_bytes()] + [random_clip(work / f"r{i}.mp4", 1000 + i) for i in range(2)]
        for i, data in enumerate(self.clips):
            (work / f"c{i}.mp4").write_bytes(data)
        scorer = Scorer(default_checkpoint())
        self.reference = [np.asarray(scorer.score(str(work / f"c{i}.mp4"), INSTRUCTION).logits, np.float64)
                          for i in range(len(self.clips))]
        self.run_tag = os.urandom(8)
        self.copies = 0
        self.lock = threading.Lock()
        self.ports = free_ports(3)
        self.proc: subprocess.Popen | None = None
        self.local = threading.local()

    # ---- the server -------------------------------------------------------------------------------------------
    def start(self, log: Path, repository: Path | None = None) -> None:
        """`videoitg serve` of the CPU repository it generates, or of `repository` (its cache bound its own)."""
        where = ["--model-repository", str(repository)] if repository else ["--target", "cpu", "--cache-bytes",
                                                                              str(CACHE_BYTES)]
        cmd = [sys.executable, "-m", "videoitg", "serve", *where, "--log", str(log), "--http-port",
               str(self.ports[0]), "--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2])]
        if self.vlm is not None:
            cmd += ["--answer-upstream", self.vlm.base_url]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.said: list[str] = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("videoitg serve exited before it was ready:\n" + "".join(self.said))
            self.said.append(line)
            if line.startswith("ready:"):
                break
        self.said_at: list[tuple[float, str]] = []
        threading.Thread(target=self._hear, daemon=True).start()

    def _hear(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.said.append(line)
            self.said_at.append((time.monotonic(), line))

    def restarts(self, t0: float) -> list[dict[str, Any]]:
        """tritonserver's restarts by supervision (`held.HELD_MAX` replaced instances kept, a crash): from the line
        that says it goes to the one that says it is ready again, in seconds after `t0`."""
        out: list[dict[str, Any]] = []
        for t, line in list(self.said_at):
            going = "tritonserver keeps" in line or "killing it to start it again" in line or (
                "tritonserver exited unexpectedly" in line)
            if going and "tritonserver" in line and not (out and out[-1]["ready_s"] is None):
                out.append({"model": "tritonserver", "why": line.strip(), "at_s": t - t0, "ready_s": None})
            elif "tritonserver ready again" in line and out and out[-1]["ready_s"] is None:
                out[-1]["ready_s"] = t - t0
        return [r for r in out if r["ready_s"] is not None]

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(120)

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    def processes(self) -> dict[str, int]:
        """Every process of the deployment by role: the launcher, the front, tritonserver, each model's stub, the
        video-LLM."""
        assert self.proc is not None
        out = {"launcher": self.proc.pid}
        triton = next((c for c in procfs.children(self.proc.pid)
                       if procfs.argv(c)[0].endswith(b"tritonserver")), None)
        front = next((c for c in procfs.children(self.proc.pid) if c != triton), None)
        if front is not None:
            out["front"] = front
        if triton is not None:
            out["tritonserver"] = triton
            for model, pids in procfs.stub_pids(triton).items():
                out[f"stub {model}"] = min(pids)
        if self.vlm is not None:
            out["video-LLM"] = self.vlm.process.pid
        return out

    def cache_gauges(self) -> tuple[float, float] | None:
        """The feature cache's bytes and entries, from the metrics port (None while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[2]}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        found = dict(re.findall(r'^videoitg_feature_cache_(bytes|entries)\{[^}]*model="videoitg"[^}]*\} (\S+)$',
                                text, re.M))
        return (float(found["bytes"]), float(found["entries"])) if len(found) == 2 else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    # ---- one request of each kind: "ok", "wrong" or "error" with the text --------------------------------------
    def client(self, protocol: str) -> Any:
        from videoitg.client.kserve import VideoITGClient

        key = f"c_{protocol}"
        if getattr(self.local, key, None) is None:
            url = self.http if protocol == "http" else f"127.0.0.1:{self.ports[1]}"
            setattr(self.local, key, VideoITGClient(url, protocol, timeout_s=GIVE_UP_S))
        return getattr(self.local, key)

    def video(self, n: int, cold: bool) -> tuple[bytes, int]:
        i = n % len(self.clips)
        if not cold:
            return self.clips[i], i
        with self.lock:
            self.copies += 1
            number = self.copies
        return distinct_copy(self.clips[i], self.run_tag, number), i

    def scored(self, kind: str, n: int) -> tuple[str, str]:
        from videoitg.request.options import RequestOptions

        protocol = "grpc" if kind.endswith("grpc") else "http"
        data, i = self.video(n, kind.startswith("cold"))
        options = RequestOptions(top_k=TOP_K, frames="jpeg", frame_size=160) if kind == "page" else RequestOptions()
        served = self.client(protocol).infer(data, INSTRUCTION, options)
        if np.max(np.abs(np.asarray(served.result.logits, np.float64) - self.reference[i])) > ATOL:
            return "wrong", f"logits differ from the in-process scorer's (clip {i})"
        if kind == "page" and len(served.images()) != TOP_K:
            return "wrong", f"{len(served.images())} frames, not {TOP_K}"
        return "ok", ""

    def page(self, n: int) -> tuple[str, str]:
        """The page's own calls (its files, the model's metadata, config and readiness), then its score."""
        for path in ("/", "/page.js", "/page.css", "/v2/models/videoitg", "/v2/models/videoitg/config"):
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=GIVE_UP_S) as r:
                r.read()
        try:  # readiness: 400 while a step is repaired is an answer (the page says "not ready yet"), not an error
            urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=GIVE_UP_S).close()
        except urllib.error.HTTPError as e:
            if e.code != 400:
                raise
        return self.scored("page", n)

    def answer(self, n: int) -> tuple[str, str]:
        from videoitg.request.options import RequestOptions, select

        i = n % len(self.clips)
        url = "data:video/mp4;base64," + base64.b64encode(self.clips[i]).decode()
        body = json.dumps({"model": self.vlm.model, "max_tokens": 4, "videoitg": {"top_k": TOP_K},
                           "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                                     {"type": "text", "text": INSTRUCTION}]}]})
        req = urllib.request.Request(f"http://{self.http}/v1/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=GIVE_UP_S) as r:
            got = json.loads(r.read())
        expected = self.expected_frames(i, select, RequestOptions(top_k=TOP_K))
        if got.get("videoitg", {}).get("frames") != expected or not got.get("choices"):
            return "wrong", f"frames {got.get('videoitg', {}).get('frames')}, expected {expected}"
        return "ok", ""

    def expected_frames(self, i: int, select: Callable[..., list[int]], options: Any) -> list[int]:
        if not hasattr(self, "_expected"):
            self._expected: dict[int, list[int]] = {}
        if i not in self._expected:
            served = self.client("http").infer(self.clips[i], INSTRUCTION, options)
            self._expected[i] = [served.result.frame_indices[p] for p in select(served.result, options)]
        return self._expected[i]

    def one(self, kind: str, n: int) -> tuple[str, str]:
        from videoitg.client.kserve import RemoteError

        try:
            if kind == "page":
                return self.page(n)
            if kind == "answer":
                return self.answer(n)
            return self.scored(kind, n)
        except RemoteError as e:
            return "error", str(e)
        except urllib.error.HTTPError as e:
            return "error", f"HTTP {e.code}: {e.read()[:300].decode(errors='replace')}"
        except Exception as e:  # a connection refused or reset: said as it is (the judge wants a step named)
            return "error", f"{type(e).__name__}: {e}"


class Run:
    """The attempts of the traffic and what they saw; each request tried again until it is answered right (or lost),
    after the project's own clients' waits (`client.routing`: `BACKOFF_S` spread by `retry_wait`). A request waiting
    to be tried again holds no sender: it is handed to one when its wait ends, so the arrivals stay on time however
    many requests wait (the users of a server are not a pool of senders)."""

    def __init__(self, soak: Soak, t0: float) -> None:
        self.soak, self.t0 = soak, t0
        self.attempts: list[Attempt] = []
        self.lost = 0
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="soak-request")
        self._due: list[tuple[float, int, tuple[Any, ...]]] = []  # the tries to come: (when, order, arguments)
        self._order = itertools.count()
        self._open = 0  # requests neither answered nor lost yet
        self._changed = threading.Condition()
        threading.Thread(target=self._hand_on, daemon=True, name="soak-retries").start()

    def send(self, kind: str, n: int, arrived: float) -> None:
        with self._changed:
            self._open += 1
        self.pool.submit(self.request, kind, n, arrived, arrived, 0)

    def request(self, kind: str, n: int, arrived: float, sent: float, tries: int) -> None:
        """One try, sent at `sent` (the first at its arrival: a wait for a sender counts in its latency)."""
        outcome, text = self.soak.one(kind, n)
        done = time.monotonic()
        give_up = arrived + GIVE_UP_S
        with self.lock:
            self.attempts.append(Attempt(kind, sent - self.t0, done - self.t0, outcome, text[:400]))
            if outcome == "error" and done >= give_up:
                self.lost += 1
        with self._changed:
            if outcome == "error" and done < give_up:
                due = done + min(retry_wait(BACKOFF_S[min(tries, len(BACKOFF_S) - 1)]), give_up - done)
                heapq.heappush(self._due, (due, next(self._order), (kind, n, arrived, due, tries + 1)))
            else:
                self._open -= 1
            self._changed.notify_all()

    def _hand_on(self) -> None:
        """Each try whose wait is over, to a sender."""
        with self._changed:
            while True:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    self.pool.submit(self.request, *heapq.heappop(self._due)[2])
                else:
                    self._changed.wait(self._due[0][0] - now if self._due else None)

    def finish(self) -> None:
        """Wait until every request sent is answered or lost."""
        with self._changed:
            while self._open:
                self._changed.wait()
        self.pool.shutdown()


def one_after_another(soak: Soak, workers: int, kinds: tuple[str, ...], going: Callable[[], bool]) -> Counter[str]:
    """`workers` clients, each sending requests of `kinds` in turn one after another while `going()`: how many
    requests ended each way ('ok', 'wrong', 'error')."""
    def client(w: int) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        n = w
        while going():
            outcomes[soak.one(kinds[n % len(kinds)], n)[0]] += 1
            n += workers
        return outcomes

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(client, range(workers)), Counter())


def capacity(soak: Soak, seconds: float, workers: int) -> float:
    """Requests a second of the mix the server answers with `workers` clients sending one after another."""
    end = time.monotonic() + seconds
    return sum(one_after_another(soak, workers, MIX, lambda: time.monotonic() < end).values()) / seconds


def fill_cache(soak: Soak, workers: int, bound: float = CACHE_BYTES, give_up_s: float = FILL_GIVE_UP_S,
               look_s: float = 1.0) -> dict[str, float]:
    """Cold requests from `workers` clients until the feature cache holds `FILLED` of its `bound` (its gauges,
    looked at every `look_s`), so that the first window of the p99 goal does not hold the cache's first filling (the
    fillings after a kill of the top-level stub or a restart fall where they fall). How full, how many requests,
    how many answered wrong (judged with the traffic's) or with an error, how long; no new request after
    `give_up_s`."""
    full, held = threading.Event(), [0.0]
    t = time.monotonic()

    def watch() -> None:
        while not full.is_set() and time.monotonic() - t < give_up_s:
            gauges = soak.cache_gauges()
            held[0] = gauges[0] if gauges else held[0]
            if held[0] >= FILLED * bound:
                full.set()
            time.sleep(look_s)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    outcomes = one_after_another(soak, workers, ("cold http", "cold grpc"),
                                 lambda: not full.is_set() and time.monotonic() - t < give_up_s)
    full.set()
    watcher.join()
    return {"bytes": held[0], "share": held[0] / bound, "requests": float(sum(outcomes.values())),
            "wrong": float(outcomes["wrong"]), "errors": float(outcomes["error"]), "took_s": time.monotonic() - t}


def traffic(soak: Soak, run: Run, rate: float, duration_s: float, stop: threading.Event) -> int:
    """Requests of the mix arriving at `rate` a second for `duration_s`; returns once each is answered or lost."""
    n = 0
    while not stop.is_set():
        arrive = run.t0 + n / rate
        if arrive - run.t0 >= duration_s:
            break
        time.sleep(max(0.0, arrive - time.monotonic()))
        run.send(MIX[n % len(MIX)], n, arrive)
        n += 1
    run.finish()
    return n


def kills(soak: Soak, run: Run, every_s: float, duration_s: float, stop: threading.Event,
          kills_out: list[dict[str, Any]]) -> None:
    """A python stub SIGKILLed every `every_s` (the models in turn), the first half a period in, and how long until
    the server was ready again. Half a period in: every span of twice `every_s` holds two repairs, so the first and
    the last 10 minutes the p99 goal compares hold as many (at 300 s: 2:30, 7:30, ... 27:30)."""
    k = 0
    while not stop.wait(max(0.0, run.t0 + (k + 0.5) * every_s - time.monotonic())):
        if (k + 0.5) * every_s >= duration_s:
            return
        model = MODELS[k % len(MODELS)]
        pid = soak.processes().get(f"stub {model}")
        k += 1
        if pid is None:
            continue
        t = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        t_down = t + 5.0
        while time.monotonic() < t_down and soak.ready():  # the watchdog's look: about a second
            time.sleep(0.05)
        while not soak.ready() and not stop.is_set():
            time.sleep(0.1)
        kills_out.append({"model": model, "pid": pid, "at_s": t - run.t0, "ready_s": time.monotonic() - run.t0})
        print(f"{clock(t - run.t0)} killed the stub of {model}; ready again {time.monotonic() - t:.1f} s later",
              flush=True)


def clock(at_s: float) -> str:
    """Seconds from the soak's start as mm:ss."""
    return f"{int(at_s // 60):02d}:{int(at_s % 60):02d}"


def progress_line(recent: list[Attempt], since: float, now: float, lost: int) -> str:
    """The tries answered since the last line (`since` to `now`, seconds from the start): how many, how fast, errors
    and wrong answers, their p99; and the requests lost so far."""
    ok = [a.latency for a in recent if a.outcome == "ok"]
    p99 = f"{np.percentile(ok, 99):.3f} s" if ok else "-"
    return (f"{clock(now)} {len(ok)} answered ({len(ok) / max(now - since, 1e-9):.1f}/s), "
            f"{sum(a.outcome == 'error' for a in recent)} errors, {sum(a.outcome == 'wrong' for a in recent)} wrong, "
            f"p99 {p99}; {lost} lost so far")


def progress(run: Run, stop: threading.Event) -> None:
    """A `progress_line` every PROGRESS_S while the traffic runs."""
    seen, since = 0, 0.0
    while not stop.wait(max(0.0, run.t0 + since + PROGRESS_S - time.monotonic())):
        with run.lock:  # each try in one line: those appended since the last
            new, seen, lost = run.attempts[seen:], len(run.attempts), run.lost
            now = time.monotonic() - run.t0
        print(progress_line(new, since, now, lost), flush=True)
        since = now


def cpu_jiffies() -> tuple[float, float, float]:
    """The machine's CPU time so far (/proc/stat's first line): busy (not idle or iowait), stolen, total."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, steal, sum(fields)


def fixed_work_cpu_s() -> float:
    """CPU seconds this thread spent on one fixed piece of work (a pure-Python loop and a pass over 8 MiB, both on
    this thread alone): the speed the machine gives a process now. Waiting for the GIL or a core is not counted;
    busier cores (the soak's own processes on the shared caches and memory bus, or a neighbour's) or a lower clock
    make it take more. (`np.dot` would not do: BLAS splits it over threads and the caller's wait for them counts.)"""
    data = np.ones(1 << 20)
    t = time.thread_time()
    total = 0
    for i in range(200_000):
        total += i * i
    float(data.sum())
    return time.thread_time() - t


def memory(soak: Soak, run: Run, stop: threading.Event, out: dict[str, list[tuple[float, ...]]],
           cache: list[tuple[float, float, float]], cpu: list[tuple[float, ...]],
           cpu_s: dict[str, list[tuple[float, ...]]], speed: list[tuple[float, float]]) -> None:
    """Every process's resident memory (time, bytes, pid, threads) and /dev/shm's bytes into `out`; the feature
    cache's bytes and entries (the server's own gauges) into `cache`; the machine's CPU time (`cpu_jiffies`) into
    `cpu`; each process's CPU seconds so far, this soak's own (its clients) too, into `cpu_s`; the CPU a fixed piece
    of work took (`fixed_work_cpu_s`) into `speed`."""
    t = 0.0
    while True:
        cpu.append((t, *cpu_jiffies()))
        speed.append((t, fixed_work_cpu_s()))
        server = soak.processes()
        for role, pid in {**server, "soak clients": os.getpid()}.items():
            with contextlib.suppress(OSError):  # a process that ended between the two reads
                cpu_s.setdefault(role, []).append((t, procfs.stat_file_cpu_s(Path(f"/proc/{pid}/stat")), pid))
        for role, pid in server.items():
            with contextlib.suppress(OSError):
                threads = len(os.listdir(f"/proc/{pid}/task"))  # a process's threads: each holds memory
                if (rss := procfs.rss_mib(pid)) > 0:
                    out.setdefault(role, []).append((t, rss * 2**20, pid, threads))
        shm = sum(p.stat().st_size for p in Path("/dev/shm").glob("videoitg_*") if p.is_file())
        out.setdefault("/dev/shm (videoitg)", []).append((t, float(shm)))
        if (gauges := soak.cache_gauges()) is not None:
            cache.append((t, *gauges))
        if stop.wait(SAMPLE_S):
            return
        t = time.monotonic() - run.t0


def batch(soak: Soak, run: Run, at_s: float, stop: threading.Event, out: dict[str, Any]) -> None:
    """`videoitg batch` of 24 rows (the clips, 8 rows each) through the server's gRPC port: every row once, each
    scored as in-process."""
    if stop.wait(max(0.0, run.t0 + at_s - time.monotonic())):
        return
    manifest = soak.work / "manifest.jsonl"
    rows = [{"id": f"row{r}", "doc_id": r, "video": str(soak.work / f"c{r % len(soak.clips)}.mp4"),
             "instruction": INSTRUCTION} for r in range(24)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "videoitg", "batch", str(manifest), "--out", str(soak.work / "batch"),
                        "--server", f"127.0.0.1:{soak.ports[1]}", "--workers", "1"], capture_output=True, text=True,
                       cwd=ROOT, timeout=1800)
    records = [json.loads(line) for line in (soak.work / "batch" / "results.jsonl").read_text().splitlines()] \
        if (soak.work / "batch" / "results.jsonl").exists() else []
    ids = sorted(rec["doc_id"] for rec in records)
    n = len(soak.clips)
    right = sum(np.max(np.abs(np.asarray(rec["scores"]) - 1 / (1 + np.exp(-soak.reference[rec["doc_id"] % n]))))
                <= 1e-5 for rec in records)
    out.update(rows=len(rows), written=len(records), once=ids == list(range(len(rows))), right=right,
               exit=p.returncode, at_s=t - run.t0, took_s=time.monotonic() - t, tail=p.stderr[-500:])


def errors_per_10s(attempts: list[Attempt]) -> dict[int, dict[str, int]]:
    """Errors by the 10 s they were answered in (seconds from the start) and their text (numbers left out)."""
    out: dict[int, dict[str, int]] = {}
    for a in attempts:
        if a.outcome == "error":
            bucket = out.setdefault(int(a.done // 10 * 10), {})
            text = re.sub(r"\d+", "N", a.text)[:90]
            bucket[text] = bucket.get(text, 0) + 1
    return out


def picture(attempts: list[Attempt], kills_done: list[dict[str, Any]], mem: dict[str, list[tuple[float, ...]]],
            cache: list[tuple[float, float, float]], cpu: list[tuple[float, ...]], speed: list[tuple[float, float]],
            out: Path) -> Path:
    """Every request's latency, each process's memory and threads (a record without threads: that panel empty), and
    the machine: its CPU busy and the CPU one fixed piece of work took (how much speed the machine gave a process)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.figures import save

    fig, (lat, rss, thr, box) = plt.subplots(4, 1, figsize=(11, 11.5), sharex=True, height_ratios=(3, 3, 1.4, 1.4))
    for kind in sorted({a.kind for a in attempts}):
        ok = [a for a in attempts if a.kind == kind and a.outcome == "ok"]
        lat.scatter([a.sent / 60 for a in ok], [a.latency for a in ok], s=3, label=kind)
    err = [a for a in attempts if a.outcome != "ok"]
    lat.scatter([a.done / 60 for a in err], [max(a.latency, 1e-3) for a in err], s=14, marker="x", color="red",
                label="error (retried)")
    for ax in (lat, rss, thr, box):
        for k in kills_done:
            ax.axvspan(k["at_s"] / 60, k["ready_s"] / 60, color="grey", alpha=0.3)
    lat.set_yscale("log")
    lat.set_ylabel("latency (s)")
    lat.set_title("requests, the stub kills and tritonserver's restarts (grey: until ready again)")
    lat.legend(fontsize=7, ncol=4, markerscale=3)
    for role, samples in sorted(mem.items()):
        rss.plot([s[0] / 60 for s in samples], [s[1] / 2**20 for s in samples], label=role)
    if cache:
        rss.plot([t / 60 for t, _, _ in cache], [b / 2**20 for _, b, _ in cache], "k--", label="feature cache (bytes)")
    rss.set_yscale("log")
    rss.set_ylabel("resident memory (MiB)")
    rss.legend(fontsize=7, ncol=3)
    for role, samples in sorted(mem.items()):
        threads = [s for s in samples if len(s) > 3]
        thr.plot([s[0] / 60 for s in threads], [s[3] for s in threads], label=role)
    thr.set_yscale("log")
    thr.set_ylabel("threads")
    thr.set_title("each process's threads, coloured as above (a kept instance holds its own in tritonserver)",
                  fontsize=9)
    busy = [(b[0], 100 * (b[1] - a[1]) / (b[3] - a[3])) for a, b in itertools.pairwise(cpu) if b[3] > a[3]]
    box.plot([t / 60 for t, _ in busy], [v for _, v in busy], color="tab:blue", label="machine CPU busy (%)")
    box.set_ylim(0, 100)
    box.set_ylabel("busy (%)")
    box.set_xlabel("minutes")
    work = box.twinx()
    work.plot([t / 60 for t, _ in speed], [v * 1e3 for _, v in speed], ".", color="tab:red", markersize=3)
    work.set_yscale("log")  # a probe caught by a busy moment stays on the scale without flattening the rest
    work.set_ylabel("fixed work (ms CPU)", color="tab:red")
    box.set_title("the machine: CPU busy (blue), CPU one fixed piece of work took (red: higher, each process slower)",
                  fontsize=9)
    return save(fig, out)


def redraw(folder: Path) -> Path:
    """A record's picture drawn again from what it kept (a record without the machine's samples: those panels
    empty)."""
    record = json.loads((folder / "soak.json").read_text())
    with gzip.open(folder / "attempts.csv.gz", "rt", newline="") as f:
        attempts = [Attempt(r["kind"], float(r["sent_s"]), float(r["done_s"]), r["outcome"]) for r in csv.DictReader(f)]
    return picture(attempts, record["kills"] + record["restarts"], record["memory"],
                   [tuple(x) for x in record["feature_cache"]["samples"]],
                   [tuple(x) for x in record.get("machine_cpu", {}).get("samples", [])],
                   [tuple(x) for x in record.get("fixed_work", {}).get("samples", [])], folder / "soak.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="the soak's traffic, after the capacity is measured")
    ap.add_argument("--kill-every-s", type=float, default=300.0, help="seconds between two stub kills")
    ap.add_argument("--load", type=float, default=0.8, help="share of the measured capacity sent")
    ap.add_argument("--capacity-s", type=float, default=60.0, help="seconds of the capacity measurement")
    ap.add_argument("--capacity-clients", type=int, default=4, help="clients of the capacity measurement")
    ap.add_argument("--batch-at", type=float, default=1 / 3,
                    help="when the batch run starts, as a share of the soak (10:00 of 30 min: between two kills)")
    ap.add_argument("--no-answer", action="store_true", help="no video-LLM (and no answer endpoint traffic)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak")
    ap.add_argument("--redraw", type=Path, help="draw a record's picture again from its soak.json and attempts.csv.gz "
                    "(in that folder), and run nothing")
    args = ap.parse_args()
    if args.redraw:
        print(f"wrote {redraw(args.redraw)}")
        return 0
    global MIX
    if args.no_answer:
        MIX = tuple(k for k in MIX if k != "answer")
    work = Path(tempfile.mkdtemp(prefix="videoitg-soak-"))
    args.out.mkdir(parents=True, exist_ok=True)
    from contextlib import ExitStack

    from benchmarks.answer.vlm import build_tiny_vlm, serve_vlm

    with ExitStack() as stack:
        vlm = None if args.no_answer else stack.enter_context(serve_vlm(build_tiny_vlm(work / "vlm"),
                                                                        work / "vlm.log"))
        soak = Soak(work, vlm)
        soak.start(work / "server.log")
        stack.callback(soak.stop)
        for n in range(len(MIX)):  # warm: every kind once, the answer's expected frames read
            print("warm-up", MIX[n], soak.one(MIX[n], n), flush=True)
        cap = capacity(soak, args.capacity_s, args.capacity_clients)
        filled = fill_cache(soak, args.capacity_clients)
        print(f"feature cache filled to {filled['share']:.0%} of its bound by {filled['requests']:.0f} cold requests "
              f"in {filled['took_s']:.0f} s", flush=True)
        rate = args.load * cap
        duration = args.minutes * 60
        print(f"capacity {cap:.2f} requests/s of the mix; sending {rate:.2f}/s for {args.minutes:g} min", flush=True)
        run = Run(soak, time.monotonic())
        stop = threading.Event()
        kills_done: list[dict[str, Any]] = []
        mem: dict[str, list[tuple[float, ...]]] = {}
        cache: list[tuple[float, float, float]] = []
        cpu: list[tuple[float, ...]] = []
        proc_cpu: dict[str, list[tuple[float, ...]]] = {}
        speed: list[tuple[float, float]] = []
        batch_out: dict[str, Any] = {}
        helpers = [threading.Thread(target=kills, args=(soak, run, args.kill_every_s, duration, stop, kills_done)),
                   threading.Thread(target=memory, args=(soak, run, stop, mem, cache, cpu, proc_cpu, speed)),
                   threading.Thread(target=batch, args=(soak, run, args.batch_at * duration, stop, batch_out)),
                   threading.Thread(target=progress, args=(run, stop))]
        for h in helpers:
            h.start()
        sent = traffic(soak, run, rate, duration, stop)
        stop.set()
        for h in helpers:
            h.join()
        # Measured again: a shared machine's speed drifts, and a rate set from a fast start can be its whole
        # capacity by the end (the latency goal then reads the machine, not the server).
        cap_after = capacity(soak, args.capacity_s, args.capacity_clients)
        print(f"capacity after the traffic {cap_after:.2f} requests/s", flush=True)
        restarts = soak.restarts(run.t0)
        windows = [(k["at_s"], k["ready_s"]) for k in kills_done + restarts]
        verdict = judge(run.attempts, run.lost, windows, mem, duration,
                        [(r["at_s"], r["ready_s"]) for r in restarts])
        verdict.goals["nothing answered wrong"] &= filled["wrong"] == 0  # the fill's answers too
        verdict.goals["batch: every row once, scored right"] = bool(
            batch_out and batch_out.get("exit") == 0 and batch_out.get("once", False)
            and batch_out.get("right") == batch_out.get("rows"))
        code = soak.stop()
        soak.proc = None  # stopped: the stack's callback has nothing left to do
    kinds = sorted({a.kind for a in run.attempts})
    per_kind = {k: {"requests": sum(a.kind == k and a.outcome == "ok" for a in run.attempts),
                    "p50_s": float(np.median([a.latency for a in run.attempts if a.kind == k and a.outcome == "ok"])),
                    "p99_s": float(np.percentile([a.latency for a in run.attempts
                                                  if a.kind == k and a.outcome == "ok"], 99))} for k in kinds}
    record = {"command": " ".join(["python -m benchmarks.serving.soak", *sys.argv[1:]]),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": {**machine(), "load_average_at_end": os.getloadavg()},
              "capacity_per_s": cap, "capacity_after_per_s": cap_after, "rate_per_s": rate, "sent": sent,
              "minutes": args.minutes,
              "goals": verdict.goals, "met": verdict.met and code == 0, "figures": verdict.figures,
              "per_kind": per_kind, "kills": kills_done, "restarts": restarts, "batch": batch_out, "serve_exit": code,
              "errors": [asdict(a) for a in run.attempts if a.outcome != "ok"][:50],
              "memory": {k: v for k, v in mem.items()},
              "feature_cache": {"filled_before": filled, "columns": ["s", "bytes", "entries"], "samples": cache},
              "machine_cpu": {"first_10_min": cpu_shares(cpu, 0, P99_SPAN_S),
                              "last_10_min": cpu_shares(cpu, duration - P99_SPAN_S, duration),
                              "columns": ["s", "busy", "steal", "total"], "samples": cpu},
              "cpu_by_process": {  # cores used on average, each window; samples: (s, CPU seconds so far, pid)
                  "first_10_min": cpu_by_process(proc_cpu, cpu, 0, P99_SPAN_S, 1 / os.sysconf("SC_CLK_TCK")),
                  "last_10_min": cpu_by_process(proc_cpu, cpu, duration - P99_SPAN_S, duration,
                                                1 / os.sysconf("SC_CLK_TCK")),
                  "samples": proc_cpu},
              "fixed_work": {  # CPU seconds of one fixed piece of work (fixed_work_cpu_s), median of each window
                  "first_10_min": window_median(speed, 0, P99_SPAN_S),
                  "last_10_min": window_median(speed, duration - P99_SPAN_S, duration), "samples": speed},
              "errors_per_10s": errors_per_10s(run.attempts),
              "serve_said": [x for x in soak.said if "videoitg" in x][-40:]}
    (args.out / "soak.json").write_text(json.dumps(record, indent=1, default=float))
    with gzip.open(args.out / "attempts.csv.gz", "wt", newline="") as f:  # every try, for a look at a repair's
        w = csv.writer(f)
        w.writerow(["kind", "sent_s", "done_s", "outcome"])
        w.writerows((a.kind, f"{a.sent:.4f}", f"{a.done:.4f}", a.outcome) for a in run.attempts)
    picture(run.attempts, kills_done + restarts, mem, cache, cpu, speed, args.out / "soak.png")
    print(json.dumps({k: record[k] for k in ("capacity_per_s", "capacity_after_per_s", "rate_per_s", "sent", "goals",
                                             "met")}, indent=1))
    print(json.dumps({k: v for k, v in verdict.figures.items() if k not in ("errors_outside", "errors_unnamed")},
                     indent=1, default=float))
    print(f"wrote {args.out / 'soak.json'}, {args.out / 'attempts.csv.gz'} and {args.out / 'soak.png'}")
    return 0 if record["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
