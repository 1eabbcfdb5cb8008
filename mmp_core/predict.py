"""Predictions on new inputs: an image, a text, or both, with a trained adapter (`mmp predict`, `Predictor`).

Each input is checked on its own: the modality it lacks decides its prompts (0 complete, 1 text missing,
2 image missing, as in training); an input with neither, an image file that does not exist or does not decode,
or a malformed line of an inputs file becomes that row's error, and the other rows are still predicted.

Inputs are encoded by `mmp_core.data.inputs.encode_sample` and scored by `mmp_core.inference.predict`, the
functions evaluation uses, so a test sample given here gets the scores evaluation gave it.

    from mmp_core.predict import Predictor

    predictor = Predictor.from_store("store")                  # the champion (or run_id=..., method=...)
    predictor = Predictor.from_adapter("models/input/adapter")  # backbone and settings recorded in the adapter
    [result] = predictor.predict([{"image": "poster.jpg", "text": "A detective in a haunted house."}])
    result.labels    # [("Mystery", 0.81), ("Horror", 0.64)]: above the threshold (multilabel), best first
    result.scores    # every label's probability
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmp_core.config import TrainParams, find_project_root, load_section
from mmp_core.missing import CODE_NAMES, COMPLETE, IMAGE_MISSING, TEXT_MISSING

logger = logging.getLogger(__name__)

INPUT_FIELDS = ("image", "text")
INPUT_SUFFIXES = (".jsonl", ".csv")
# Rows encoded (decoded images held in memory) at a time; results are produced chunk by chunk.
CHUNK_ROWS = 256


class InputError(ValueError):
    """One input cannot be predicted; the message says what is wrong (the batch goes on)."""


@dataclass(frozen=True)
class PredictionInput:
    """One input: an image (a path, or encoded bytes) and/or a text.

    `source` says where it came from in messages ("inputs.csv line 4"); `problem` marks an input that could not
    even be read (a malformed JSON line), reported as that row's error.
    """

    image: str | os.PathLike | bytes | None = None
    text: str | None = None
    id: str | None = None
    source: str = ""
    problem: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "", base_dir: Path | None = None):
        """From {"image": path, "text": str, "id": ...}; a relative image path is taken from `base_dir`."""
        image = values.get("image")
        if isinstance(image, str) and image.strip() and base_dir is not None:
            image = str(base_dir / Path(image.strip()).expanduser())
        item_id = values.get("id")
        return cls(
            image=image if image not in ("", None) else None,
            text=values.get("text"),
            id=None if item_id in (None, "") else str(item_id),
            source=source,
        )


@dataclass
class Prediction:
    """The result for one input: labels and scores, or the reason it failed (`error`)."""

    source: str
    id: str | None = None
    image: str | None = None
    text: str | None = None
    missing_type: str | None = None  # complete, text_missing or image_missing: which prompts were used
    labels: list[tuple[str, float]] = field(default_factory=list)  # chosen labels, best first
    scores: dict[str, float] | None = None  # every label's probability, in label order
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """One line for a person: where the input came from, what it lacked, the chosen labels."""
        head = f"{self.source}" + (f" ({self.id})" if self.id else "") + f" [{self.missing_type or 'error'}]"
        if self.error is not None:
            return f"{head}: error: {self.error}"
        if self.labels:
            return f"{head}: " + ", ".join(f"{name} {score:.3f}" for name, score in self.labels)
        best = max(self.scores.items(), key=lambda item: item[1]) if self.scores else None
        return f"{head}: no label above the threshold" + (f" (highest: {best[0]} {best[1]:.3f})" if best else "")

    def to_dict(self) -> dict:
        data = {"source": self.source}
        if self.id is not None:
            data["id"] = self.id
        data.update(image=self.image, text=self.text)
        if self.error is not None:
            data["error"] = self.error
        else:
            data["missing_type"] = self.missing_type
            data["labels"] = [{"label": name, "score": score} for name, score in self.labels]
            data["scores"] = self.scores
        return data


# ---------------------------------------------------------------------------------------------- inputs files
def read_inputs(path: str | os.PathLike) -> list[PredictionInput]:
    """The inputs in a `.jsonl` (one object per line) or `.csv` (a header row) file with `image` and/or `text`
    fields (and an optional `id`). Relative image paths are resolved against the file's folder.

    A file that cannot be read as a whole raises (naming it); a bad line becomes one input with a `problem`.
    """
    path = Path(path)
    if path.suffix.lower() not in INPUT_SUFFIXES:
        raise ValueError(f"{path}: inputs must be a .jsonl or .csv file (columns image and/or text)")
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: inputs file not found") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None
    base_dir = path.parent.resolve()
    items = (
        _read_csv(path, content, base_dir) if path.suffix.lower() == ".csv" else _read_jsonl(path, content, base_dir)
    )
    if not items:
        raise ValueError(f"{path}: no inputs in the file")
    return items


def _read_jsonl(path: Path, content: str, base_dir: Path) -> list[PredictionInput]:
    items = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path.name} line {number}"
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            items.append(PredictionInput(source=source, problem=f"not valid JSON ({error})"))
            continue
        if not isinstance(values, dict):
            items.append(PredictionInput(source=source, problem="expected a JSON object with image and/or text"))
            continue
        items.append(PredictionInput.from_mapping(values, source, base_dir))
    return items


def _read_csv(path: Path, content: str, base_dir: Path) -> list[PredictionInput]:
    reader = csv.DictReader(io.StringIO(content))
    columns = reader.fieldnames or []
    if not set(INPUT_FIELDS) & set(columns):
        raise ValueError(f"{path}: needs an 'image' and/or a 'text' column in its header row; found {columns}")
    items = []
    for row in reader:
        source = f"{path.name} line {reader.line_num}"
        if None in row:  # more cells than header columns
            items.append(PredictionInput(source=source, problem=f"more cells than the {len(columns)} header columns"))
            continue
        items.append(PredictionInput.from_mapping(row, source, base_dir))
    return items


# ---------------------------------------------------------------------------------------------- one input
def load_input(item: PredictionInput) -> tuple[str, bytes | None, int]:
    """(text, encoded image or None, missing type) of an input; InputError says what is wrong with it."""
    if item.problem is not None:
        raise InputError(item.problem)
    text = item.text
    if text is not None and not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    text = (text or "").strip()
    data = None
    image = item.image
    if isinstance(image, bytes | bytearray):
        data = bytes(image) or None
        where = "image"
    elif image is not None:
        if not isinstance(image, str | os.PathLike):
            raise InputError(f"image must be a file path, got {type(image).__name__}")
        path = Path(image).expanduser()
        where = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"image file not found: {path}") from None
        except IsADirectoryError:
            raise InputError(f"image path is a directory, not a file: {path}") from None
        except OSError as error:
            raise InputError(f"cannot read image file {path}: {error.strerror or error}") from None
    if not text and data is None:
        raise InputError("neither an image nor a text: at least one modality is needed")
    if data is not None:
        from mmp_core.data.images import check_image

        try:
            check_image(data)
        except ValueError as error:
            raise InputError(f"{where}: {error}") from None
    if not text:
        return text, data, TEXT_MISSING
    return text, data, COMPLETE if data is not None else IMAGE_MISSING


def select_labels(
    scores: np.ndarray, label_names: tuple[str, ...], task: str, threshold: float | None, top_k: int | None
) -> list[tuple[str, float]]:
    """The labels to report from one input's scores (C,), best first.

    Multilabel: every label whose score exceeds `threshold` (default 0.5, evaluation's rule), at most `top_k`.
    Multiclass / binary: the `top_k` best (default 1), only those above `threshold` when one is given.
    """
    if threshold is None and task == "multilabel":
        threshold = 0.5
    if top_k is None and task != "multilabel":
        top_k = 1
    order = np.argsort(-scores, kind="stable")
    chosen = [(label_names[i], float(scores[i])) for i in order if threshold is None or scores[i] > threshold]
    return chosen[:top_k] if top_k is not None else chosen


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
        from mmp_core.loading import backbone_for, tokenizer_for
        from mmp_core.prompts import ADAPTER_CONFIG_NAME, MissingAwarePromptModel, read_adapter_config

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
                params = TrainParams.model_validate({"backbone": source, **training["inputs"]})
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
        model.to(device)
        return cls(
            model,
            tokenizer_for(source, None),
            label_names=names,
            max_text_len=params.max_text_len,
            image_config=ImageConfig(**params.image.model_dump()),
            description=f"{adapter_dir} on {source}",
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
        from mmp_core.artifact_store import ArtifactStore
        from mmp_core.backbone import default_cache_dir
        from mmp_core.prompts import read_adapter_config
        from mmp_core.storage import open_store

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
        from mmp_core.inference import predict
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
                        self.model, _Samples(samples), collate, batch_size=self.batch_size, seed=self.seed
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
