"""One small storage interface for local paths and s3:// URIs (boto3), so every stage runs unchanged on a laptop
or on a cluster. Writes are atomic: local files go to a temporary name and are renamed; S3 puts are atomic already.

S3 settings come from the environment the way boto3 reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION),
plus `DEEPGEN_S3_ENDPOINT_URL` for a non-AWS endpoint (MinIO, moto). Kedro credentials are exported into that
environment by the project's hook; nothing here logs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base, *parts))


def absolute(uri: str) -> str:
    """Local paths made absolute (Ray workers run in other folders); s3:// URIs unchanged."""
    return uri if is_s3(uri) else str(Path(uri).resolve())


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def s3_client():
    """A boto3 S3 client, one per process, thread and endpoint (a client costs tens of ms to build; boto3 clients must
    not cross a fork, and a per-thread client keeps thread pools safe)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("DEEPGEN_S3_ENDPOINT_URL") or None
    key = (os.getpid(), threading.get_ident(), endpoint, os.environ.get("AWS_ACCESS_KEY_ID"))
    client = _clients.get(key)
    if client is None:
        config = Config(retries={"max_attempts": 8, "mode": "standard"})
        client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
        with _clients_lock:
            _clients[key] = client
    return client


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
        with open(uri, "rb") as handle:
            return handle.read()
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
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def delete(uri: str) -> None:
    """Remove one file or object (absent is fine)."""
    if not is_s3(uri):
        Path(uri).unlink(missing_ok=True)
        return
    bucket, key = _bucket_key(uri)
    s3_client().delete_object(Bucket=bucket, Key=key)


def open_read(uri: str):
    """A binary stream (webdataset reads shards through this for s3://)."""
    if not is_s3(uri):
        return open(uri, "rb")
    bucket, key = _bucket_key(uri)
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"]


@dataclass(frozen=True)
class FileStat:
    uri: str
    rel: str  # path relative to the listed prefix, "/"-separated
    size: int
    tag: str  # changes when the content may have: local mtime_ns, S3 ETag


def stat_files(prefix: str, *, sizes: bool = True) -> Iterator[FileStat]:
    """Every file under a folder / S3 prefix in one global order (by relative path, code point order, which is S3's
    UTF-8 byte order), streamed: memory holds one directory's entries at a time, never the whole listing.

    A prefix that names a single file yields just that file (rel is its name). `sizes=False` skips the per-file stat
    of a local listing (size -1, tag ""), for callers that only need the names.
    """
    if not is_s3(prefix):
        root = Path(prefix)
        if root.is_file():
            st = root.stat()
            yield FileStat(str(root), root.name, st.st_size, str(st.st_mtime_ns))
            return
        if root.is_dir():
            yield from _walk_sorted(root, "", sizes)
        return
    bucket, key = _bucket_key(prefix)
    client = s3_client()
    if key and not key.endswith("/"):
        try:  # a single object?
            head = client.head_object(Bucket=bucket, Key=key)
            yield FileStat(prefix, key.rsplit("/", 1)[-1], int(head["ContentLength"]), head.get("ETag", "").strip('"'))
            return
        except Exception:  # noqa: BLE001 - not an object: treat it as a prefix
            pass
    base = key.rstrip("/") + "/" if key else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue  # "folder" placeholder objects
            yield FileStat(f"s3://{bucket}/{item['Key']}", item["Key"][len(base):], int(item["Size"]),
                           str(item.get("ETag", "")).strip('"'))


def _walk_sorted(folder: Path, rel: str, sizes: bool = True) -> Iterator[FileStat]:
    # sort a directory's entries as their full paths sort: a sub-folder "b" as "b/", so "b.jpg" < "b/..." < "b0.jpg"
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                entries.append((entry.name + "/", entry, True))
            elif entry.is_file(follow_symlinks=False):
                entries.append((entry.name, entry, False))
    entries.sort(key=lambda e: e[0])
    for name, entry, is_dir in entries:
        if is_dir:
            yield from _walk_sorted(Path(entry.path), rel + name, sizes)
        elif sizes:
            st = entry.stat(follow_symlinks=False)
            yield FileStat(entry.path, rel + name, st.st_size, str(st.st_mtime_ns))
        else:
            yield FileStat(entry.path, rel + name, -1, "")


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
