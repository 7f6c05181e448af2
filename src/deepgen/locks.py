"""A cross-process lock on a storage location, so two runs on one data folder or bucket never produce the same output
at once: the second waits (saying so in one warning line, which Kedro's default logging shows), then finds the first
one's finished result and reuses it.

Local paths: `fcntl.flock` on the lock file, which the kernel releases when its holder exits or dies, so a crash
leaves no stale lock. The file is left in place, empty and never rewritten (unlinking a flock file races with a
waiter that has it open, and a rerun must not change any file's mtime).

s3:// URIs: a lock object created with a conditional put (If-None-Match: *), which S3 grants to exactly one writer.
It holds a lease that its holder renews every ttl/3 s with a put conditional on its own ETag; a waiter takes over a
lease that ran out (its holder died) with a put conditional on the stale ETag, so only one waiter wins. Leases compare
the holder's clock with the waiter's: hosts must agree within a fraction of `ttl`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from deepgen import storage

log = logging.getLogger(__name__)


@contextmanager
def held(uri: str, what: str, *, ttl: float = 60.0, poll: float = 1.0) -> Iterator[None]:
    """Hold the lock at `uri` (a file or an s3:// object) for the body; `what` names the guarded work in the waiting
    message. `ttl` and `poll` (seconds) apply to S3 only: the lease length and how often a waiter looks again."""
    if storage.is_s3(uri):
        with _s3_lock(uri, what, ttl, poll):
            yield
    else:
        with _file_lock(uri, what):
            yield


@contextmanager
def _file_lock(path: str, what: str) -> Iterator[None]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: another run holds %s; waiting for it to finish", what, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _code(err) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


@contextmanager
def _s3_lock(uri: str, what: str, ttl: float, poll: float) -> Iterator[None]:
    from botocore.exceptions import ClientError

    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    client = storage.s3_client()

    token = uuid.uuid4().hex  # tells this holding apart from another thread's of the same process

    def body() -> bytes:
        return json.dumps({"owner": _owner(), "token": token, "expires": time.time() + ttl}).encode()

    waited = False
    while True:
        try:
            etag = client.put_object(Bucket=bucket, Key=key, Body=body(), IfNoneMatch="*")["ETag"]
            break
        except ClientError as err:
            if _code(err) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
        try:
            current = client.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if _code(err) in ("NoSuchKey", "404"):
                continue  # released between our put and this read: try again at once
            raise
        lease = json.loads(current["Body"].read())
        if lease["expires"] < time.time():
            try:
                etag = client.put_object(Bucket=bucket, Key=key, Body=body(), IfMatch=current["ETag"])["ETag"]
                log.warning("%s: took over %s, whose holder %s let its lease run out", what, uri, lease["owner"])
                break
            except ClientError as err:
                if _code(err) not in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"):
                    raise
                continue  # another waiter took it over, or it was released
        if not waited:
            log.warning("%s: %s holds %s; waiting for it to finish", what, lease["owner"], uri)
            waited = True
        time.sleep(poll)

    state = {"etag": etag}
    stop = threading.Event()

    def renew() -> None:
        renewer = storage.s3_client()  # a client per thread
        while not stop.wait(ttl / 3):
            try:
                state["etag"] = renewer.put_object(Bucket=bucket, Key=key, Body=body(),
                                                   IfMatch=state["etag"])["ETag"]
            except ClientError:
                log.warning("%s: lost the lock %s (lease not renewed in time); another run may take over", what, uri)
                return

    thread = threading.Thread(target=renew, name=f"lease {key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        try:
            client.delete_object(Bucket=bucket, Key=key, IfMatch=state["etag"])
        except ClientError:  # taken over after our lease ran out: the lock is no longer ours to delete
            log.warning("%s: %s was no longer ours at release", what, uri)
