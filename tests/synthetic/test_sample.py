"""`videoitg.synthetic.sample`: the sample clip is made once; a description torn by a full disk or a crash (empty,
not JSON, naming a missing clip) is never trusted: the sample is made again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from videoitg.synthetic.sample import sample_video, sample_video_meta


@pytest.mark.parametrize("torn", [b"", b'{"video": "/x', b'{"video": "/nowhere.mp4", "instruction": "q"}'])
def test_a_torn_description_is_made_again(home: Path, torn: bytes) -> None:
    video, instruction = sample_video()
    meta = home / "home" / "sample" / "sample.json"
    meta.write_bytes(torn)
    assert sample_video() == (video, instruction)
    assert json.loads(meta.read_text())["video"] == str(video) and sample_video_meta()["instruction"] == instruction
    assert sorted(p.name for p in meta.parent.iterdir()) == ["sample.json", "sample.mp4"]  # no temp file left
