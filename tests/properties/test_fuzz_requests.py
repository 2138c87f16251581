"""Fuzzing (hypothesis) of what a request carries before any video is decoded: instruction strings and bytes,
TOP_K, sampling parameters, and paths checked against allowed roots. Property everywhere: the call returns a
valid value or raises a typed `videoitg.errors` error; nothing else escapes.

Case counts: VIDEOITG_FUZZ_EXAMPLES scales every test (default: a CI-sized run); with VIDEOITG_FUZZ_REPORT=DIR
each module writes its counts to DIR/<module>.json (docs/reliability.md records a long run).
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.support import fuzz as fuzz_support
from tests.support.fuzz import known_request_bug
from tests.support.model import tiny_config
from videoitg.blank_text import is_blank
from videoitg.errors import InputError, VideoITGError
from videoitg.model.token_budget import visual_tokens
from videoitg.outputs import GroundingResult, released_scores
from videoitg.paths import resolve_under_roots
from videoitg.request.limits import InstructionTooLongError, Limits
from videoitg.request.text import instruction_ids
from videoitg.sampling import SamplingParams, sample_frame_indices
from videoitg.train.tiny_tokenizer import build_tiny_tokenizer

COUNTS: Counter[str] = Counter()


def fuzz(ci_examples: int):
    return fuzz_support.fuzz(ci_examples, HealthCheck.function_scoped_fixture)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    fuzz_support.write_report("fuzz_requests", COUNTS)


# ---- bugs found by these fuzzers in modules this suite does not own -------------------------------------------
# Each is fixed and pinned by a regression test below; docs/reliability/defects.md (C1/C2) describes them. Should
# one come back, the fuzzers report it as "known" instead of stopping on it.
def outcome(kind: str, fn, *args, **kw):
    """Run one case: the value, or None after a typed error (or a known, pinned bug). Counts every case."""
    COUNTS[kind] += 1
    try:
        return fn(*args, **kw)
    except VideoITGError as e:
        COUNTS[f"{kind}:{type(e).__name__}"] += 1
        return None
    except Exception as e:
        bug = known_request_bug(kind, e)
        if bug is None:
            raise
        COUNTS[f"{kind}:known:{bug}"] += 1
        return None


# ---- instructions ------------------------------------------------------------------------------------------
@functools.cache
def tok_cfg():
    tok = build_tiny_tokenizer()
    return tok, tiny_config(vocab_size=len(tok))


LIMITS = Limits(max_instruction_tokens=48, max_instruction_bytes=256)

any_char = st.characters(codec=None, exclude_categories=[])
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[])
words = st.sampled_from(["when", " is", " the", " red", " circle", " visible", "?", "\n", " ", "\t", "\x00",
                         "<|endoftext|>", "é", "漢字", "🎬", "\u200b", "\ufeff", "\r\n"])
instructions = (st.text(any_char, max_size=300) | st.text(st.one_of(any_char, surrogate), max_size=40)
                | st.lists(words, max_size=80).map("".join))
raw_instructions = st.binary(max_size=300) | instructions.map(lambda s: s.encode("utf-8", "surrogatepass"))


@fuzz(400)
@given(text=instructions | raw_instructions, frames=st.none() | st.integers(1, 2048))
def test_instruction_is_token_ids_or_typed_error(text: str | bytes, frames: int | None) -> None:
    TOK, CFG = tok_cfg()
    ids = outcome("instruction", instruction_ids, TOK, text, CFG, LIMITS, frames)
    if ids is None:
        return
    limit = LIMITS.instruction_token_limit(CFG, frames)
    assert 1 <= len(ids) <= limit and int(ids.min()) >= 0 and int(ids.max()) < len(TOK)
    if frames is not None:  # admitted means the model itself accepts the sequence
        n_visual = visual_tokens(CFG, frames)
        assert n_visual + len(ids) <= CFG.tokenizer_model_max_length


@fuzz(300)
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=[]), min_size=1, max_size=120))
def test_short_valid_instructions_are_never_refused(text: str) -> None:
    # Byte-level BPE gives at most one token per UTF-8 byte (+1 for the "\n" the format appends), so any text
    # within the token limit in bytes must be admitted whatever its characters, except one that is nothing but the
    # pad token's text (and blanks): the pad token never reaches the model (as in the released code), so nothing
    # would, and that is refused, naming the pad token.
    TOK, CFG = tok_cfg()
    raw = text.encode("utf-8")
    COUNTS["instruction-admit"] += 1
    if is_blank(text) or len(raw) + 1 > LIMITS.instruction_token_limit(CFG):
        return
    if is_blank(text.replace(TOK.decode([TOK.pad_token_id]), "")):
        with pytest.raises(InputError, match="pad token"):
            instruction_ids(TOK, text, CFG, LIMITS)
        return
    ids = instruction_ids(TOK, text, CFG, LIMITS)
    assert len(ids) <= len(raw) + 1


@fuzz(200)
@given(n=st.integers(LIMITS.max_instruction_bytes + 1, 20_000))
def test_oversized_instruction_refused_before_tokenising(n: int) -> None:
    COUNTS["instruction-oversize"] += 1
    with pytest.raises(InstructionTooLongError, match="bytes"):
        LIMITS.instruction_text("a" * n)  # no tokenizer needed: refused by size alone


# ---- TOP_K on a result -------------------------------------------------------------------------------------
@fuzz(200)
@given(logits=st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=64),
       k=st.integers(-(2**70), 2**70))
def test_top_k_any_int(logits: list[float], k: int) -> None:
    COUNTS["top_k"] += 1
    T = len(logits)
    r = GroundingResult(logits, list(range(0, 3 * T, 3)), [i / 2 for i in range(T)], "q", "v")
    frames = r.top_k_frames(k)
    assert frames == sorted(frames) and len(frames) == max(0, min(k, T)) and set(frames) <= set(r.frame_indices)
    if k > 0:  # the best frame under the result's rule (default: the fp16 sigmoid) is always among the top K
        key = released_scores(logits)
        assert key[r.ranking[0]] == key.max() and r.frame_indices[r.ranking[0]] in frames
        ex = GroundingResult(logits, r.frame_indices, r.timestamps, "q", "v", "exact")
        assert logits[ex.ranking[0]] == max(logits) and ex.frame_indices[ex.ranking[0]] in ex.top_k_frames(k)


# ---- sampling ----------------------------------------------------------------------------------------------
floats_any = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e300])


@fuzz(400)
@given(num=st.integers(-10, 100_000) | st.floats(-10, 1e5) | st.sampled_from(["8", None, True]),
       target=floats_any | st.floats(0.01, 120), rule=st.sampled_from(["eval", "train", "EVAL", "", "x"]),
       total=st.integers(-5, 2_000_000), fps=floats_any | st.floats(0.1, 240))
def test_sampling_indices_or_typed_error(num, target, rule, total, fps) -> None:
    def run() -> tuple[SamplingParams, list[int]]:
        p = SamplingParams(num, target, rule)
        return p, sample_frame_indices(total, fps, p)

    out = outcome("sampling", run)
    if out is None:
        return
    p, idx = out
    assert 1 <= len(idx) <= p.num_frames and all(0 <= i < total for i in idx)
    assert all(a < b for a, b in zip(idx, idx[1:], strict=False))
    step = max(1, round(fps / p.target_fps))
    assert len(idx) == min(p.num_frames, math.ceil(total / step)) and all(i % step == 0 for i in idx)


@fuzz(100)
@given(num=st.integers(1, 4096))
def test_sampled_frames_limit(num: int) -> None:
    COUNTS["sampling-limit"] += 1
    lim = Limits(max_sampled_frames=512)
    if num <= 512:
        assert lim.check_sampling(SamplingParams(num)).num_frames == num
    else:
        with pytest.raises(InputError, match="over the limit of 512"):
            lim.check_sampling(SamplingParams(num))


# ---- paths under allowed roots -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("roots")
    root, other, outside = base / "videos", base / "more", base / "outside"
    for d in (root / "a" / "b", other, outside):
        d.mkdir(parents=True)
    (root / "a" / "x.mp4").write_bytes(b"x")
    (outside / "secret.mp4").write_bytes(b"s")
    (root / "out").symlink_to(outside)  # escapes
    (root / "in").symlink_to(root / "a")  # stays inside
    (root / "a" / "b" / "up").symlink_to("../../../outside/secret.mp4")  # relative escape
    (root / "loop").symlink_to(root / "loop")
    (other / "to_root").symlink_to(root / "a" / "x.mp4")  # crosses between two allowed roots
    return {"base": base, "root": root, "other": other, "outside": outside}


SEGMENTS = ["..", ".", "a", "b", "x.mp4", "out", "in", "up", "loop", "secret.mp4", "outside", "videos", "more",
            "to_root", "", "%2e%2e", "..%2f", "%00", "\x00", "\ud800", "~", "$HOME", "*", "a b", "é", "..."]
PREFIXES = ["", "/", "//", "file:", "file:/", "file://", "file:///", "file://localhost/", "file://evil/",
            "FILE:///", "http://", "s3://b/", "file://[::1/", "{root}/", "{base}/", "{outside}/", "{other}/",
            "file://{root}/", "file://{outside}/"]


@fuzz(600)
@given(prefix=st.sampled_from(PREFIXES),
       segs=st.lists(st.sampled_from(SEGMENTS) | st.text(any_char, max_size=6), max_size=8),
       two_roots=st.booleans(), use_base=st.booleans())
def test_paths_stay_inside_roots(tree: dict[str, Path], prefix: str, segs: list[str], two_roots: bool,
                                 use_base: bool) -> None:
    name = prefix.format(**{k: str(v) for k, v in tree.items()}) + "/".join(segs)
    roots = [tree["root"], tree["other"]] if two_roots else [tree["root"]]
    got = outcome("path", resolve_under_roots, name, roots, tree["root"] / "a" if use_base else None)
    if got is None:
        return
    real = Path(os.path.realpath(got))
    assert real == got, "the returned path must already be resolved"
    inside = [r.resolve() for r in roots]
    assert any(real == r or r in real.parents for r in inside), f"{name!r} escaped to {real}"
    assert tree["outside"].resolve() not in real.parents


# ---- the known bugs, pinned ----------------------------------------------------------------------------------
def test_known_sampling_overflow() -> None:
    with pytest.raises(InputError):
        sample_frame_indices(100, 1e300, SamplingParams(8, 1e-300))


@pytest.mark.parametrize("num", [2.5, "8"])
def test_known_sampling_wrong_types(num: object) -> None:
    with pytest.raises(InputError):
        sample_frame_indices(100, 30.0, SamplingParams(num))


@pytest.mark.parametrize("name", ["file:///tmp/%00x", "a\ud800", "file://[::1/x"])
def test_known_path_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError):
        resolve_under_roots(name, [tmp_path])
