"""Every call the code makes into the image's Triton python backend (`pb_utils`) and into its DALI exists in the
versions videoitg/assets/compat.json pins, read from those versions' own sources or registry:

- `tests/data/pb_utils_api.json` (`scripts/triton_python_api.py`: python_backend r24.10, the Triton 2.51 the suite
  serves with, and r26.07, the image's): each `pb_utils.X` / `pb_utils.X.Y` in the python-backend models;
- `tests/data/dali_api.json` (`scripts/dali_api.py`: DALI 2.4.0's operator schemas): each `fn.X(...)` the decode
  pipelines call, with every keyword they pass.

TensorRT's calls are checked the same way in tests/engine_build/test_trt_builder_api.py against the compat file's
TensorRT.
"""

from __future__ import annotations

import ast
import json

import pytest

from tests.support import ROOT
from tests.support.source import dotted
from videoitg.decode.dali import DALI_PIN

COMPAT = json.loads((ROOT / "videoitg" / "assets" / "compat.json").read_text())["libraries"]
PB_API = json.loads((ROOT / "tests" / "data" / "pb_utils_api.json").read_text())["versions"]
DALI_API = json.loads((ROOT / "tests" / "data" / "dali_api.json").read_text())["versions"]
PB_MODULE = "triton_python_backend_utils"
DALI_FILES = [ROOT / "videoitg" / "decode" / "dali.py"]
# keywords every operator takes from the Python front end (`device`, `name`), not from its schema
COMMON_KEYWORDS = {"device", "name"}


def pb_utils_uses() -> set[str]:
    """`X` or `X.Y` for every `<alias of triton_python_backend_utils>.X[.Y]` in the package and its python models."""
    uses: set[str] = set()
    for path in sorted((ROOT / "python_backend").glob("*.py")) + sorted((ROOT / "videoitg").rglob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                   if a.name == PB_MODULE}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain = dotted(node)
                if chain and chain.split(".")[0] in aliases:
                    uses.add(".".join(chain.split(".")[1:3]))
    return {u for u in uses if u}


def dali_calls() -> dict[str, set[str]]:
    """fn path -> keywords passed, for every `fn.X(...)` call in the DALI pipelines."""
    calls: dict[str, set[str]] = {}
    for path in DALI_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            chain = dotted(node.func) or ""
            root, _, name = chain.partition(".")
            if root != "fn" or not name:
                continue
            calls.setdefault(name, set()).update(k.arg for k in node.keywords if k.arg)
    return calls


def test_the_readers_find_the_calls_they_check() -> None:
    assert {"Tensor", "InferenceResponse", "InferenceRequest", "get_input_tensor_by_name", "TritonError",
            "Tensor.from_dlpack", "MetricFamily", "TRITONSERVER_RESPONSE_COMPLETE_FINAL"} <= pb_utils_uses()
    calls = dali_calls()
    assert {"decoders.video", "tensor_resize", "filter", "resize", "external_source", "coord_transform"} <= set(calls)
    assert {"frames", "pad_mode"} <= calls["decoders.video"]


def test_the_data_files_hold_the_pinned_versions() -> None:
    assert COMPAT["python_backend"]["version"] in PB_API
    assert COMPAT["dali"]["version"] in DALI_API
    assert DALI_PIN == COMPAT["dali"]["version"]


@pytest.mark.parametrize("branch", sorted(PB_API))
def test_every_pb_utils_call_exists_in_the_python_backend(branch: str) -> None:
    """`pb_utils.X` against the module's names of that branch, `pb_utils.X.Y` against its class members (the data
    file lists members per branch, not per class)."""
    api = PB_API[branch]
    uses = pb_utils_uses()
    names = {u.split(".")[0] for u in uses}
    members = {u.split(".")[1] for u in uses if "." in u}
    assert sorted(names - set(api["module"])) == [], f"module names python_backend {branch} lacks"
    assert sorted(members - set(api["members"])) == [], f"class members python_backend {branch} lacks"


def test_every_dali_operator_and_keyword_exists_in_the_pinned_dali() -> None:
    ops = DALI_API[COMPAT["dali"]["version"]]
    missing = [name for name in sorted(dali_calls()) if name not in ops]
    assert missing == [], f"not bound by DALI {COMPAT['dali']['version']}"
    bad = {name: sorted(kw - set(ops[name]["args"]) - COMMON_KEYWORDS) for name, kw in dali_calls().items()}
    assert {k: v for k, v in bad.items() if v} == {}, "keywords the operator's schema lacks"


def test_the_decoder_runs_on_nvdec_in_the_pinned_dali() -> None:
    """`mixed` is the NVDEC device: the decoder the pipeline picks must be registered for it, with frame selection
    (in DALI 2.4 the experimental alias has no `frames` argument: the stable name is the one to use)."""
    ops = DALI_API[COMPAT["dali"]["version"]]
    assert "mixed" in ops["decoders.video"]["devices"]
    assert {"frames", "pad_mode"} <= set(ops["decoders.video"]["args"])
    assert "frames" not in ops["experimental.decoders.video"]["args"]
