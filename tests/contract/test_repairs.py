"""The launcher's word of a step's repair (`videoitg.contract.repairs`), written by one process and read by another."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from videoitg.contract.repairs import RepairsSeen, RepairsWritten


def test_what_is_written_is_read_each_repair_again() -> None:
    written = RepairsWritten.create()
    try:
        seen = RepairsSeen(str(written.path))
        assert seen.unloaded_at("videoitg_decode") is None  # nothing written yet
        written.repaired("videoitg_decode", at=10.5)
        assert seen.unloaded_at("videoitg_decode") == 10.5 and seen.unloaded_at("videoitg_vision") is None
        written.repaired("videoitg_vision", at=11.25)
        written.repaired("videoitg_decode", at=12.0)
        assert (seen.unloaded_at("videoitg_decode"), seen.unloaded_at("videoitg_vision")) == (12.0, 11.25)
        assert oct(os.stat(written.directory).st_mode & 0o777) == "0o700"
        assert oct(os.stat(written.path).st_mode & 0o777) == "0o600"
    finally:
        written.remove()
    assert not written.directory.exists()


def test_a_directory_a_cleaner_removed_is_made_again_and_what_was_read_stands(tmp_path: Path) -> None:
    written = RepairsWritten(tmp_path / "steps")
    seen = RepairsSeen(str(written.path))
    written.repaired("videoitg_decode")
    first = seen.unloaded_at("videoitg_decode")
    assert first is not None and abs(first - time.monotonic()) < 5  # one clock for every process
    shutil.rmtree(written.directory)
    assert seen.unloaded_at("videoitg_decode") == first  # removed: what was read before stands
    written.repaired("videoitg_grounding", at=first + 1)
    assert seen.unloaded_at("videoitg_grounding") == first + 1 and seen.unloaded_at("videoitg_decode") == first


def test_no_file_named_means_no_word() -> None:
    assert RepairsSeen(None).unloaded_at("videoitg_decode") is None
