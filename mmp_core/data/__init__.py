"""Data: dataset specs, raw layouts -> Arrow IPC, prepared datasets with their missing tables, model inputs, and
the generated datasets.

Read in this order: `datasets` (what each dataset is: task, labels, splits, metric, layout), `layouts/` (one raw
layout per module, through the safe readers of `layouts/raw`), `convert` (`mmp prepare`: a raw layout into a
prepared directory), `arrow` and `prepared` (its files, opened), `missing` (the per-sample missing tables of a
scenario), `images` and `pixels` (decoding and resizing, the resized-pixel cache), `inputs` (model inputs:
`MultimodalDataset`, `collate`), `vocab`, `errors`; then the generated data: `generate` with `drawing` (the
embedded benchmark), `synthetic` (other worlds in the real layouts), `scenes` and `captions` (pretraining pairs).

Torch-dependent names (`MultimodalDataset`, `collate`, `build_tokenizer`) are imported on first use, so the
`mmp generate` / `mmp prepare` commands start without importing torch.
"""

from mmp_core.data.arrow import ArrowSplit, arrow_schema, validate_schema
from mmp_core.data.datasets import DATASETS, DatasetSpec, get_spec
from mmp_core.data.errors import BAD_SAMPLE_KINDS, BadSampleError, DataError
from mmp_core.data.images import EMBEDDED_IMAGE_CONFIG, ImageConfig
from mmp_core.data.missing import missing_table
from mmp_core.data.prepared import MANIFEST_NAME, PreparedDataset, load_prepared

_LAZY = {
    "MultimodalDataset": "mmp_core.data.inputs",
    "collate": "mmp_core.data.inputs",
    "build_tokenizer": "mmp_core.data.inputs",
    "encode_sample": "mmp_core.data.inputs",
    "default_image_config": "mmp_core.data.inputs",
    "BATCH_KEYS": "mmp_core.data.inputs",
    "prepare": "mmp_core.data.convert",
    "generate_embedded": "mmp_core.data.generate",
    "GenerateConfig": "mmp_core.data.generate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BAD_SAMPLE_KINDS",
    "BATCH_KEYS",
    "DATASETS",
    "EMBEDDED_IMAGE_CONFIG",
    "MANIFEST_NAME",
    "ArrowSplit",
    "BadSampleError",
    "DataError",
    "DatasetSpec",
    "GenerateConfig",
    "ImageConfig",
    "MultimodalDataset",
    "PreparedDataset",
    "arrow_schema",
    "build_tokenizer",
    "collate",
    "default_image_config",
    "encode_sample",
    "generate_embedded",
    "get_spec",
    "load_prepared",
    "missing_table",
    "prepare",
    "validate_schema",
]
