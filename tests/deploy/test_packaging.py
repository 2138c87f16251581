"""Installing the project puts one name, `videoitg`, into site-packages: the top-level folders engine_build/, train/
and python_backend/ install as videoitg.engine_build, videoitg.train and videoitg.python_backend."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support import ROOT


def test_wheel_holds_only_the_videoitg_namespace(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"videoitg"}
    for needed in ("videoitg/engine_build/build.py", "videoitg/train/trainer.py", "videoitg/python_backend/common.py",
                   "videoitg/assets/tiny-videoitg/model.safetensors", "videoitg/engines/runtimes.py"):
        assert needed in names
    assert not any(n.startswith(("videoitg/benchmarks", "videoitg/tests")) for n in names)
