"""Write the GPU image's package list and the package index's metadata the install test resolves against offline:

    python scripts/image_packages.py        # needs the package index (metadata only: nothing is installed)

The image's Python environment (`videoitg/assets/compat.json`, "image_environment") is what the release's sources
install into it: the NGC builds and the TensorRT-LLM wheel ("builds": version and declared requirements, written
from the sources) and the other top-level installs ("installs"). One resolution of those on the package index, for
the image's Python 3.12 on x86-64, gives every other distribution's version: what pip picks there within every
bound the sources set (the image was built 2026-07; a distribution released since holds a version at least as new
as the image's). That list is written to compat.json ("packages"); the declared requirements of each distribution
in it, and of each distribution `deploy/Dockerfile`'s install set resolves to on the same index with the image's
torch, TensorRT, TensorRT-LLM, transformers and numpy held, go to tests/data/image_packages.json, which
tests/deploy/test_image_install.py turns into metadata-only stand-ins for pip's resolver.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from packaging.requirements import Requirement  # noqa: E402

from tests.support.standins import canonical, install_words, write_wheel  # noqa: E402

COMPAT = ROOT / "videoitg" / "assets" / "compat.json"
OUT = ROOT / "tests" / "data" / "image_packages.json"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--only-binary=:all:",
          "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64", "--platform",
          "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64"]


def resolve(requirements: list[str], builds: dict, constraints: list[str], work: Path) -> dict[str, dict]:
    """pip's resolution of `requirements` on the package index (the `builds` as local stand-ins), for the image's
    interpreter: {canonical name: {name, version, requires, requires_python}}."""
    links = work / "links"
    links.mkdir(parents=True, exist_ok=True)
    for name, b in builds.items():
        write_wheel(links, name, b["version"], b["requires"])
    (work / "constraints.txt").write_text("\n".join(constraints) + "\n")
    report = work / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), "--target", str(work / "t"),
           "--find-links", str(links), "-c", str(work / "constraints.txt"), *TARGET, *requirements]
    subprocess.run(cmd, check=True)
    out = {}
    for item in json.loads(report.read_text())["install"]:
        m = item["metadata"]
        out[canonical(m["name"])] = {"name": m["name"], "version": m["version"],
                                     "requires": m.get("requires_dist", []),
                                     "requires_python": m.get("requires_python")}
    return out


def moving(resolved: dict[str, dict], installed: dict[str, dict]) -> set[str]:
    """The installed distributions a later install replaces: those a requirement of what it resolves to (markers
    for the image's Python 3.12) does not accept at their installed version."""
    out = set()
    for d in resolved.values():
        for text in d["requires"]:
            r = Requirement(text)
            if r.marker is not None and not r.marker.evaluate({"python_version": "3.12", "extra": ""}):
                continue
            have = installed.get(canonical(r.name))
            if have is not None and not r.specifier.contains(have["version"], prereleases=True):
                out.add(canonical(r.name))
    return out


def dockerfile_install() -> list[str]:
    """The requirements the Dockerfile's `pip install` names, the project's wheel replaced by its dependencies."""
    words = install_words(DOCKERFILE.read_text())  # --no-cache-dir -c CONSTRAINTS then the requirements
    reqs = [w for w in words[3:] if not w.startswith("/wheels/")]
    import tomllib

    return reqs + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def main() -> int:
    compat = json.loads(COMPAT.read_text())
    env = compat["image_environment"]
    builds = env["builds"]
    with tempfile.TemporaryDirectory() as tmp:
        image: dict[str, dict] = {}
        for stage in (1, 2):  # stage 2 keeps stage 1's versions where its own requirements allow (pip's default)
            named = [f"{n}=={b['version']}" for n, b in builds.items() if b["stage"] == stage]
            named += [i["requirement"] for i in env["installs"] if i["stage"] == stage]
            alone = resolve(named, builds, [], Path(tmp) / f"alone{stage}") if image else {}
            moved = {canonical(Requirement(r).name) for r in named} | moving(alone, image)
            kept = [f"{k}=={d['version']}" for k, d in image.items() if k not in moved]
            # as constraints: a later install resolves only its own requirements (pip checks no other installed
            # distribution's), keeping what is installed unless one of them needs another version
            image |= resolve(named, builds, kept, Path(tmp) / f"image{stage}")
        pins = [f"{canonical(n)}=={image[canonical(n)]['version']}" for n in env["held"]]
        added = resolve(dockerfile_install(), builds, pins, Path(tmp) / "added")
    env["packages"] = {d["name"]: d["version"] for _, d in sorted(image.items())}
    env["read"] = time.strftime("%Y-%m-%d")
    COMPAT.write_text(json.dumps(compat, indent=2) + "\n")
    dists = {(k, d["version"]): d for k, d in [*image.items(), *added.items()]}
    OUT.write_text(json.dumps({"about": "written by scripts/image_packages.py: the declared requirements of every "
                                        "distribution in the image (compat.json image_environment.packages) and "
                                        "of every one deploy/Dockerfile's install set resolves to",
                               "read": env["read"],
                               "distributions": [dists[k] for k in sorted(dists)]}, indent=1) + "\n")
    print(f"{len(image)} distributions in the image, {len(added)} in the install set; {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
