"""The GPU check's picture, drawn from the committed H100 record: one PNG of the figures the record holds."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from benchmarks.gpu.plot_gpu_check import plot, sections

RECORD = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu-check-h100-2026-11-26.json"


def test_the_record_draws_one_picture_of_its_hot_path_and_served_runs(tmp_path: Path) -> None:
    record = json.loads(RECORD.read_text())
    runs = sections(record)
    assert [what for what, s in runs if "served_e2e" in s] == [
        "DALI fed the whole video for every chunk", "DALI fed each chunk's piece of the video"]
    out = plot(record, tmp_path / "gpu.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 500


def test_a_record_with_each_decoders_runs_gets_the_decode_panel(tmp_path: Path) -> None:
    """The H200 record (2026-11-28): its hot-path variants as they are named there, the served clip, and a third
    panel of each decoder's run on each long clip (drawn taller than the two-panel H100 picture)."""
    h200 = RECORD.with_name("gpu-check-h200-2026-11-28.json")
    record = json.loads(h200.read_text())
    assert [what for what, s in sections(record) if "served_e2e" in s][-1].startswith("DALI pipelines")
    with Image.open(plot(record, tmp_path / "h200.png")) as im, \
            Image.open(plot(json.loads(RECORD.read_text()), tmp_path / "h100.png")) as two:
        assert im.format == "PNG" and im.size[1] > two.size[1] * 1.2
