"""`videoitg_select`, the ensemble's last step: per-frame logits -> the served outputs, as the BLS model selects
inline."""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from videoitg.contract.parameters import SelectParameters
from videoitg.contract.protocol import DURATION, FRAME_INDICES, LOGITS, SELECT, TIMESTAMPS
from videoitg.contract.tensors import result_outputs
from videoitg.outputs import GroundingResult

from .checks import check_selection_inputs, duration_input, one_video
from .metrics import RequestCounters, finalized
from .params import setup
from .request import parse_options
from .responses import respond_each
from .tensors import output_numpy, request_inputs


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        p = setup(args, SelectParameters)
        self.limits, self.selection = p.limits, p.selection
        self.counters = RequestCounters(SELECT)

    def finalize(self) -> None:
        finalized(self.counters)

    def execute(self, requests: list[Any]) -> list[Any] | None:
        def handle(request: Any) -> Any:
            inputs = request_inputs(request)
            logits, frames, times = (one_video(inputs.get(n), n) for n in (LOGITS, FRAME_INDICES, TIMESTAMPS))
            check_selection_inputs(logits, frames, times, self.limits)
            options = parse_options(inputs).with_defaults(self.selection)
            duration = duration_input(inputs.get(DURATION))  # the decode step's: moments end by it
            result = GroundingResult(logits.tolist(), frames.tolist(), times.tolist(),
                                     ranking_rule=options.ranking_rule, duration=duration)
            out = result_outputs(result, options, self.selection.moment_params)
            return pb_utils.InferenceResponse([output_numpy(k, v[None]) for k, v in out.items()])  # the batch axis

        return self.counters.count(respond_each(requests, handle, SELECT))
