"""Shared by the launcher's tests (tests/launch/): small python-backend repositories (an echo model, a slow one), a
`videoitg serve` subprocess and its tritonserver child, a real full disk and a real read-only one (a small tmpfs,
root only)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import ROOT
from videoitg.launch import procfs

if TYPE_CHECKING:
    from videoitg.launch.server import TritonServer

MODEL = '''
import pathlib
import time
import numpy as np
import triton_python_backend_utils as pb_utils

with pathlib.Path(__file__).with_name("imported").open("a") as f:  # once per process that loads this model's code
    f.write("x")


class TritonPythonModel:
    def initialize(self, args):
        {init}

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            pathlib.Path(__file__).with_name("started").touch()  # the request is in the model now
            time.sleep({sleep})
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2)]))
        return out
'''
CONFIG = ('backend: "python"\nmax_batch_size: 0\ninput [{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }]\n'
          'output [{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }]\n')


def write_model(repo: Path, name: str, sleep: float = 0.0, init: str = "pass") -> None:
    """A python model that answers X * 2 as Y after `sleep` seconds; `init`: its initialize's body."""
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "1" / "model.py").write_text(MODEL.format(sleep=sleep, init=init))
    (repo / name / "config.pbtxt").write_text(CONFIG)


def write_repo(r: Path) -> Path:
    """`echo` and `other` (answer at once) and `slow` (30 s a request)."""
    write_model(r, "echo")
    write_model(r, "other")
    write_model(r, "slow", sleep=30.0)
    return r


def infer(srv: TritonServer, model: str = "echo") -> list[float]:
    """`model` of a small repository asked for X = [1.5, 2] through the public HTTP port: Y = [3.0, 4.0]."""
    body = b'{"inputs":[{"name":"X","shape":[2],"datatype":"FP32","data":[1.5,2]}]}'
    with urllib.request.urlopen(urllib.request.Request(f"http://{srv.http_url}/v2/models/{model}/infer", data=body),
                                timeout=60) as r:
        return json.loads(r.read())["outputs"][0]["data"]


def serve(args: list[str]) -> subprocess.Popen:
    """`videoitg serve ARGS`, its stdout and stderr together as text."""
    return subprocess.Popen([sys.executable, "-m", "videoitg", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def server_child(pid: int) -> int:
    """The tritonserver that the launcher `pid` started."""
    for child in procfs.children(pid):
        with contextlib.suppress(OSError):
            if procfs.argv(child)[0].endswith(b"tritonserver"):
                return child
    raise AssertionError("no tritonserver child")


@contextlib.contextmanager
def full_disk(base: Path, size: int = 1 << 20, options: str = "") -> Iterator[Path]:
    """A real tmpfs of `size` bytes under `base` (skips where this process may not mount one: root only), with the
    mount `options` given (`noexec`, ...); `fill` it to make it full. Unmounted at the end."""
    disk = base / f"disk-{uuid.uuid4().hex[:8]}"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *filter(None, [options])]), "tmpfs", str(disk)],
            capture_output=True).returncode:
        pytest.skip("a real full disk needs a tmpfs, which only root may mount")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, *grown: Path) -> None:
    """Take every free byte of `disk` (a tmpfs from `full_disk`), also the room left in the last page of each file
    in `grown` (a log: a tmpfs takes a write into a page the file holds already)."""
    with contextlib.suppress(OSError), open(disk / "filler", "ab", buffering=0) as f:
        while True:
            f.write(b"\0" * (64 << 10))
    for path in (disk / "filler", *grown):
        with contextlib.suppress(OSError), open(path, "ab", buffering=0) as f:
            while True:
                f.write(b"\n")


@contextlib.contextmanager
def read_only_disk(base: Path, made: tuple[str, ...] = ()) -> Iterator[Path]:
    """A real read-only filesystem under `base` (a tmpfs remounted read-only; skips where this process may not mount
    one: root only), holding the empty directories `made`. Unmounted at the end."""
    with full_disk(base) as disk:
        for name in made:
            (disk / name).mkdir(parents=True)
        if subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode:
            pytest.skip("the tmpfs could not be made read-only")
        yield disk
