"""The reference VideoITG model (PyTorch). Every engine and server is checked against it."""

from videoitg.model.grounding import VideoITG
from videoitg.model.variant_b import VideoITGAnchor, model_class

__all__ = ["VideoITG", "VideoITGAnchor", "model_class"]
