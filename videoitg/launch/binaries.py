"""Where the Triton binaries are and what they need to run (the facts behind each step: docs/serving.md, "How the
CPU server is started")."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import secrets
import shutil
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from videoitg.defaults import HOME_ENV, files_home, writable_home
from videoitg.errors import VideoITGError

CONTAINER_ROOT = Path("/opt/tritonserver")
PERF_ANALYZER_LIBS = ("libb64-", "libcudart-")  # not on a CPU machine's library path, vendored by nvidia-pytriton
SYSTEM_LIB_DIRS = frozenset({"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/lib/x86_64-linux-gnu",
                             "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"})


class ServingSetupError(VideoITGError):
    """A Triton binary, backend or library needed to serve was not found."""


@dataclass(frozen=True)
class TritonInstall:
    """A runnable tritonserver and where its backends are."""

    binary: Path
    backends_src: Path  # the install's own backend directory (read-only in the wheel)
    kind: str  # "env", "system" or "pytriton"

    @property
    def from_wheel(self) -> bool:
        return self.kind == "pytriton"


def cache_dir(what: str) -> Path:
    """Where the python backend's copy and the tools' library links go: the home (`defaults.writable_home`)."""
    return writable_home(what)


def _pytriton_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").exists() else None


def pytriton_libs_dir() -> Path | None:
    """`site-packages/nvidia_pytriton.libs`: the wheel's vendored shared libraries."""
    root = _pytriton_root()
    if root is None:
        return None
    libs = root.parents[1] / "nvidia_pytriton.libs"
    return libs if libs.is_dir() else None


def find_tritonserver() -> TritonInstall:
    """An explicit `VIDEOITG_TRITONSERVER`, else a system or container install (`tritonserver` on PATH or
    `/opt/tritonserver/bin`), else the server shipped in the `nvidia-pytriton` wheel (python backend only; CPU)."""
    env = os.environ.get("VIDEOITG_TRITONSERVER")
    if env:
        binary = Path(env).resolve()
        if not binary.is_file():
            raise ServingSetupError(f"VIDEOITG_TRITONSERVER={env} is not a file")
        return TritonInstall(binary, binary.parents[1] / "backends", "env")
    on_path = shutil.which("tritonserver")
    for cand in ([Path(on_path)] if on_path else []) + [CONTAINER_ROOT / "bin" / "tritonserver"]:
        cand = cand.resolve()
        # The pytriton wheel puts no tritonserver on PATH, so anything found here is a real install.
        if cand.is_file() and (cand.parents[1] / "backends" / "python").is_dir():
            return TritonInstall(cand, cand.parents[1] / "backends", "system")
    root = _pytriton_root()
    if root is not None:
        return TritonInstall(root / "bin" / "tritonserver", root / "backends", "pytriton")
    raise ServingSetupError(
        "no tritonserver found: install the serve extra (`pip install nvidia-pytriton`), put a tritonserver on "
        "PATH, or set VIDEOITG_TRITONSERVER"
    )


