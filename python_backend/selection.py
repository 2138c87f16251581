"""`videoitg_select` (the ensemble's last step): per-frame logits -> the served outputs (ranking under the request's
rule, top-K, moments inside the video's DURATION), as the BLS model does inline. The inputs are checked first
(`steps.check_selection_inputs`, `steps.duration_input`): the step is reachable by a client too.
"""

from __future__ import annotations

import triton_python_backend_utils as pb_utils
from videoitg.python_backend.common import RequestCounters, input_numpy, output_numpy, respond_each, setup
from videoitg.python_backend.steps import check_selection_inputs, duration_input, parse_options

from videoitg.errors import InputError
from videoitg.limits import Limits
from videoitg.outputs import GroundingResult, SelectionOptions, result_outputs

NAME = "videoitg_select"


class TritonPythonModel:
    def initialize(self, args):
        p, _ = setup(args)
        self.limits = Limits.from_mapping(p)
        self.selection = SelectionOptions.from_parameters(p)
        self.counters = RequestCounters(NAME)

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        def handle(request):
            per_frame = [input_numpy(request, n) for n in ("LOGITS", "FRAME_INDICES", "TIMESTAMPS")]
            if any(x is None or x.shape[0] != 1 for x in per_frame):
                raise InputError("LOGITS, FRAME_INDICES and TIMESTAMPS must hold one video a request")
            logits, frames, times = (x[0] for x in per_frame)
            check_selection_inputs(logits, frames, times, self.limits)
            top_k, rule = parse_options(input_numpy(request, "TOP_K"), input_numpy(request, "RANKING_RULE"),
                                        self.selection.default_top_k,
                                        self.selection.ranking_rule)
            duration = duration_input(input_numpy(request, "DURATION"))  # the decode step's: moments end by it
            result = GroundingResult(logits.tolist(), frames.tolist(), times.tolist(), ranking_rule=rule,
                                     duration=duration)
            out = result_outputs(result, top_k, self.selection.moment_params)
            return pb_utils.InferenceResponse([output_numpy(k, v[None]) for k, v in out.items()])  # the batch axis

        return self.counters.count(respond_each(requests, handle, NAME))
