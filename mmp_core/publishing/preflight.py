"""Checks before any work: what the flows run before their first DVC stage, and what `mmp doctor` prints.

Each check is a small function returning a `Check` row (name, `ok` / `failed` / `skipped`, one-line detail).
`preflight_checks` runs them all; `run_preflight` raises `PreflightFailed` naming the first failure, so that a
wrong store or a misspelt params.yaml ends a run in one line before hours of training, not after.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAILED or SKIPPED
    detail: str


class PreflightFailed(ValueError):
    """A check before any work failed; the message is one line naming the check and how to fix it."""


def one_line(text: str) -> str:
    """A message on one line (YAML and DVC errors span several)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def check_params(params_file: Path) -> tuple[Check, dict | None]:
    """params.yaml parses, has only known sections (a misspelt one named, with a suggestion) and each section
    validates against its schema. Returns the row and the document (None when invalid)."""
    from mmp_core.config import (
        EvaluateParams,
        GenerateParams,
        PipelineParams,
        PrepareParams,
        PretrainParams,
        TrainParams,
    )
    from mmp_core.params_file import read_methods, read_params, read_seeds, validate_section

    models = {"generate": GenerateParams, "prepare": PrepareParams, "pretrain": PretrainParams,
              "train": TrainParams, "evaluate": EvaluateParams, "pipeline": PipelineParams}  # fmt: skip
    try:
        document = read_params(params_file)
        for section, model in models.items():
            if section in document:
                validate_section(document, section, model, str(params_file))
        read_methods(params_file)
        read_seeds(params_file)
    except (OSError, ValueError) as error:
        return Check("params", FAILED, one_line(error)), None
    return Check("params", OK, f"{params_file}: {len(document)} sections valid"), document


def check_store_location(store: str, repo: str | os.PathLike = "."):
    """The store location parses by the one grammar (a directory, file:// or s3://). Returns the row and the
    parsed location (None when refused)."""
    from mmp_core.s3 import parse_store_location

    try:
        where = parse_store_location(store)
    except ValueError as error:
        source = " (from $MMP_STORE)" if os.environ.get("MMP_STORE") == store else ""
        return Check("store location", FAILED, f"{one_line(error)}{source}"), None
    return Check("store location", OK, f"{where.kind} {where.resolved(repo)}"), where


