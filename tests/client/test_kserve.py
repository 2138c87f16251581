"""`videoitg.client.kserve` against the real tritonserver (the session's CPU server, embedded tiny checkpoint): served
results equal the in-process `Scorer`'s on the same bytes and instruction, over gRPC and HTTP; the feature cache and
a video named by its digest; concurrent clients; the other protocol's port named with the flag to use."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tritonclient.utils import InferenceServerException

from benchmarks.clips import random_clip
from tests.support.compare import (
    assert_moments_close,
    assert_picks_close,
    assert_records_close,
    assert_results_close,
)
from tests.support.server import (
    grpc_infer,
    metric_value,
    skip_without_tritonserver,
)
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.digest import video_digest
from videoitg.errors import InputError
from videoitg.request.options import RequestOptions, select

pytestmark = pytest.mark.server

skip_without_tritonserver()


make_clip = random_clip


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_equals_in_process(protocol, clients, scorer, sample) -> None:
    path, data, instruction = sample
    ref = scorer.score(data, instruction)
    out = clients[protocol].infer(path, instruction, RequestOptions(top_k=5))
    assert_results_close(out.result, ref)
    assert out.top_k_frames == out.result.top_k_frames(5)  # the served top-K is the served ranking's
    assert_records_close(out.result.to_record(7, str(path), picked=out.result.top_k_positions(5)),
                         ref.to_record(7, str(path), picked=ref.top_k_positions(5)))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ranking_rule_and_moments_are_served_like_in_process(protocol, clients, scorer, sample) -> None:
    """RANKING_RULE selects the rule per request (the server's default: released), the RANKING_RULE output says
    which one was applied, and MOMENTS are the in-process moments of the same scores."""
    path, data, instruction = sample
    ref = scorer.score(data, instruction)
    assert ref.ranking_rule == "released"
    default = clients[protocol].infer(path, instruction)
    assert default.result.ranking_rule == "released"
    assert_results_close(default.result, ref)
    assert_moments_close(default.moments, ref)
    exact = clients[protocol].infer(path, instruction, RequestOptions(ranking_rule="exact"))
    assert exact.result.ranking_rule == "exact"
    assert_results_close(exact.result, dataclasses.replace(ref, ranking_rule="exact"))
    with pytest.raises(InputError, match='ranking_rule must be one of released, exact, got "best"'):  # before sending
        clients[protocol].infer(path, instruction, RequestOptions(ranking_rule="best"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_adaptive_selection_is_served_as_in_process(protocol, clients, scorer, sample) -> None:
    """MIN_SCORE and COVERAGE travel as KServe inputs; the server picks with `select`, the client's own `select` on
    the served logits gives the same frames (the same function over the same numbers), and in-process picks them
    too."""
    path, data, instruction = sample
    ref = scorer.score(data, instruction)
    # The sample's scores: eight frames over 0.98, the rest under 0.005 (each best frame 1/8 of the mass): no
    # option below sits near a score or a share, so in-process and served pick alike
    for options in (RequestOptions(min_score=0.5), RequestOptions(coverage=0.2, top_k=12),
                    RequestOptions(coverage=0.45, min_score=0.5, ranking_rule="exact")):
        out = clients[protocol].infer(path, instruction, options)
        picked = select(out.result, options)
        assert out.top_k_frames == [out.result.frame_indices[i] for i in picked]
        assert_picks_close(picked, select(ref, options), ref.logits, options.ranking_rule or "released")
        assert 1 <= len(picked) < len(ref.frame_indices)
    assert [len(select(ref, RequestOptions(**o))) for o in ({"min_score": 0.5}, {"coverage": 0.2})] == [8, 2]


def test_a_bad_adaptive_option_is_refused_naming_the_input(server, sample) -> None:
    _, data, instruction = sample
    one = np.array([[data]], dtype=object)
    text = np.array([[instruction.encode()]], dtype=object)
    for name, value, match in (("MIN_SCORE", 2.0, "MIN_SCORE must be a number from 0 to 1, got 2.0"),
                               ("COVERAGE", float("nan"), "COVERAGE must be a number from 0 to 1, got NaN")):
        with pytest.raises(InferenceServerException, match=match):
            grpc_infer(server, {"VIDEO": (one, "BYTES"), "INSTRUCTION": (text, "BYTES"),
                                name: (np.array([[value]], np.float64), "FP64")})


def test_cache_hit_is_identical(clients, scorer, tmp_path) -> None:
    data = make_clip(tmp_path / "fresh.mp4", seed=1)
    c = clients["grpc"]
    first = c.infer(data, "the first question")
    second = c.infer(data, "a second, different question")
    again = c.infer(data, "the first question")
    assert (first.cache_hit, second.cache_hit, again.cache_hit) == (False, True, True)
    assert again.result.logits == first.result.logits  # bit-identical: same features, same instruction
    assert_results_close(second.result, scorer.score(data, "a second, different question"))


def test_a_cached_video_is_named_by_its_digest_and_its_bytes_are_not_sent_again(server, scorer, tmp_path) -> None:
    """A second instruction on a video the server has cached crosses the wire as the video's digest alone
    (VIDEO_DIGEST); a digest the server has not cached is answered NOT_FOUND, and the client then sends the bytes."""

    def outcomes() -> tuple[float, float]:
        m = server.metrics()
        return (metric_value(m, "videoitg_requests", model="videoitg", outcome="failure"),
                metric_value(m, "videoitg_requests", model="videoitg", outcome="not_cached"))

    before = outcomes()
    fresh = video_digest(b"a video no one sent")
    text = (np.array([[b"when?"]], object), "BYTES")
    with pytest.raises(InferenceServerException, match="send VIDEO") as ei:
        grpc_infer(server, {"VIDEO_DIGEST": (np.array([[fresh.encode()]], object), "BYTES"), "INSTRUCTION": text})
    assert ei.value.status() == "StatusCode.NOT_FOUND"
    for seed, protocol in ((5, "grpc"), (6, "http")):
        data = make_clip(tmp_path / f"digest{seed}.mp4", seed=seed)  # a video this server has not seen
        url = server.grpc_url if protocol == "grpc" else server.http_url
        with VideoITGClient(url, protocol, digest_first_bytes=0) as c:
            first = c.infer(data, f"the first question ({protocol})")
            second = c.infer(data, "a second question")
        assert (first.sent_video, first.cache_hit) == (True, False)  # NOT_FOUND, then the bytes
        assert (second.sent_video, second.cache_hit) == (False, True)
        assert_results_close(second.result, scorer.score(data, "a second question"))
    with VideoITGClient(server.grpc_url, "grpc") as c:  # below DIGEST_FIRST_BYTES the bytes go at once
        assert c.infer(data, "a third question").sent_video
    # Three digest probes missed (the raw one and one per protocol): their own outcome, never a failure.
    failures, not_cached = outcomes()
    assert (failures - before[0], not_cached - before[1]) == (0, 3)


def test_concurrent_clients_get_their_own_answers(server, scorer, sample, tmp_path) -> None:
    _, data, instruction = sample
    other = make_clip(tmp_path / "other.mp4", seed=2)
    jobs = [(data if i % 2 else other, f"{instruction} variant {i}") for i in range(8)]
    refs = [scorer.score(v, t) for v, t in jobs]

    def call(i: int):
        with VideoITGClient(server.grpc_url if i % 2 else server.http_url, "grpc" if i % 2 else "http") as c:
            return c.score(*jobs[i])

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(call, range(8)))
    for g, r in zip(got, refs, strict=True):
        assert_results_close(g, r)
    assert len({tuple(g.logits) for g in got}) == 8  # each answer belongs to its own instruction


def test_wrong_protocol_gets_a_hint_and_moments_match(server, scorer, sample) -> None:
    """The HTTP port with gRPC (and back) is named as such, with the flag to use; served moments equal in-process."""
    path, data, instruction = sample
    with VideoITGClient(server.http_url, "grpc") as c, pytest.raises(RemoteError, match="--protocol http"):
        c.infer(data, instruction)
    with VideoITGClient(server.grpc_url, "http") as c, pytest.raises(RemoteError, match="--protocol grpc"):
        c.infer(data, instruction)
    with VideoITGClient(server.grpc_url, "grpc") as c:
        served = c.score(data, instruction)
    # The same spans; scores equal to float rounding (this server's tower runs 5-frame chunks, in-process 64).
    assert_moments_close(served.moments, scorer.score(data, instruction))
