"""The replaced model instances tritonserver keeps (videoitg/launch/held.py): a region of this server's that no live
stub names for HELD_AFTER_S is kept, with the model whose stub named it; one freed in time, or named again, is not;
one freed later is no longer counted; another server's regions are not looked at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.launch import write_repo
from videoitg.launch import procfs
from videoitg.launch.held import HELD_AFTER_S, Held, HeldInstances
from videoitg.launch.procfs import Stub
from videoitg.launch.server import ServerOptions, TritonServer

PREFIX = "videoitg_1.2_abcd_"


def region(shm: Path, name: str, size: int = 16 << 20) -> str:
    (shm / f"{PREFIX}{name}").write_bytes(b"")
    os.truncate(shm / f"{PREFIX}{name}", size)
    return f"{PREFIX}{name}"


def stubs(**named: str) -> dict[str, dict[int, Stub]]:
    return {model: {100 + i: Stub("S", 1.0, name)} for i, (model, name) in enumerate(named.items())}


def one_model(model: str, *named: tuple[int, str]) -> dict[str, dict[int, Stub]]:
    return {model: {pid: Stub("S", 1.0, name) for pid, name in named}}


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
    assert "a replaced instance of 'videoitg_decode', a stub of which died with requests in it" in held.said(kept[0])
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
    assert held.look(stubs(videoitg=new, videoitg_vision=late), 4.0) == []  # named from here on
    assert held.look(stubs(videoitg=new, videoitg_vision=late), 10 * HELD_AFTER_S) == [] and held.held == {}


def test_only_this_servers_regions_are_looked_at_and_an_unnamed_one_is_kept_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "videoitg_9.9_ffff_x").write_bytes(b"")  # another server's
    mine = region(tmp_path, "a", 1 << 20)  # its stub was never seen alive
    held = HeldInstances(PREFIX, tmp_path)
    held.look({}, 0.0)
    assert held.look({}, HELD_AFTER_S) == [Held(mine, "", 1 << 20)]
    assert "instance of a model," in held.said(held.held[mine])


def test_the_other_instances_of_a_replaced_version_are_kept_though_their_stubs_run(tmp_path: Path) -> None:
    """A step of two instances, one stub killed: the version the repair replaced keeps the other one's stub running
    (its region named, by a stub of a version that is no longer current)."""
    a, b, c, d = (region(tmp_path, n) for n in "abcd")
    held = HeldInstances(PREFIX, tmp_path)
    held.look(one_model("videoitg_vision", (10, a), (11, b)), 0.0)
    held.replaced({10, 11})  # stub 10 died; the watchdog reloaded the model: 20 and 21 are the new version's
    after = one_model("videoitg_vision", (11, b), (20, c), (21, d))
    assert held.look(after, 1.0) == []
    kept = held.look(after, 1.0 + HELD_AFTER_S)
    assert sorted(k.region for k in kept) == [a, b] and {k.model for k in kept} == {"videoitg_vision"}
    (tmp_path / b).unlink()  # the replaced version let go after all: its stub ended, its region freed
    held.look(one_model("videoitg_vision", (20, c), (21, d)), 2 * HELD_AFTER_S)
    assert list(held.held) == [a]


def test_a_look_that_cannot_be_made_is_said_once_for_each_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """Catches: a /dev/shm that could not be read wrote its line in the server log at every look, once a second."""
    srv = TritonServer(write_repo(tmp_path / "repo"), ServerOptions(), log_path=tmp_path / "s.log")
    said: list[str] = []
    monkeypatch.setattr(srv, "note", said.append)
    monkeypatch.setattr(srv, "watchdog", object())  # kept instances are looked for only with a watchdog
    monkeypatch.setattr(procfs, "stubs", lambda pid: {})
    causes = iter([PermissionError(13, "Permission denied")] * 3 + [OSError(5, "Input/output error")] * 2)

    def look(found: object, now: float) -> list[Held]:
        raise next(causes)

    monkeypatch.setattr(srv._held, "look", look)
    assert [srv._kept(os.getpid()) for _ in range(5)] == [0] * 5
    assert said == ["kept instances not looked at: [Errno 13] Permission denied",
                    "kept instances not looked at: [Errno 5] Input/output error"], said
