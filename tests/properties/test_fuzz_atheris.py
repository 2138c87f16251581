"""Coverage-guided fuzzing with atheris (libFuzzer) of the decoder and the request checks.

The fuzzer runs in its own process, so a native crash inside FFmpeg is caught as a crash (with the input saved by
libFuzzer) instead of taking pytest down. In the suite: a short run (VIDEOITG_ATHERIS_SECONDS, default 6 s).
By hand, a long run from the repository root (figures in docs/reliability.md):

    python -m tests.properties.test_fuzz_atheris -max_total_time=600 -timeout=20 -rss_limit_mb=4096 CORPUS_DIR

First input byte picks the target: decode (rest = video bytes; 6 of 8 values), sampling parameters, or a path
under an allowed root (instructions are left to hypothesis: building the tokenizer would double the start-up).
Only typed `VideoITGError`s may come out; the known bugs (`known_bug` in the two hypothesis modules) are let by.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def main(argv: list[str]) -> None:
    # atheris is optional (the test skips without it), and it instruments only what is imported inside
    # `instrument_imports`, so nothing of videoitg is imported before it
    import atheris

    with atheris.instrument_imports(include=["videoitg"]):
        from tests.support.fuzz import LIMITS, known_bug, known_request_bug
        from videoitg.decode import decode_video
        from videoitg.errors import VideoITGError
        from videoitg.paths import resolve_under_roots
        from videoitg.sampling import SamplingParams, sample_frame_indices

    roots = [os.environ.get("VIDEOITG_ATHERIS_ROOT", "/nonexistent-root")]
    params = SamplingParams(4, 2.0)

    def one_input(data: bytes) -> None:
        if not data:
            return
        target, rest = data[0] % 8, data[1:]
        try:
            if target < 6:  # the decoder gets most of the time: it is the native, riskiest part
                decode_video(rest, image_size=16, params=params, decoder="pyav", time_budget_s=5, limits=LIMITS)
            elif target == 6:
                fdp = atheris.FuzzedDataProvider(rest)
                p = SamplingParams(fdp.ConsumeIntInRange(-2, 1 << 20), fdp.ConsumeRegularFloat(),
                                   fdp.PickValueInList(["eval", "train", "x"]))
                sample_frame_indices(fdp.ConsumeIntInRange(-2, 1 << 21), fdp.ConsumeRegularFloat(), p)
            else:
                resolve_under_roots(rest.decode("utf-8", "surrogateescape"), roots)
        except VideoITGError:
            pass
        except Exception as e:
            kind = "decode" if target < 6 else "sampling" if target == 6 else "path"
            if (known_bug(e) if kind == "decode" else known_request_bug(kind, e)) is None:
                raise

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def write_corpus(d: Path) -> None:
    """Seed corpus: each valid clip behind the decode selector byte, plus an instruction and a path."""
    from tests.support.fuzz import SEEDS, seed_bytes  # not at the top: the fuzzer imports videoitg in `main` only

    d.mkdir(parents=True, exist_ok=True)
    for name in SEEDS:
        (d / name).write_bytes(b"\x00" + seed_bytes(name))
    (d / "sampling").write_bytes(b"\x06" + bytes(range(40)))
    (d / "path").write_bytes(b"\x07a/../x.mp4")


def test_atheris_short_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris not installed (pip install atheris)")
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    seconds = int(os.environ.get("VIDEOITG_ATHERIS_SECONDS", "6"))
    # In the suite: a fixed seed and a bounded run count, so CI replays the same inputs every time (a new finding
    # must not turn CI red at random). Exploration is the long documented run (docs/reliability.md), with its own seeds.
    seed = os.environ.get("VIDEOITG_ATHERIS_SEED", "1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # `tests` importable from tmp_path
    # libFuzzer reads its RSS from `getrusage`, whose peak a program started from this worker begins at the
    # worker's own peak (Linux carries it across exec; gigabytes after the real-shape tests): 3 GiB above that
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    proc = subprocess.run(
        [sys.executable, "-m", "tests.properties.test_fuzz_atheris", f"-max_total_time={seconds}", "-timeout=20",
         f"-rss_limit_mb={3072 + inherited_mb}", f"-seed={seed}", "-runs=400", f"-artifact_prefix={tmp_path}/",
         str(corpus)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=seconds + 120)
    log = proc.stderr[-4000:]
    assert proc.returncode == 0, f"atheris found a crash (inputs saved under {tmp_path}):\n{log}"
    m = re.search(r"Done (\d+) runs", proc.stderr)
    assert m and int(m.group(1)) >= 20, log
    out = os.environ.get("VIDEOITG_FUZZ_REPORT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "fuzz_atheris.txt").write_text(f"runs={m.group(1)} seconds={seconds}\n")


if __name__ == "__main__":
    main(sys.argv)
