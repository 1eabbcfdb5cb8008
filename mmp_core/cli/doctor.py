"""`mmp doctor`: the checks the flows run before any stage (mmp_core.publishing.preflight), printed as a table.

What to run first on a new machine, or when something is off: params.yaml, the store's location and access (an
S3 store reached, its bucket found, a test object written and deleted), the backbone, the DVC project.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the project, params.yaml, the artifact store and the backbone before running (a table)",
        description="Run the checks the flows run before any DVC stage and print each with its result: "
        "params.yaml parses and validates, the store location parses, the store can be written (an S3 store: "
        "endpoint, bucket, a test object written and deleted), the backbone is there (a hub id: cached when "
        "offline), dvc.yaml resolves. Exit code 1 if any check failed.",
    )
    parser.add_argument(
        "--repo", help="the mmp project (default: the folder around the current directory with dvc.yaml)"
    )
    parser.add_argument(
        "--store",
        help="artifact store: a directory (relative: under the project), file:///absolute/dir or "
        "s3://bucket[/prefix] (default: $MMP_STORE, else store)",
    )
    parser.add_argument(
        "--s3-endpoint-url", help="S3-compatible server for an s3:// store (default: $MMP_S3_ENDPOINT_URL)"
    )
    parser.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from mmp_core.params_file import find_project_root
    from mmp_core.publishing.preflight import FAILED, format_table, preflight_checks

    repo = Path(args.repo) if args.repo else find_project_root() or Path.cwd()
    store = args.store if args.store is not None else os.environ.get("MMP_STORE", "store")
    rows = preflight_checks(repo, store, args.s3_endpoint_url)
    print(format_table(rows))
    failed = [row.name for row in rows if row.status == FAILED]
    print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "\nall checks passed")
    return 1 if failed else 0
