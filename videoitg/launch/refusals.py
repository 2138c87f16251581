"""Why tritonserver or the front did not start, or a model did not load, in one line: the model named, the cause in
the server log's own words, and what to do (`explain`). Read from the log tritonserver and the front write
(`LogRefusals`), and from a refused load's own message (`explain_load`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from videoitg.launch.procfs import port_holder

MAX_CAUSE_CHARS = 360  # of a cause quoted from the log: its head and its tail, where Triton puts the OS's error


@dataclass(frozen=True)
class Refusal:
    """One thing refused: `model` ('' for the server or the front itself) and the `cause` in the log's words."""

    model: str
    cause: str
    fatal: bool = False  # tritonserver waits for ever after it (a stub that could not start): the start is over
    who: str = "tritonserver"  # what refused to start, where no model is named


# Lines of tritonserver's log (its quoted, escaped message) and of the front's output that refuse something.
# (pattern, fatal, who)
_LINES: tuple[tuple[re.Pattern[str], bool, str], ...] = (
    (re.compile(r"failed to load '(?P<model>[^']+)' version \d+: (?P<cause>.*)"), False, "tritonserver"),
    (re.compile(r"Poll failed for model directory '(?P<model>[^']+)': (?P<cause>.*)"), False, "tritonserver"),
    (re.compile(r"failed to poll model '(?P<model>[^']+)': (?P<cause>.*)"), False, "tritonserver"),
    # the python stub of a model whose model.py is missing: tritonserver then waits for it without end
    (re.compile(r"Failed to preinitialize Python stub: (?P<cause>.*)"), True, "tritonserver"),
    (re.compile(r"failed to start \w+ service: (?P<cause>.*)"), False, "tritonserver"),
    (re.compile(r"(?P<cause>error while attempting to bind on address .*)"), False, "the front"),  # asyncio's
    (re.compile(r"^error: creating server: (?P<cause>.*)"), False, "tritonserver"),
)
_QUOTED = re.compile(r'^[IWEF]\d+ [\d:.]+ +\d+ [\w.]+:\d+\] "(?P<text>.*)"\s*$')


def _unquoted(line: str) -> str:
    """A log line's message: tritonserver quotes it and escapes its newlines; other lines as they are."""
    m = _QUOTED.match(line)
    if m is None:
        return line.strip()
    return m.group("text").replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


_STATUS = re.compile(r"^(?:Internal|Invalid argument|Unavailable|Not found|Unknown|Unsupported|Already exists)"
                     r"(?::| -) ")


def _bounded(cause: str) -> str:
    """The cause's first line (a traceback after it stays in the log), without Triton's status word, bounded."""
    cause = _STATUS.sub("", cause.split("\n", 1)[0].strip()).rstrip(".")
    if len(cause) <= MAX_CAUSE_CHARS:
        return cause
    return f"{cause[:MAX_CAUSE_CHARS - 120]} ... {cause[-100:]}"


def refusal(line: str, repository: Path | None = None) -> Refusal | None:
    """The refusal one line of the log states, or None."""
    text = _unquoted(line)
    for pattern, fatal, who in _LINES:
        m = pattern.search(text)
        if m is None:
            continue
        model = m.groupdict().get("model") or ""
        if not model and repository is not None:  # a model's file named by its path: the model is its directory
            for path in re.findall(r"'(/[^']+)'", text):
                parts = Path(path).parts
                if Path(path).is_relative_to(repository) and len(parts) > len(repository.parts):
                    model = parts[len(repository.parts)]
        return Refusal(model, _bounded(m.group("cause")), fatal, who)
    return None


class LogRefusals:
    """The refusals in a log from byte `offset` on, read as it grows: `update(data)` takes the bytes written since
    (`offset` moves past them)."""

    def __init__(self, repository: Path | None = None, offset: int = 0) -> None:
        self.repository, self.offset = repository, offset
        self.found: list[Refusal] = []
        self._rest = b""

    def update(self, data: bytes) -> None:
        self.offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()  # a line not yet whole
        for raw in lines:
            line = raw.decode(errors="replace")
            r = refusal(line, self.repository)
            if r is not None and r not in self.found:
                self.found.append(r)

    @property
    def fatal(self) -> Refusal | None:
        return next((r for r in self.found if r.fatal), None)


