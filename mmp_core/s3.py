"""Low-level S3 helpers shared by the backbone loader and the artifact store.

Credentials come from boto3's standard chain (environment, profile, instance role); they are never logged.
An S3-compatible server is reached through `endpoint_url` or the `MMP_S3_ENDPOINT_URL` / `AWS_ENDPOINT_URL`
environment variables. Transfers use boto3's managed transfer (multipart, retries, parallel parts).

Every uploaded object carries its SHA-256 in the object metadata (`x-amz-meta-sha256`); downloads verify the
size and that checksum (or, for objects written by other tools, the MD5 ETag of a single-part upload).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mmp_core.fileio import fetch_verified, sha256_file

SHA256_METADATA_KEY = "sha256"
# One path component of a key: letters, digits and . _ - only, and never "." or "..".
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_key_part(part: str, what: str = "name") -> str:
    """Return `part` if it is safe to use as one path component of an S3 key or a local path."""
    if not isinstance(part, str) or not _SAFE_PART.match(part) or part in (".", "..") or ".." in part:
        raise ValueError(
            f"invalid {what} {part!r}: use letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit, no '..', no '/'"
        )
    return part


def validate_key(key: str, what: str = "key") -> str:
    """Return a relative '/'-separated key whose every component is safe (no absolute keys, no '..')."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"invalid {what} {key!r}: must be relative and must not start or end with '/'")
    for part in key.split("/"):
        validate_key_part(part, what)
    return key


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    prefix: str  # no leading or trailing '/'; may be empty

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
            raise ValueError(f"invalid bucket name in {uri!r}")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix, "S3 prefix")
        return cls(bucket, prefix)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def make_client(endpoint_url: str | None = None, max_attempts: int = 3):
    """A boto3 S3 client; `endpoint_url` (or MMP_S3_ENDPOINT_URL) points it at an S3-compatible server."""
    import boto3
    from botocore.config import Config

    endpoint_url = endpoint_url or os.environ.get("MMP_S3_ENDPOINT_URL") or None
    config = Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def upload_file(client, path: Path, bucket: str, key: str, content_type: str | None = None) -> str:
    """Managed upload of one file with its SHA-256 in the object metadata; returns the checksum."""
    validate_key(key)
    checksum = sha256_file(path)
    extra = {"Metadata": {SHA256_METADATA_KEY: checksum}}
    if content_type:
        extra["ContentType"] = content_type
    client.upload_file(str(path), bucket, key, ExtraArgs=extra)
    return checksum


def download_verified(client, bucket: str, key: str, dest: Path) -> Path:
    """Download one object to `dest` atomically, verifying size and checksum; reuse a verified local copy."""
    head = client.head_object(Bucket=bucket, Key=key)
    size = head["ContentLength"]
    expected_sha = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
    etag = head.get("ETag", "").strip('"')

    def matches(path: Path) -> bool:
        if not path.is_file() or path.stat().st_size != size:
            return False
        if expected_sha:
            return sha256_file(path) == expected_sha
        if etag and "-" not in etag:  # single-part upload: the ETag is the MD5 of the content
            return _md5_file(path) == etag
        return True  # multipart object from another tool: size is all S3 lets us check

    if matches(dest):
        return dest
    return fetch_verified(
        dest,
        lambda tmp: client.download_file(bucket, key, str(tmp)),
        lambda tmp: (
            None
            if matches(tmp)
            else f"s3://{bucket}/{key}: downloaded file fails verification "
            f"(expected {size} bytes{', sha256 ' + expected_sha if expected_sha else ''})"
        ),
    )


def list_keys(client, bucket: str, prefix: str) -> list[str]:
    """Every key under `prefix` (a folder: a trailing '/' is added when missing)."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def download_prefix(uri: str, dest_dir: Path, client=None) -> Path:
    """Mirror every object under an s3:// prefix into `dest_dir`, verified; returns `dest_dir`."""
    location = S3Uri.parse(uri)
    client = client or make_client()
    keys = list_keys(client, location.bucket, location.prefix)
    if not keys:
        raise FileNotFoundError(f"{uri}: no objects under this prefix")
    for key in keys:
        relative = key[len(location.prefix) :].lstrip("/") if location.prefix else key
        validate_key(relative, f"object key under {uri}")
        download_verified(client, location.bucket, key, dest_dir / relative)
    return dest_dir


MAX_RUN_ID_LENGTH = 128


def validate_run_id(run_id: str) -> str:
    """A run id is one safe key component (letters, digits, '.', '_', '-'; no '..'), at most 128 characters."""
    validate_key_part(run_id, "run id")
    if len(run_id) > MAX_RUN_ID_LENGTH:
        raise ValueError(f"invalid run id {run_id!r}: longer than {MAX_RUN_ID_LENGTH} characters")
    return run_id


STORE_FORMS = "a directory, file:///absolute/dir or s3://bucket[/prefix]"
# Anything that starts like a URL scheme (`s3:`, `http:`, `file:`): never taken for a relative directory.
_SCHEME_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class StoreLocation:
    """A parsed artifact store location: a local directory (`file://` decoded) or an S3 bucket and prefix."""

    kind: str  # "directory" or "s3"
    path: str  # the directory as given (maybe relative), or the s3:// URI

    def resolved(self, base: str | os.PathLike = ".") -> str:
        """The directory made absolute (a relative one under `base`, `~` expanded), or the s3:// URI."""
        if self.kind == "s3":
            return self.path
        path = Path(self.path).expanduser()
        return str(path if path.is_absolute() else Path(base) / path)


def _refused(location: str, hint: str = "") -> ValueError:
    return ValueError(f"unsupported store location {location!r}: use {STORE_FORMS}{hint}")


def parse_store_location(location: str) -> StoreLocation:
    """The one grammar of store locations (--store, MMP_STORE, deployments): a directory path, `file://` with an
    absolute path (a directory) or `s3://bucket[/prefix]`. Anything else that starts like a URL scheme (`s3:/`,
    `s3:`, `http:`, `gs://`, `S3://`) is refused, never taken for a relative directory named `s3:`."""
    if not isinstance(location, str) or not location.strip():
        raise ValueError(f"empty store location: use {STORE_FORMS}")
    match = _SCHEME_LIKE.match(location)
    if match is None:
        return StoreLocation("directory", location)
    scheme, rest = match.group(1), location[match.end() :]
    if location.startswith("s3://"):
        try:
            return StoreLocation("s3", str(S3Uri.parse(location)))
        except ValueError as error:
            raise _refused(location, f" ({error})") from None
    if location.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(location)
        if parts.netloc in ("", "localhost") and parts.path.startswith("/") and not (parts.query or parts.fragment):
            return StoreLocation("directory", unquote(parts.path))
        raise _refused(location, " (a file:// URL names an absolute directory: file:///data/store)")
    if scheme.lower() == "s3":
        hint = f" (did you mean 's3://{rest.lstrip('/')}'?)"
    elif scheme.lower() == "file" and rest.startswith("/"):
        hint = f" (did you mean 'file://{rest}' or '{rest}'?)"
    else:
        hint = " (stores are local directories or S3)"
    raise _refused(location, hint)


def validate_store_location(location: str) -> str:
    """`location` unchanged if `parse_store_location` accepts it, else ValueError naming the accepted forms."""
    parse_store_location(location)
    return location