def prepare_backend_dir(install: TritonInstall, dest_root: Path | None = None,
                        notice: Callable[[str], None] | None = None) -> Path:
    """A backend directory the server can use.

    A system install's own directory is used as is. The wheel's python backend ships without a stub next to it;
    the stub built for this interpreter's major.minor has to sit in the same `python/` folder, and the wheel's
    directory may be read-only, so both go into a writable copy (made once per wheel/interpreter). A copy found
    damaged (a file missing, or its bytes not the wheel's: a torn copy, a bad disk) is replaced, said through
    `notice`; a copy that cannot be made or replaced is a ServingSetupError naming the directory and the cause.
    """
    if not install.from_wheel:
        return install.backends_src
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.backends_src.parent / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServingSetupError(f"the nvidia-pytriton wheel has no python backend stub for Python {ver}")
    src = install.backends_src / "python"
    tag = hashlib.sha256(f"{src.resolve()}|{stub.stat().st_size}|{ver}".encode()).hexdigest()[:12]
    dest = (dest_root or cache_dir("the python backend's copy") / "triton_backends") / f"{ver}-{tag}"
    _check_exec(dest)
    sources = backend_files(src, stub)
    try:
        damage = copy_damage(dest / "python", sources) if dest.exists() else None
        if damage is not None:
            _set_aside(dest)
            (notice or (lambda msg: None))(f"the python backend copy {dest} was damaged ({damage}); replaced it "
                                           "with a fresh copy of the wheel's")
        if not dest.exists():
            _copy_backend(src, stub, dest)
            damage = copy_damage(dest / "python", sources)  # the new copy checked once; a whole one was above
    except OSError as e:
        raise ServingSetupError(f"cannot prepare the python backend copy {dest}: {e.strerror or e}"
                                + (f" ({e.filename})" if e.filename else "")) from e
    if damage is not None:  # replaced under us by something that is not a copy of the wheel's
        raise ServingSetupError(f"the python backend copy {dest} is damaged ({damage}); remove it")
    return dest


def _check_exec(dest: Path) -> None:
    """The copy's stub is a program tritonserver runs and its library one it maps: a filesystem mounted noexec (a
    hardened /tmp, where an unwritable home's files go) refuses both, which tritonserver reports as a backend library
    it cannot load. Said here, naming the home and the fix."""
    where = dest
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        noexec = bool(os.statvfs(where).f_flag & os.ST_NOEXEC)
    except OSError:
        return
    if noexec:
        raise ServingSetupError(f"the python backend's copy {dest} would be on a filesystem mounted noexec ({where}), "
                                f"where tritonserver cannot run its stub: set {HOME_ENV} to a directory on a "
                                "filesystem that allows programs to run (in a container, a volume or emptyDir there)")


def backend_files(src: Path, stub: Path) -> dict[str, Path]:
    """What the backend copy holds, by name under its `python/` folder: the wheel's backend files (not the
    stubs' bytecode caches) and the stub."""
    files = {str(p.relative_to(src)): p for p in sorted(src.rglob("*"))
             if p.is_file() and "__pycache__" not in p.relative_to(src).parts}
    files["triton_python_backend_stub"] = stub
    return files


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def copy_damage(copy: Path, sources: dict[str, Path]) -> str | None:
    """What is wrong with the backend copy `copy` (its files against the wheel's `sources`), None when every file
    is there with the wheel's bytes. About 3 MB are read: milliseconds per start."""
    for name, src in sources.items():
        have = copy / name
        try:
            size, want = have.stat().st_size, src.stat().st_size
        except FileNotFoundError:
            return f"{name} is missing"
        if size != want:
            return f"{name} has {size} bytes, the wheel's {want}"
        if _digest(have) != _digest(src):
            return f"{name} differs from the wheel's"
    return None


def _set_aside(dest: Path) -> None:
    """Move a damaged copy out of the way in one rename (a concurrent start then finds no copy and makes one),
    then remove it."""
    aside = dest.with_name(f"{dest.name}.damaged-{os.getpid()}-{secrets.token_hex(4)}")
    with contextlib.suppress(FileNotFoundError):  # another start set it aside first
        dest.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _copy_backend(src: Path, stub: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}-{secrets.token_hex(4)}")  # threads of one process too
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp / "python", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, tmp / "python" / "triton_python_backend_stub")
        os.chmod(tmp / "python" / "triton_python_backend_stub", 0o755)
        tmp.rename(dest)  # atomic: a concurrent start either sees nothing or a complete copy
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / "python" / "triton_python_backend_stub").is_file():  # not made by a concurrent start either
            raise


def _prepend(path_var: str | None, *dirs: Path | str) -> str:
    parts = [str(d) for d in dirs] + ([p for p in path_var.split(os.pathsep) if p] if path_var else [])
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    return os.pathsep.join(seen)


