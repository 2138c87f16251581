"""The reference VideoITG model (PyTorch). Every engine and server is checked against it."""

from videoitg.model.grounding import VideoITG

__all__ = ["VideoITG"]
