"""The artifact store: published runs, their manifests and the champion pointer, in a directory or on S3.

Read in this order: `artifact_store` (the store's layout and the logic both backends share: runs, manifests,
the champion pointer with compare-and-swap), `local_store` and `s3_store` (the backends), `locations`
(`open_store`: a directory, file:// URL or s3:// URI to a backend).
"""

from mmp_core.storage.artifact_store import CHAMPION_KEY, DASHBOARD_KEY, ArtifactStore, ChampionMovedError
from mmp_core.storage.local_store import LocalStore
from mmp_core.storage.locations import open_store
from mmp_core.storage.s3_store import S3Store

__all__ = [
    "CHAMPION_KEY",
    "DASHBOARD_KEY",
    "ArtifactStore",
    "ChampionMovedError",
    "LocalStore",
    "S3Store",
    "open_store",
]
