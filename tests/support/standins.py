"""Metadata-only stand-ins of Python distributions: a wheel (or an installed `.dist-info`) holding nothing but the
distribution's name, version and declared requirements, so pip's own resolver can resolve an install set against
them offline (`tests/deploy/test_image_install.py`, `scripts/image_packages.py`); and the Dockerfile's install
arguments with its `ARG` defaults filled in, which both resolve."""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path


def with_args(dockerfile_text: str, words: list[str]) -> list[str]:
    """`words` of a Dockerfile with each `${NAME}` replaced by the default of its `ARG NAME=default` line (a name
    without one is a KeyError)."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile_text, re.M))
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], w) for w in words]


def install_words(dockerfile_text: str) -> list[str]:
    """The words of the Dockerfile's one `python3 -m pip install` after the command, up to its `&&`: continuation
    lines joined, quotes stripped, each `${NAME}` replaced (`with_args`)."""
    flat = " ".join(dockerfile_text.replace("\\\n", " ").split())
    install = flat[flat.index("python3 -m pip install "):].split(" && ")[0]
    return with_args(dockerfile_text, [w.strip('"') for w in install.split()[4:]])


def canonical(name: str) -> str:
    """PEP 503's normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(name: str, version: str, requires: list[str], requires_python: str | None) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Python: {requires_python}"] if requires_python else []
    extras = sorted({m.group(1) for r in requires if (m := re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", r))})
    lines += [f"Provides-Extra: {e}" for e in extras]
    lines += [f"Requires-Dist: {r}" for r in requires]
    return "\n".join(lines) + "\n\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(folder: Path, name: str, version: str, requires: list[str],
                requires_python: str | None = None) -> Path:
    """A `py3-none-any` wheel of `name` `version` declaring `requires`, and nothing else."""
    stem = f"{canonical(name).replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {f"{info}/METADATA": _metadata(name, version, requires, requires_python).encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: videoitg-standin\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n\n"}
    record = "\n".join([_record_line(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{info}/RECORD", record)
    return path


def write_installed(site: Path, name: str, version: str, requires: list[str]) -> Path:
    """An installed distribution of `name` `version` in `site` (a site-packages folder), as pip lists it."""
    info = site / f"{canonical(name).replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(_metadata(name, version, requires, None))
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/INSTALLER,,\n{info.name}/RECORD,,\n")
    return info
