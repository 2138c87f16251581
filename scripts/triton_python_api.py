"""Write the names `triton_python_backend_utils` (pb_utils) offers a model, per python_backend release branch, from a
triton-inference-server/python_backend git checkout:

    python scripts/triton_python_api.py PYTHON_BACKEND_CHECKOUT r24.10 r26.07 > tests/data/pb_utils_api.json

For each branch: the module's names (the top-level functions, classes and constants of
src/resources/triton_python_backend_utils.py, and what src/pb_stub.cc sets on or defines in that module) and every
method, static property or enum value bound on a class (pb_stub.cc, and the methods of the .py file's classes).
tests/properties/test_triton_api.py checks every `pb_utils.X` / `pb_utils.X.Y` the python-backend models use
against these lists: r24.10 is the Triton 2.51 the test suite serves with, r26.07 the image's
(videoitg/assets/compat.json).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

STUB = "src/pb_stub.cc"
UTILS = "src/resources/triton_python_backend_utils.py"
SET_ON_UTILS = re.compile(r'py::setattr\(\s*python_backend_utils\s*,\s*"(\w+)"')
DEF_ON_UTILS = re.compile(r'python_backend_utils\.def\(\s*"(\w+)"')
MEMBER = re.compile(r'\.(?:def|def_static|def_property|def_property_readonly|def_property_readonly_static|value)'
                    r'\(\s*"(\w+)"')
MODULE_ATTR = re.compile(r'module\.attr\(\s*"(\w+)"\s*\)\.attr\(\s*"(\w+)"\s*\)')


def show(checkout: str, branch: str, path: str) -> str:
    return subprocess.run(["git", "-C", checkout, "show", f"{branch}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def api(checkout: str, branch: str) -> dict[str, list[str]]:
    stub, utils = show(checkout, branch, STUB), ast.parse(show(checkout, branch, UTILS))
    module = set(SET_ON_UTILS.findall(stub)) | set(DEF_ON_UTILS.findall(stub))
    members = set(MEMBER.findall(stub)) | {attr for _, attr in MODULE_ATTR.findall(stub)}
    for node in utils.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            module.add(node.name)
        if isinstance(node, ast.ClassDef):
            members |= {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        if isinstance(node, ast.Assign):
            module |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return {"module": sorted(module), "members": sorted(members)}


if __name__ == "__main__":
    checkout, branches = sys.argv[1], sys.argv[2:]
    out = {"source": f"triton-inference-server/python_backend {STUB}, {UTILS}",
           "versions": {b: api(checkout, b) for b in branches}}
    json.dump(out, sys.stdout, indent=0, sort_keys=True)
    print()
