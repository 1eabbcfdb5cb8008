"""The `mmp` command: parses arguments and calls one library function per subcommand.

Each area of the library owns its subcommands in a small `commands` module exposing
`add_subcommands(subparsers)`; every subparser sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that contribute subcommands, in help order. Listed by name so that `mmp --help` stays fast.
COMMAND_MODULES = (
    "mmp_core.data.commands",
    "mmp_core.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmp", description=__doc__.splitlines()[0])
    # The deepspeed launcher passes --local_rank=N first; the rank is read from the environment (LOCAL_RANK).
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_subcommands(subparsers)
    return parser


def configure_logging() -> None:
    """The library's log lines (progress off a terminal, warnings) on stderr, with the time."""
    library = logging.getLogger("mmp_core")
    if not library.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        library.addHandler(handler)
        library.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as error:
        # Bad input is reported as one clear line, not a traceback (the message names the file/field).
        print(f"mmp {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
