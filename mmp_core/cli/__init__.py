"""The `mmp` command line: `mmp = "mmp_core.cli:main"` (pyproject.toml) and `python -m mmp_core.cli`.

Read `app` first (the parser, logging, one line for a user's error), then the subcommands of each area in help
order: `data` (generate, prepare, import-missing, data-info), `stages` (demo, pretrain, train, evaluate,
aggregate, probe: what dvc.yaml runs), `predict`, `doctor`. Each command reads its section of params.yaml and
calls one library function; the heavy imports happen inside the command, so `mmp --help` starts fast.
"""

from mmp_core.cli.app import build_parser, configure_logging, main, user_error

__all__ = ["build_parser", "configure_logging", "main", "user_error"]
