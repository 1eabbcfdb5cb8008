"""The local directory backend of the artifact store (`LocalStore`, the embedded default)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mmp_core.fileio import atomic_write_bytes, sha256_file
from mmp_core.s3 import validate_key
from mmp_core.storage.artifact_store import CHAMPION_KEY, ArtifactStore


class LocalStore(ArtifactStore):
    """A directory store (the embedded default). Every write is a temp file + os.replace."""

    def __init__(self, root_dir: os.PathLike | str):
        self.root = Path(root_dir).expanduser().resolve()
        self.location = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({self.location!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def _put_file(self, key: str, path: Path) -> tuple[int, str]:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            shutil.copyfile(path, tmp)
            size, checksum = tmp.stat().st_size, sha256_file(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return size, checksum

    def _put_bytes(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self._path(key), data)

    def _get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    @contextlib.contextmanager
    def _champion_transaction(self):
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{CHAMPION_KEY}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # every writer of the pointer, in any process, takes it
            try:
                yield self._get_bytes(CHAMPION_KEY), lambda data: self._put_bytes(CHAMPION_KEY, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _remove_partial_files(self, prefix: str) -> None:
        """`.part` files of an upload that was killed: invisible to readers, but never left in a published run."""
        base = self._path(prefix)
        if base.is_dir():
            for partial in base.rglob(".*.part"):
                partial.unlink(missing_ok=True)

    def _list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".part"))
        )

    def _delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            for parent in path.parents:  # prune folders left empty, up to the store root
                if parent == self.root or any(parent.iterdir()):
                    break
                parent.rmdir()

    def _fetch_file(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)
