"""The model: a frozen backbone, the missing-aware prompts over it, and the forward passes every stage shares.

Read in this order: `hub` and `backbone` (a ViLT from a directory, s3:// or the Hugging Face cache; frozen, its
text positions stretched), `precision` (bf16 or fp32 for the machine), `prompts/` (`config`, `layers`, `model`:
`MissingAwarePromptModel` and its adapters, PEFT-shaped), `inference` (a batch on its device, a model over a
dataset in order), `features` (the baseline's frozen [CLS] states, cached), `loading` (the backbone, tokenizer
and split a stage gets from its `train` section). A second backbone family (a CLIP two-tower) goes here, beside
`backbone`, with its prompt model under `prompts/`.

Names are imported on first use, so importing one module of the package does not import torch through the rest.
"""

_LAZY = {
    "load_backbone": "mmp_core.model.backbone",
    "resolve_backbone_dir": "mmp_core.model.backbone",
    "MissingAwarePromptConfig": "mmp_core.model.prompts",
    "MissingAwarePromptModel": "mmp_core.model.prompts",
    "read_adapter_config": "mmp_core.model.prompts",
    "backbone_for": "mmp_core.model.loading",
    "tokenizer_for": "mmp_core.model.loading",
    "split_dataset": "mmp_core.model.loading",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MissingAwarePromptConfig",
    "MissingAwarePromptModel",
    "backbone_for",
    "load_backbone",
    "read_adapter_config",
    "resolve_backbone_dir",
    "split_dataset",
    "tokenizer_for",
]
