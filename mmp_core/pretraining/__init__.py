"""Pretraining: making a backbone (a small ViLT from captioned pairs) and measuring one.

Read in this order: `pretrain` (`mmp pretrain`: the loop, image-text matching with hard negatives, masked
language modelling and contrast), `data` (the pairs: generated scenes or captions, or a prepared dataset's),
`model` (the backbone with its pretraining heads), `init` (a scratch model, or a pretrained one with its
vocabulary extended), `checkpoints` (resumable checkpoints), `checks` (chance bounds and the own-data rule),
`probe` (`mmp probe`: linear probes of the frozen [CLS] per modality), `model_card` (the card beside a backbone).

Names are imported on first use.
"""

_LAZY = {
    "linear_probe": "mmp_core.pretraining.probe",
    "write_card": "mmp_core.pretraining.model_card",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["linear_probe", "write_card"]
