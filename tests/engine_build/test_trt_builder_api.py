"""Every TensorRT name the project calls exists in the Python bindings of both pinned TensorRT versions.

TensorRT cannot be installed here, so the plan builder (`engine_build/trt_builder.py`) and the plan runtime
(`videoitg/engines/runtimes.py`, `_TrtEngine`) are read, not run: each `trt.X` / `trt.Enum.VALUE` they use and each
method or property they call on a TensorRT object is looked up in `tests/data/tensorrt_api.json`, the names bound
by NVIDIA/TensorRT v10.14 and v11.1 (`scripts/tensorrt_api.py` writes it from their sources). A call that one
version lacks (TensorRT 11 has no `BuilderFlag.FP16`) fails here instead of on the first GPU run.
"""

from __future__ import annotations

import ast
import json
from types import SimpleNamespace

import pytest

from tests.support import ROOT
from tests.support.source import dotted
from videoitg.engine_build.trt_builder import network_flags

API = json.loads((ROOT / "tests" / "data" / "tensorrt_api.json").read_text())["versions"]
# (file, function or class whose body is read): the code that touches TensorRT objects
SCOPES = [(ROOT / "engine_build" / "trt_builder.py", "build_plan"), (ROOT / "engine_build" / "trt_builder.py",
          "network_flags"), (ROOT / "videoitg" / "engines" / "runtimes.py", "_TrtEngine")]
# names that hold TensorRT objects in those scopes (methods called on them must be bound)
TRT_OBJECTS = {"builder", "network", "parser", "config", "profile", "cache", "self.engine", "self.context"}


def tensorrt_uses() -> tuple[set[str], set[str]]:
    """(`trt.`-rooted chains, member names called on TensorRT objects) in SCOPES."""
    chains, members = set(), set()
    for path, scope in SCOPES:
        tree = ast.parse(path.read_text())
        body = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == scope)
        for node in ast.walk(body):
            if not isinstance(node, ast.Attribute):
                continue
            full = dotted(node, calls=True)
            if full is None:
                continue
            if full.startswith("trt.") and not full.startswith("trt.Runtime()"):
                chains.add(full)
            base = dotted(node.value, calls=True) or ""
            if base in TRT_OBJECTS or base.startswith("trt.Runtime()") or base.endswith(".get_input()"):
                members.add(node.attr)
    return chains, members


def missing(version: str) -> list[str]:
    api = API[version]
    chains, members = tensorrt_uses()
    out = []
    for chain in sorted(chains):
        parts = chain.split(".")[1:]
        if parts[0] not in api["module"]:
            out.append(chain)
        elif len(parts) > 1 and parts[0] in api["enums"] and parts[1] not in api["enums"][parts[0]]:
            out.append(chain)
        elif len(parts) > 1 and parts[0] == "Logger" and parts[1] not in api["enums"]["Severity"]:
            out.append(chain)
    out += [f"<TensorRT object>.{m}" for m in sorted(members) if m not in api["members"]]
    return out


def test_the_reader_finds_the_calls_it_checks() -> None:
    """Guards the check itself: the calls that matter are seen (an empty scan would pass anything)."""
    chains, members = tensorrt_uses()
    assert {"trt.Builder", "trt.OnnxParser", "trt.MemoryPoolType.WORKSPACE", "trt.BuilderFlag.TF32"} <= chains
    assert {"create_network", "parse_from_file", "build_serialized_network", "set_shape", "deserialize_cuda_engine",
            "execute_async_v3", "set_tensor_address", "get_tensor_profile_shape"} <= members


@pytest.mark.parametrize("version", sorted(API))
def test_every_tensorrt_call_exists_in_the_pinned_versions(version: str) -> None:
    assert missing(version) == [], f"not bound by TensorRT {version}"


def test_precision_builder_flags_are_gone_from_tensorrt_11() -> None:
    """Why plans are built strongly typed: 10.14 still binds the precision flags, 11.1 does not."""
    assert {"FP16", "BF16", "INT8"} <= set(API["10.14"]["enums"]["BuilderFlag"])
    assert not {"FP16", "BF16", "INT8"} & set(API["11.1"]["enums"]["BuilderFlag"])


@pytest.mark.parametrize(("version", "flags"), [("10.14.1.48", 1 << 1), ("11.1.0.12", 0)])
def test_network_flags_make_every_build_strongly_typed(version: str, flags: int) -> None:
    """10.x: the STRONGLY_TYPED creation flag (value 1 in both versions' NetworkDefinitionCreationFlag enum, after
    EXPLICIT_BATCH = 0 in 10.x); 11.x: no flag (always strongly typed; the flag is deprecated and ignored)."""
    enum = SimpleNamespace(STRONGLY_TYPED=1)
    assert network_flags(SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=enum)) == flags


def test_the_image_tensorrt_is_one_of_the_checked_versions() -> None:
    """The image's TensorRT (videoitg/assets/compat.json) is one of the versions every call is checked against."""
    compat = json.loads((ROOT / "videoitg" / "assets" / "compat.json").read_text())["libraries"]["tensorrt"]
    assert compat["api"] in API
    assert compat["version"].startswith(compat["api"] + ".")
