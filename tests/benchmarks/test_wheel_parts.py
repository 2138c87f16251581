"""Wheels carried in parts (benchmarks/gpu/wheel_parts.py): each part unpacks what is complete so far, the restored
wheels hold the same files as the originals and install, and a damaged chunk is refused."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from benchmarks.gpu import wheel_parts


def make_wheel(folder: Path, name: str, size: int, seed: int) -> Path:
    path = folder / f"{name}-1.0-py3-none-any.whl"
    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{name}/__init__.py", f"VALUE = {seed}\n")
        z.writestr(f"{name}/blob.bin", bytes(rng.getrandbits(8) for _ in range(size)))  # incompressible
        z.writestr(f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    return path


def members(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def test_parts_unpack_as_they_arrive_into_the_same_wheels(tmp_path: Path) -> None:
    src = tmp_path / "wheels"
    src.mkdir()
    wheels = {n: make_wheel(src, n, size, seed) for n, size, seed in (("big", 300_000, 1), ("alpha", 20_000, 2),
                                                                       ("first", 10_000, 3))}
    parts = wheel_parts.pack(src, tmp_path / "parts", part_mib=0.1, first=("first",), preset=0)
    assert len(parts) >= 3 and all(sum(f.stat().st_size for f in p.glob("*.xz.*")) <= 0.1 * (1 << 20)
                                   for p in parts)
    assert any(f.name.startswith("first-") for f in parts[0].iterdir())  # --first: in the first part
    # only the first part has arrived: the wheels it completes are restored, the others named as missing
    have, missing = wheel_parts.unpack(parts[0], tmp_path / "house")
    assert "first-1.0-py3-none-any.whl" in have and "big-1.0-py3-none-any.whl" in missing
    have, missing = wheel_parts.unpack(tmp_path / "parts", tmp_path / "house")  # all of them
    assert missing == [] and sorted(have) == sorted(w.name for w in wheels.values())
    for w in wheels.values():
        restored = tmp_path / "house" / w.name
        assert members(restored) == members(w)
        assert {i.compress_type for i in zipfile.ZipFile(restored).infolist()} == {zipfile.ZIP_STORED}


def test_a_damaged_chunk_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "wheels"
    src.mkdir()
    make_wheel(src, "one", 5_000, 1)
    (part,) = wheel_parts.pack(src, tmp_path / "parts", preset=0)
    chunk = next(part.glob("*.xz.*"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="one-1.0-py3-none-any.whl: a chunk is damaged"):
        wheel_parts.unpack(part, tmp_path / "house")
    assert not list((tmp_path / "house").glob("*.whl"))
