"""Who may use a server: its API keys and its TLS, read one way by the server (the front, the launcher) and by every
client the project ships.

A key travels as `Authorization: Bearer <key>` on HTTP and as `authorization` metadata of the same value on gRPC
(what vLLM, SGLang, TGI and every OpenAI client send). The server's keys: a file of one key a line (blank lines and
`#` comments skipped; `read_keys`), or the variable VIDEOITG_API_KEYS (keys separated by commas or white space).
`KeyStore` holds only their SHA-256 digests and checks a presented key against every one of them in constant time
(`hmac.compare_digest`, no early exit), so a missing and a wrong key take the same path; it re-reads its file when
the file changes (`refresh`) or when told (`reload`, SIGHUP), keeping the keys in force when the new file cannot be
read. No function here puts a key in a message: a bad line is named by its number.

TLS: `server_context` loads a certificate and its private key, naming the file that fails; `ClientAccess` is what a
client sends (a key from `--api-key-file`, `api_key=` or VIDEOITG_API_KEY) and trusts (a CA file, or the system's
CAs with `tls`).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from videoitg.errors import InputError

AUTHORIZATION = "Authorization"  # HTTP; gRPC metadata keys are lower case: "authorization"
GRPC_AUTHORIZATION = "authorization"
SCHEME = "Bearer"
SERVER_KEYS_ENV = "VIDEOITG_API_KEYS"  # the server's keys, when no --api-key-file names a file
CLIENT_KEY_ENV = "VIDEOITG_API_KEY"  # a client's key, when no --api-key-file or api_key= gives one
# RFC 6750's token characters: what `openssl rand -hex 32` and `-base64 32` make; safe in any header or metadata.
KEY_CHARS = "A-Z a-z 0-9 - . _ ~ + / ="
_KEY = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
MAX_KEY_FILE_BYTES = 1 << 20
MAKE_ONE = "make one with `openssl rand -hex 32`"


def parse_keys(text: str, where: str) -> tuple[str, ...]:
    """The keys of a key file's text (one a line; blank lines and lines starting with `#` skipped), each at most
    once, in order. InputError naming `where` and the line (never its text) for a line that is not a key, or when
    there is no key."""
    keys: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if _KEY.fullmatch(s) is None:
            raise InputError(f"{where}: line {n} is not a key: a key is 16-512 characters of {KEY_CHARS} ({MAKE_ONE})")
        keys.append(s)
    if not keys:
        raise InputError(f"{where} holds no key: one key a line ({MAKE_ONE})")
    return tuple(dict.fromkeys(keys))


def read_keys(path: str | os.PathLike[str], flag: str = "--api-key-file") -> tuple[str, ...]:
    """The keys in the file at `path` (`parse_keys`); InputError naming `flag` and the file when it cannot be read
    or holds none."""
    where = f"{flag} {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise InputError(f"{where}: {e.strerror or e}") from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise InputError(f"{where} is over {MAX_KEY_FILE_BYTES} bytes: not a key file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where} is not UTF-8 text: one key a line ({MAKE_ONE})") from None
    return parse_keys(text, where)


def env_keys(environ: Mapping[str, str], name: str = SERVER_KEYS_ENV) -> tuple[str, ...] | None:
    """The keys in the variable `name` (separated by commas or white space), None where it is unset or empty."""
    value = environ.get(name, "").strip()
    if not value:
        return None
    return parse_keys("\n".join(value.replace(",", " ").split()), f"${name}")


def digest(key: str) -> bytes:
    """What a key is compared by: its SHA-256, so every comparison is of 32 bytes whatever was presented."""
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


def _stat(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)  # follows links: a Kubernetes Secret's file is a link swapped at each update
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class KeyStore:
    """The keys a server takes (their digests only), from a file (`path`, re-read on change) or given."""

    def __init__(self, keys: Sequence[str], path: str | None = None):
        self.path = path
        self._digests = tuple(digest(k) for k in keys)
        self._seen = _stat(path) if path is not None else None

    @classmethod
    def configured(cls, key_file: str | None, environ: Mapping[str, str]) -> KeyStore | None:
        """The server's keys: `key_file`'s, else VIDEOITG_API_KEYS's, else None (no key wanted). InputError naming
        what is wrong (both given, a file that cannot be read, a line that is not a key)."""
        from_env = environ.get(SERVER_KEYS_ENV, "").strip()
        if key_file is not None:
            if from_env:
                raise InputError(f"--api-key-file and ${SERVER_KEYS_ENV} both give keys: give one of them")
            return cls(read_keys(key_file), key_file)
        keys = env_keys(environ)
        return None if keys is None else cls(keys)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, key: str) -> bool:
        """Whether `key` is one of the keys: compared with every one of them, in constant time, no early exit."""
        given = digest(key)
        found = False
        for d in self._digests:
            found |= hmac.compare_digest(given, d)
        return found

    def refresh(self) -> str | None:
        """Re-read the file if it changed since it was last read (its device, inode, size or modification time):
        what happened, for the log (None: no change, or no file)."""
        if self.path is None or _stat(self.path) == self._seen:
            return None
        return self.reload()

    def reload(self) -> str:
        """Re-read the file now: what happened, for the log. A file that cannot be read, or holds no key, leaves
        the keys in force."""
        if self.path is None:
            return f"API keys from ${SERVER_KEYS_ENV}: read at start only (a key file is re-read)"
        seen = _stat(self.path)
        try:
            keys = read_keys(self.path)
        except InputError as e:
            self._seen = seen  # said once; the next change is read again
            return f"API keys not re-read ({e}); the {len(self)} in force stay"
        before = len(self)
        self._digests, self._seen = tuple(digest(k) for k in keys), seen
        return f"API keys re-read from {self.path}: {len(self)} (were {before})"


_SECRET = re.compile(r"[\x21-\x7e]{1,4096}")


class SecretFile:
    """Another server's key in a file (its first line that is not blank or a `#` comment: printable ASCII without
    spaces), read again when the file changes. InputError naming `flag` and the file, never the key."""

    def __init__(self, path: str, flag: str):
        self.path, self.flag = path, flag
        self._seen: tuple[int, ...] | None = None
        self._value = ""
        self.value()

    def value(self) -> str:
        """The key now; a file that changed into one that cannot be read keeps the key read before."""
        seen = _stat(self.path)
        if seen == self._seen and self._value:
            return self._value
        where = f"{self.flag} {self.path}"
        try:
            with open(self.path, "rb") as f:
                text = f.read(MAX_KEY_FILE_BYTES).decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            if self._value:
                return self._value
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise InputError(f"{where}: {why or e}") from None
        lines = [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]
        if not lines or _SECRET.fullmatch(lines[0]) is None:
            if self._value:
                return self._value
            raise InputError(f"{where}: its first line must be the key (printable ASCII, no spaces)")
        self._seen, self._value = seen, lines[0]
        return self._value


def bearer(header: str | None) -> str | None:
    """The key of an `Authorization` value `Bearer <key>` (the scheme in any case), None for anything else."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    return key.strip() if scheme.lower() == SCHEME.lower() and key.strip() else None