def server_env(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and the python-backend stubs it spawns."""
    env = dict(os.environ if base is None else base)
    libdirs: list[Path | str] = []
    if install.from_wheel:
        libs = pytriton_libs_dir()
        if libs is not None:
            libdirs.append(libs)
    # The stub links libpython dynamically: it must get this interpreter's own libpython, not another patch release.
    # A system interpreter's libpython is on the linker's default path already; putting that directory first would
    # also put the host's libcuda ahead of a container's CUDA forward-compatibility libraries.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and str(Path(libdir)) not in SYSTEM_LIB_DIRS:
        libdirs.append(libdir)
    env["LD_LIBRARY_PATH"] = _prepend(env.get("LD_LIBRARY_PATH"), *libdirs)
    home = files_home()  # the stubs use the home this process settled on (said once, here)
    if home is not None:
        env[HOME_ENV] = str(home)
    # The stub runs `python3` from PATH: the venv's interpreter must come first or model.py cannot import numpy.
    env["PATH"] = _prepend(env.get("PATH"), Path(sys.executable).parent)
    # Several stub processes run torch side by side; OpenMP workers that spin-wait after each parallel region
    # steal the cores the busy process needs. Passive waiting costs a few microseconds per region instead.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def find_perf_analyzer() -> Path:
    """`$VIDEOITG_PERF_ANALYZER`, else the binary the tritonclient wheel installs: beside the interpreter (a venv),
    in the `bin` folder beside the folder holding the tritonclient package (`pip install --target DIR` puts it in
    DIR/bin), or on PATH."""
    import importlib.util

    env = os.environ.get("VIDEOITG_PERF_ANALYZER")
    cands = [Path(env)] if env else []
    cands += [Path(sys.executable).parent / "perf_analyzer"]
    spec = importlib.util.find_spec("tritonclient")
    if spec is not None and spec.submodule_search_locations:
        cands += [Path(p).parent / "bin" / "perf_analyzer" for p in spec.submodule_search_locations]
    which = shutil.which("perf_analyzer")
    if which:
        cands.append(Path(which))
    for c in cands:
        if c.is_file():
            return c
    raise ServingSetupError("perf_analyzer not found: `pip install tritonclient[all]==2.51.0` provides it")


def tool_lib_dir() -> Path | None:
    """A directory of soname links (`libb64.so.0d`, `libcudart.so.12`) into `nvidia_pytriton.libs`: the wheel vendors
    its libraries with hashed file names (`libb64-98cb6333.so.0d`), and perf_analyzer (which the
    `tritonclient==2.51.0` wheel installs next to the interpreter) asks for the plain sonames. One directory per
    environment's `nvidia_pytriton.libs` (another environment, since removed, leaves links that point nowhere); a
    link that points elsewhere is replaced in one rename, so processes making links at once never see none."""
    libs = pytriton_libs_dir()
    if libs is None:
        return None
    dest = cache_dir("perf_analyzer's library links") / "triton_tool_libs" / hashlib.sha256(
        str(libs.resolve()).encode()).hexdigest()[:16]
    dest.mkdir(parents=True, exist_ok=True)
    for f in libs.iterdir():
        if not f.name.startswith(PERF_ANALYZER_LIBS):
            continue  # link only what perf_analyzer lacks; the rest could shadow the system's own libraries
        # libb64-98cb6333.so.0d -> libb64.so.0d ; libcudart-09529672.so.12.6.77 -> libcudart.so.12
        stem, _, rest = f.name.partition(".so")
        base = stem.rsplit("-", 1)[0]
        major = rest.lstrip(".").split(".")[0]
        link = dest / (f"{base}.so.{major}" if major else f"{base}.so")
        if link.is_symlink() and os.readlink(link) == str(f):
            continue
        tmp = dest / f".{link.name}.{secrets.token_hex(4)}"
        tmp.symlink_to(f)
        os.replace(tmp, link)
    return dest


def perf_analyzer_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    d = tool_lib_dir()
    if d is not None:
        env["LD_LIBRARY_PATH"] = _prepend(env.get("LD_LIBRARY_PATH"), d)
    return env
