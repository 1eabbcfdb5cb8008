"""Backbones from the Hugging Face hub: `org/name` or `org/name@revision` in `train.backbone`.

Files go through transformers / huggingface_hub into their standard cache (`HF_HUB_CACHE`, default
`~/.cache/huggingface/hub`), so a model fetched once with `hf download` or by any transformers project is reused.
Weights: transformers prefers `model.safetensors`; a repository with only `pytorch_model.bin` is read through
transformers' safe path (`torch.load(weights_only=True)`: tensors only, never arbitrary objects). The tokenizer
vocabulary (`vocab.txt`) comes from the same repository and revision.

Offline (`HF_HUB_OFFLINE=1`, the default of `make` targets) a cached model loads without network, and an
uncached one fails with a message that says how to fetch it.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# `org/name` with an optional `@revision` (branch, tag or commit). A source that exists as a local path is a
# directory, never a hub id (`load_backbone` checks that first), as in transformers' from_pretrained.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^@]*))?$")
_REVISION = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+)*$")


@dataclass(frozen=True)
class HubId:
    """A model repository on the hub and an optional revision (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"

    @property
    def fetch_command(self) -> str:
        revision = f" --revision {self.revision}" if self.revision else ""
        return f"hf download {self.repo_id}{revision}"


def parse_hub_id(source: str) -> HubId | None:
    """The hub id in `source`, or None when it is not shaped like one (a path, `s3://`, `small:`).

    Raises ValueError for a hub-shaped source with an invalid name or revision: both become cache paths.
    """
    if source.startswith(("s3://", "small:", ".", "/", "~")) or "://" in source:
        return None
    match = _HUB_ID.match(source)
    if match is None:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id, revision = match["repo"], match["revision"]
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"invalid Hugging Face model id {repo_id!r}: {error}") from None
    if revision is not None and (not _REVISION.match(revision) or ".." in revision):
        raise ValueError(
            f"invalid revision {revision!r} in backbone {source!r}: expected a branch, tag or commit hash "
            "(letters, digits, '.', '_', '-', '/'), e.g. dandelin/vilt-b32-mlm@<commit>"
        )
    return HubId(repo_id, revision)


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _not_available(hub_id: HubId, what: str, error: Exception) -> FileNotFoundError:
    """The error for a model (or one of its files) that could not be found or fetched, saying how to fix it."""
    from huggingface_hub import constants

    if _offline():
        return FileNotFoundError(
            f"backbone {str(hub_id)!r}: there is no directory {Path(str(hub_id)).absolute()}, so it was taken as a "
            f"Hugging Face model id; its {what} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and downloads are off "
            f"(HF_HUB_OFFLINE=1). Fetch it once with `{hub_id.fetch_command}` (older huggingface_hub: "
            f"`huggingface-cli download ...`), or unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE to let mmp download it"
        )
    return FileNotFoundError(f"backbone {str(hub_id)!r}: could not get its {what} from the Hugging Face hub ({error})")


def load_model(hub_id: HubId):
    """`ViltModel.from_pretrained` of a hub repository at its revision (with its pooler, not yet frozen)."""
    from huggingface_hub.errors import HFValidationError
    from transformers import ViltModel

    try:
        # use_safetensors=None: safetensors when the repo has them, else the .bin through torch.load(weights_only).
        return ViltModel.from_pretrained(
            hub_id.repo_id, revision=hub_id.revision, add_pooling_layer=True, weights_only=True
        )
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"backbone {str(hub_id)!r}: its pytorch_model.bin holds more than tensors and was refused (mmp never "
            f"unpickles arbitrary objects); use a revision with model.safetensors. Detail: {str(error).splitlines()[-1]}"
        ) from None
    except (OSError, HFValidationError) as error:
        raise _not_available(hub_id, "model (config.json and weights)", error) from None


def file_path(hub_id: HubId, filename: str) -> Path:
    """A file of the repository at the revision, from the cache (downloaded first when allowed)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(hub_id.repo_id, filename, revision=hub_id.revision))
    except LocalEntryNotFoundError as error:
        raise _not_available(hub_id, filename, error) from None
    except EntryNotFoundError:
        raise FileNotFoundError(f"backbone {str(hub_id)!r}: the repository has no {filename}") from None
    except OSError as error:
        raise _not_available(hub_id, filename, error) from None
