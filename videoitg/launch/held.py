"""Model instances tritonserver keeps after a stub died with requests in it, seen and bounded.

Triton's python backend makes a response factory for each request it sends a stub; each holds the model version,
and only a reply from the stub deletes it. A stub that dies with requests in it never replies, so when the watchdog
reloads the model the replaced version is never unloaded: each of its instances keeps its region in /dev/shm
(`--shm-default-byte-size`, 16 MiB here), its threads (about 34) and memory, and the stubs of its other instances
keep running (read in the source; not run with several instances), until tritonserver exits (python_backend r24.10
to r26.07, src/python_be.cc; figures: docs/reliability.md). The sign is a region of this server's that no stub of
a current version names (the dead stub's, or one of a replaced version's stubs still running: `replaced`) for
`HELD_AFTER_S`; a version unloaded after a repair frees its regions within seconds. Supervision restarts
tritonserver once `HELD_MAX` are kept (`supervise.Liveness`), so that stubs dying again and again cannot fill
/dev/shm or the process table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from videoitg.launch.procfs import Stub

HELD_AFTER_S = 60.0  # a region no live stub names for this long belongs to an instance that is kept
HELD_MAX = 4  # instances kept that make supervision restart tritonserver


@dataclass(frozen=True)
class Held:
    """A kept instance: its shared-memory region, the model it served ('' where its stub was never seen) and the
    region's size."""

    region: str
    model: str
    size: int


class HeldInstances:
    """The instances of one tritonserver that are kept, from looks at its stubs and at its regions in `shm_dir`."""

    def __init__(self, prefix: str, shm_dir: Path = Path("/dev/shm")) -> None:
        self.prefix, self.shm_dir = prefix, shm_dir
        self.held: dict[str, Held] = {}
        self._model: dict[str, str] = {}  # region -> the model whose live stub named it
        self._unnamed_since: dict[str, float] = {}
        self._replaced: set[int] = set()  # stubs of versions a repair replaced, while they run
        self.unreadable: str | None = None  # why the last look that failed did (said once, not at every look)

    def replaced(self, pids: set[int]) -> None:
        """The stubs a model had before a repair reloaded it: from now on they serve a replaced version."""
        self._replaced |= pids

    def look(self, found: Mapping[str, Mapping[int, Stub]], now: float) -> list[Held]:
        """One look (`found`: the live stubs per model, `procfs.stubs`); returns the instances newly seen kept."""
        running = {pid for stubs in found.values() for pid in stubs}
        self._replaced &= running
        live = {stub.region for stubs in found.values() for pid, stub in stubs.items() if pid not in self._replaced}
        self._model.update({stub.region: model for model, stubs in found.items() for stub in stubs.values()})
        regions: dict[str, int] = {}
        for f in self.shm_dir.glob(f"{self.prefix}*"):
            try:
                regions[f.name] = f.stat().st_size
            except OSError:  # freed while it was listed
                continue
        for name in [n for n in self._unnamed_since if n not in regions or n in live]:
            del self._unnamed_since[name]
        for name in [n for n in self.held if n not in regions]:
            del self.held[name]
        new = []
        for name, size in regions.items():
            if name in live or name in self.held:
                continue
            if now - self._unnamed_since.setdefault(name, now) >= HELD_AFTER_S:
                self.held[name] = Held(name, self._model.get(name, ""), size)
                new.append(self.held[name])
        return new

    def said(self, held: Held) -> str:
        """The log's line for an instance newly seen kept."""
        whose = f"'{held.model}'" if held.model else "a model"
        return (f"tritonserver keeps a replaced instance of {whose}, a stub of which died with requests in it "
                f"(Triton's python backend never frees it: {held.size >> 20} MiB of /dev/shm, its threads and "
                f"memory); {len(self.held)} kept, tritonserver is restarted at {HELD_MAX}")
