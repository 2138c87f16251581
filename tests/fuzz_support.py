"""What the two hypothesis fuzz suites share: the example budget and the findings report."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings

# 0: the small CI sizes each test names; a documented long run sets e.g. VIDEOITG_FUZZ_EXAMPLES=5000
SCALE = int(os.environ.get("VIDEOITG_FUZZ_EXAMPLES", "0"))


def fuzz(ci_examples: int, *also_suppress: HealthCheck) -> settings:
    return settings(max_examples=SCALE or ci_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, *also_suppress])


def write_report(name: str, counts: Counter[str]) -> None:
    """Outcome counts -> $VIDEOITG_FUZZ_REPORT/<name>.json (the figures in RELIABILITY.md)."""
    out = os.environ.get("VIDEOITG_FUZZ_REPORT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(dict(sorted(counts.items())), indent=1))
