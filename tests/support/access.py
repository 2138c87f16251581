"""Keys and TLS for the tests of who may use a server: a self-signed CA and a server certificate it signed, made
with the `openssl` command (`make_ca`), and key files (`key_file`)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class CertFiles:
    """A CA (`ca`: its certificate, what clients trust) and a server certificate it signed for 127.0.0.1 and
    localhost (`cert`, `key`)."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str = "server") -> CertFiles:
    """A new CA and a server certificate for 127.0.0.1 / ::1 / localhost in `folder` (skips without openssl)."""
    if shutil.which("openssl") is None:  # pragma: no cover - installed wherever the suite runs
        pytest.skip("no openssl command to make a test CA")
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", "/CN=videoitg test CA", "-keyout", "ca.key", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=folder)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
                                    "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", f"{name}.pem", cwd=folder)
    return CertFiles(folder / "ca.pem", folder / f"{name}.pem", folder / f"{name}.key")


def new_key() -> str:
    return secrets.token_hex(32)


def key_file(path: Path, *keys: str) -> Path:
    """`keys` written to `path`, one a line, replacing the file at once (as a rotation should: a rename)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text("# API keys, one a line\n" + "".join(k + "\n" for k in keys))
    tmp.replace(path)
    return path
