"""`videoitg_vision`: frames [T, 3, S, S] -> projected visual features [T, hw², H], on the runtime the
repository chose."""

from __future__ import annotations

from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from videoitg.contract.parameters import VisionParameters
from videoitg.contract.protocol import FEATURES, NUM_FRAMES, PIXEL_VALUES, VISION
from videoitg.engines.runtimes import (
    load_device,
    open_vision,
    outside_engine,
    prove_vision,
    require_finite,
    use_device,
)
from videoitg.preprocess import pixel_values

from .checks import check_frames, frame_count, one_video
from .metrics import RequestCounters, damage_metric, finalized, step_runtime_metric
from .params import StepAssets, device_dtype, setup, step_precision
from .responses import respond_each
from .tensors import input_numpy, input_torch, output_torch


class TritonPythonModel:
    """With NUM_FRAMES the frames are one chunk of a video of that many frames: the projector's grid is the whole
    video's, so the chunks' features concatenated are the whole video's. With an engine runtime SigLIP's torch
    weights never reach the GPU (`runtimes.load_device` / `outside_engine`)."""

    def initialize(self, args: dict[str, Any]) -> None:
        p = setup(args, VisionParameters)
        assets = StepAssets.of_model(args, p, p.engines)
        self.device, self.dtype = device_dtype(p.device, p.dtype, args, p.precision)
        use_device(self.device)
        runtime = p.vision_runtime
        model, _, identity = assets.load_served("vision", load_device(runtime, self.device), self.dtype, runtime,
                                                 p.checkpoint_identity)  # other weights: refused
        outside_engine(model, "vision", runtime, self.device)
        self.runtime = open_vision(runtime, model, engines=assets.engines, checkpoint_identity=identity,
                                   precision=step_precision(p.precision))
        self.image_size = model.config.vision.image_size
        self.limits = p.limits
        # The tower proves itself (finite features, else the load is refused naming the checkpoint); this first
        # forward also pays the one-time kernel/allocator setup that should not land on a request.
        prove_vision(self.features, model.config, self.device, self.dtype, assets.checkpoint, self.runtime.runtime)
        self.served = (f"the vision tower's features ({self.runtime.runtime} runtime, "
                       f"{str(self.dtype).removeprefix('torch.')} on {self.device})")
        self.counters = RequestCounters(VISION)
        self.runtime_metric = step_runtime_metric(VISION, self.runtime.runtime)
        self.damage = damage_metric(VISION)

    def finalize(self) -> None:
        finalized(self.counters, self.runtime_metric, self.damage)

    def execute(self, requests: list[Any]) -> list[Any] | None:
        def handle(request: Any) -> Any:
            frames = one_video(input_torch(request, PIXEL_VALUES), PIXEL_VALUES)  # [T, 3, S, S]
            num_frames = frame_count(input_numpy(request, NUM_FRAMES))
            check_frames(frames, self.image_size, self.limits, num_frames)
            pv = pixel_values(frames.to(self.device), self.dtype)
            features = require_finite(self.features(pv, num_frames), self.served)  # NaN: the server's fault
            return pb_utils.InferenceResponse([output_torch(FEATURES, features[None])])

        return self.counters.count(respond_each(requests, handle, VISION))

    def features(self, pv: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        return self.runtime.visual_features(pv, num_frames).to(self.device, self.dtype)