@dataclass(frozen=True)
class Context:
    """What the advice needs: the repository served, and what /dev/shm must hold (`shm.need_text`)."""

    repository: Path | None = None
    shm_need: Callable[[], str] = lambda: ""


def _port_advice(cause: str, ctx: Context) -> str:
    m = re.search(r"(?:Socket '[^']*:|address \('[^']*', )(\d+)", cause)
    if m is None:
        return "a port it needs is taken: stop the process holding it or choose other ports"
    holder = port_holder(int(m.group(1)))
    return (f"port {m.group(1)} is taken" + (f" (held by {holder})" if holder else "")
            + ": stop that process or choose other ports (--http-port, --grpc-port, --metrics-port)")


def _file_advice(cause: str, ctx: Context) -> str:
    where = "" if ctx.repository is None else f" in {ctx.repository}"
    return (f"a file it needs is missing, unreadable or not valid{where}: restore it, or write the repository again "
            "(`videoitg repo build`, or serve without --model-repository)")


# (what the cause says, what to do), first match wins: a shared-memory region is also "No space left".
ADVICE: tuple[tuple[re.Pattern[str], Callable[[str, Context], str]], ...] = (
    (re.compile(r"shared memory|/dev/shm|shm-size", re.I), lambda cause, ctx: ctx.shm_need()
     or "/dev/shm is too small for the python backend's regions: give it more (docs/deploy.md, Shared memory)"),
    (re.compile(r"already in use|Address in use", re.I), _port_advice),
    (re.compile(r"backend library|shared object|stub process|python_backend_stub|libpython", re.I),
     lambda cause, ctx: "this tritonserver cannot run the model's backend: serve a repository made for it (`videoitg "
     "repo build --target cpu` for the pip-installed server, python backend only) or a tritonserver that has the "
     "backend; a missing library: install it or add its directory to LD_LIBRARY_PATH"),
    (re.compile(r"No such file|not found in|failed to read|Permission denied|Read-only file system|failed to open|"
                r"not found in any model repository|failed to poll from model repository|Is a directory|"
                r"Not a directory", re.I), _file_advice),
    (re.compile(r"out of memory|Cannot allocate memory|bad_alloc|OutOfMemory", re.I),
     lambda cause, ctx: "not enough memory to load it: fewer instances (--*-instances), a smaller checkpoint, or a "
     "machine (or container limit) with more memory"),
    (re.compile(r"^(ModuleNotFoundError|ImportError)\b"),
     lambda cause, ctx: "a Python package the model imports is missing where its stubs run (the interpreter "
     "tritonserver's python backend starts): install it there (`pip install 'videoitg[serve]'`)"),
    (re.compile(r"^\w+(Error|Exception)\b"),
     lambda cause, ctx: "the model's own code refused to load: fix what its error names (the traceback is in the log)"),
)


def advice(cause: str, ctx: Context) -> str:
    for pattern, say in ADVICE:
        if pattern.search(cause):
            return say(cause, ctx)
    return "the server log has the lines before it"


def explain(found: list[Refusal], ctx: Context, log: Path | None = None) -> str:
    """One line for the refusals `found`: the models that share a cause together, each cause with what to do; the
    server's own refusal ('failed to load all models') only where no model says more."""
    models = [r for r in found if r.model]
    shown = models or found
    groups: dict[str, list[Refusal]] = {}
    for r in shown:
        groups.setdefault(advice(r.cause, ctx), []).append(r)
    parts = []
    for say, rs in groups.items():
        names = sorted({r.model for r in rs if r.model})
        who = (" and ".join(", ".join(f"'{n}'" for n in names).rsplit(", ", 1)) + " could not be loaded") if names \
            else f"{rs[0].who} could not start"
        parts.append(f"{who}: {rs[0].cause}; {say}")
    return " -- ".join(parts) + (f" (server log: {log})" if log is not None else "")


def explain_load(message: str, model: str, ctx: Context) -> str:
    """A refused load's own message (the model-control API's answer) in the same words: its cause and what to do."""
    cause = _bounded(message)
    m = re.search(r"(?:UNAVAILABLE state|version \d+): (.*)", cause)
    return f"{cause}; {advice(m.group(1) if m else cause, ctx)}"
