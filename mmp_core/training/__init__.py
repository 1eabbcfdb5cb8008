"""Training: one method's prompts (or, for `finetune`, the whole backbone) trained over a prepared dataset.

Read in this order: `train` (`mmp train`: `training_data`, `build_model`, then `train.train`, the loop with
validation, early stopping, resumable checkpoints and the best adapter), `budget` (the step budget and the
validation interval), `deepspeed_setup` (the DeepSpeed engine, its parameter groups and process group),
`checkpoints` (resumable checkpoints of a run and the adapter directories).

Names are imported on first use (DeepSpeed and torch are heavy).
"""

_LAZY = {
    "training_data": "mmp_core.training.train",
    "build_model": "mmp_core.training.train",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["build_model", "training_data"]
