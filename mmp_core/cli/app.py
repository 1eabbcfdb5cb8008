"""The `mmp` command: parses arguments and calls one library function per subcommand.

The subcommands live beside this module, one module per area (`data`, `stages`, `predict`, `doctor`), each
exposing `add_subcommands(subparsers)`; every subparser sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that contribute subcommands, in help order. Listed by name so that `mmp --help` stays fast.
COMMAND_MODULES = (
    "mmp_core.cli.data",
    "mmp_core.cli.stages",
    "mmp_core.cli.predict",
    "mmp_core.cli.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmp", description=__doc__.splitlines()[0])
    # The deepspeed launcher passes --local_rank=N first; the rank is read from the environment (LOCAL_RANK).
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
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


def user_error(error: BaseException) -> str | None:
    """One line for an error a user can cause (bad input, a wrong S3 endpoint or bucket, an outage), or None
    for a bug, whose traceback is worth seeing."""
    if isinstance(error, ValueError | FileNotFoundError | FileExistsError | KeyError | PermissionError):
        return str(error)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"S3: {info.get('Code', 'error')}: {info.get('Message') or error} ({error.operation_name})"
    if isinstance(error, BotoCoreError):
        return f"S3: {error}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return int(args.func(args) or 0)
    except Exception as error:
        message = user_error(error)
        if message is None or args.debug:
            raise
        # Bad input is reported as one clear line, not a traceback (the message names the file/field).
        print(f"mmp {args.command}: error: {message} (--debug for the traceback)", file=sys.stderr)
        return 2
