"""A bare stand-in for Triton's `triton_python_backend_utils`, so the in-server modules import without a server."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest


def stand_in_pb_utils(monkeypatch: pytest.MonkeyPatch, **members: Any) -> types.ModuleType:
    """Install a stand-in holding `members`, also in every `videoitg.python_backend` module already imported (their
    classes keep their identity); monkeypatch puts the previous module back afterwards."""
    pb = types.ModuleType("triton_python_backend_utils")
    for name, value in members.items():
        setattr(pb, name, value)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    for name, module in list(sys.modules.items()):
        if name.startswith("videoitg.python_backend.") and hasattr(module, "pb_utils"):
            monkeypatch.setattr(module, "pb_utils", pb)
    return pb
