"""The launcher's word to the top-level model that a step was repaired. Tritonserver 2.51 never answers a request a
step's instance held, or that waited in its queue, once the watchdog unloads that instance (its stub dead, or killed
stopped or wedged), not even when the model is loaded again. The front answers such requests of a public model
(`videoitg.front.lost`); a step's requests come from the top-level model, which stops waiting for each one sent before
the repair (StepUnavailableError naming the step) instead of holding it, and its cold slot, until its deadline.

The word is a file only the launcher writes, named to tritonserver (whose stubs inherit it) by `REPAIRS_ENV`: a line
`MODEL SECONDS` per repaired step, the time its old instance was unloaded on `time.monotonic()`'s clock, which every
process of a machine shares. A request sent to that step before then is not answered."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from videoitg.writes import write_whole

REPAIRS_ENV = "VIDEOITG_STEP_REPAIRS"
_FILE = "repairs"


class RepairsWritten:
    """The launcher's side: a private directory of its own (`create`), the file rewritten whole at each repair."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.unloaded: dict[str, float] = {}

    @property
    def path(self) -> Path:
        return self.directory / _FILE

    @classmethod
    def create(cls) -> RepairsWritten:
        """A new private directory in the system's temporary one; OSError where none can be made."""
        return cls(Path(tempfile.mkdtemp(prefix="videoitg-steps-")))

    def repaired(self, model: str, at: float | None = None) -> None:
        """`model`'s old instance was unloaded at `at` (now by default). Written whole and renamed into place, the
        directory made again where a temporary-file cleaner removed it; OSError where it cannot be written."""
        self.unloaded[model] = time.monotonic() if at is None else at
        self.directory.mkdir(mode=0o700, exist_ok=True)
        write_whole(self.path, [f"{m} {t!r}\n" for m, t in self.unloaded.items()], mode=0o600)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
            self.directory.rmdir()


class RepairsSeen:
    """The top-level model's side: when each step was last repaired, read again only when the file changed."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._unloaded: dict[str, float] = {}

    @classmethod
    def from_environment(cls) -> RepairsSeen:
        return cls(os.environ.get(REPAIRS_ENV) or None)

    def unloaded_at(self, model: str) -> float | None:
        """When `model`'s instance was last unloaded for a repair (`time.monotonic()`), None if never."""
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key != self._seen:
                with open(self.path, encoding="utf-8") as f:
                    self._unloaded = dict(_parse(line) for line in f if len(line.split()) == 2)
                self._seen = key
        except (OSError, ValueError):
            pass  # not written yet, or removed: what was read before stands
        return self._unloaded.get(model)


def _parse(line: str) -> tuple[str, float]:
    model, at = line.split()
    return model, float(at)
