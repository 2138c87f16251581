"""`videoitg serve` refuses a key or certificate file it cannot use, before anything starts: exit status 2 and one
line naming the file and what to do; and the clients' flags go with a server. No tritonserver is started."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tests.support.access import CertFiles, key_file, make_ca, new_key
from videoitg.commands.cli import main
from videoitg.contract.access import SERVER_KEYS_ENV
from videoitg.errors import InputError
from videoitg.launch.options import ServerOptions, check_access, own_key


def run(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(list(argv))
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("ca"))


def test_a_file_the_server_cannot_use_refuses_the_start_naming_it(ca: CertFiles, tmp_path: Path) -> None:
    (tmp_path / "bad-keys").write_text("password\n")
    other = make_ca(tmp_path / "other")
    cases = [(["--api-key-file", str(tmp_path / "none")], f"--api-key-file {tmp_path / 'none'}: No such file"),
             (["--api-key-file", str(tmp_path / "bad-keys")], "line 1 is not a key"),
             (["--tls-cert-file", str(ca.cert)], "--tls-cert-file needs --tls-key-file too"),
             (["--tls-key-file", str(ca.key)], "--tls-key-file needs --tls-cert-file too"),
             (["--tls-cert-file", str(tmp_path / "c.pem"), "--tls-key-file", str(ca.key)],
              f"--tls-cert-file {tmp_path / 'c.pem'}: No such file"),
             (["--tls-cert-file", str(ca.cert), "--tls-key-file", str(other.key)],
              "not the PEM private key of --tls-cert-file"),
             (["--answer-api-key-file", str(tmp_path / "none")], "--answer-api-key-file"),
             (["--answer-upstream", "http://u:p@127.0.0.1:9/v1", "--answer-api-key-file", str(tmp_path / "bad-keys")],
              "the video-LLM's key is given twice")]
    for flags, said in cases:
        rc, err = run("serve", "--target", "cpu", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                      *flags)
        assert rc == 2 and said in err and len(err.strip().splitlines()) == 1, (flags, err)
        assert "password" not in err


def test_keys_from_the_environment_are_checked_as_a_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = new_key()
    assert own_key(ServerOptions(), {SERVER_KEYS_ENV: f"{key}, {new_key()}"}) == key
    assert own_key(ServerOptions(), {}) is None
    with pytest.raises(InputError, match=r"\$VIDEOITG_API_KEYS: line 1 is not a key"):
        check_access(ServerOptions(), {SERVER_KEYS_ENV: "short"})
    with pytest.raises(InputError, match="both give keys"):
        check_access(ServerOptions(api_key_file=str(key_file(tmp_path / "k", key))), {SERVER_KEYS_ENV: key})
    monkeypatch.setenv(SERVER_KEYS_ENV, "short")
    rc, err = run("serve", "--target", "cpu", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
    assert rc == 2 and "$VIDEOITG_API_KEYS: line 1 is not a key" in err, err


@pytest.mark.parametrize("command", [["score", "VIDEO", "-i", "x"], ["answer", "VIDEO", "-q", "x", "--upstream",
                                                                    "http://127.0.0.1:9/v1"]])
def test_a_clients_key_and_ca_go_with_a_server(command: list[str], tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 16)
    argv = [str(video) if a == "VIDEO" else a for a in command]
    rc, err = run(*argv, "--api-key-file", str(key_file(tmp_path / "k", new_key())))
    assert rc == 2 and "give --server too" in err, err
