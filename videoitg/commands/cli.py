"""`videoitg` command line. Each subcommand lives in `videoitg/commands/<name>.py` and exposes
`HELP: str`, `add_arguments(parser)` and `run(args) -> int`; this file only dispatches, so the
owners of different commands never edit the same file. Each command's module is named in full below, so the
package's import rule (tests/test_imports.py) sees the arrow.

Only the chosen subcommand's `add_arguments` runs (some pull in torch through their defaults), so
`videoitg --help` and a mistyped command answer without importing torch; command modules keep their
module-level imports light for the same reason (tests/core/test_api.py checks it).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from videoitg.errors import VideoITGError
from videoitg.writes import FULL, OutputError, output_error

# name -> its module
COMMANDS = {
    "score": "videoitg.commands.score", "answer": "videoitg.commands.answer", "demo": "videoitg.commands.demo",
    "serve": "videoitg.commands.serve", "repo": "videoitg.commands.repo", "build": "videoitg.commands.build",
    "verify": "videoitg.commands.verify", "train": "videoitg.commands.train", "eval": "videoitg.commands.eval",
    "batch": "videoitg.commands.batch", "manifest": "videoitg.commands.manifest", "perf": "videoitg.commands.perf",
    "synth": "videoitg.commands.synth", "answer-table": "videoitg.commands.answer_table",
}


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is one), if any."""
    for a in argv:
        if a in COMMANDS:
            return a
        if not a.startswith("-"):
            return None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (default sys.argv[1:]): every command listed, the chosen one with its arguments."""
    chosen = _chosen(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="videoitg", description="VideoITG instructed temporal grounding")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # command not part of this build
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        if name == chosen:
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except OutputError as e:  # an output that cannot be written (a full disk, a link): 1, as batch's and the OSErrors'
        print(f"videoitg {args.command}: error: {e}", file=sys.stderr)
        return 1
    except VideoITGError as e:
        print(f"videoitg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's, not the program's: a full disk, a missing permission, a lost mount
        if e.errno in (*FULL, errno.ELOOP) and e.filename:
            said = str(output_error(e, e.filename))
        else:
            said = f"{e.filename}: {e.strerror or e}" if e.filename is not None else str(e.strerror or e)
        print(f"videoitg {args.command}: error: {said}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
