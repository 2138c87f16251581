"""Keys and TLS files as the server and every client read them (contract/access.py), with no server: a key file's
lines, the store's constant-time check against every key, its re-reading on a change, the certificate files named
where they fail, and what a client sends."""

from __future__ import annotations

import hmac
import os
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.support.access import key_file, make_ca, new_key
from videoitg.contract import access
from videoitg.contract.access import ClientAccess, KeyStore, SecretFile, bearer, parse_keys, read_keys
from videoitg.errors import InputError


def test_a_key_file_is_one_key_a_line_with_blanks_and_comments_skipped() -> None:
    a, b = new_key(), new_key()
    assert parse_keys(f"# rotation\n\n  {a}  \n{b}\n{a}\n", "keys") == (a, b)


@pytest.mark.parametrize("line", ["short", "has space inside it 0123456789", "ключ" * 8, "x" * 513, "a;b" * 8])
def test_a_line_that_is_not_a_key_is_named_by_its_number_never_quoted(line: str) -> None:
    with pytest.raises(InputError) as e:
        parse_keys(f"{new_key()}\n\n{line}\n", "--api-key-file k")
    assert "--api-key-file k: line 3 is not a key" in str(e.value) and "openssl rand -hex 32" in str(e.value)
    assert line not in str(e.value)


def test_a_file_without_keys_unreadable_or_not_text_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("# none yet\n\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe" * 20)
    for name, said in (("empty", "holds no key"), ("binary", "is not UTF-8 text"),
                       ("missing", "No such file or directory")):
        with pytest.raises(InputError, match=said) as e:
            read_keys(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


def test_the_environment_variable_takes_keys_separated_by_commas_or_spaces() -> None:
    a, b = new_key(), new_key()
    assert access.env_keys({"VIDEOITG_API_KEYS": f" {a},{b}\n"}) == (a, b)
    assert access.env_keys({"VIDEOITG_API_KEYS": "  "}) is None and access.env_keys({}) is None
    with pytest.raises(InputError, match=r"\$VIDEOITG_API_KEYS: line 1 is not a key"):
        access.env_keys({"VIDEOITG_API_KEYS": "tooshort"})


def test_the_store_takes_every_key_and_nothing_else() -> None:
    a, b = new_key(), new_key()
    store = KeyStore([a, b])
    assert store.accepts(a) and store.accepts(b)
    assert not any(store.accepts(k) for k in ("", a[:-1], a + "0", a.upper(), b + " ", new_key()))
    assert not store.accepts("\ud800" * 20)  # not text: hashed with a replacement, never raises


def test_a_key_is_compared_with_every_key_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [new_key() for _ in range(5)]
    store = KeyStore(keys)
    calls: list[int] = []
    real = hmac.compare_digest

    def counted(x: bytes, y: bytes) -> bool:
        calls.append(len(x) + len(y))
        return real(x, y)

    monkeypatch.setattr(access.hmac, "compare_digest", counted)
    for given in (keys[0], keys[4], "", new_key(), "x" * 4000):
        calls.clear()
        store.accepts(given)
        assert calls == [64] * 5, given[:8]  # every key, 32-byte digests whatever was presented


def test_the_store_keeps_no_key_and_its_repr_shows_none() -> None:
    a = new_key()
    store = KeyStore([a])
    assert a not in repr(vars(store)) and a.encode() not in b"".join(store._digests)
    assert a not in repr(ClientAccess(a, True, "ca.pem")) and "ca.pem" in repr(ClientAccess(a, True, "ca.pem"))


def test_the_file_is_read_again_when_it_changes_and_a_bad_one_leaves_the_keys_in_force(tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    path = key_file(tmp_path / "keys", a)
    store = KeyStore.configured(str(path), {})
    assert store is not None and store.refresh() is None  # unchanged: not read
    key_file(path, a, b)  # a rotation begins: both
    assert store.refresh() == f"API keys re-read from {path}: 2 (were 1)" and store.accepts(b)
    key_file(path, b)  # it ends: the old one goes
    assert store.refresh() is not None and not store.accepts(a) and store.accepts(b)
    path.write_text("not a key\n")
    said = store.refresh()
    assert said is not None and "not re-read" in said and "line 1 is not a key" in said
    assert "the 1 in force stay" in said
    assert store.accepts(b) and store.refresh() is None  # said once
    path.unlink()
    assert "No such file" in (store.refresh() or "") and store.accepts(b)
    key_file(path, a)
    assert store.reload().startswith("API keys re-read") and store.accepts(a) and not store.accepts(b)
    assert a not in (said or "") and b not in (said or "")


def test_keys_come_from_one_place_or_none() -> None:
    with pytest.raises(InputError, match="--api-key-file and \\$VIDEOITG_API_KEYS both give keys"):
        KeyStore.configured("keys", {"VIDEOITG_API_KEYS": new_key()})
    assert KeyStore.configured(None, {}) is None
    store = KeyStore.configured(None, {"VIDEOITG_API_KEYS": (k := new_key())})
    assert store is not None and store.accepts(k) and "read at start only" in store.reload()


@pytest.mark.parametrize(("header", "key"), [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"),
                                             ("Basic abc", None), ("Bearer", None), ("Bearer ", None), ("", None),
                                             (None, None), ("abc", None)])
def test_the_authorization_header_carries_a_bearer_key(header: str | None, key: str | None) -> None:
    assert bearer(header) == key


def test_another_servers_key_is_its_files_first_line_read_again_on_change(tmp_path: Path) -> None:
    path = tmp_path / "upstream"
    path.write_text("# vLLM\ntoken-abc123\nsecond\n")
    secret = SecretFile(str(path), "--answer-api-key-file")
    assert secret.value() == "token-abc123"
    (tmp_path / "new").write_text("sk-other\n")
    os.replace(tmp_path / "new", path)  # a rotation: the file replaced at once
    assert secret.value() == "sk-other"
    path.write_text("two words\n")
    assert secret.value() == "sk-other"  # a bad file keeps the key read before
    with pytest.raises(InputError, match="--answer-api-key-file .*first line must be the key") as e:
        SecretFile(str(path), "--answer-api-key-file")
    assert "two words" not in str(e.value)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory):
    return make_ca(tmp_path_factory.mktemp("ca"))


def test_tls_files_are_loaded_and_a_bad_one_is_named(ca, tmp_path: Path) -> None:
    ctx = access.server_context(str(ca.cert), str(ca.key), ["h2"])
    assert isinstance(ctx, ssl.SSLContext) and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    other = make_ca(tmp_path / "other")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(ca.key), "-aes256", "-passout", "pass:secret", "-out",
                    str(encrypted)], check=True, capture_output=True)
    (tmp_path / "text").write_text("hello\n")
    cases = [((tmp_path / "none.pem", ca.key), "--tls-cert-file .*none.pem: No such file"),
             ((ca.cert, tmp_path / "none.key"), "--tls-key-file .*none.key: No such file"),
             ((tmp_path / "text", ca.key), "--tls-cert-file .*text: not a PEM certificate"),
             ((ca.key, ca.key), "--tls-cert-file .*server.key: not a PEM certificate"),
             ((ca.cert, other.key), "--tls-key-file .*other/server.key: not the PEM private key of --tls-cert-file"),
             ((ca.cert, encrypted), "--tls-key-file .*encrypted.key: the private key is encrypted")]
    for (cert, key), said in cases:
        with pytest.raises(InputError, match=said):
            access.check_tls_files(str(cert), str(key))
    for given in (("--tls-cert-file", str(ca.cert), None), ("--tls-key-file", None, str(ca.key))):
        with pytest.raises(InputError, match=f"^{given[0]} needs"):
            access.check_tls_files(given[1], given[2])
    access.check_tls_files(None, None)


