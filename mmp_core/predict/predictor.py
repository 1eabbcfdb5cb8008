"""Predictions on new inputs: an image, a text, or both, with a trained adapter (`mmp predict`, `Predictor`).

Each input is checked on its own: the modality it lacks decides its prompts (0 complete, 1 text missing,
2 image missing, as in training); an input with neither, an image file that does not exist or does not decode,
or a malformed line of an inputs file becomes that row's error, and the other rows are still predicted.

Inputs are encoded by `mmp_core.data.inputs.encode_sample` and scored by `mmp_core.model.inference.predict`, the
functions evaluation uses, so a test sample given here gets the scores evaluation gave it.

The inputs, the results and label selection live in `mmp_core.predict.inputs` (no torch there).

    from mmp_core.predict import Predictor

    predictor = Predictor.from_store("store")                  # the champion (or run_id=..., method=...)
    predictor = Predictor.from_adapter("models/input/adapter")  # backbone and settings recorded in the adapter
    [result] = predictor.predict([{"image": "poster.jpg", "text": "A detective in a haunted house."}])
    result.labels    # [("Mystery", 0.81), ("Horror", 0.64)]: above the threshold (multilabel), best first
    result.scores    # every label's probability
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from mmp_core.config import TrainParams
from mmp_core.model.precision import resolve_precision, torch_dtype
from mmp_core.params_file import find_project_root, load_section
from mmp_core.predict.inputs import InputError, Prediction, PredictionInput, load_input, select_labels
from mmp_core.scenarios import CODE_NAMES

logger = logging.getLogger(__name__)

# Rows encoded (decoded images held in memory) at a time; results are produced chunk by chunk.
CHUNK_ROWS = 256


# ---------------------------------------------------------------------------------------------- the predictor
class _Samples(torch.utils.data.Dataset):
    """Encoded samples of one chunk, each with its position (`index`) as `evaluate.predict` expects."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return {**self.samples[index], "index": index}


