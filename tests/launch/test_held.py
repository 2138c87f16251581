"""The replaced model instances tritonserver keeps (videoitg/launch/held.py): a region of this server's that no live
stub names for HELD_AFTER_S is kept, with the model whose stub named it; one freed in time, or named again, is not;
one freed later is no longer counted; another server's regions are not looked at."""

from __future__ import annotations

from pathlib import Path

from videoitg.launch.held import HELD_AFTER_S, Held, HeldInstances
from videoitg.launch.procfs import Stub

PREFIX = "videoitg_1.2_abcd_"


def region(shm: Path, name: str, size: int = 16 << 20) -> str:
    (shm / f"{PREFIX}{name}").write_bytes(b"")
    (shm / f"{PREFIX}{name}").open("r+b").truncate(size)
    return f"{PREFIX}{name}"


def stubs(**named: str) -> dict[str, dict[int, Stub]]:
    return {model: {100 + i: Stub("S", 1.0, name)} for i, (model, name) in enumerate(named.items())}


def test_a_region_no_live_stub_names_for_held_after_s_is_kept_with_its_model(tmp_path: Path) -> None:
    decode, vision = region(tmp_path, "a"), region(tmp_path, "b")
    held = HeldInstances(PREFIX, tmp_path)
    assert held.look(stubs(videoitg_decode=decode, videoitg_vision=vision), 0.0) == []
    # the decode step's stub died and was replaced: its old region stays, a new one is named
    new = region(tmp_path, "c")
    assert held.look(stubs(videoitg_decode=new, videoitg_vision=vision), 1.0) == []
    assert held.look(stubs(videoitg_decode=new, videoitg_vision=vision), 1.0 + HELD_AFTER_S - 0.5) == []
    kept = held.look(stubs(videoitg_decode=new, videoitg_vision=vision), 1.0 + HELD_AFTER_S)
    assert kept == [Held(decode, "videoitg_decode", 16 << 20)] and list(held.held) == [decode]
    assert "'videoitg_decode', whose stub died with requests in it" in held.said(kept[0])
    assert "16 MiB of /dev/shm" in held.said(kept[0]) and "1 kept" in held.said(kept[0])
    assert held.look(stubs(videoitg_decode=new, videoitg_vision=vision), 500.0) == []  # said once
    (tmp_path / decode).unlink()  # freed after all (tritonserver unloaded it late)
    held.look(stubs(videoitg_decode=new, videoitg_vision=vision), 501.0)
    assert held.held == {}


def test_a_region_freed_or_named_again_in_time_is_not_kept(tmp_path: Path) -> None:
    old, new = region(tmp_path, "a"), region(tmp_path, "b")
    held = HeldInstances(PREFIX, tmp_path)
    held.look(stubs(videoitg=old), 0.0)
    assert held.look(stubs(videoitg=new), 1.0) == []  # the old instance is unloading
    (tmp_path / old).unlink()
    assert held.look(stubs(videoitg=new), 2.0) == []
    late = region(tmp_path, "c")  # made before its stub runs (a load under way)
    assert held.look(stubs(videoitg=new), 3.0) == []
    assert held.look(stubs(videoitg=new, videoitg_vision=late), 2.0 + HELD_AFTER_S) == []
    assert held.look(stubs(videoitg=new, videoitg_vision=late), 10 * HELD_AFTER_S) == [] and held.held == {}


def test_only_this_servers_regions_are_looked_at_and_an_unnamed_one_is_kept_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "videoitg_9.9_ffff_x").write_bytes(b"")  # another server's
    mine = region(tmp_path, "a", 1 << 20)  # its stub was never seen alive
    held = HeldInstances(PREFIX, tmp_path)
    held.look({}, 0.0)
    assert held.look({}, HELD_AFTER_S) == [Held(mine, "", 1 << 20)]
    assert "instance of a model," in held.said(held.held[mine])
