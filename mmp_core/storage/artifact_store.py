"""The artifact store's layout and the logic every backend shares (`ArtifactStore`): runs, champion, files.

The store holds published runs, the champion pointer and the dashboard, on a local directory
(`mmp_core.storage.local_store`) or on S3 (`mmp_core.storage.s3_store`); `mmp_core.storage.open_store` opens one.

Both backends share one layout (under a local root directory or under `s3://bucket/prefix`):

    runs/<run-id>/<key>            the run's files (adapters, metrics, grid tables, report.html, ...)
    runs/<run-id>/manifest.json    written LAST: every file with size + sha256, and the run's metadata
    champion.json                  the champion pointer: run id, metrics, history of promotions
    dashboard/index.html           regenerated on publish (see `mmp_core.publishing.dashboard.write_dashboard`)

A run exists for readers only once its manifest exists: `publish_run` writes every object first and the
manifest last, so a publish that fails midway leaves no manifest and `list_runs` does not show the run.
Publishing again under the same run id after such a failure overwrites the partial objects (idempotent);
publishing over a run that already has a manifest is refused, unless it is the very same content (then the
existing manifest is returned, so a retried task that had in fact succeeded does not fail).

Retries are the caller's concern (Prefect tasks); this module never retries beyond boto3's own policy.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmp_core.fileio import atomic_write_bytes, fetch_verified, sha256_file
from mmp_core.s3 import validate_key, validate_run_id

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "mmp-run-manifest/1"
CHAMPION_KEY = "champion.json"
DASHBOARD_KEY = "dashboard/index.html"
RUNS_DIR = "runs"


ANY = object()  # set_champion(expected=ANY): no compare-and-swap


class ChampionMovedError(RuntimeError):
    """The champion pointer changed between the promotion decision and its write."""

    def __init__(self, expected: str | None, found: str | None):
        self.expected, self.found = expected, found
        super().__init__(
            f"the champion moved from {expected!r} to {found!r} while this run was being judged; judge it again"
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def expand_files(files: Mapping[str, os.PathLike | str]) -> dict[str, Path]:
    """Validate the keys of `files` and expand directories: {"adapters/input": dir} → one key per file inside."""
    out: dict[str, Path] = {}
    for key, value in files.items():
        validate_key(key, "artifact key")
        path = Path(value)
        if path.is_dir():
            children = sorted(p for p in path.rglob("*") if p.is_file())
            if not children:
                raise ValueError(f"artifact {key!r}: directory {path} is empty")
            items = [(f"{key}/{p.relative_to(path).as_posix()}", p) for p in children]
        elif path.is_file():
            items = [(key, path)]
        else:
            raise FileNotFoundError(f"artifact {key!r}: {path} does not exist")
        for full_key, file_path in items:
            validate_key(full_key, "artifact key")
            if full_key == MANIFEST_NAME:
                raise ValueError(f"artifact key {MANIFEST_NAME!r} is reserved for the run manifest")
            if full_key in out:
                raise ValueError(f"artifact key {full_key!r} given twice")
            out[full_key] = file_path
    if not out:
        raise ValueError("a run needs at least one file")
    # A key cannot be both a file and a folder ("a" and "a/b"): the local backend could not store it.
    keys = set(out)
    for key in keys:
        parts = key.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in keys:
                raise ValueError(f"artifact key {'/'.join(parts[:i])!r} is both a file and a folder")
    return out


class ArtifactStore(ABC):
    """Common logic; a backend implements a few primitives on store-relative keys."""

    # ---- primitives (keys are relative to the store root and already validated) ----
    @abstractmethod
    def _put_file(self, key: str, path: Path) -> tuple[int, str]:
        """Store a local file under `key`; return (size, sha256) of what was stored."""

    @abstractmethod
    def _put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any previous object in one step."""

    @abstractmethod
    def _get_bytes(self, key: str) -> bytes | None:
        """The object's content, or None when it does not exist."""

    @abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """Every key under the folder `prefix` (relative to the store root)."""

    @abstractmethod
    def _delete(self, keys: Iterable[str]) -> None: ...

    @abstractmethod
    def _fetch_file(self, key: str, dest: Path) -> None:
        """Copy the object to `dest` (the caller verifies it)."""

    @abstractmethod
    def url_for(self, key: str) -> str:
        """Where a store key lives (a file:// URL or an s3:// URI), for messages and links."""

    location: str

    # ---- runs ----
    @staticmethod
    def _run_key(run_id: str, key: str = "") -> str:
        return f"{RUNS_DIR}/{run_id}/{key}" if key else f"{RUNS_DIR}/{run_id}"

    def publish_run(
        self, run_id: str, files: Mapping[str, os.PathLike | str], metadata: Mapping[str, Any] | None = None
    ) -> dict:
        """Upload `files` ({relative key: local file or directory}) under runs/<run_id>/, then the manifest.

        Returns the manifest: {"format", "run_id", "created_at", "metadata", "files": [{key, size, sha256}],
        "total_size"}. `metadata` should carry the run's provenance (see `build_run_metadata`); its
        "created_at", when given, is used as the run's creation time.
        """
        validate_run_id(run_id)
        expanded = expand_files(files)
        metadata = json.loads(json.dumps(dict(metadata or {}), default=str))  # JSON-safe copy
        existing = self.get_manifest(run_id, missing_ok=True)
        if existing is not None:
            same = {f["key"]: f["sha256"] for f in existing["files"]} == {
                k: sha256_file(p) for k, p in expanded.items()
            }
            if same:
                return existing
            raise FileExistsError(f"run {run_id!r} is already published at {self.url_for(self._run_key(run_id))}")
        # Leftovers of an earlier failed attempt that this file set does not overwrite (never visible to readers).
        stale = set(self._list(self._run_key(run_id))) - {self._run_key(run_id, k) for k in expanded}
        if stale:
            self._delete(sorted(stale))
        self._remove_partial_files(self._run_key(run_id))
        entries = []
        for key in sorted(expanded):
            size, checksum = self._put_file(self._run_key(run_id, key), expanded[key])
            entries.append({"key": key, "size": size, "sha256": checksum})
        manifest = {
            "format": MANIFEST_FORMAT,
            "run_id": run_id,
            "created_at": str(metadata.get("created_at") or _now()),
            "metadata": metadata,
            "files": entries,
            "total_size": sum(e["size"] for e in entries),
        }
        self._write_manifest(run_id, manifest)
        return manifest

    def _remove_partial_files(self, prefix: str) -> None:
        """Remove what an interrupted upload left under `prefix` (S3: nothing; an aborted upload leaves no object)."""
        return None

    def _write_manifest(self, run_id: str, manifest: dict) -> None:
        self._put_bytes(self._run_key(run_id, MANIFEST_NAME), _dumps(manifest))

    def get_manifest(self, run_id: str, *, missing_ok: bool = False) -> dict | None:
        """The run's manifest; FileNotFoundError (or None with missing_ok) when the run is not published."""
        validate_run_id(run_id)
        data = self._get_bytes(self._run_key(run_id, MANIFEST_NAME))
        if data is None:
            if missing_ok:
                return None
            raise FileNotFoundError(f"no published run {run_id!r} in {self.location}")
        return json.loads(data)

    def list_runs(self) -> list[str]:
        """Ids of the published runs (those with a manifest), sorted by name."""
        runs = set()
        for key in self._list(RUNS_DIR):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_NAME:
                runs.add(parts[1])
        return sorted(runs)

    def run_manifests(self) -> list[dict]:
        """Manifests of every published run, oldest first (by created_at, then run id)."""
        manifests = [m for r in self.list_runs() if (m := self.get_manifest(r, missing_ok=True))]
        return sorted(manifests, key=lambda m: (m.get("created_at", ""), m["run_id"]))

    def latest_run(self) -> dict | None:
        manifests = self.run_manifests()
        return manifests[-1] if manifests else None

    def read_run_file(self, run_id: str, key: str) -> bytes:
        """One file of a published run, verified against the manifest's size and sha256."""
        manifest = self.get_manifest(run_id)
        validate_key(key, "artifact key")
        entry = next((f for f in manifest["files"] if f["key"] == key), None)
        if entry is None:
            raise FileNotFoundError(f"run {run_id!r} has no file {key!r}")
        data = self._get_bytes(self._run_key(run_id, key))
        if data is None:
            raise FileNotFoundError(f"run {run_id!r}: {key!r} is in the manifest but missing from the store")
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"run {run_id!r}: {key!r} fails its checksum")
        return data

    def read_run_json(self, run_id: str, key: str) -> Any:
        return json.loads(self.read_run_file(run_id, key))

    def fetch_run(self, run_id: str, dest_dir: os.PathLike | str) -> Path:
        """Download a published run into `dest_dir` (its files + manifest.json), verifying every checksum."""
        manifest = self.get_manifest(run_id)
        dest_dir = Path(dest_dir)
        for entry in manifest["files"]:
            key = validate_key(entry["key"], "artifact key in manifest")
            dest = dest_dir / key
            if dest.is_file() and dest.stat().st_size == entry["size"] and sha256_file(dest) == entry["sha256"]:
                continue

            def problem(tmp: Path, key=key, entry=entry) -> str | None:
                size, checksum = tmp.stat().st_size, sha256_file(tmp)
                if size == entry["size"] and checksum == entry["sha256"]:
                    return None
                return (
                    f"run {run_id!r}: {key!r} fails verification "
                    f"(expected {entry['size']} bytes sha256 {entry['sha256']}, got {size} bytes {checksum})"
                )

            fetch_verified(dest, lambda tmp, key=key: self._fetch_file(self._run_key(run_id, key), tmp), problem)
        dest_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest_dir / MANIFEST_NAME, _dumps(manifest))
        return dest_dir

    # ---- champion pointer ----
    def get_champion(self) -> dict | None:
        """The champion pointer ({"run_id", "metrics", "reason", "updated_at", "history": [...]}) or None."""
        data = self._get_bytes(CHAMPION_KEY)
        return json.loads(data) if data is not None else None

    def set_champion(
        self, run_id: str, metrics: Mapping[str, Any], *, reason: str = "", expected: str | object | None = ANY
    ) -> dict:
        """Make a published run the champion, appending it to the history; one atomic write of champion.json.

        `metrics` is what the dashboard plots: by convention `headline_summary(...)` of the promoted method
        ({"method", "primary_metric", "missing_type", "missing_rate", "value", ...}).

        `expected`: the champion run id (None: no champion) the decision was made against. The write is a
        compare-and-swap: if the pointer names another run by then (a concurrent flow promoted one), nothing is
        written and `ChampionMovedError` is raised, so the caller judges again against the new champion.
        """
        if self.get_manifest(run_id, missing_ok=True) is None:
            raise FileNotFoundError(f"cannot make {run_id!r} the champion: it is not a published run")
        with self._champion_transaction() as (data, commit):
            current = json.loads(data) if data is not None else {}
            if expected is not ANY and current.get("run_id") != expected:
                raise ChampionMovedError(expected, current.get("run_id"))
            now = _now()
            entry = {
                "run_id": run_id,
                "metrics": json.loads(json.dumps(dict(metrics), default=str)),
                "reason": reason,
                "promoted_at": now,
            }
            pointer = {
                "run_id": run_id,
                "metrics": entry["metrics"],
                "reason": reason,
                "updated_at": now,
                "previous_run_id": current.get("run_id"),
                "history": [*current.get("history", []), entry],
            }
            commit(_dumps(pointer))
        return pointer

    @abstractmethod
    def _champion_transaction(self):
        """A context manager yielding (current champion.json bytes or None, commit(data)); commit writes only if
        the pointer is still what was read, else raises ChampionMovedError."""

    # ---- other store files (dashboard) ----
    def write_text(self, key: str, text: str) -> str:
        """Write a store-level file (e.g. dashboard/index.html) in one atomic step; returns its location."""
        validate_key(key)
        if key.split("/")[0] == RUNS_DIR or key == CHAMPION_KEY:
            raise ValueError(f"{key!r}: runs and the champion pointer are written through their own methods")
        self._put_bytes(key, text.encode("utf-8"))
        return self.url_for(key)

    def read_text(self, key: str) -> str | None:
        data = self._get_bytes(validate_key(key))
        return data.decode("utf-8") if data is not None else None


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")
