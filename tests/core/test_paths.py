import os

import pytest

from videoitg.errors import InputError
from videoitg.paths import (
    SHOWN_CHARS,
    InvalidReferenceError,
    MediaChangedError,
    MediaNotFoundError,
    MediaRoots,
    NotARegularFileError,
    OutsideRootsError,
    ReferencesOffError,
    file_identity,
    resolve_under_roots,
)


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


# ---- videos named by reference (VIDEO_URI) -------------------------------------------------------------------


@pytest.fixture
def media(tmp_path):
    """A media root with a clip, a sub-directory, and things outside it that links point to."""
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "clip.mp4").write_bytes(b"clip")
    (root / "sub" / "inner.mp4").write_bytes(b"inner")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    return root, outside, MediaRoots.of([root])


def test_references_resolve_only_inside_a_root(media):
    root, _, roots = media
    real = (root / "clip.mp4").resolve()
    assert roots.resolve(str(root / "clip.mp4")) == real
    assert roots.resolve(f"file://{root}/clip.mp4".encode()) == real
    assert roots.resolve(str(root / "sub" / ".." / "clip.mp4")) == real  # '..' that stays inside is fine
    fd = roots.open(str(root / "clip.mp4"))
    try:
        assert os.read(fd, 4) == b"clip"
    finally:
        os.close(fd)
    with roots.pinned(str(root / "clip.mp4")) as name:
        assert open(name, "rb").read() == b"clip"
    assert roots.contains(root / "sub" / "inner.mp4") and not roots.contains(media[1] / "secret.mp4")


def _refused(roots: MediaRoots, reference: str, error: type, what: str) -> str:
    with pytest.raises(error, match=what) as e:
        with roots.pinned(reference):
            pass
    return str(e.value)


def test_every_hostile_reference_is_refused_with_its_own_error(media, tmp_path):
    root, outside, roots = media
    os.symlink(outside / "secret.mp4", root / "escape.mp4")
    os.symlink(outside, root / "linked")  # a symlinked parent directory leading out
    os.symlink("/dev/zero", root / "zero.mp4")
    os.mkfifo(root / "pipe.mp4")
    cases = [
        (f"{root}/../outside/secret.mp4", OutsideRootsError, "outside the server's media roots"),
        (str(root / "escape.mp4"), OutsideRootsError, "outside"),
        (str(root / "linked" / "secret.mp4"), OutsideRootsError, "outside"),
        (str(outside / "secret.mp4"), OutsideRootsError, "outside"),
        ("/dev/null", OutsideRootsError, "outside"),
        (str(root / "zero.mp4"), OutsideRootsError, "outside"),
        (str(root / "pipe.mp4"), NotARegularFileError, "a FIFO"),  # O_NONBLOCK: never hangs
        (str(root / "missing.mp4"), MediaNotFoundError, "No such file"),
        (str(root / "sub"), NotARegularFileError, "a directory"),
        ("clip.mp4", InvalidReferenceError, "relative path"),
        ("sub/../clip.mp4", InvalidReferenceError, "relative path"),
        ("http://example.com/v.mp4", InvalidReferenceError, "scheme 'http' is not supported"),
        ("file://host/v.mp4", InvalidReferenceError, "host"),
        (f"{root}/a\x00b", InvalidReferenceError, "NUL"),
    ]
    for reference, error, what in cases:
        message = _refused(roots, reference, error, what)
        assert str(outside) not in message and "secret" not in message.replace(reference[:SHOWN_CHARS], "")
    with pytest.raises(ReferencesOffError, match="--media-root"):
        MediaRoots().resolve(str(root / "clip.mp4"))  # off by default
    assert MediaRoots.from_parameter("") == MediaRoots()


def test_a_device_under_a_root_is_not_a_file():
    with pytest.raises(NotARegularFileError, match="a character device"):
        MediaRoots.of(["/dev"]).open("/dev/null")


def test_an_error_quotes_only_a_short_prefix(media):
    root, _, roots = media
    long = str(root / ("x" * 3000)) + ".mp4"
    message = _refused(roots, long, MediaNotFoundError, "cannot be opened")
    assert len(message) < 200 and "x" * 100 not in message
    with pytest.raises(InvalidReferenceError, match="at most 4096") as e:
        roots.resolve(b"/" + b"a" * 5000)
    assert "aaaa" not in str(e.value)
    message = _refused(roots, "secret-token-" * 40, InvalidReferenceError, "relative")
    assert len(message) < 200


def test_a_file_replaced_after_it_was_checked_is_refused(media):
    root, _, roots = media
    clip = root / "clip.mp4"
    before = file_identity(os.stat(clip))
    (root / "new.mp4").write_bytes(b"other")
    os.replace(root / "new.mp4", clip)
    with pytest.raises(MediaChangedError, match="changed after it was checked"):
        roots.open(str(clip), before)
    fd = roots.open(str(clip), file_identity(os.stat(clip)))
    os.close(fd)


def test_media_roots_round_trip_and_must_exist(media, tmp_path):
    root, _, roots = media
    assert MediaRoots.from_parameter(roots.to_parameter()) == roots
    with pytest.raises(InputError, match="not a directory"):
        MediaRoots.of([tmp_path / "nope"])


@pytest.mark.parametrize("value", ['"/x"', '["x"]', "[1]", "/x", '{"a": "/x"}'])
def test_media_roots_parameter_is_a_list_of_absolute_directories(value: str) -> None:
    with pytest.raises(InputError, match="media_roots"):
        MediaRoots.from_parameter(value)
    assert MediaRoots.from_parameter('["/x", "/y"]').roots == ("/x", "/y")
    assert not MediaRoots.from_parameter("")
