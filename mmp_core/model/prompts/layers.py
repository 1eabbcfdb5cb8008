"""The small pieces of the prompt model: the classification head, the prompts' initial values, attention masks."""

from __future__ import annotations

import torch
from torch import nn

from mmp_core.model.prompts.config import COMPLETE, IMAGE_MISSING, TEXT_MISSING, MissingAwarePromptConfig


class ClassificationHead(nn.Sequential):
    """Linear(H, 2H) -> LayerNorm(2H) -> GELU -> Linear(2H, C), weights N(0, 0.02), zero biases."""

    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__(
            nn.Linear(hidden_size, 2 * hidden_size),
            nn.LayerNorm(2 * hidden_size),
            nn.GELU(),
            nn.Linear(2 * hidden_size, num_labels),
        )
        for module in self:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)


def init_prompts(config: MissingAwarePromptConfig, hidden_size: int) -> torch.Tensor:
    """Initial prompts, shape (3, num_prompt_layers, L, H), indexed by missing type; (1, ...) without
    missing-aware sets, the one set every sample gets.

    `reference`: zeros with one row of ones that tells the missing cases apart: row 0 for complete,
    row 1 for image-missing, row 2 for text-missing, in every layer (attention-level: also row L/2 + the same
    offset, so keys and values both carry it). The shared set starts as the complete case's: row 0.
    """
    shape = (config.num_prompt_sets, config.num_prompt_layers, config.prompt_length, hidden_size)
    if config.prompt_init == "normal":
        return torch.randn(shape) * 0.02
    prompts = torch.zeros(shape)
    marker_row = {COMPLETE: 0, IMAGE_MISSING: 1, TEXT_MISSING: 2} if config.missing_aware else {0: 0}
    for missing_type, row in marker_row.items():
        prompts[missing_type, :, row] = 1.0
        if config.prompt_type == "attention":
            prompts[missing_type, :, config.prompt_length // 2 + row] = 1.0
    return prompts


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, 1, 1, T) additive mask: 0 where visible, the dtype's minimum where masked."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
