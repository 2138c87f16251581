"""A served checkpoint's files changed as a deployment changes them: new weights written over a weight file in place
(same path, same inode, same size), as `cp` over it leaves it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def scale_weights_in_place(path: Path, scale: float = 1.5) -> None:
    """Every float32 weight of the safetensors file `path` multiplied by `scale`, written into the same file."""
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    for name, info in header.items():
        if name != "__metadata__":
            a, b = (8 + n + o for o in info["data_offsets"])
            data[a:b] = (np.frombuffer(bytes(data[a:b]), np.float32) * np.float32(scale)).tobytes()
    with path.open("r+b") as f:
        f.write(data)
