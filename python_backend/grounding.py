"""`videoitg_grounding`: owns the LLM and the tokenizer. (visual features, instruction) -> per-frame logits.

Dynamic batching with ragged inputs hands this model several requests at once, possibly for videos of different
lengths; each request is tokenised and checked on its own against the deployment's limits
(`Limits.check_instruction`: bytes, max_instruction_tokens, and the model's length budget after this video's
visual tokens), so a bad one gets its own error, and all the good ones go through one padded forward pass (the
core model masks padding, so batched == alone).
"""

from __future__ import annotations

import torch
from videoitg.python_backend.common import RequestCounters, error, input_numpy, input_torch, output_torch, setup

from videoitg.errors import InputError
from videoitg.serving.steps import device_dtype, limits_from, load_part, resolve_checkpoint
from videoitg.text import encode_instruction


class TritonPythonModel:
    def initialize(self, args):
        _, p = setup(args)
        self.device, self.dtype = device_dtype(p)
        self.model, self.tokenizer = load_part(resolve_checkpoint(p.get("checkpoint", "default")), "grounding",
                                               self.device, self.dtype)
        self.max_batch_tokens = int(p.get("max_batch_tokens", 1 << 16))
        self.limits = limits_from(p)
        self.limits.check_model(self.model.config)  # refuse to load if some admitted video leaves no room
        self.counters = RequestCounters("videoitg_grounding")
        # Warm-up (first-call setup off the request path): two frames of one token each, a short instruction.
        h = self.model.config.text.hidden_size
        with torch.inference_mode():
            self.model.score_features([torch.zeros(2, 1, h, device=self.device, dtype=self.dtype)],
                                      [encode_instruction(self.tokenizer, "warm up").to(self.device)])

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses: list = [None] * len(requests)
        good: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for i, request in enumerate(requests):
            try:
                visual = input_torch(request, "FEATURES")
                visual = visual[0] if visual.dim() == 4 else visual  # drop the batch axis ([1, T, n, H])
                text = input_numpy(request, "INSTRUCTION")
                if text is None or text.size != 1:
                    raise InputError("INSTRUCTION must hold one string")
                ids = self.limits.check_instruction(self.tokenizer, bytes(text.reshape(-1)[0]), self.model.config,
                                                    visual.shape[0])  # visual: [T, hw², H], T sampled frames
                self.model.layout(visual, ids)  # the model's own length rule
                good.append((i, visual.to(self.device, self.dtype), ids.to(self.device)))
            except Exception as e:
                responses[i] = error(e, "videoitg_grounding")
        for group in self._groups(good):
            try:
                with torch.inference_mode():
                    logits = self.model.score_features([v for _, v, _ in group], [ids for _, _, ids in group])
                for (i, _, _), lg in zip(group, logits, strict=True):
                    responses[i] = pb_utils.InferenceResponse([output_torch("LOGITS", lg.float()[None])])
            except Exception as e:
                for i, _, _ in group:
                    responses[i] = error(e, "videoitg_grounding")
        return self.counters.count(responses)

    def _groups(self, items):
        """Split into padded batches of at most `max_batch_tokens` padded tokens (bounded activation memory)."""
        items = sorted(items, key=lambda it: it[1].shape[0] * it[1].shape[1] + len(it[2]))
        group, longest = [], 0
        for it in items:
            n = it[1].shape[0] * it[1].shape[1] + len(it[2])
            if group and max(longest, n) * (len(group) + 1) > self.max_batch_tokens:
                yield group
                group, longest = [], 0
            group.append(it)
            longest = max(longest, n)
        if group:
            yield group