def check_local_store(directory: Path) -> Check:
    """A directory store: there and writable, or creatable under its nearest existing parent."""
    name = "store access"
    if directory.exists():
        if not directory.is_dir():
            return Check(name, FAILED, f"{directory}: exists and is not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            return Check(name, FAILED, f"{directory}: directory not writable")
        return Check(name, OK, f"{directory}: writable directory")
    parent = next(p for p in directory.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Check(name, FAILED, f"{directory}: cannot be created ({parent} is not a writable directory)")
    return Check(name, OK, f"{directory}: will be created (under {parent})")


def check_s3_store(uri: str, endpoint_url: str | None) -> Check:
    """An S3 store: the endpoint answers, the bucket exists and a test object can be written and deleted."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    from mmp_core.s3 import S3Uri, make_client

    name = "store access"
    location = S3Uri.parse(uri)
    endpoint = endpoint_url or os.environ.get("MMP_S3_ENDPOINT_URL") or "AWS S3"
    step = "connect"
    try:
        client = make_client(endpoint_url, max_attempts=2)
        step = "find the bucket"
        client.head_bucket(Bucket=location.bucket)
        step = "write a test object"
        key = location.key("preflight", f"{uuid.uuid4().hex}.txt")
        client.put_object(Bucket=location.bucket, Key=key, Body=b"mmp preflight: safe to delete\n")
        step = "delete the test object"
        client.delete_object(Bucket=location.bucket, Key=key)
    except NoCredentialsError:
        return Check(name, FAILED, f"{uri}: no AWS credentials (environment, profile or instance role)")
    except EndpointConnectionError as error:
        return Check(name, FAILED, f"{uri}: S3 endpoint {endpoint} not reachable: {error}")
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", "error"))
        if step == "find the bucket" and code in ("404", "NoSuchBucket", "NotFound"):
            return Check(name, FAILED, f"{uri}: bucket {location.bucket!r} does not exist at {endpoint}")
        if code in ("403", "AccessDenied", "Forbidden"):
            return Check(name, FAILED, f"{uri}: access denied at {endpoint} when trying to {step} (credentials?)")
        return Check(name, FAILED, f"{uri}: could not {step} at {endpoint}: {code}: {one_line(error)}")
    except (BotoCoreError, ValueError) as error:
        return Check(name, FAILED, f"{uri}: could not {step} at {endpoint}: {one_line(error)}")
    return Check(name, OK, f"{uri} at {endpoint}: bucket found, test object written and deleted")


def check_backbone(document: dict | None, repo: Path) -> Check:
    """`train.backbone`: a directory of the project, or a hub id that is in the Hugging Face cache when offline
    (an uncached one would fail only at the first training stage)."""
    name = "backbone"
    if document is None:
        return Check(name, SKIPPED, "params.yaml is not valid")
    from mmp_core.config import TrainParams

    backbone = str(TrainParams.model_validate(document.get("train") or {}).backbone)
    if backbone.startswith(("small:", "s3://")):
        return Check(name, SKIPPED, f"{backbone}: read by the training stage")
    path = Path(backbone).expanduser()
    path = path if path.is_absolute() else repo / path
    if path.is_dir():
        return Check(name, OK, f"{backbone}: directory")
    if path.with_name(path.name + ".dvc").is_file() or (path.parent != repo and path.parent.is_dir()):
        # A folder of the project not there yet: DVC pulls or makes it (its stages say what they need).
        return Check(name, SKIPPED, f"{backbone}: not in {path.parent} yet (a DVC output or a pulled folder?)")
    from mmp_core.model.hub import parse_hub_id

    try:
        hub_id = parse_hub_id(backbone)
    except ValueError as error:
        return Check(name, FAILED, one_line(error))
    if hub_id is None:
        return Check(name, FAILED, f"{backbone}: no such directory in {repo} (train.backbone in params.yaml)")
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.is_offline_mode():
        return Check(name, SKIPPED, f"{hub_id}: Hugging Face model, downloads allowed (fetched on first use)")
    missing = [
        filename
        for filename in ("config.json", "vocab.txt")
        if not isinstance(try_to_load_from_cache(hub_id.repo_id, filename, revision=hub_id.revision), str)
    ]
    if missing:
        return Check(name, FAILED, f"train.backbone {backbone!r}: no such directory in {repo}, and as a Hugging Face "
                     f"model {' and '.join(missing)} missing from its cache ({constants.HF_HUB_CACHE}) with "
                     f"HF_HUB_OFFLINE=1: fetch it once with `{hub_id.fetch_command}`")  # fmt: skip
    return Check(name, OK, f"{hub_id}: in the Hugging Face cache (offline)")


def check_dvc_project(repo: Path, document: dict | None) -> Check:
    """dvc.yaml resolves against params.yaml (every `${...}`, foreach and matrix item): DVC's own errors as a line."""
    name = "dvc project"
    if document is None:
        return Check(name, SKIPPED, "params.yaml is not valid")
    import contextlib

    try:
        from dvc.repo import Repo

        with contextlib.chdir(repo), Repo(str(repo)) as project:  # DVC resolves paths against the working directory
            stages = [stage for stage in project.index.stages if stage.cmd]
    except Exception as error:  # any DVC error is this check's result
        return Check(name, FAILED, f"{repo}: {type(error).__name__}: {one_line(error)}")
    return Check(name, OK, f"{repo / 'dvc.yaml'}: {len(stages)} stages resolve")


def preflight_checks(repo: str | os.PathLike, store: str, endpoint_url: str | None = None) -> list[Check]:
    """Every check, in order: params.yaml, the store's location and access, the backbone, the DVC project."""
    repo = Path(repo).expanduser().resolve()
    params_row, document = check_params(repo / "params.yaml")
    location_row, where = check_store_location(store, repo)
    if where is None:
        access_row = Check("store access", SKIPPED, "the store location is refused")
    elif where.kind == "s3":
        access_row = check_s3_store(where.path, endpoint_url)
    else:
        access_row = check_local_store(Path(where.resolved(repo)))
    return [params_row, location_row, access_row, check_backbone(document, repo), check_dvc_project(repo, document)]


def run_preflight(repo: str | os.PathLike, store: str, endpoint_url: str | None = None) -> list[Check]:
    """The checks' rows, or PreflightFailed with one line naming the first failure (and how many more)."""
    rows = preflight_checks(repo, store, endpoint_url)
    failed = [row for row in rows if row.status == FAILED]
    if failed:
        more = f" (and {len(failed) - 1} more failed check(s): run `mmp doctor`)" if len(failed) > 1 else ""
        raise PreflightFailed(f"preflight: {failed[0].name}: {failed[0].detail}{more}")
    return rows


def format_table(rows: list[Check]) -> str:
    """The rows as a plain-text table: check, result, detail."""
    width = max(len("check"), *(len(row.name) for row in rows))
    lines = [f"{'check':<{width}}  {'result':<7}  detail"]
    lines += [f"{row.name:<{width}}  {row.status:<7}  {row.detail}" for row in rows]
    return "\n".join(lines)
