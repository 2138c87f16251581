"""`videoitg.writes`: files written whole or appended after a checked last line, never through a link or into a file
that is not a regular one; a full disk is one OutputError naming the path, with nothing torn left behind."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from videoitg import writes
from videoitg.commands.cli import main
from videoitg.outputs import read_frame_indices_jsonl, write_results_jsonl
from videoitg.writes import TORN, OutputError, append_lines, open_output, write_whole


def _full_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """The disk takes `room` more bytes, then ENOSPC (a write past it lands partly, as a real one can)."""
    left = [room]
    real = writes._write_all

    def write_all(fd: int, data: bytes) -> None:
        if len(data) > left[0]:
            os.write(fd, data[:left[0]])
            left[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= len(data)
        real(fd, data)

    monkeypatch.setattr(writes, "_write_all", write_all)


def test_write_whole_replaces_the_file_or_leaves_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.json"
    write_whole(path, '{"a": 1}\n')
    write_whole(path, (f"{i}\n" for i in range(3)))
    assert path.read_text() == "0\n1\n2\n"
    _full_after(monkeypatch, 3)
    with pytest.raises(OutputError, match=f"no space left writing {path}") as e:
        write_whole(path, "a longer text\n")
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert path.read_text() == "0\n1\n2\n" and [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp left


def test_write_whole_gathers_short_texts_and_writes_long_ones_as_they_come(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = writes._write_all

    def write_all(fd: int, data: bytes | bytearray) -> None:
        sizes.append(len(data))
        real(fd, data)

    monkeypatch.setattr(writes, "_write_all", write_all)
    lines = [f"{i}\n" for i in range(300_000)]
    big = "x" * (3 << 20)
    write_whole(tmp_path / "a", [*lines, big, "end\n"])
    assert (tmp_path / "a").read_text() == "".join(lines) + big + "end\n"
    assert len(sizes) < 8 and max(sizes) == len(big)  # not a write per line


def test_write_whole_replaces_a_link_and_never_writes_through_it(tmp_path: Path) -> None:
    target = tmp_path / "system-file"
    target.write_text("keep me\n")
    link = tmp_path / "summary.json"
    link.symlink_to(target)
    write_whole(link, "{}\n")
    assert target.read_text() == "keep me\n" and not link.is_symlink() and link.read_text() == "{}\n"
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="d is a directory"):
        write_whole(tmp_path / "d", "x")


def test_append_sets_a_torn_tail_aside_and_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"doc_id": 1}\n{"doc_id": 2, "ind')  # a crash mid-record
    assert append_lines(path, ['{"doc_id": 3}']) == len(b'{"doc_id": 2, "ind')
    assert path.read_bytes() == b'{"doc_id": 1}\n{"doc_id": 3}\n'
    assert Path(f"{path}{TORN}").read_bytes() == b'{"doc_id": 2, "ind\n'
    assert append_lines(path, ['{"doc_id": 4}']) == 0
    whole = tmp_path / "one-line-no-newline.jsonl"
    whole.write_bytes(b'{"torn": tru')
    assert append_lines(whole, ["{}"]) == len(b'{"torn": tru') and whole.read_bytes() == b"{}\n"


def test_a_failed_append_is_cut_back_to_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"doc_id": 1}\n')
    _full_after(monkeypatch, 5)
    with pytest.raises(OutputError, match="no space left writing .*results.jsonl.*free space and run the same"):
        append_lines(path, ['{"doc_id": 2}'])
    assert path.read_text() == '{"doc_id": 1}\n'  # the 5 bytes that landed are cut off again
    monkeypatch.undo()
    append_lines(path, ['{"doc_id": 2}'])
    assert path.read_text().splitlines() == ['{"doc_id": 1}', '{"doc_id": 2}']


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "dangling"])
def test_nothing_is_written_through_a_link_or_into_a_special_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    path = tmp_path / "out" / ".lock"
    path.parent.mkdir()
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    match = {"symlink": "is a symbolic link", "dangling": "is a symbolic link", "fifo": "cannot write|is a FIFO",
             "directory": "is a directory"}[kind]
    for call in (lambda: open_output(path), lambda: append_lines(path, ["x"])):
        with pytest.raises(OutputError, match=match):
            call()
    assert target.read_text() == "root:x:0:0\n" and not (tmp_path / "nowhere").exists()


def test_results_records_are_json_and_readers_skip_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    write_results_jsonl(path, [{"doc_id": 1, "index": [3, 1]}], append=False)
    with path.open("a") as f:
        f.write('{"doc_id": 2, "index": [')  # torn
    assert read_frame_indices_jsonl(path) == {1: [3, 1]}
    assert write_results_jsonl(path, [{"doc_id": 3, "index": [0]}]) > 0
    assert read_frame_indices_jsonl(path) == {1: [3, 1], 3: [0]}
    with pytest.raises(Exception, match="not finite"):
        write_results_jsonl(path, [{"doc_id": 4, "scores": [float("nan")]}])
    assert read_frame_indices_jsonl(path) == {1: [3, 1], 3: [0]}


def _limited(limit: int) -> None:
    """In the child: files may not grow past `limit` bytes (a full disk, as the writer sees it: EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_score_on_a_full_disk_says_so_and_succeeds_once_there_is_room(home: Path, tmp_path: Path) -> None:
    """`videoitg score --output` past the file-size limit: one clear error naming the file, no traceback, no torn
    line; the same command appends a readable record once the limit is gone."""
    from videoitg.synthetic.sample import sample_video

    video, instruction = sample_video()
    out = tmp_path / "results.jsonl"
    out.write_text('{"doc_id": 0, "index": [1]}\n')
    cmd = [sys.executable, "-m", "videoitg", "score", str(video), "-i", instruction, "--output", str(out),
           "--doc-id", "1"]
    env = dict(os.environ)  # the fixture's VIDEOITG_HOME
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                       preexec_fn=lambda: _limited(out.stat().st_size + 64))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr  # the machine's failure, as batch's
    assert f"no space left writing {out}" in r.stderr and "run the same command again" in r.stderr, r.stderr
    assert out.read_text() == '{"doc_id": 0, "index": [1]}\n'
    assert main(cmd[3:]) == 0  # the same command, in this process, with room
    assert [json.loads(x)["doc_id"] for x in out.read_text().splitlines()] == [0, 1]
