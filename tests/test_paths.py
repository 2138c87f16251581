import os

import pytest

from videoitg.errors import InputError
from videoitg.paths import resolve_under_roots


def test_paths_stay_under_roots(tmp_path):
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    f = root / "a" / "x.mp4"
    f.write_bytes(b"x")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"s")
    os.symlink(outside, root / "link.mp4")
    assert resolve_under_roots("a/x.mp4", [root]) == f.resolve()
    assert resolve_under_roots(str(f), [root]) == f.resolve()
    assert resolve_under_roots(f"file://{f}", [root]) == f.resolve()
    for bad in ("../secret.mp4", "a/../../secret.mp4", str(outside), "link.mp4", f"file://{outside}",
                "file://evil.host/x.mp4", "http://example.com/v.mp4", "s3://bucket/v.mp4", "", "a\x00b"):
        with pytest.raises(InputError):
            resolve_under_roots(bad, [root])
    with pytest.raises(InputError, match="no allowed roots"):
        resolve_under_roots(str(f), [])
