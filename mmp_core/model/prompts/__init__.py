"""Missing-aware prompts (PEFT-shaped): a frozen config dataclass and the model module."""

from mmp_core.model.prompts.config import (
    COMPLETE,
    IMAGE_MISSING,
    NUM_MISSING_TYPES,
    TEXT_MISSING,
    MissingAwarePromptConfig,
)
from mmp_core.model.prompts.model import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    MissingAwarePromptModel,
    read_adapter_config,
)

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "COMPLETE",
    "IMAGE_MISSING",
    "NUM_MISSING_TYPES",
    "TEXT_MISSING",
    "MissingAwarePromptConfig",
    "MissingAwarePromptModel",
    "read_adapter_config",
]
