"""Publishing: a finished DVC run turned into a published run of the artifact store, its report and dashboard, and
the champion decided.

Read in this order: `preflight` (checks before any work: params.yaml, the store, the backbone, DVC),
`publish` (a run bundle from the project's outputs, published and promoted), `promotion` (the
champion/challenger rule), `report` and `dashboard` (the HTML), `workspaces` (the isolated checkouts a
fanned-out stage runs in).

Names are imported on first use.
"""

_LAZY = {
    "run_preflight": "mmp_core.publishing.preflight",
    "assemble_run": "mmp_core.publishing.publish",
    "promote": "mmp_core.publishing.publish",
    "decide_promotion": "mmp_core.publishing.promotion",
    "render_report": "mmp_core.publishing.report",
    "write_dashboard": "mmp_core.publishing.dashboard",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["assemble_run", "decide_promotion", "promote", "render_report", "run_preflight", "write_dashboard"]
