"""Missing-aware prompts over a frozen ViLT (Lee et al., CVPR 2023), written from the spec in method.md §3.

The backbone is never modified: this module re-runs ViLT's encoder loop so that it can (a) prepend prompt
tokens before chosen layers (`input`), or (b) prepend key/value prefixes inside their self-attention
(`attention`). Each missing type has its own prompt set, or (`missing_aware=False`) one set serves every sample.
Only the prompts, a copy of the pooler and the task head are trainable.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import ViltModel

from mmp_core import __version__
from mmp_core.fileio import atomic_write, atomic_write_json
from mmp_core.model.backbone import backbone_fingerprint, fingerprint
from mmp_core.model.prompts.config import (
    NUM_MISSING_TYPES,
    MissingAwarePromptConfig,
)
from mmp_core.model.prompts.layers import ClassificationHead, additive_mask, init_prompts

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
# Backbone shape fields recorded in an adapter; loading onto a backbone that differs in any is refused.
_BACKBONE_SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings")


class MissingAwarePromptModel(nn.Module):
    """Frozen ViLT + missing-aware prompts + trainable pooler + task head; or, with `config.train_backbone`, the
    whole ViLT trained with the pooler and head (full fine-tuning, the reference prompts are measured against).

    Args:
        backbone: a `ViltModel` (frozen here if it is not already).
        config: the prompt configuration.
    """

    def __init__(self, backbone: ViltModel, config: MissingAwarePromptConfig):
        super().__init__()
        backbone_config = backbone.config
        if config.prompt_type != "none" and config.prompt_layers[-1] >= backbone_config.num_hidden_layers:
            raise ValueError(
                f"prompt_layers {list(config.prompt_layers)} name layer {config.prompt_layers[-1]}, but the "
                f"backbone has {backbone_config.num_hidden_layers} layers (0..{backbone_config.num_hidden_layers - 1})"
            )
        if backbone.pooler is None:
            raise ValueError("the backbone has no pooler; load it with add_pooling_layer=True")
        self.config = config
        self.backbone = backbone
        # The weights this model starts from, recorded in its adapter (a fine-tuned backbone's own change).
        self.backbone_fingerprint = backbone_fingerprint(backbone)
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(config.train_backbone)
        hidden_size = backbone_config.hidden_size
        if config.prompt_type == "none":
            self.register_parameter("prompts", None)
        else:
            self.prompts = nn.Parameter(init_prompts(config, hidden_size))
        # The pooler starts from the checkpoint's but is trained: a copy, so the backbone stays untouched.
        self.pooler = copy.deepcopy(backbone.pooler)
        for parameter in self.pooler.parameters():
            parameter.requires_grad_(True)
        self.head = ClassificationHead(hidden_size, config.num_labels)
        # How the frozen layers attend: "sdpa" (torch's fused kernels) or "eager" (the explicit softmax); the
        # results agree to float rounding. A runtime choice, not part of the adapter.
        self.attention_implementation = "sdpa"
        # Encoder layer index -> slot in the prompt parameter's layer axis.
        self._prompt_slot = (
            {} if config.prompt_type == "none" else {layer: slot for slot, layer in enumerate(config.prompt_layers)}
        )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        missing_type: torch.Tensor | None = None,
        frozen_cls: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, num_labels), from the inputs or (baseline only) from the frozen backbone's [CLS] output.

        Args:
            input_ids: (B, T) token ids, T <= the backbone's text positions.
            attention_mask: (B, T), 1 for real tokens, 0 for padding.
            pixel_values: (B, 3, H, W) normalised images (a missing image is a tensor of ones).
            pixel_mask: (B, H, W), 1 for real pixels, 0 for batch padding.
            missing_type: (B,) 0 complete, 1 text missing, 2 image missing; selects each sample's prompts.
            frozen_cls: (B, H) what `frozen_cls()` returned for these inputs, instead of all of them: without
                prompts nothing trainable sits inside the backbone, so its output can be computed once.
        """
        if frozen_cls is not None:
            if self.prompts is not None or self.config.train_backbone:
                raise ValueError("frozen_cls feeds the baseline only: prompts or training change the backbone's output")
            return self.head(self.pooler(frozen_cls[:, None, :]))
        hidden, num_prompt_tokens = self._hidden_states(
            input_ids, attention_mask, pixel_values, pixel_mask, missing_type
        )
        # The text [CLS] is the first token after the accumulated prompt tokens; prompts are never pooled.
        pooled = self.pooler(hidden[:, num_prompt_tokens:])
        return self.head(pooled)

    def frozen_cls(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        missing_type: torch.Tensor,
    ) -> torch.Tensor:
        """(B, H): the frozen backbone's final, layer-normed text [CLS] state, what the baseline's pooler reads."""
        if self.prompts is not None or self.config.train_backbone:
            raise ValueError("the backbone's output depends on what is trained: only the baseline has frozen_cls")
        return self._hidden_states(input_ids, attention_mask, pixel_values, pixel_mask, missing_type)[0][:, 0]

    def _hidden_states(self, input_ids, attention_mask, pixel_values, pixel_mask, missing_type):
        self._check_inputs(input_ids, attention_mask, pixel_values, pixel_mask, missing_type)
        embeddings, mask = self.backbone.embeddings(
            input_ids, attention_mask, None, pixel_values, pixel_mask, None, None, image_token_type_idx=1
        )
        return self.encode(embeddings, mask, missing_type)

    def encode(
        self, embeddings: torch.Tensor, mask: torch.Tensor, missing_type: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """Run the frozen encoder with prompts.

        Args:
            embeddings: (B, T_text + T_image, H) from the backbone's embeddings.
            mask: (B, T_text + T_image) 0/1 visibility of text and image tokens.
            missing_type: (B,) selects each sample's prompt set (one gather, no loop over the batch); without
                missing-aware sets every sample gets the one shared set, whatever its missing type.

        Returns:
            The final layer-normed hidden states (B, P + T_text + T_image, H) and P, the number of prompt
            tokens in front (input-level: prompt_length x number of prompt layers; otherwise 0).
        """
        hidden = embeddings
        mask = mask.to(hidden.dtype)
        batch_size = hidden.shape[0]
        if self.prompts is None:
            prompts = None
        elif self.config.missing_aware:
            prompts = self.prompts[missing_type].to(hidden.dtype)  # (B, P, L, H)
        else:  # the one shared set, broadcast over the batch (a view, no copy)
            prompts = self.prompts.to(hidden.dtype).expand(batch_size, *self.prompts.shape[1:])
        num_prompt_tokens = 0
        for index, layer in enumerate(self.backbone.encoder.layer):
            slot = self._prompt_slot.get(index)
            prefix = None
            if slot is not None and self.config.prompt_type == "input":
                # Prompt tokens join the sequence before this layer (and stay for the layers after it);
                # they are always visible.
                layer_prompts = prompts[:, slot]  # (B, L, H)
                hidden = torch.cat([layer_prompts, hidden], dim=1)
                mask = torch.cat([mask.new_ones(batch_size, layer_prompts.shape[1]), mask], dim=1)
                num_prompt_tokens += layer_prompts.shape[1]
            elif slot is not None:
                prefix = prompts[:, slot]
            hidden = self.vilt_layer(layer, hidden, mask, prefix)
        return self.backbone.layernorm(hidden), num_prompt_tokens

    def vilt_layer(
        self, layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, prefix: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One frozen ViltLayer, written out so that attention runs through SDPA and can take prompt prefixes.

        Args:
            hidden: (B, T, H) layer input; the output has the same shape (queries are the real tokens only).
            mask: (B, T) visibility of the tokens.
            prefix: (B, L, H) attention-level prompt or None; rows [0, L/2) are key vectors and rows [L/2, L)
                value vectors, split into heads like the projected keys and values, always visible.
        """
        attention = layer.attention.attention
        batch_size, seq_len, _ = hidden.shape
        num_heads, head_size = attention.num_attention_heads, attention.attention_head_size

        def split_heads(x: torch.Tensor) -> torch.Tensor:  # (B, N, H) -> (B, heads, N, head_size)
            return x.view(batch_size, -1, num_heads, head_size).transpose(1, 2)

        normed = layer.layernorm_before(hidden)
        query, key, value = (
            split_heads(projection(normed)) for projection in (attention.query, attention.key, attention.value)
        )
        if prefix is not None:
            half = prefix.shape[1] // 2
            key = torch.cat([split_heads(prefix[:, :half]), key], dim=2)
            value = torch.cat([split_heads(prefix[:, half:]), value], dim=2)
            mask = torch.cat([mask.new_ones(batch_size, half), mask], dim=1)
        bias = additive_mask(mask, query.dtype)  # (B, 1, 1, T')
        dropout = attention.dropout.p if self.training else 0.0
        if self.attention_implementation == "sdpa":
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout)
        else:  # the explicit softmax(Q K^T / sqrt(d) + mask) V of ViLT's eager attention
            scores = query @ key.transpose(-1, -2) / math.sqrt(head_size) + bias
            context = attention.dropout(F.softmax(scores, dim=-1)) @ value
        context = context.transpose(1, 2).reshape(batch_size, seq_len, num_heads * head_size)
        # The rest of ViltLayer, unchanged: output projection, residual, MLP block with its residual.
        hidden = layer.attention.output(context, normed) + hidden
        return layer.output(layer.intermediate(layer.layernorm_after(hidden)), hidden)

    def _check_inputs(self, input_ids, attention_mask, pixel_values, pixel_mask, missing_type) -> None:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
        given.update(pixel_mask=pixel_mask, missing_type=missing_type)
        if absent := [name for name, value in given.items() if value is None]:
            raise ValueError(f"missing model inputs: {', '.join(absent)}")
        batch_size = input_ids.shape[0]
        shapes = {
            "input_ids": tuple(input_ids.shape),
            "attention_mask": tuple(attention_mask.shape),
            "pixel_values": tuple(pixel_values.shape),
            "pixel_mask": tuple(pixel_mask.shape),
            "missing_type": tuple(missing_type.shape),
        }
        if (
            input_ids.dim() != 2
            or attention_mask.shape != input_ids.shape
            or pixel_values.dim() != 4
            or pixel_values.shape[0] != batch_size
            or pixel_mask.shape != (batch_size, *pixel_values.shape[2:])
            or missing_type.shape != (batch_size,)
        ):
            raise ValueError(
                "inconsistent batch: expected input_ids/attention_mask (B, T), pixel_values (B, 3, H, W), "
                f"pixel_mask (B, H, W), missing_type (B,); got {shapes}"
            )
        max_positions = self.backbone.config.max_position_embeddings
        if input_ids.shape[1] > max_positions:
            raise ValueError(
                f"text length {input_ids.shape[1]} exceeds the backbone's {max_positions} positions; "
                "load the backbone with max_text_len to interpolate its position embeddings"
            )
        if missing_type.dtype not in (torch.int64, torch.int32) or bool(
            ((missing_type < 0) | (missing_type >= NUM_MISSING_TYPES)).any()
        ):
            raise ValueError(
                "missing_type must be an integer tensor of 0 (complete), 1 (text missing) or 2 (image missing); "
                f"got {missing_type.tolist()}"
            )

    # ------------------------------------------------------------------ task
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """BCE-with-logits on multi-hot labels (multilabel) or cross-entropy on class ids (multiclass, binary)."""
        if self.config.task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return F.cross_entropy(logits.float(), labels.long())

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities: sigmoid (multilabel) or softmax (multiclass, binary)."""
        logits = logits.float()
        return torch.sigmoid(logits) if self.config.task == "multilabel" else torch.softmax(logits, dim=-1)

    # ------------------------------------------------------------------ parameters
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor that is not the frozen backbone's: prompts, pooler, head; with a trained backbone, all."""
        state = self.state_dict()
        if self.config.train_backbone:
            return state
        return {name: tensor for name, tensor in state.items() if not name.startswith("backbone.")}

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        # ZeRO stage 3 leaves each parameter an empty placeholder and records its full size as ds_numel.
        def size(p: nn.Parameter) -> int:
            return getattr(p, "ds_numel", p.numel())

        trainable = sum(size(p) for p in self.parameters() if p.requires_grad)
        total = sum(size(p) for p in self.parameters())
        return trainable, total

    def num_prompt_parameters(self) -> int:
        return 0 if self.prompts is None else self.prompts.numel()

    def print_trainable_parameters(self) -> str:
        """Print (and return) PEFT's one-line summary."""
        trainable, total = self.get_nb_trainable_parameters()
        line = (
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )
        print(line)
        return line

    # ------------------------------------------------------------------ adapters
    def adapter_metadata(self) -> dict:
        backbone_config = self.backbone.config
        return {
            "mmp_version": __version__,
            "prompt_config": self.config.to_dict(),
            "backbone": {
                "name_or_path": backbone_config._name_or_path,
                # The weights training started from; a fine-tuned adapter carries its own backbone tensors.
                "fingerprint": self.backbone_fingerprint,
                **{field: getattr(backbone_config, field) for field in _BACKBONE_SHAPE_FIELDS},
            },
        }

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        extra: dict | None = None,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write `adapter_config.json` (sorted keys) and `adapter_model.safetensors` (trainable tensors only).

        Each file is written under a temporary name and renamed, so a crash never leaves a half-written file.
        `extra` (JSON-serialisable) is stored under the config's "training" key. `state_dict` replaces the
        module's own trainable tensors (e.g. an optimizer's fp32 master weights under bf16 training); it must
        hold exactly the same names.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        own = self.trainable_state_dict()
        if state_dict is not None and set(state_dict) != set(own):
            raise ValueError(
                f"state_dict does not match the trainable tensors: missing {sorted(set(own) - set(state_dict))}, "
                f"unexpected {sorted(set(state_dict) - set(own))}"
            )
        # Stored in fp32 whatever the training precision.
        tensors = {name: t.detach().cpu().float().contiguous() for name, t in (state_dict or own).items()}
        metadata = self.adapter_metadata()
        if extra is not None:
            metadata["training"] = extra
        atomic_write(directory / ADAPTER_WEIGHTS_NAME, lambda path: save_file(tensors, path, {"format": "pt"}))
        atomic_write_json(directory / ADAPTER_CONFIG_NAME, metadata)
        return directory

    @classmethod
    def from_pretrained(
        cls, backbone: ViltModel, directory: str | os.PathLike, *, allow_backbone_mismatch: bool = False
    ) -> MissingAwarePromptModel:
        """Rebuild a model from a saved adapter on `backbone`.

        A backbone of another shape is always refused; one with other weights (fingerprint) is refused unless
        `allow_backbone_mismatch=True` (e.g. moving an adapter to a re-exported copy of the same checkpoint).
        """
        metadata = read_adapter_config(directory)
        config_path = Path(directory) / ADAPTER_CONFIG_NAME
        try:
            config = MissingAwarePromptConfig.from_dict(metadata["prompt_config"])
            recorded = metadata["backbone"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{config_path}: invalid adapter config: {error}") from error
        for field in _BACKBONE_SHAPE_FIELDS:
            if recorded.get(field) != getattr(backbone.config, field):
                raise ValueError(
                    f"{config_path}: adapter was trained on a backbone with {field}={recorded.get(field)}, "
                    f"this backbone has {field}={getattr(backbone.config, field)}"
                )
        if recorded.get("fingerprint") != backbone_fingerprint(backbone) and not allow_backbone_mismatch:
            raise ValueError(
                f"{config_path}: adapter was trained on backbone {recorded.get('name_or_path')!r} with other "
                f"weights (fingerprint {str(recorded.get('fingerprint'))[:12]}…); pass allow_backbone_mismatch=True "
                "to load it anyway"
            )
        if config.train_backbone:
            # The adapter replaces the backbone's weights: on a copy, so that a backbone shared with other
            # adapters (evaluate, predict) stays what it was.
            backbone = copy.deepcopy(backbone)
        model = cls(backbone, config)
        model.load_adapter_weights(Path(directory) / ADAPTER_WEIGHTS_NAME)
        if config.train_backbone:
            # Whatever is cached by the backbone's fingerprint (frozen features) must not mistake these weights
            # for the ones they started from.
            backbone.mmp_fingerprint = fingerprint(backbone)
        return model

    def load_adapter_weights(self, path: Path) -> None:
        try:
            tensors = load_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: adapter weights not found") from None
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise ValueError(f"{path}: corrupt or truncated adapter weights ({error})") from error
        expected = self.trainable_state_dict()
        if set(tensors) != set(expected):
            raise ValueError(
                f"{path}: adapter tensors do not match this configuration: missing "
                f"{sorted(set(expected) - set(tensors))}, unexpected {sorted(set(tensors) - set(expected))}"
            )
        for name, tensor in tensors.items():
            if tensor.shape != expected[name].shape:
                raise ValueError(
                    f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
                )
        self.load_state_dict(tensors, strict=False)


def read_adapter_config(directory: str | os.PathLike) -> dict:
    path = Path(directory) / ADAPTER_CONFIG_NAME
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: adapter config not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: adapter config is not valid JSON ({error})") from error
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: adapter config must be a JSON object")
    return metadata
