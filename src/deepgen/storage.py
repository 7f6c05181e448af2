"""One small storage interface for local paths and s3:// URIs (boto3), so every stage runs unchanged on a laptop
or on a cluster. Writes are atomic: local files go to a temporary name and are renamed; S3 puts are atomic already.

S3 settings come from the environment the way boto3 reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION),
plus `DEEPGEN_S3_ENDPOINT_URL` for a non-AWS endpoint (MinIO, moto). Kedro credentials are exported into that
environment by the project's hook; nothing here logs them.

Transient S3 failures (connection errors, 5xx, throttling) are retried with backoff: botocore's "standard" retry mode
per call (AWS_RETRY_MODE=adaptive also works), `AWS_MAX_ATTEMPTS` attempts in all (default `MAX_ATTEMPTS`); a body
cut off mid-stream, which botocore does not retry, is resumed here from the byte it stopped at. A call that still
fails raises `StorageError` naming the URI and the attempts; a missing object raises FileNotFoundError.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


# Total attempts per S3 call. botocore's standard mode sleeps rand(0, 1) * base * 2**i s before retry i (base 0.05 s,
# 1 s when throttled; 20 s cap): 8 attempts wait up to 6.35 s in all on 5xx and up to 71 s on throttling.
MAX_ATTEMPTS = 8
NOT_FOUND = ("404", "NoSuchKey", "NotFound")
DENIED = ("401", "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
          "InvalidToken", "AllAccessDisabled")


class StorageError(OSError):
    """An S3 call that failed for good (after its retries, or at once when retrying cannot help)."""


def max_attempts() -> int:
    raw = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not raw:
        return MAX_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"AWS_MAX_ATTEMPTS must be a whole number >= 1, got {raw!r}")
    return int(raw)


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def s3_client():
    """A boto3 S3 client, one per process, thread, endpoint and retry setting (a client costs tens of ms to build;
    boto3 clients must not cross a fork, and a per-thread client keeps thread pools safe)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("DEEPGEN_S3_ENDPOINT_URL") or None
    retries = {"total_max_attempts": max_attempts(), "mode": os.environ.get("AWS_RETRY_MODE") or "standard"}
    key = (os.getpid(), threading.get_ident(), endpoint, os.environ.get("AWS_ACCESS_KEY_ID"), *retries.values())
    client = _clients.get(key)
    if client is None:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=Config(retries=retries))
        with _clients_lock:
            _clients[key] = client
    return client


@contextmanager
def _s3_errors(action: str, uri: str):
    """botocore's errors as one line naming the URI: FileNotFoundError for a missing object, StorageError else."""
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        yield
    except ClientError as err:
        error, meta = err.response.get("Error", {}), err.response.get("ResponseMetadata", {})
        code = str(error.get("Code") or meta.get("HTTPStatusCode", ""))
        if code in NOT_FOUND:
            raise FileNotFoundError(f"no such S3 object: {uri}") from None
        if code in DENIED:
            raise StorageError(f"S3 {action} {uri}: access denied ({code}): check the credentials and the bucket's "
                               "policy (S3 also answers 403 for a missing key without s3:ListBucket)") from None
        attempts = meta.get("RetryAttempts", 0) + 1
        raise StorageError(f"S3 {action} {uri} failed after {attempts} attempt(s): {code} "
                           f"{error.get('Message', '')}".rstrip()) from err
    except BotoCoreError as err:  # retried by botocore only when the connection failed
        tries = f" after {max_attempts()} attempt(s)" if isinstance(err, (BotoConnectionError, HTTPClientError)) else ""
        raise StorageError(f"S3 {action} {uri} failed{tries}: {type(err).__name__}: {err}") from err


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def exists(uri: str) -> bool:
    """Whether a file / object is there; for S3 only a 404 means no (a denied or failing HEAD raises)."""
    if not is_s3(uri):
        return Path(uri).exists()
    return _head(uri) is not None


def _head(uri: str) -> dict | None:
    bucket, key = _bucket_key(uri)
    try:
        with _s3_errors("head", uri):
            return s3_client().head_object(Bucket=bucket, Key=key)
    except FileNotFoundError:
        return None


def read_bytes(uri: str) -> bytes:
    if not is_s3(uri):
        with open(uri, "rb") as handle:
            return handle.read()
    with _S3Reader(uri) as reader:
        return reader.readall()


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic write: readers see the old file or the new one, never half of it."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        with _s3_errors("put", uri):
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
    with _s3_errors("delete", uri):
        s3_client().delete_object(Bucket=bucket, Key=key)


def open_read(uri: str):
    """A binary stream (webdataset reads shards through this for s3://); an S3 body cut off mid-stream resumes."""
    if not is_s3(uri):
        return open(uri, "rb")
    return io.BufferedReader(_S3Reader(uri), buffer_size=1 << 20)


class _S3Reader(io.RawIOBase):
    """An object's body that survives a dropped connection: botocore retries a GET until the response starts, not
    while its body streams, so a broken read reopens the object at the next byte (pinned to the first ETag, so a
    rewritten object fails instead of splicing two versions)."""

    def __init__(self, uri: str):
        super().__init__()
        self.uri, (self._bucket, self._key) = uri, _bucket_key(uri)
        self._pos, self._failures, self._etag, self._body = 0, 0, None, None
        self._open()

    def _open(self) -> None:
        extra = {"Range": f"bytes={self._pos}-", "IfMatch": self._etag} if self._etag else {}
        with _s3_errors("get", self.uri):
            response = s3_client().get_object(Bucket=self._bucket, Key=self._key, **extra)
        self._etag, self._body = response.get("ETag"), response["Body"]

    def _read(self, size: int | None) -> bytes:
        from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        while True:
            try:
                data = self._body.read(size)
                self._pos += len(data)
                return data
            except (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionError) as err:
                self._failures += 1
                if self._failures >= max_attempts():
                    raise StorageError(f"S3 get {self.uri} failed after {self._failures} attempt(s): the body broke "
                                       f"off at byte {self._pos}: {type(err).__name__}") from err
                # jittered exponential backoff (0.25 s base, 20 s cap): 8 attempts wait up to about 30 s in all
                time.sleep(random.random() * min(0.25 * 2 ** self._failures, 20))
                self._body.close()
                self._open()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self._read(None)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
        super().close()


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
    if key and not key.endswith("/"):
        head = _head(prefix)  # a single object? (only a 404 says no: a denied HEAD raises)
        if head is not None:
            yield FileStat(prefix, key.rsplit("/", 1)[-1], int(head["ContentLength"]), head.get("ETag", "").strip('"'))
            return
    base = key.rstrip("/") + "/" if key else ""
    for item in _list_objects(prefix, bucket, base):
        yield FileStat(f"s3://{bucket}/{item['Key']}", item["Key"][len(base):], int(item["Size"]),
                       str(item.get("ETag", "")).strip('"'))


def _list_objects(uri: str, bucket: str, prefix: str) -> Iterator[dict]:
    """The objects under `prefix`, without the empty "folder/" placeholders that consoles and some tools create."""
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    with _s3_errors("list", uri):
        for page in pages:
            yield from (item for item in page.get("Contents", []) if not item["Key"].endswith("/"))


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
    for item in _list_objects(prefix, bucket, key.rstrip("/") + "/"):
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
