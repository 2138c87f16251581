"""A step called straight on tritonserver's own port (with the inference key only the front and the launcher hold)
with a shape whose fixed dimensions cannot be right is refused by tritonserver itself, before the step's python stub
sees it: every dimension the checkpoint fixes is declared in the generated config (`protocol.ModelDims`). The shapes
sent here hold more than 2**64 bytes, with no data: their byte size wraps to 0, so Triton's byte-size check passes
them, and a stub handed one dies building its array ("array is too big"), failing requests until it is reloaded.
The selection step's LOGITS has no fixed dimension: its case is refused by rank. A shape that wraps through the
dimensions left open (frames) is not refused here; without the key no process reaches a step at all
(tests/front/test_served.py), and the front bounds every input's elements."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.server import DirectError, RawTensor, direct_infer, skip_without_tritonserver, stub_pids
from videoitg.contract.protocol import (
    FEATURES,
    FRAME_INDICES,
    GROUNDING,
    INSTRUCTION,
    LOGITS,
    PIXEL_VALUES,
    SELECT,
    TIMESTAMPS,
    VISION,
)
from videoitg.repository.generator import RepoSpec

pytestmark = pytest.mark.server

skip_without_tritonserver()

# 4194304 * 3 * 2097152 * 2097152 = 3 * 2**64 elements: 0 bytes once wrapped, in any data type.
OVERFLOW = (1, 4194304, 3, 2097152, 2097152)


@pytest.fixture(scope="module")
def ensemble(shared_servers):
    """The shared ensemble server (every step, the selection step too; tests/repository/test_generator_ensemble.py
    holds it as well): each test here checks that the step's stub answered a good request next, unrestarted, so a
    passing test leaves the server as it found it."""
    yield from shared_servers.hold(RepoSpec(target="cpu", mode="ensemble"))


def _good(model: str, config) -> dict[str, np.ndarray]:
    """A well-formed request of one short video to `model`."""
    s, h = config.vision.image_size, config.text.hidden_size
    if model == VISION:
        return {PIXEL_VALUES: np.zeros((1, 2, 3, s, s), np.uint8)}
    if model == GROUNDING:
        n = config.tokens_per_side(2) ** 2
        return {FEATURES: np.zeros((1, 2, n, h), np.float32), INSTRUCTION: np.array([[b"a red circle"]], object)}
    return {LOGITS: np.array([[0.5, -1.0]], np.float32), FRAME_INDICES: np.array([[0, 30]], np.int64),
            TIMESTAMPS: np.array([[0.0, 1.0]])}


def _overflowing(model: str, config) -> list[dict[str, np.ndarray | RawTensor]]:
    """Requests with an overflowing shape: the one above on the step's main input, and for the grounding step one
    of its own rank whose width is not the checkpoint's (2**21 * 2**21 * 2**20 floats: 2**64 bytes)."""
    good = _good(model, config)
    main = {VISION: (PIXEL_VALUES, "UINT8"), GROUNDING: (FEATURES, "FP32"), SELECT: (LOGITS, "FP32")}[model]
    out = [{**good, main[0]: RawTensor(OVERFLOW, main[1])}]
    if model == GROUNDING:
        out.append({**good, FEATURES: RawTensor((1, 2**21, 2**21, 2**20), "FP32")})
    return out


def _refused_and_still_serving(server, model: str, config) -> None:
    for request in _overflowing(model, config):
        before = stub_pids(server)[model]
        with pytest.raises(DirectError) as e:
            direct_infer(server, model, request)
        assert e.value.status == 400 and "unexpected shape for input" in e.value.message, e.value
        assert direct_infer(server, model, _good(model, config)), model  # answered at once, not after a reload
        assert stub_pids(server)[model] == before, f"{model}'s stub was restarted"


@pytest.mark.parametrize("model", [VISION, GROUNDING])
def test_an_overflowing_shape_sent_to_a_step_is_refused_by_tritonserver(ensemble, scorer, model: str) -> None:
    _refused_and_still_serving(ensemble, model, scorer.config)


def test_an_overflowing_shape_sent_to_the_ensembles_selection_step_is_refused(ensemble, scorer) -> None:
    _refused_and_still_serving(ensemble, SELECT, scorer.config)
