"""Write the operators `nvidia.dali.fn` offers and each one's arguments, read from the installed DALI's own operator
registry (its schemas), for the version the image pins (videoitg/assets/compat.json, `dali`):

    pip install nvidia-dali-cuda130==2.4.0 && python scripts/dali_api.py > tests/data/dali_api.json

Each operator: its `fn` path (`decoders.video`), schema name, argument names, and the devices it runs on.
tests/properties/test_triton_api.py checks every `fn.X(...)` the decode pipelines call, and each keyword they
pass, against it: a name or argument the pinned DALI lacks fails on a CPU machine, not when the GPU image first decodes.
"""

from __future__ import annotations

import json
import sys
from types import ModuleType


def walk(mod: ModuleType, prefix: str, out: dict[str, dict[str, object]], seen: set[int]) -> None:
    import nvidia.dali.backend as backend

    for name in sorted(dir(mod)):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name)
        if isinstance(obj, ModuleType) and obj.__name__.startswith("nvidia.dali.fn") and id(obj) not in seen:
            seen.add(id(obj))
            walk(obj, f"{prefix}{name}.", out, seen)
        elif callable(obj) and getattr(obj, "_schema_name", None):
            schema = backend.GetSchema(obj._schema_name)
            devices = [d for d, ops in (("cpu", backend.RegisteredCPUOps()), ("gpu", backend.RegisteredGPUOps()),
                                        ("mixed", backend.RegisteredMixedOps())) if obj._schema_name in ops]
            out[prefix + name] = {"schema": obj._schema_name, "args": sorted(schema.GetArgumentNames()),
                                  "devices": devices}


if __name__ == "__main__":
    import nvidia.dali as dali
    import nvidia.dali.fn as fn

    ops: dict[str, dict[str, object]] = {}
    walk(fn, "", ops, {id(fn)})
    json.dump({"source": "nvidia.dali.fn and nvidia.dali.backend.GetSchema of the installed DALI",
               "versions": {dali.__version__: ops}}, sys.stdout, indent=0, sort_keys=True)
    print()
