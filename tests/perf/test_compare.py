"""Runs side by side (`videoitg.perf.compare`): each run labelled by what differs in what it recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from videoitg.errors import InputError
from videoitg.perf import compare


def report(decoder: str, cores: int, rate: float) -> dict:
    row = {"concurrency": 1, "infer_per_s": rate, "p50_ms": 10.0, "p95_ms": 11.0, "p99_ms": 12.0, "mean_ms": 10.0,
           "split": {"steps": {"videoitg_decode": {"queue_ms": 1.0, "compute_ms": 5.0}}, "other_ms": 4.0}}
    return {"series": {"cold": {"rows": [row]}},
            "measured": {"date": f"2026-11-28T0{cores}:00:00",
                         "server": {"url": f"h{cores}:1", "tritonserver": "2.51.0"},
                         "deployment": {"videoitg": {"instances": ["1x KIND_CPU"],
                                                     "parameters": {"decoder": decoder, "precision": "default"}}},
                         "machine": {"cpu": "x", "cores": cores, "gpus": []},
                         "videos": [{"path": f"/a/{cores}.mp4", "width": 96, "height": 64}]}}


def test_labels_name_only_what_differs(tmp_path: Path) -> None:
    """A parameter every model holds alike is named once; the date, the URL and the videos' paths are not
    configuration."""
    names, differ = compare.labels([report("pyav", 2, 1.0), report("dali", 2, 2.0), report("pyav", 16, 3.0)])
    assert differ == ["deployment.decoder", "machine.cores"]
    assert names == ["decoder=pyav, machine.cores=2", "decoder=dali, machine.cores=2", "decoder=pyav, machine.cores=16"]


def test_compare_writes_a_table_and_a_picture(tmp_path: Path) -> None:
    runs = []
    for i, r in enumerate((report("pyav", 2, 1.0), report("dali", 2, 2.5))):
        (tmp_path / f"run{i}").mkdir()
        (tmp_path / f"run{i}" / "perf.json").write_text(json.dumps(r))
        runs.append(tmp_path / f"run{i}")
    md, png = compare.compare(runs, tmp_path / "cmp")
    text = md.read_text()
    assert "What differs between them (read from each run's perf.json): deployment.decoder" in text
    assert "| decoder=dali | cold | 1 | 2.50 |" in text and "decode 1.0+5.0; other 4.0" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_what_cannot_be_compared_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="two or more"):
        compare.compare([tmp_path], tmp_path / "o")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "perf.json").write_text('{"rows": []}')
    with pytest.raises(InputError, match="not a `videoitg perf` report"):
        compare.compare([tmp_path / "old", tmp_path / "old"], tmp_path / "o")
    with pytest.raises(InputError, match="no perf.json"):
        compare.compare([tmp_path / "missing", tmp_path / "old"], tmp_path / "o")
