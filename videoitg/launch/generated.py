"""What the launcher generated for a server and can write again from the same inputs: the model repository `serve`
wrote (a temporary-file cleaner may remove it under a running server). Checked before every reload and restart
(`GeneratedRepository.restore`): what is missing or changed is written again, and said."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videoitg.repository.generator import write_files


@dataclass(frozen=True)
class GeneratedRepository:
    """The repository at `root` as written: relative path -> content (`generator.generate`)."""

    root: Path
    files: dict[str, str]

    def damage(self) -> list[str]:
        """The files missing or no longer as written, in order."""
        out = []
        for rel, text in self.files.items():
            try:
                same = (self.root / rel).read_bytes() == text.encode()
            except OSError:
                same = False
            if not same:
                out.append(rel)
        return out

    def restore(self) -> str:
        """Write again what is damaged; what was done, '' when the repository was whole. OSError where it cannot be
        written."""
        damaged = self.damage()
        if not damaged:
            return ""
        gone = not self.root.is_dir()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_files(self.root, self.files, set(damaged))
        what = "was removed" if gone else (f"lost {damaged[0]}" + (f" and {len(damaged) - 1} more file(s)"
                                                                   if len(damaged) > 1 else ""))
        return f"the model repository {self.root} {what}; written again from the same inputs"
