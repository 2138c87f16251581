"""Wheels for a machine without network, carried in parts of bounded size: each wheel stored uncompressed and then
xz-compressed (a third smaller than the wheels as published, whose zip compression is weaker), cut into chunks, the
chunks filled into parts in the order the wheels are given. Every part holds the manifest of all of them, so each
part can be unpacked as it arrives: the wheels whose chunks are all present are restored, checked and written.

    python -m benchmarks.gpu.wheel_parts pack WHEELS OUT [--part-mib 56] [--first NAME ...]   # here
    python -m benchmarks.gpu.wheel_parts unpack PARTS WHEELHOUSE                                # there, after each part

WHEELS: a folder of wheels (`pip download` of benchmarks/gpu/gpu_requirements.txt); OUT gets part-1, part-2, ...;
`--first`: distributions whose wheels go first, in the first parts (what is wanted before the rest has arrived).
PARTS: a folder holding part-* folders (or one part folder); WHEELHOUSE: where the restored wheels are written
(then `pip install --no-index --find-links WHEELHOUSE ...`). A restored wheel holds the same files as the original,
stored rather than deflated: the same install (pip checks each file against the wheel's RECORD).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

MANIFEST = "manifest.json"
MIB = 1 << 20


def stored(wheel: Path, dest: Path) -> None:
    """`wheel` rewritten to `dest` with every member stored (no compression), in the same order, names and times."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.external_attr, copy.create_system = info.external_attr, info.create_system
            out.writestr(copy, src.read(info), zipfile.ZIP_STORED)


def compress(job: tuple[str, str, int]) -> tuple[str, str]:
    """(wheel, xz file, preset) -> (the stored wheel's sha256, the xz file)."""
    wheel, xz, preset = job
    tmp = Path(xz).with_suffix(".stored")
    stored(Path(wheel), tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    Path(xz).write_bytes(lzma.compress(data, preset=preset))
    return hashlib.sha256(data).hexdigest(), xz


def pack(wheels: Path, out: Path, part_mib: float = 56, first: tuple[str, ...] = (), preset: int = 6) -> list[Path]:
    """The wheels of `wheels` into out/part-K folders, each under `part_mib` MiB; returns the part folders."""
    def rank(w: Path) -> tuple[int, str]:
        name = w.name.split("-")[0].lower().replace("_", "-")
        return (first.index(name) if name in first else len(first), w.name)

    order = sorted(wheels.glob("*.whl"), key=rank)
    if not order:
        raise SystemExit(f"wheel_parts: no wheels in {wheels}")
    shutil.rmtree(out, ignore_errors=True)
    work = out / ".xz"
    work.mkdir(parents=True)
    jobs = [(str(w), str(work / f"{w.name}.xz"), preset) for w in order]
    with ProcessPoolExecutor() as pool:
        done = list(pool.map(compress, jobs))
    limit = int(part_mib * MIB)
    manifest: dict[str, dict] = {}
    part, used = 1, 0
    for w, (sha, xz) in zip(order, done, strict=True):
        data = Path(xz).read_bytes()
        chunks, at = [], 0
        while at < len(data):
            if used >= limit:
                part, used = part + 1, 0
            piece = data[at:at + limit - used]
            name = f"{w.name}.xz.{len(chunks):03d}"
            (out / f"part-{part}").mkdir(exist_ok=True)
            (out / f"part-{part}" / name).write_bytes(piece)
            chunks.append([part, name])
            at, used = at + len(piece), used + len(piece)
        manifest[w.name] = {"sha256": sha, "chunks": chunks}
    shutil.rmtree(work)
    parts = sorted(out.glob("part-*"), key=lambda p: int(p.name.split("-")[1]))
    for p in parts:
        (p / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return parts


def restore(job: tuple[list[str], str, str]) -> str:
    """(chunk files, wheel path, sha256) -> the wheel written, or why not."""
    chunks, dest, sha = job
    try:
        data = lzma.decompress(b"".join(Path(c).read_bytes() for c in chunks))
    except lzma.LZMAError as e:
        return f"{Path(dest).name}: a chunk is damaged ({e}), not written"
    if hashlib.sha256(data).hexdigest() != sha:
        return f"{Path(dest).name}: sha256 mismatch, not written"
    tmp = Path(dest).with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return ""


def unpack(parts: Path, wheelhouse: Path) -> tuple[list[str], list[str]]:
    """Every wheel whose chunks are all under `parts` into `wheelhouse` (one already there, checked, is kept);
    returns (the wheels the wheelhouse holds, the wheels still missing a chunk). A damaged chunk raises."""
    folders = [parts] if (parts / MANIFEST).is_file() else sorted(parts.glob("part-*"))
    manifests = [f / MANIFEST for f in folders if (f / MANIFEST).is_file()]
    if not manifests:
        raise SystemExit(f"wheel_parts: no part (no {MANIFEST}) under {parts}")
    manifest = json.loads(manifests[0].read_text())
    found = {c.name: c for f in folders for c in f.glob("*.whl.xz.*")}
    wheelhouse.mkdir(parents=True, exist_ok=True)
    jobs, have, missing = [], [], []
    for wheel, entry in manifest.items():
        dest = wheelhouse / wheel
        if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == entry["sha256"]:
            have.append(wheel)
        elif all(name in found for _, name in entry["chunks"]):
            jobs.append(([str(found[name]) for _, name in entry["chunks"]], str(dest), entry["sha256"]))
        else:
            missing.append(wheel)
    with ProcessPoolExecutor() as pool:
        errors = [e for e in pool.map(restore, jobs) if e]
    if errors:
        raise SystemExit("wheel_parts: " + "; ".join(errors))
    return sorted(have + [Path(j[1]).name for j in jobs]), missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("wheels", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--part-mib", type=float, default=56)
    a.add_argument("--first", nargs="*", default=[], help="distributions to put first (their wheels' names)")
    a.add_argument("--preset", type=int, default=6, help="xz preset: 6 here; the test suite's rehearsal uses 0")
    b = sub.add_parser("unpack")
    b.add_argument("parts", type=Path)
    b.add_argument("wheelhouse", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        first = tuple(n.lower().replace("_", "-") for n in args.first)
        parts = pack(args.wheels, args.out, args.part_mib, first, args.preset)
        for part in parts:
            size = sum(f.stat().st_size for f in part.iterdir())
            print(f"{part}: {size / MIB:.1f} MiB, {len(list(part.glob('*.whl.xz.*')))} chunks")
        return 0
    have, missing = unpack(args.parts, args.wheelhouse)
    print(f"{args.wheelhouse}: {len(have)} wheels" + (f"; {len(missing)} still missing a part: "
                                                     f"{', '.join(missing)}" if missing else "; all present"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