class Predictor:
    """A trained adapter on its backbone, with the tokenizer, input settings and label names it was trained with.

    Build it with `from_store` (a published run, default the champion) or `from_adapter` (an adapter directory).
    `predict` takes inputs and returns one `Prediction` per input, in order.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        label_names: tuple[str, ...],
        max_text_len: int,
        image_config,
        batch_size: int = 16,
        seed: int = 0,
        description: str = "",
        dtype: torch.dtype = torch.float32,
    ):
        if len(label_names) != model.config.num_labels:
            raise ValueError(f"{len(label_names)} label names for a model with {model.config.num_labels} labels")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.label_names = tuple(label_names)
        self.max_text_len = max_text_len
        self.image_config = image_config
        self.batch_size = batch_size
        self.seed = seed
        self.description = description
        self.dtype = dtype  # of the model's weights: the precision it was trained in

    @property
    def task(self) -> str:
        return self.model.config.task

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_adapter(
        cls,
        adapter_dir: str | os.PathLike,
        backbone: str | None = None,
        *,
        params: TrainParams | None = None,
        label_names: Iterable[str] | None = None,
        device: str | torch.device | None = None,
        allow_backbone_mismatch: bool = False,
        **kwargs,
    ) -> Predictor:
        """The predictor of an adapter directory written by `mmp train`.

        Args:
            backbone: the backbone source; default `params.backbone`, else the one recorded in the adapter.
            params: the `train` section it was trained with (text length, positions, image sizes); default the
                settings recorded in the adapter.
            label_names: default the names recorded in the adapter, else the recorded dataset's.
            device: default CUDA when available, else the CPU.
            kwargs: `batch_size`, `seed`.
        """
        from mmp_core.data import ImageConfig
        from mmp_core.model.loading import backbone_for, tokenizer_for
        from mmp_core.model.prompts import ADAPTER_CONFIG_NAME, MissingAwarePromptModel, read_adapter_config

        adapter_dir = Path(adapter_dir)
        metadata = read_adapter_config(adapter_dir)
        config_path = adapter_dir / ADAPTER_CONFIG_NAME
        training = metadata.get("training") or {}
        recorded_backbone = (metadata.get("backbone") or {}).get("name_or_path")
        source = backbone or (params.backbone if params is not None else recorded_backbone)
        if not source:
            raise ValueError(f"{config_path}: records no backbone; pass the backbone it was trained on")
        if params is None:
            if "inputs" not in training:
                raise ValueError(
                    f"{config_path}: records no input settings (adapter from an older mmp); pass the train section it "
                    "was trained with: params= (Python) or --params PATH (mmp predict)"
                )
            try:
                # Adapters from before precision was recorded were trained in fp32.
                params = TrainParams.model_validate({"backbone": source, "precision": "fp32", **training["inputs"]})
            except ValueError as error:
                raise ValueError(f"{config_path}: invalid input settings ({error})") from None
        else:
            params = params.model_copy(update={"backbone": source})
        if source.startswith("small:"):
            raise ValueError(
                f"backbone {source!r} has random weights and no vocabulary of its own; predictions need the trained "
                "backbone directory or hub id (pass backbone=...)"
            )
        try:
            model = MissingAwarePromptModel.from_pretrained(
                backbone_for(params), adapter_dir, allow_backbone_mismatch=allow_backbone_mismatch
            )
        except FileNotFoundError as error:
            if backbone is None and recorded_backbone:
                raise FileNotFoundError(
                    f"{error} (the adapter was trained on backbone {recorded_backbone!r}; pass --backbone / backbone= "
                    "if it lives elsewhere here)"
                ) from None
            raise
        names = _label_names(label_names, training, model.config.num_labels, config_path)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch_dtype(resolve_precision(params.precision, device))
        model.to(device, dtype)
        return cls(
            model,
            tokenizer_for(source, None),
            label_names=names,
            max_text_len=params.max_text_len,
            image_config=ImageConfig.from_params(params.image),
            description=f"{adapter_dir} on {source}",
            dtype=dtype,
            **kwargs,
        )

    @classmethod
    def from_store(
        cls,
        store,
        run_id: str | None = None,
        *,
        method: str | None = None,
        backbone: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        endpoint_url: str | None = None,
        **kwargs,
    ) -> Predictor:
        """The predictor of a published run: the champion by default, or `run_id`.

        The run's files are fetched (checksums verified) into `cache_dir` (default `$MMP_CACHE_DIR/runs`).
        `method` defaults to the champion's (or the run's promoted) method. The backbone defaults to the run's
        `train.backbone`; a relative directory is looked up here, then at the root of the project around the
        current directory. Other arguments as `from_adapter`.
        """
        from mmp_core.fileio import default_cache_dir
        from mmp_core.model.prompts import read_adapter_config
        from mmp_core.storage import open_store
        from mmp_core.storage.artifact_store import ArtifactStore

        if not isinstance(store, ArtifactStore):
            store = open_store(store, endpoint_url=endpoint_url)
        if run_id is None:
            champion = store.get_champion()
            if champion is None:
                runs = store.list_runs()
                raise FileNotFoundError(
                    f"{store.location}: no champion yet; "
                    + (f"pass a run id ({', '.join(runs[-5:])})" if runs else "publish a run first (`make run`)")
                )
            run_id = champion["run_id"]
            method = method or (champion.get("metrics") or {}).get("method")
        manifest = store.get_manifest(run_id)
        metadata = manifest.get("metadata") or {}
        method = method or metadata.get("promote_method")
        if method is None:
            raise ValueError(f"run {run_id!r}: pass a method (one of {metadata.get('methods')})")
        location = hashlib.sha256(store.location.encode()).hexdigest()[:12]
        local = store.fetch_run(run_id, Path(cache_dir or default_cache_dir() / "runs") / location / run_id)
        adapter_dir = local / "models" / method / "adapter"
        if not adapter_dir.is_dir():
            raise FileNotFoundError(
                f"run {run_id!r} has no adapter for method {method!r} (methods: {metadata.get('methods')})"
            )
        params = load_section(local / "params.yaml", "train", TrainParams)
        source = backbone or _locate(params.backbone)
        labels = kwargs.pop("label_names", None)
        if labels is None and "label_names" not in (read_adapter_config(adapter_dir).get("training") or {}):
            labels = _dataset_labels(local / "results" / method / "metrics.json")  # an adapter from an older mmp
        predictor = cls.from_adapter(adapter_dir, source, params=params, label_names=labels, **kwargs)
        predictor.description = f"run {run_id} ({method}) from {store.location}"
        return predictor

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        inputs: Iterable[PredictionInput | Mapping[str, Any]],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
    ) -> list[Prediction]:
        """One `Prediction` per input, in order (see `iter_predict`)."""
        return list(self.iter_predict(inputs, threshold=threshold, top_k=top_k))

    def iter_predict(
        self,
        inputs: Iterable[PredictionInput | Mapping[str, Any]],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        progress: bool = False,
    ) -> Iterator[Prediction]:
        """Predictions as they are made, in input order; inputs are dicts ({"image", "text", "id"}) or
        `PredictionInput`s. `threshold` / `top_k` as in `select_labels`."""
        from mmp_core.data import collate, encode_sample
        from mmp_core.model.inference import predict
        from mmp_core.progress import Progress

        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        items = (
            item if isinstance(item, PredictionInput) else PredictionInput.from_mapping(item, f"input {number}")
            for number, item in enumerate(inputs, start=1)
        )
        total = len(inputs) if isinstance(inputs, list | tuple) else None
        with Progress(total, "predict", unit="row", enabled=progress) as reporter:
            while chunk := list(islice(items, CHUNK_ROWS)):
                results, samples, rows = [], [], []
                for item in chunk:
                    result = Prediction(
                        source=item.source,
                        id=item.id,
                        image="<bytes>" if isinstance(item.image, bytes | bytearray) else _text_or_none(item.image),
                        text=item.text if isinstance(item.text, str) or item.text is None else str(item.text),
                    )
                    try:
                        text, data, code = load_input(item)
                        samples.append(
                            encode_sample(text, data, code, self.tokenizer, self.image_config, self.max_text_len)
                        )
                    except InputError as error:
                        result.error = str(error)
                    except (ValueError, OSError) as error:  # decoding or resizing failed past the check
                        result.error = f"cannot use this input: {error}"
                    else:
                        result.missing_type = CODE_NAMES[code]
                        rows.append(result)
                    results.append(result)
                if samples:
                    scores, _ = predict(
                        self.model,
                        _Samples(samples),
                        collate,
                        batch_size=self.batch_size,
                        seed=self.seed,
                        dtype=self.dtype,
                    )
                    for result, row in zip(rows, scores, strict=True):
                        result.scores = {name: float(s) for name, s in zip(self.label_names, row, strict=True)}
                        result.labels = select_labels(row, self.label_names, self.task, threshold, top_k)
                for result in results:
                    reporter.update()
                    yield result


def _text_or_none(value) -> str | None:
    return None if value is None else str(value)


def _label_names(given, training: dict, num_labels: int, config_path: Path) -> tuple[str, ...]:
    """Label names: given > recorded in the adapter > the recorded dataset's; checked against the head's size."""
    from mmp_core.data.datasets import DATASETS

    names = given if given is not None else training.get("label_names")
    if names is None and training.get("dataset") in DATASETS:
        names = DATASETS[training["dataset"]].label_names
    if names is None:
        logger.warning("%s records no label names; labels are reported by index (label_0, ...)", config_path)
        names = [f"label_{i}" for i in range(num_labels)]
    names = tuple(str(n) for n in names)
    if len(names) != num_labels:
        raise ValueError(f"{config_path}: the adapter predicts {num_labels} labels, but {len(names)} names were given")
    return names


def _dataset_labels(metrics_path: Path) -> tuple[str, ...] | None:
    """The label names of the dataset a run was evaluated on (for adapters that do not record them)."""
    from mmp_core.data.datasets import DATASETS

    try:
        dataset = json.loads(metrics_path.read_text()).get("dataset")
    except (OSError, json.JSONDecodeError):
        return None
    return DATASETS[dataset].label_names if dataset in DATASETS else None


def _locate(backbone: str) -> str:
    """A relative backbone directory as the run saw it: here if it exists, else under the project root."""
    path = Path(backbone).expanduser()
    if backbone.startswith(("small:", "s3://")) or path.is_absolute() or path.exists():
        return backbone
    root = find_project_root()
    if root is not None and (root / path).is_dir():
        return str(root / path)
    return backbone  # a hub id, or a directory that is nowhere: loading says which
