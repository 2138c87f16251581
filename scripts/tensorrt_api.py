"""Write the names the `tensorrt` Python module binds, per TensorRT version, from a NVIDIA/TensorRT git checkout:

    python scripts/tensorrt_api.py TENSORRT_CHECKOUT v10.14 v11.1 > tests/data/tensorrt_api.json

For each tag: the module's classes, enums and attributes, each enum's values, and every method or property name
bound on any class (python/src/infer/*.cpp, python/src/parsers/pyOnnx.cpp). tests/engine_build/test_trt_builder_api.py
checks every TensorRT name the project calls against these lists, so a call that a pinned version lacks fails on a
CPU machine instead of on the first GPU run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

FILES = ("python/src/infer/pyCore.cpp", "python/src/infer/pyFoundationalTypes.cpp", "python/src/infer/pyGraph.cpp",
         "python/src/parsers/pyOnnx.cpp")
TYPE = re.compile(r'py::(class_|enum_)<[^>]*(?:<[^>]*>)?[^>]*>\s*\(\s*m\s*,\s*"(\w+)"')
ENUM = re.compile(r'py::enum_<[^>]+>\s*\(\s*\w+\s*,\s*"(\w+)"(.*?);', re.S)
VALUE = re.compile(r'\.value\(\s*"(\w+)"')
ATTR = re.compile(r'm\.attr\(\s*"(\w+)"\s*\)')
MEMBER = re.compile(r'\.(?:def|def_property|def_property_readonly|def_readwrite|def_readonly|def_static)\(\s*"(\w+)"')


def api(checkout: str, tag: str) -> dict[str, object]:
    text = "\n".join(subprocess.run(["git", "-C", checkout, "show", f"{tag}:{f}"], capture_output=True, text=True,
                                    check=True).stdout for f in FILES)
    return {"module": sorted({m[1] for m in TYPE.findall(text)} | set(ATTR.findall(text)) | {"__version__"}),
            "enums": {name: sorted(set(VALUE.findall(body))) for name, body in ENUM.findall(text)},
            "members": sorted(set(MEMBER.findall(text)))}


if __name__ == "__main__":
    checkout, tags = sys.argv[1], sys.argv[2:]
    out = {"source": f"NVIDIA/TensorRT {', '.join(FILES)}", "versions": {t.lstrip("v"): api(checkout, t) for t in tags}}
    json.dump(out, sys.stdout, indent=0, sort_keys=True)
    print()
