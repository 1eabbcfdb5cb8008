"""Typed parameters: one schema for `params.yaml`, the `mmp` CLI and the Prefect flow parameters.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key or a bad value fails before any
work starts, with the file and the field named.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmp_core.scenarios import DEFAULT_RATES, MISSING_TYPES, MissingScenario

METHODS: dict[str, str] = {
    "baseline": "none",
    "attention": "attention",
    "input": "input",
    "shared": "attention",
    "finetune": "none",
}
"""Method name (as in the paper's tables) -> prompt_type. `shared` is the paper's ablation: ONE prompt set for
every missing type (MissingAwarePromptConfig.missing_aware=False), at the level `train.shared_prompt_type`
chooses (attention, the value here, by default). `finetune` is the reference row: no prompts, the whole backbone
trains (MissingAwarePromptConfig.train_backbone) at `train.backbone_lr`, under `train.finetune_deepspeed_config`."""
REFERENCE_METHODS = ("baseline", "finetune")
"""The rows prompts are judged against: the frozen backbone (floor) and the fine-tuned one (ceiling)."""
MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]
"""One of METHODS' names, for the schema's fields."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioParams(Section):
    """A missing-modality setting: `rate` of the samples lose `type` ('both': rate/2 text + rate/2 image)."""

    type: Literal["text", "image", "both"] = Field("both", description="the modality that goes missing")
    rate: float = Field(0.7, ge=0.0, le=1.0, description="fraction of the samples that lose it")
    source: Literal["mmp", "reference"] = Field(
        "mmp",
        description="mmp: the prepared table of this type and rate; reference: the reference implementation's "
        ".pt table imported with `mmp import-missing` (to compare with its published runs)",
    )

    @property
    def scenario(self) -> MissingScenario:
        """The setting as the missing tables name it (`missing_type` there, `type` in params.yaml)."""
        return MissingScenario(self.type, self.rate)


class ImageParams(Section):
    """Resize: shorter side, longer side cap, both rounded down to multiples of the patch size (docs/method.md §6)."""

    shorter_side: int = Field(384, gt=0, description="the shorter image side is scaled to this")
    longer_side: int = Field(640, gt=0, description="cap of the longer side")
    patch_size: int = Field(32, gt=0, description="both sides are rounded down to multiples of it (the backbone's)")

    @model_validator(mode="after")
    def _sides_fit(self) -> ImageParams:
        if self.shorter_side < self.patch_size:
            raise ValueError(f"shorter_side ({self.shorter_side}) must be at least patch_size ({self.patch_size})")
        if self.longer_side < self.shorter_side:
            raise ValueError(f"longer_side ({self.longer_side}) must be at least shorter_side ({self.shorter_side})")
        return self


EMBEDDED_IMAGE = ImageParams(shorter_side=96, longer_side=160, patch_size=16)
"""The image size of the embedded dataset and of the backbone the project ships."""


class GenerateParams(Section):
    """The embedded synthetic dataset (`mmp generate`): sizes, seed and noise; or, with `layout`, a synthetic
    dataset of another world in one of the three raw layouts (mmp_core/data/synthetic.py)."""

    layout: Literal["embedded", "mmimdb", "food101", "hatememes"] = Field(
        "embedded",
        description="embedded: the benchmark (MM-IMDb layout, 8 fixed genres); mmimdb, food101, hatememes: a new "
        "synthetic world drawn from the seed, in that raw layout (to try a recipe on data it was not tuned for)",
    )
    classes: int = Field(8, ge=2, le=101, description="classes of a food101-layout synthetic dataset")
    seed: int = Field(0, description="seed of the whole dataset")
    train: int = Field(1500, gt=0, description="training samples")
    dev: int = Field(300, gt=0, description="validation samples")
    test: int = Field(600, gt=0, description="test samples")
    label_noise: float = Field(0.02, ge=0, le=1, description="probability of flipping each genre label")
    natural_missing: float = Field(
        0.0, ge=0, le=1, description="fraction of samples written without image file or with an empty plot (half each)"
    )


class PrepareParams(Section):
    """Converting a raw dataset layout, or the reference implementation's arrow files, into a prepared directory
    (`mmp prepare`): arrow files, manifest, missing tables."""

    dataset: str = Field("embedded", description="which dataset (its labels, splits and layout; docs/data.md)")
    raw: str | None = Field(None, description="raw dataset directory (the dataset's layout)")
    from_arrow: str | None = Field(None, description="directory with the reference's {dataset}_{split}.arrow files")
    on_bad_sample: Literal["fail", "skip"] = Field(
        "fail", description="fail on the first bad sample, or skip bad samples and count them in the manifest"
    )
    vocab_size: int | None = Field(
        None,
        ge=0,
        description="build vocab.txt from the training text with at most this many tokens (0: none; unset: 1024 "
        "for the embedded dataset, 0 otherwise: real datasets use the backbone's vocab)",
    )
    missing_seed: int = Field(0, description="seed of the saved missing tables (the runs' default seed)")
    missing_types: tuple[Literal["text", "image", "both"], ...] = Field(
        MISSING_TYPES, description="types of the saved tables"
    )
    missing_rates: tuple[float, ...] = Field(DEFAULT_RATES, description="rates of the saved tables")
    ignore_label: tuple[str, ...] = Field((), description="raw genres to drop instead of rejecting")
    reference_missing: tuple[str, ...] = Field(
        (), description="reference *_missing_*.pt tables (files or directories) to import into missing/reference/"
    )
    batch_rows: int = Field(256, gt=0, description="rows per arrow record batch")

    @model_validator(mode="after")
    def _one_source(self) -> PrepareParams:
        if (self.raw is None) == (self.from_arrow is None):
            raise ValueError("give exactly one source: raw (a raw layout) or from_arrow (reference arrow files)")
        return self


class PretrainParams(Section):
    """Pretraining a small ViLT (`mmp pretrain`): the embedded backbone from generated captioned scenes, a generic
    one as ViLT was made (`corpus: captions`), or one for your own data (`corpus: prepared`)."""

    config: str = Field("small", description="named small ViLT shape: tiny, small or vilt-b32")
    corpus: Literal["scenes", "captions", "prepared"] = Field(
        "scenes", description="scenes: captioned scenes; captions: generic pictures (ViLT); prepared: a dataset's pairs"
    )
    init: str | None = Field(
        None,
        description="backbone directory to continue pretraining from (e.g. backbones/embedded; `--init` wins): its "
        "weights and pretraining heads, its vocab.txt extended with the corpus's words; `config` is then unused",
    )
    pairs: int = Field(40000, gt=0, description="pairs rendered for pretraining (corpus: scenes, captions)")
    heldout: int = Field(
        1000,
        ge=100,
        description="held-out pairs for the matching metrics (corpus: scenes, captions; a prepared corpus holds out "
        "its validation split's complete pairs)",
    )
    # The backbone's own setting, apart from train.max_text_len: pretraining reads texts of this length, and
    # prompt training may read shorter ones (or stretch the table with train.text_positions).
    text_positions: int = Field(40, gt=2, description="text positions of the pretrained backbone (ViLT-B/32: 40)")
    image: ImageParams = Field(EMBEDDED_IMAGE, description="image resize rule and patch size")
    epochs: int = Field(8, gt=0, description="passes over the pairs")
    batch_size: int = Field(64, gt=1)
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate (linear warmup, then decay)")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="fraction of the steps spent warming up")
    mlm_probability: float = Field(0.15, ge=0, lt=1, description="fraction of other words masked for MLM")
    concept_mlm_probability: float = Field(0.5, ge=0, lt=1, description="words naming what is drawn (corpus: scenes)")
    hard_negatives: float = Field(0.5, ge=0, le=1, description="share of mismatched pairs that are hard negatives")
    itc_weight: float = Field(1.0, ge=0, description="image-text contrast on single-modality [CLS]; 0, captions: off")
    precision: Literal["bf16", "fp32"] = Field("bf16", description="bf16: autocast with fp32 weights")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    seed: int = Field(0, description="corpus, initial weights, masking and batch order")
    checkpoint_every: int = Field(
        200, gt=0, description="steps between resumable checkpoints (one is also saved at each epoch's end)"
    )


class TrainParams(Section):
    """Prompt training (docs/method.md §6 defaults; the embedded params.yaml scales them to 2 CPU cores)."""

    backbone: str = Field(
        "models/backbone",
        description="a save_pretrained directory, s3://bucket/prefix, a Hugging Face id org/name[@revision], "
        "or small:<name>",
    )
    max_text_len: int = Field(40, gt=2, description="tokens per text (truncated / padded)")
    text_positions: int | None = Field(
        None,
        gt=2,
        description="stretch the backbone's text position table to this many positions (docs/method.md §1), needed when "
        "max_text_len exceeds the backbone's positions; unset: the checkpoint's own table",
    )
    image: ImageParams = ImageParams()
    prompt_length: int = Field(16, gt=0, description="prompt tokens per layer and missing case")
    prompt_layers: tuple[int, ...] = Field((0, 1, 2, 3, 4, 5), description="encoder layers that get prompts")
    shared_prompt_type: Literal["attention", "input"] = Field(
        "attention",
        description="the level of method `shared`'s prompts: ONE set for every missing type, as attention-level "
        "(key/value prefixes) or input-level (prepended tokens) prompts",
    )
    epochs: int = Field(20, gt=0, description="passes over the train split, within the step floor and cap below")
    min_steps: int = Field(
        2000,
        ge=1,
        description="floor of the optimizer steps: a small dataset trains for more epochs until it has taken this "
        "many (1: epochs alone decide, as in the paper)",
    )
    max_steps: int | None = Field(None, ge=1, description="cap of the optimizer steps (unset: none)")
    patience: int = Field(
        20,
        ge=0,
        description="stop early after this many validations without a better validation score (0: never)",
    )
    batch_size: int = Field(32, gt=0, description="micro batch per process")
    effective_batch_size: int = Field(256, gt=0, description="reached by gradient accumulation")
    lr: float = Field(
        1e-2, gt=0, description="AdamW peak learning rate of the prompts (linear warmup, then linear decay)"
    )
    head_lr: float | None = Field(
        1e-3,
        gt=0,
        description="peak learning rate of the pooler and the task head (unset: lr, as in the paper); the head "
        "over frozen features needs a smaller one than the prompts",
    )
    backbone_lr: float = Field(
        1e-4,
        gt=0,
        description="method finetune: peak learning rate of the backbone's weights (the pooler and head keep head_lr)",
    )
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(2e-2, ge=0, description="on weights and prompts, not on biases and norms")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of the steps spent warming up")
    val_per_epoch: int = Field(
        5, gt=0, description="validations (and checkpoints) per epoch, at most 50 over the whole budget"
    )
    deepspeed_config: str = Field(
        "infra/deepspeed/zero0.json",
        description="DeepSpeed JSON of the prompt methods and the baseline (ZeRO stage 0 or 2)",
    )
    finetune_deepspeed_config: str = Field(
        "infra/deepspeed/zero2.json",
        description="DeepSpeed JSON of method finetune: ZeRO stage 2 partitions its optimizer state and gradients "
        "over the processes; stage 3 (infra/deepspeed/zero3.json) also partitions the weights, for backbones that "
        "do not fit one device",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="bf16: bf16 weights and activations, fp32 master weights in the optimizer and the adapter; "
        "auto: bf16 where the hardware computes it natively (recent GPUs, CPUs with AVX512-BF16 or AMX), else fp32; "
        "evaluation and prediction use the same",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    cache_images: bool = Field(
        True,
        description="decode and resize every image once per dataset version and image setting, into a uint8 "
        "cache under $MMP_CACHE_DIR/pixels (training and evaluation then read it instead of the JPEGs)",
    )
    frozen_features: bool = Field(
        True,
        description="baseline: train the pooler and head on the frozen backbone's [CLS] states, computed once per "
        "sample and missing variant and cached (needs a backbone without dropout or patch sampling); false: run "
        "the backbone at every step",
    )
    keep_checkpoints: int = Field(2, gt=0, description="resumable checkpoints kept during training")
    seed: int = Field(0, description="initial weights and batch order")
    missing_seed: int | None = Field(
        None,
        description="seed of the missing tables; unset: the prepared dataset's (prepare.missing_seed, its saved "
        "tables); another seed computes the tables of that seed",
    )
    train_missing: ScenarioParams = Field(ScenarioParams(), description="missing setting of the training split")
    val_missing: ScenarioParams = Field(ScenarioParams(), description="missing setting of the validation split")

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
        if self.max_steps is not None and self.max_steps < self.min_steps:
            raise ValueError(f"max_steps {self.max_steps} is below min_steps {self.min_steps}")
        if self.text_positions is not None and self.max_text_len > self.text_positions:
            raise ValueError(
                f"max_text_len {self.max_text_len} exceeds text_positions {self.text_positions}: raise text_positions "
                f"to at least {self.max_text_len} or lower max_text_len"
            )
        return self


class EvaluateParams(Section):
    """The scenario grid: every rate x every type on the test split, plus the training setting."""

    rates: tuple[float, ...] = Field(DEFAULT_RATES, description="missing rates of the grid")
    types: tuple[Literal["text", "image", "both"], ...] = Field(
        ("text", "image", "both"), description="missing types of the grid"
    )
    test_missing: ScenarioParams = Field(ScenarioParams(), description="the headline cell (the paper's setting)")
    batch_size: int = Field(64, gt=0)
    seed: int = Field(0, description="inference RNG (ViLT's patch sampling)")

    @field_validator("rates")
    @classmethod
    def _rates_in_range(cls, rates: tuple[float, ...]) -> tuple[float, ...]:
        if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
            raise ValueError(f"rates must be non-empty and within [0, 1]: {list(rates)}")
        return tuple(sorted(set(rates)))


def describe_fields(model: type[BaseModel], prefix: str, given: dict | None = None) -> list[str]:
    """One line per field of a section, nested sections flattened: `train.lr = 0.01: AdamW peak ...`.

    What `mmp train --help` (and the other stages) list, so the options always match the schema. `given`: the
    section as a parameters file holds it (validated here; an invalid one raises ValueError): each line then
    shows the value the stage reads, marked `(default)` where the file leaves the field unset and `(default X)`
    where the file's value differs from the schema's default X. None: the schema's defaults, unmarked.
    """
    import json

    values = None if given is None else model.model_validate(given).model_dump(mode="json")
    lines = []
    for name, info in model.model_fields.items():
        key = f"{prefix}.{name}"
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            lines.append(f"{key}: {info.description or info.annotation.__doc__.splitlines()[0]}")
            nested = None if given is None else (given.get(name) or {})
            lines += ["  " + line for line in describe_fields(info.annotation, key, nested)]
            continue
        default = json.dumps(info.get_default(call_default_factory=True))
        if values is None:
            line = f"{key} = {default}"
        elif name not in given:
            line = f"{key} = {default} (default)"
        else:
            value = json.dumps(values[name])
            line = f"{key} = {value}" + ("" if value == default else f" (default {default})")
        lines.append(f"{line}: {info.description}" if info.description else line)
    return lines


class PipelineParams(Section):
    """The Prefect flows' parameters (also the `pipeline` section of params.yaml). Validated before any work."""

    repo: str = Field(".", description="the mmp DVC project to run (its dvc.yaml and params.yaml)")
    # Defaults come from the environment (infra/local-stack.sh exports them), so deployments and workers need no
    # per-run parameters; without it: the local `store/` directory.
    store: str = Field(
        default_factory=lambda: os.environ.get("MMP_STORE", "store"),
        description="artifact store: a directory, file:///dir or s3://bucket[/prefix] (default: $MMP_STORE or store)",
    )
    s3_endpoint_url: str | None = Field(
        default_factory=lambda: os.environ.get("MMP_S3_ENDPOINT_URL") or None,
        description="S3-compatible server, e.g. http://127.0.0.1:5055 (default: $MMP_S3_ENDPOINT_URL)",
    )
    methods: tuple[MethodName, ...] | None = Field(
        None, description="methods to publish (default: params.yaml's `methods`, the ones DVC trains)"
    )
    promote_method: MethodName | Literal["best"] = Field("best", description="candidate: best validation, or a method")
    tolerance: float = Field(0.01, ge=0.0, le=1.0, description="largest allowed drop in any grid cell")
    require_learning: bool = Field(
        True,
        description="never promote a model that gives (almost) every sample the same answer or does not beat "
        "the label prior (it is still published, with the warning)",
    )
    seeds: tuple[int, ...] | None = Field(
        None,
        description="training seeds of this run (default: params.yaml's seeds); given, params.yaml's seeds become "
        "these, and the DVC pipeline runs as an experiment (`dvc exp run -S seeds=[...]`), or with max_parallel > 1 "
        "as fanned-out stages",
    )
    run_id: str | None = Field(None, description="default: UTC time + data/params fingerprint")
    max_parallel: int = Field(
        1, ge=1, le=256,
        description="DVC stages run at once: 1 runs each in the project, in order; N runs up to N independent "
        "stages (every train@, then every evaluate@) at once, each in its own workspace (see executor)",
    )  # fmt: skip
    executor: Literal["local", "workers"] = Field(
        "local",
        description="where fanned-out stages run: `local`, git worktrees on this machine sharing the DVC cache; "
        "`workers`, runs of the mmp-stage deployment on a Prefect work pool, through the DVC remote",
    )
    stage_deployment: str = Field("mmp-stage/stage", description="the deployment workers run stages with")
    git_url: str | None = Field(
        None, description="where workers clone the project from (default: its `origin` remote, else its path)"
    )
    pull: bool = Field(False, description="`dvc pull` before running (retrain: the newest data version)")
    push: bool = Field(False, description="`dvc push` the pipeline's outputs to the DVC remote after running")

    @field_validator("store")
    @classmethod
    def _store_location(cls, store: str) -> str:
        from mmp_core.s3 import validate_store_location

        return validate_store_location(store)  # the one grammar of store locations (also MMP_STORE's, by preflight)

    @field_validator("seeds")
    @classmethod
    def _seeds_valid(cls, seeds: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0):
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
        return seeds

    @field_validator("run_id")
    @classmethod
    def _run_id_safe(cls, run_id: str | None) -> str | None:
        if run_id is not None:
            from mmp_core.s3 import validate_run_id

            validate_run_id(run_id)  # the store's own rule, checked before any work
        return run_id

    @model_validator(mode="after")
    def _promoted_method_runs(self) -> PipelineParams:
        if self.methods is not None and (not self.methods or self.promote_method not in (*self.methods, "best")):
            raise ValueError(f"promote_method {self.promote_method!r} must be one of methods {[*self.methods]} or best")
        return self

    @model_validator(mode="after")
    def _workers_run_committed_seeds(self) -> PipelineParams:
        if self.seeds and self.executor == "workers":
            raise ValueError(
                "workers check out the flow's commit, so seeds cannot be changed for one run: commit params.yaml "
                "with `seeds: [0, 1, 2]` instead"
            )
        return self
