"""Opening the artifact store at a location: `open_store` (a directory, a file:// URL or an s3:// URI; the
grammar is `mmp_core.s3.parse_store_location`).

The store itself (layout, runs, champion pointer) is `mmp_core.storage.artifact_store.ArtifactStore`; its backends
are `mmp_core.storage.local_store.LocalStore` and `mmp_core.storage.s3_store.S3Store`.
"""

from __future__ import annotations

import os

from mmp_core.s3 import parse_store_location
from mmp_core.storage.artifact_store import ArtifactStore
from mmp_core.storage.local_store import LocalStore
from mmp_core.storage.s3_store import S3Store


def open_store(location: str | os.PathLike, *, endpoint_url: str | None = None) -> ArtifactStore:
    """An `S3Store` for an s3:// URI (endpoint from `endpoint_url` or MMP_S3_ENDPOINT_URL), else a `LocalStore`."""
    where = parse_store_location(str(location))  # the one grammar: refuses `s3:/x`, `http:`, `gs://`, ...
    if where.kind == "s3":
        return S3Store(where.path, endpoint_url=endpoint_url)
    return LocalStore(where.path)