# ---- TLS ------------------------------------------------------------------------------------------------------------
def _no_password() -> bytes:
    raise InputError("the private key is encrypted: give it unencrypted (the server starts unattended)")


def load_certificate(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """`cert_file` (PEM, the chain) and its private key `key_file` into `ctx`; InputError naming the file that
    fails and why."""
    for flag, path in (("--tls-cert-file", cert_file), ("--tls-key-file", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise InputError(f"{flag} {path}: {e.strerror or e}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
    except (ssl.SSLError, ValueError) as e:
        raise InputError(f"--tls-cert-file {cert_file}: not a PEM certificate ({_reason(e)})") from None
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    except InputError as e:
        raise InputError(f"--tls-key-file {key_file}: {e}") from None
    except (ssl.SSLError, ValueError) as e:
        raise InputError(f"--tls-key-file {key_file}: not the PEM private key of --tls-cert-file {cert_file} "
                         f"({_reason(e)})") from None


def _reason(e: Exception) -> str:
    return getattr(e, "reason", None) or str(e)[:120] or type(e).__name__


def server_context(cert_file: str, key_file: str, alpn: Sequence[str]) -> ssl.SSLContext:
    """A server's TLS context (TLS 1.2 or later), offering the `alpn` protocols (gRPC clients insist on `h2`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(list(alpn))
    load_certificate(ctx, cert_file, key_file)
    return ctx


def check_tls_files(cert_file: str | None, key_file: str | None) -> None:
    """Both or neither, and loadable together: InputError naming the file and what to do."""
    if (cert_file is None) != (key_file is None):
        given, missing = ("--tls-cert-file", "--tls-key-file") if key_file is None else ("--tls-key-file",
                                                                                          "--tls-cert-file")
        raise InputError(f"{given} needs {missing} too: TLS takes a certificate and its private key")
    if cert_file is not None and key_file is not None:
        server_context(cert_file, key_file, ())


def own_certificate_context(cert_file: str) -> ssl.SSLContext:
    """A client context that trusts exactly the server's own certificate (the launcher asking its own front on
    loopback): the certificate is the trust anchor, so neither its issuer nor its names are needed."""
    ctx = ssl.create_default_context(cafile=cert_file)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.check_hostname = False
    return ctx


@dataclass(frozen=True)
class ClientAccess:
    """What a client sends and trusts: `key` (None: none sent), TLS (`tls`; `ca_file`: the CA to trust instead of
    the system's). Its repr never shows the key."""

    key: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None

    @classmethod
    def of(cls, api_key: str | None = None, api_key_file: str | os.PathLike[str] | None = None,
           ca_file: str | os.PathLike[str] | None = None, tls: bool = False,
           environ: Mapping[str, str] | None = None) -> ClientAccess:
        """The key `api_key`, else the first of `api_key_file`, else VIDEOITG_API_KEY's (else none); TLS with
        `tls` or a `ca_file` (checked here: InputError naming it)."""
        if api_key is not None and api_key_file is not None:
            raise InputError("give an API key or a key file, not both")
        if api_key is not None:
            key: str | None = parse_keys(api_key, "api_key")[0]
        elif api_key_file is not None:
            key = read_keys(api_key_file)[0]
        else:
            found = env_keys(os.environ if environ is None else environ, CLIENT_KEY_ENV)
            key = found[0] if found else None
        if ca_file is not None:
            ca_file = os.fspath(ca_file)
            try:
                ssl.create_default_context(cafile=ca_file)
            except FileNotFoundError as e:
                raise InputError(f"--ca-file {ca_file}: {e.strerror or e}") from None
            except (ssl.SSLError, OSError, ValueError) as e:
                raise InputError(f"--ca-file {ca_file}: not a PEM CA certificate ({_reason(e)})") from None
        return cls(key, tls or ca_file is not None, ca_file)

    def http_headers(self) -> dict[str, str]:
        return {AUTHORIZATION: f"{SCHEME} {self.key}"} if self.key else {}

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((GRPC_AUTHORIZATION, f"{SCHEME} {self.key}"),) if self.key else ()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context a client connects with (None: plain TCP)."""
        return ssl.create_default_context(cafile=self.ca_file) if self.tls else None

    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def ca_bytes(self) -> bytes | None:
        """The CA file's bytes (grpc's root certificates; None: the system's)."""
        return Path(self.ca_file).read_bytes() if self.ca_file else None


def add_client_flags(p: argparse.ArgumentParser, what: str = "the server") -> None:
    """A client command's flags for a server that wants a key or speaks TLS (`ClientAccess.from_args`)."""
    p.add_argument("--api-key-file", metavar="PATH",
                   help=f"{what}'s API key: the first key in this file (default: ${CLIENT_KEY_ENV}, if set)")
    p.add_argument("--ca-file", metavar="PATH", help=f"connect to {what} over TLS, trusting this CA certificate (PEM)")
    p.add_argument("--tls", action="store_true", help=f"connect to {what} over TLS, trusting the system's CAs")


def access_from_args(args: argparse.Namespace) -> ClientAccess:
    """`add_client_flags`'s flags as a ClientAccess (the key read now: InputError naming a file that fails)."""
    return ClientAccess.of(api_key_file=args.api_key_file, ca_file=args.ca_file, tls=args.tls)
