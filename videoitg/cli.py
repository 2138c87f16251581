"""`videoitg` command line. Each subcommand lives in `videoitg/commands/<name>.py` and exposes
`HELP: str`, `add_arguments(parser)` and `run(args) -> int`; this file only dispatches, so the
owners of different commands never edit the same file."""

from __future__ import annotations

import argparse
import importlib
import sys

from videoitg.errors import VideoITGError

# name -> module under videoitg.commands
COMMANDS = [
    "score", "demo", "serve", "repo", "build", "verify", "train", "eval", "batch", "synth",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videoitg", description="VideoITG instructed temporal grounding")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"videoitg.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"videoitg.commands.{name}":
                raise
            continue  # command not part of this build
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except VideoITGError as e:
        print(f"videoitg {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
