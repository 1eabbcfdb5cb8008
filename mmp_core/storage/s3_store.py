"""The S3 backend of the artifact store (`S3Store`, under `s3://bucket/prefix`) and its objects' content types."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from mmp_core import s3 as s3util
from mmp_core.s3 import validate_key
from mmp_core.storage.artifact_store import CHAMPION_KEY, ArtifactStore, ChampionMovedError

_CONTENT_TYPES = {
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".tsv": "text/tab-separated-values; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".yaml": "application/yaml",
}


def content_type_for(key: str) -> str | None:
    return _CONTENT_TYPES.get(Path(key).suffix.lower())


class S3Store(ArtifactStore):
    """A store under `s3://bucket/prefix`. Files go up with boto3's managed transfer (sha256 in the metadata)."""

    def __init__(self, uri: str, endpoint_url: str | None = None, client=None):
        self.uri = s3util.S3Uri.parse(uri)
        self.location = str(self.uri)
        self.endpoint_url = endpoint_url
        self._client = client

    @property
    def client(self):
        """The boto3 client, created on first use (so a store can be pickled and sent to a Prefect worker)."""
        if self._client is None:
            self._client = s3util.make_client(self.endpoint_url)
        return self._client

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def __repr__(self) -> str:
        return f"S3Store({self.location!r})"

    def _key(self, key: str) -> str:
        return self.uri.key(validate_key(key))

    def url_for(self, key: str) -> str:
        return f"s3://{self.uri.bucket}/{self._key(key)}"

    def _put_file(self, key: str, path: Path) -> tuple[int, str]:
        size = path.stat().st_size
        checksum = s3util.upload_file(self.client, path, self.uri.bucket, self._key(key), content_type_for(key))
        return size, checksum

    def _put_bytes(self, key: str, data: bytes) -> None:
        extra = {"ContentType": content_type_for(key) or "application/octet-stream"}
        self.client.put_object(
            Bucket=self.uri.bucket,
            Key=self._key(key),
            Body=data,
            Metadata={s3util.SHA256_METADATA_KEY: hashlib.sha256(data).hexdigest()},
            **extra,
        )

    def _get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.uri.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return response["Body"].read()

    @contextlib.contextmanager
    def _champion_transaction(self):
        from botocore.exceptions import ClientError

        key = self._key(CHAMPION_KEY)
        try:
            response = self.client.get_object(Bucket=self.uri.bucket, Key=key)
            data, etag = response["Body"].read(), response["ETag"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404", "NotFound"):
                raise
            data, etag = None, None
        found = json.loads(data).get("run_id") if data else None

        def commit(new: bytes) -> None:
            # S3 conditional writes: replace only the object that was read (If-Match its ETag), or create it
            # only if there is still none (If-None-Match: *).
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.client.put_object(
                    Bucket=self.uri.bucket,
                    Key=key,
                    Body=new,
                    ContentType="application/json",
                    Metadata={s3util.SHA256_METADATA_KEY: hashlib.sha256(new).hexdigest()},
                    **condition,
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                    now = self.get_champion()
                    raise ChampionMovedError(found, now.get("run_id") if now else None) from None
                raise

        yield data, commit

    def _list(self, prefix: str) -> list[str]:
        root = self.uri.key(validate_key(prefix))
        strip = len(self.uri.prefix) + 1 if self.uri.prefix else 0
        return [k[strip:] for k in s3util.list_keys(self.client, self.uri.bucket, root)]

    def _delete(self, keys: Iterable[str]) -> None:
        keys = [self._key(k) for k in keys]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.uri.bucket, Delete={"Objects": batch, "Quiet": True})

    def _fetch_file(self, key: str, dest: Path) -> None:
        self.client.download_file(self.uri.bucket, self._key(key), str(dest))
