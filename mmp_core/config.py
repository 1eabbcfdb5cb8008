"""Typed parameters: one schema for `params.yaml`, the `mmp` CLI and the Prefect flow parameters.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key or a bad value fails before any
work starts, with the file and the field named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

METHODS: dict[str, str] = {"baseline": "none", "attention": "attention", "input": "input"}
"""Method name (as in the paper's tables) -> prompt_type."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioParams(Section):
    """A missing-modality setting: `rate` of the samples lose `type` ('both': rate/2 text + rate/2 image)."""

    type: Literal["text", "image", "both"] = "both"
    rate: float = Field(0.7, ge=0.0, le=1.0)


class ImageParams(Section):
    """Resize: shorter side, longer side cap, both rounded down to multiples of the patch size (spec §6)."""

    shorter_side: int = Field(384, gt=0)
    longer_side: int = Field(640, gt=0)
    patch_size: int = Field(32, gt=0)


class PretrainParams(Section):
    """Pretraining a small ViLT (`mmp pretrain`): the embedded backbone from generated captioned scenes, or a
    backbone for your own data from a prepared dataset's complete pairs (`corpus: prepared`)."""

    config: str = "small"
    corpus: Literal["scenes", "prepared"] = "scenes"
    pairs: int = Field(40000, gt=0, description="scenes rendered for pretraining (corpus: scenes)")
    heldout: int = Field(1000, ge=100, description="held-out scenes for the matching metrics (corpus: scenes)")
    max_text_len: int = Field(40, gt=2, description="text positions of the backbone")
    image: ImageParams = ImageParams(shorter_side=96, longer_side=160, patch_size=16)
    epochs: int = Field(8, gt=0)
    batch_size: int = Field(64, gt=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    mlm_probability: float = Field(0.15, ge=0, lt=1)
    concept_mlm_probability: float = Field(0.5, ge=0, lt=1, description="whole words that name what is drawn")
    hard_negatives: float = Field(0.5, ge=0, le=1, description="share of mismatched pairs that are hard negatives")
    itc_weight: float = Field(1.0, ge=0, description="image-text contrast on single-modality [CLS]; 0 = off")
    precision: Literal["bf16", "fp32"] = Field("bf16", description="bf16: autocast with fp32 weights")
    num_workers: int = Field(0, ge=0)
    seed: int = 0


class TrainParams(Section):
    """Prompt training (spec §6 defaults; the embedded params.yaml scales them to 2 CPU cores)."""

    backbone: str = "models/backbone"
    max_text_len: int = Field(40, gt=2)
    image: ImageParams = ImageParams()
    prompt_length: int = Field(16, gt=0)
    prompt_layers: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(32, gt=0, description="micro batch per process")
    effective_batch_size: int = Field(256, gt=0, description="reached by gradient accumulation")
    lr: float = Field(1e-2, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(2e-2, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    val_per_epoch: int = Field(5, gt=0)
    deepspeed_config: str = "infra/deepspeed/zero0_fp32.json"
    num_workers: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, gt=0)
    seed: int = 0
    missing_seed: int = 0
    train_missing: ScenarioParams = ScenarioParams()
    val_missing: ScenarioParams = ScenarioParams()

    @field_validator("prompt_layers")
    @classmethod
    def _layers_ascending(cls, layers: tuple[int, ...]) -> tuple[int, ...]:
        if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0:
            raise ValueError(f"prompt_layers must be non-negative, strictly ascending, non-empty: {list(layers)}")
        return layers

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainParams:
        if self.effective_batch_size % self.batch_size:
            raise ValueError(
                f"effective_batch_size {self.effective_batch_size} must be a multiple of batch_size {self.batch_size}"
            )
        return self


class EvaluateParams(Section):
    """The scenario grid: every rate x every type on the test split, plus the training setting."""

    rates: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
    types: tuple[Literal["text", "image", "both"], ...] = ("text", "image", "both")
    test_missing: ScenarioParams = ScenarioParams()
    batch_size: int = Field(64, gt=0)
    seed: int = 0

    @field_validator("rates")
    @classmethod
    def _rates_in_range(cls, rates: tuple[float, ...]) -> tuple[float, ...]:
        if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
            raise ValueError(f"rates must be non-empty and within [0, 1]: {list(rates)}")
        return tuple(sorted(set(rates)))


def load_section(path: str | Path, section: str, model: type[Section]) -> Section:
    """Read one section of a params.yaml into its typed model, naming the file and field on error."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: parameters file not found") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    values = document.get(section, {})
    try:
        return model.model_validate(values or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{section}.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise ValueError(f"{path}: invalid parameters: {problems}") from None


class PipelineParams(Section):
    """The Prefect flows' parameters (also the `pipeline` section of params.yaml). Validated before any work."""

    repo: str = Field(".", description="the mmp DVC project to run (its dvc.yaml and params.yaml)")
    # Defaults come from the environment (infra/local-stack.sh exports them), so deployments and workers need no
    # per-run parameters; without it: the local `store/` directory.
    store: str = Field(
        default_factory=lambda: os.environ.get("MMP_STORE", "store"),
        description="artifact store: a local directory or s3://bucket/prefix (default: $MMP_STORE or store)",
    )
    s3_endpoint_url: str | None = Field(
        default_factory=lambda: os.environ.get("MMP_S3_ENDPOINT_URL") or None,
        description="S3-compatible server, e.g. http://127.0.0.1:5055 (default: $MMP_S3_ENDPOINT_URL)",
    )
    methods: tuple[Literal["baseline", "attention", "input"], ...] = ("baseline", "attention", "input")
    promote_method: Literal["baseline", "attention", "input"] = "input"
    tolerance: float = Field(0.01, ge=0.0, le=1.0, description="largest allowed drop in any grid cell")
    run_id: str | None = Field(None, description="default: UTC time + data/params fingerprint")
    pull: bool = Field(False, description="`dvc pull` before running (retrain: the newest data version)")
    push: bool = Field(False, description="`dvc push` the pipeline's outputs to the DVC remote after running")

    @field_validator("store")
    @classmethod
    def _store_location(cls, store: str) -> str:
        if store.startswith("s3://"):
            from mmp_core.s3 import S3Uri

            S3Uri.parse(store)
        elif not store:
            raise ValueError("store must be a directory or an s3:// URI")
        return store

    @field_validator("run_id")
    @classmethod
    def _run_id_safe(cls, run_id: str | None) -> str | None:
        if run_id is not None:
            from mmp_core.s3 import validate_key_part

            validate_key_part(run_id, "run id")
        return run_id

    @model_validator(mode="after")
    def _promoted_method_runs(self) -> PipelineParams:
        if not self.methods or self.promote_method not in self.methods:
            raise ValueError(f"promote_method {self.promote_method!r} must be one of methods {list(self.methods)}")
        return self
