"""One small storage interface for local paths and s3:// URIs (boto3), so every stage runs unchanged on a laptop
or on a cluster. Writes are atomic: local files go to a temporary name and are renamed; S3 puts are atomic already.

S3 settings come from the environment the way boto3 reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION),
plus `DEEPGEN_S3_ENDPOINT_URL` for a non-AWS endpoint (MinIO, moto). Kedro credentials are exported into that
environment by the project's hook; nothing here logs them.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base, *parts))


def s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("DEEPGEN_S3_ENDPOINT_URL") or None)


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    from botocore.exceptions import ClientError

    bucket, key = _bucket_key(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def read_bytes(uri: str) -> bytes:
    if not is_s3(uri):
        return Path(uri).read_bytes()
    bucket, key = _bucket_key(uri)
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic write: readers see the old file or the new one, never half of it."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def open_read(uri: str):
    """A binary stream (webdataset reads shards through this for s3://)."""
    if not is_s3(uri):
        return open(uri, "rb")
    bucket, key = _bucket_key(uri)
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"]


def list_files(prefix: str) -> Iterator[str]:
    if not is_s3(prefix):
        root = Path(prefix)
        yield from (str(p) for p in sorted(root.rglob("*")) if p.is_file()) if root.exists() else ()
        return
    bucket, key = _bucket_key(prefix)
    paginator = s3_client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/"):
        for item in page.get("Contents", []):
            yield f"s3://{bucket}/{item['Key']}"


def upload_dir(local: str | Path, uri: str) -> None:
    """Copy a local folder to a local path or S3 prefix (files first; callers write their marker file last)."""
    local = Path(local)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        target = join(uri, str(path.relative_to(local)))
        if is_s3(uri):
            write_bytes(target, path.read_bytes())
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def download_dir(uri: str, local: str | Path) -> Path:
    """Materialise an S3 prefix (or local folder) as a local folder; local folders are returned as they are."""
    if not is_s3(uri):
        return Path(uri)
    local = Path(local)
    for file_uri in list_files(uri):
        rel = file_uri[len(uri.rstrip("/")) + 1:]
        write_bytes(str(local / rel), read_bytes(file_uri))
    return local


def buffer() -> io.BytesIO:
    return io.BytesIO()
