"""Old import path, kept for code written against it (docs/data.md once showed `from mmp_core.missing import
MissingScenario, missing_table`). The missing-modality vocabulary now lives in `mmp_core.scenarios`, the
per-sample missing tables in `mmp_core.data.missing`; nothing inside mmp_core imports this module."""

from mmp_core.data.missing import (
    INDEX_FORMAT,
    INDEX_NAME,
    MISSING_DIR,
    counts,
    force_natural,
    import_reference_tables,
    load_reference_table,
    missing_count,
    missing_table,
    parse_reference_name,
    ranking,
    save_tables,
    scenario_table,
    table_name,
)
from mmp_core.scenarios import (
    CODE_NAMES,
    COMPLETE,
    DEFAULT_RATES,
    IMAGE_MISSING,
    MISSING_TYPES,
    TEXT_MISSING,
    TYPE_CODES,
    MissingScenario,
    rate_tag,
)

__all__ = [
    "CODE_NAMES",
    "COMPLETE",
    "DEFAULT_RATES",
    "IMAGE_MISSING",
    "INDEX_FORMAT",
    "INDEX_NAME",
    "MISSING_DIR",
    "MISSING_TYPES",
    "TEXT_MISSING",
    "TYPE_CODES",
    "MissingScenario",
    "counts",
    "force_natural",
    "import_reference_tables",
    "load_reference_table",
    "missing_count",
    "missing_table",
    "parse_reference_name",
    "ranking",
    "rate_tag",
    "save_tables",
    "scenario_table",
    "table_name",
]
