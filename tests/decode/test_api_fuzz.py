"""Fuzzing (hypothesis) of the decoder on mutated video bytes: small valid clips in five containers/codecs,
mutated by byte flips, size-field overwrites, insertions, deletions, duplicated chunks, cuts and splices.

Property: `decode_video` / `probe_video` return well-formed frames or raise a typed `VideoITGError`; nothing
else escapes, nothing crashes the process, and every call returns within its time budget (+ slack).
VIDEOITG_FUZZ_EXAMPLES scales the run; VIDEOITG_FUZZ_REPORT=DIR writes the counts to DIR/fuzz_decode.json.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.support import DATA
from tests.support import fuzz as support_fuzz
from tests.support.fuzz import FFMPEG_ERRORS, INTERESTING, LIMITS, SEEDS, known_bug, mutate, seed_bytes
from videoitg.decode import DecodeTimeoutError, SampledFrames, dali_available, decode_video, probe_video
from videoitg.errors import VideoITGError
from videoitg.sampling import SamplingParams

BUDGET_S = 5.0
SLACK_S = 3.0  # thread start/join and a loaded CI machine
COUNTS: Counter[str] = Counter()


def fuzz(ci_examples: int):
    return support_fuzz.fuzz(ci_examples, HealthCheck.data_too_large)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    support_fuzz.write_report("fuzz_decode", COUNTS)


# ---- mutations -----------------------------------------------------------------------------------------------
position = st.floats(0, 1, exclude_max=True) | st.floats(0, 0.08)  # bias toward headers (sizes, counts, codecs)
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(1, 255)),
    st.tuples(st.just("int"), position, st.sampled_from(INTERESTING), st.sampled_from([1, 2, 4, 8])),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), position, st.integers(1, 256)),
    st.tuples(st.just("dup"), position, st.integers(1, 512), position),
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("splice"), position, st.sampled_from(sorted(SEEDS)), position, st.integers(16, 2048)),
)


# ---- the property --------------------------------------------------------------------------------------------
def check_frames(out: SampledFrames, image_size: int) -> None:
    T = len(out.frame_indices)
    assert T >= 1 and out.pixel_values.shape == (T, 3, image_size, image_size)
    assert bool(out.pixel_values.isfinite().all()) and float(out.pixel_values.abs().max()) <= 1.0 + 1e-6
    assert out.frame_indices == sorted(out.frame_indices) and 0 <= out.frame_indices[0]
    assert out.frame_indices[-1] < out.total_frames and len(out.timestamps) == T
    assert all(math.isfinite(t) for t in out.timestamps) and math.isfinite(out.fps) and out.fps > 0


# Inputs that crash an unguarded decoder (docs/reliability/defects.md, D1/D2): the regression tests below
# pin them. Should one come back, it is reported as "known" so the fuzzer keeps looking for new ones.
def run_case(kind: str, data: bytes, decoder: str = "pyav") -> None:
    COUNTS[kind] += 1
    params = SamplingParams(4, target_fps=2.0)
    t0 = time.monotonic()
    try:
        out = decode_video(data, image_size=16, params=params, decoder=decoder, time_budget_s=BUDGET_S,
                           limits=LIMITS)
        check_frames(out, 16)
        COUNTS[f"{kind}:decoded"] += 1
    except VideoITGError as e:
        COUNTS[f"{kind}:{type(e).__name__}"] += 1
    except Exception as e:
        if known_bug(e) is None:
            raise
        COUNTS[f"{kind}:known:{known_bug(e)}"] += 1
    elapsed = time.monotonic() - t0
    assert elapsed < BUDGET_S + SLACK_S, f"decode took {elapsed:.1f} s (budget {BUDGET_S} s)"
    t0 = time.monotonic()
    try:
        info = probe_video(data, limits=LIMITS, time_budget_s=BUDGET_S)
        assert info.width >= 0 and info.height >= 0 and info.total_frames >= 0
    except VideoITGError:
        pass
    except Exception as e:
        if known_bug(e) is None:
            raise
        COUNTS[f"{kind}:probe:known:{known_bug(e)}"] += 1
    assert time.monotonic() - t0 < BUDGET_S + SLACK_S


@fuzz(120)
@given(seed=st.sampled_from(sorted(SEEDS)), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_video_bytes(seed: str, ops: list[tuple]) -> None:
    run_case("mutated", mutate(seed_bytes(seed), ops))


@fuzz(40)
@given(data=st.binary(max_size=2048), magic=st.sampled_from([b"", b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS",
                                                           b"\x00\x00\x00\x18ftypisom", b"FLV\x01", b"DKIF"]))
def test_random_bytes_behind_container_magic(data: bytes, magic: bytes) -> None:
    if not magic + data:
        data = b"\x00"
    run_case("random", magic + data)


def test_every_seed_decodes() -> None:
    # The mutation corpus starts from valid clips: if these failed, the fuzzer would only test the error paths.
    for name in SEEDS:
        out = decode_video(seed_bytes(name), image_size=16, params=SamplingParams(4, 2.0), decoder="pyav",
                           time_budget_s=BUDGET_S, limits=LIMITS)
        check_frames(out, 16)


@pytest.mark.skipif(not dali_available(), reason="DALI not installed (extra 'dali')")
@fuzz(15)
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_vp9_through_auto_decoder(ops: list[tuple]) -> None:
    run_case("auto-vp9", mutate(seed_bytes("vp9.webm"), ops), decoder="auto")


# ---- the decode bugs found, pinned (deterministic seeds: these replay anywhere) --------------------------------


@pytest.mark.parametrize("seed,ops,where", FFMPEG_ERRORS, ids=[c[2].split()[0] + str(i)
                                                               for i, c in enumerate(FFMPEG_ERRORS)])
def test_known_ffmpeg_errors_escape(seed: str, ops: list[tuple], where: str) -> None:
    with pytest.raises(VideoITGError):  # workers=1: the serial decoder, whose code paths `where` names
        decode_video(mutate(seed_bytes(seed), ops), image_size=16, params=SamplingParams(4, 2.0), decoder="pyav",
                     time_budget_s=BUDGET_S, limits=LIMITS, workers=1)


def test_matroska_cues_overwrite_does_not_spin_to_the_time_budget() -> None:
    # 8 bytes of the Matroska cues overwritten (a 2.4 KB, 12-frame file): the decode ends before its time budget,
    # with frames or a typed error, instead of spinning a CPU core for the whole budget (60 s by default).
    data = mutate(seed_bytes("h264.mkv"), [("int", 0.9833442128592947, 32767, 8)])
    try:
        decode_video(data, image_size=16, params=SamplingParams(4, 2.0), decoder="pyav", time_budget_s=6,
                     limits=LIMITS)
    except VideoITGError as e:
        if isinstance(e, DecodeTimeoutError):
            raise


def test_packet_of_an_undeclared_stream_is_not_an_index_error() -> None:
    """Found by atheris in CI: a damaged container whose packets name a stream it never declared made PyAV's
    demux raise IndexError out of the decoder. Now the readable part decodes, or a typed error says why not."""
    data = (DATA / "atheris_unknown_stream.bin").read_bytes()[1:]  # [0]: selector byte
    try:
        out = decode_video(data, image_size=16, params=SamplingParams(4, 2.0), decoder="pyav", time_budget_s=30,
                           limits=LIMITS)
        assert out.pixel_values.shape[0] == len(out.frame_indices) > 0
    except VideoITGError:
        pass
    try:
        probe_video(data, count_frames=True)
    except VideoITGError:
        pass
