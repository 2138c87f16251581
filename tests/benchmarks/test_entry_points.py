"""Every `python -m benchmarks...` command the documents name starts: benchmarks/README.md's table, the docs, the
README and benchmarks/RESULTS.md, each run with `--help` from the repository root (as the benchmarks run), so a moved
or renamed entry point fails here; and the table names every module of benchmarks/ that is one."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support import ROOT

COMMAND = re.compile(r"python -m (benchmarks(?:\.\w+)+)")
README = ROOT / "benchmarks" / "README.md"


def documents() -> list[Path]:
    return [README, ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "docs").glob("*/*.md"))]


def named(paths: list[Path]) -> dict[str, list[str]]:
    """Each module a `python -m benchmarks...` command of `paths` runs -> the documents naming it."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for module in sorted(set(COMMAND.findall(path.read_text()))):
            found.setdefault(module, []).append(str(path.relative_to(ROOT)))
    return found


def help_exit(module: str) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    return p.returncode, (p.stdout + p.stderr)[-1500:]


def test_every_documented_benchmark_command_starts() -> None:
    modules = named(documents())
    assert len(modules) >= 20  # the README's table at least
    with ThreadPoolExecutor(4) as pool:
        exits = dict(zip(modules, pool.map(help_exit, modules), strict=True))
    failed = {m: f"named in {', '.join(modules[m])}: exit {rc}: {out}" for m, (rc, out) in exits.items() if rc != 0}
    assert not failed, "\n\n".join(f"{m} {why}" for m, why in failed.items())


def test_the_readme_names_every_entry_point() -> None:
    """A module of benchmarks/ run as a program (`if __name__ == "__main__"`) is in benchmarks/README.md's table."""
    entry_points = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "benchmarks").rglob("*.py")
                    if 'if __name__ == "__main__":' in p.read_text()}
    assert entry_points == set(named([README]))
