"""Atomic file writes: write under a temporary name in the same folder, then rename over the target.

A crash or an interrupt never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(tmp_path)` to produce the file, then atomically move it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp_name)
        with open(tmp_name, "rb+") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: object) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def staging_dir(out_dir: str | os.PathLike) -> Path:
    """A fresh folder beside `out_dir` to build it in (`.<name>.tmp-<pid>-*`), for `replace_dir` to put in place.

    Staging folders left by processes that no longer run (a killed `mmp prepare`) are removed first, so they
    never pile up; those of a live process (another run building the same folder) are left alone."""
    import shutil

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        pid = leftover.name.removeprefix(f".{out_dir.name}.tmp-").split("-", 1)[0]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def replace_dir(staged: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put a fully written directory `staged` in place of `target`.

    The old target is first renamed aside and only deleted once the new one is in place; `recover_dir`
    undoes a crash in between.
    """
    import shutil

    staged, target = Path(staged), Path(target)
    backup = target.with_name(f".{target.name}.old")
    shutil.rmtree(backup, ignore_errors=True)
    if target.exists():
        os.replace(target, backup)
    os.replace(staged, target)
    shutil.rmtree(backup, ignore_errors=True)
    return target


def recover_dir(target: str | os.PathLike) -> None:
    """Restore `target` from its backup if a `replace_dir` was interrupted between its two renames."""
    target = Path(target)
    backup = target.with_name(f".{target.name}.old")
    if backup.exists() and not target.exists():
        os.replace(backup, target)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def fetch_verified(
    dest: str | os.PathLike, fetch: Callable[[Path], object], problem: Callable[[Path], str | None]
) -> Path:
    """`fetch(tmp)` into a temporary file beside `dest`, then `problem(tmp)` (None when the file is right, else
    what is wrong: raised as ValueError), then rename it over `dest`. A failed or refused download never leaves
    a partial file, at `dest` or beside it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetch(tmp)
        if (message := problem(tmp)) is not None:
            raise ValueError(message)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def default_cache_dir() -> Path:
    """`$MMP_CACHE_DIR`, default `~/.cache/mmp`: downloaded backbones, the pixel and the feature caches."""
    return Path(os.environ.get("MMP_CACHE_DIR", Path.home() / ".cache" / "mmp"))