def test_the_launcher_trusts_exactly_its_own_certificate(ca, tmp_path: Path) -> None:
    ctx = access.own_certificate_context(str(ca.cert))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN


def test_a_client_sends_the_key_it_is_given_or_the_environments(ca, tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    f = key_file(tmp_path / "k", b, a)
    assert ClientAccess.of(api_key=a, environ={}).http_headers() == {"Authorization": f"Bearer {a}"}
    assert ClientAccess.of(api_key_file=f, environ={"VIDEOITG_API_KEY": a}).key == b  # the file's first
    assert ClientAccess.of(environ={"VIDEOITG_API_KEY": a}).grpc_metadata() == (("authorization", f"Bearer {a}"),)
    none = ClientAccess.of(environ={})
    assert none.key is None and none.http_headers() == {} and none.grpc_metadata() == () and none.ssl_context() is None
    with pytest.raises(InputError, match="not both"):
        ClientAccess.of(api_key=a, api_key_file=f)
    tls = ClientAccess.of(ca_file=ca.ca, environ={})
    assert tls.tls and tls.ca_file == str(ca.ca) and tls.scheme() == "https"
    assert tls.ssl_context() is not None and tls.ca_bytes() == ca.ca.read_bytes()
    for bad, said in ((tmp_path / "none.pem", "No such file"), (f, "not a PEM CA certificate")):
        with pytest.raises(InputError, match=f"--ca-file {bad}: {said}"):
            ClientAccess.of(ca_file=bad)
