"""The compatibility matrix (`videoitg/assets/compat.json`) and the check the image's build runs against it."""

from __future__ import annotations

import copy

from videoitg.engines import compat
from videoitg.libraries import library_version


def test_the_matrix_names_each_library_with_its_source() -> None:
    c = compat.load()
    assert c["image"] == f"nvcr.io/nvidia/tritonserver:{c['release']}-trtllm-python-py3"
    for name in ("triton", "python_backend", "tensorrt", "tensorrt_llm", "dali", "cuda", "python", "numpy", "torch"):
        assert c["libraries"][name]["version"] and c["libraries"][name]["source"], name


def test_mismatches_names_each_library_that_differs() -> None:
    """This CPU machine is not the image: torch, TensorRT and TensorRT-LLM differ and are named; the matrix made
    to describe this machine passes."""
    c = compat.load()
    lines = compat.mismatches(c, python="3.12.3")
    assert "tensorrt: 10.14.1.48 expected, not installed" in lines
    assert "tensorrt_llm: 1.2.1 expected, not installed" in lines
    assert any(line.startswith("torch: 2.10.0a0") for line in lines)
    assert not any(line.startswith("numpy") for line in lines)  # numpy 1.26 here: within <2
    assert compat.mismatches(c, python="3.11.2")[-1] == "python: 3.12.3 expected, 3.11.2 here"
    here = copy.deepcopy(c)
    for name, module in compat.MODULES.items():
        here["libraries"][name]["version"] = library_version(module) or "absent"
    assert [line for line in compat.mismatches(here, python="3.12.3") if "absent" not in line] == []
