"""Predicting new inputs (an image, a text, or both) with a trained adapter or a published run.

Read `inputs` first (what an input and a prediction are, reading .jsonl/.csv files, label selection; no torch),
then `predictor` (`Predictor`: from an adapter or the store, batches through the model as evaluation does).
Names are imported on first use, so `from mmp_core.predict import PredictionInput` does not import torch.

    from mmp_core.predict import Predictor
"""

_LAZY = {
    "Predictor": "mmp_core.predict.predictor",
    "InputError": "mmp_core.predict.inputs",
    "Prediction": "mmp_core.predict.inputs",
    "PredictionInput": "mmp_core.predict.inputs",
    "read_inputs": "mmp_core.predict.inputs",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["InputError", "Prediction", "PredictionInput", "Predictor", "read_inputs"]
