"""S3 faults on a real loopback endpoint: a small HTTP proxy in front of moto's server answers 503, 403 or cuts a body
short for the next N requests. Transient faults are retried and the call succeeds; faults beyond the attempts, and
denied requests, fail with one line naming the URI."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deepgen import storage

ERROR_XML = b'<?xml version="1.0"?><Error><Code>%s</Code><Message>injected</Message></Error>'
# SlowDown is S3's throttling answer: botocore backs off from 1 s instead of 50 ms
FAULTS = {503: (503, b"ServiceUnavailable"), "slowdown": (503, b"SlowDown"), 500: (500, b"InternalError"),
          403: (403, b"AccessDenied")}


class FaultyProxy(ThreadingHTTPServer):
    """Forwards every request to `upstream`; `fail(n, fault)` spoils the next n requests: an S3 error answer (a key
    of FAULTS), or ("cut") the upstream answer with its body broken off half way. Counts requests and spoiled ones."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.removeprefix("http://")
        self.lock = threading.Lock()
        self.pending, self.fault, self.spoiled, self.requests = 0, None, 0, []

    def fail(self, n: int, fault: int | str = 503) -> None:
        with self.lock:
            self.pending, self.fault, self.spoiled, self.requests = n, fault, 0, []

    def take(self, method: str, path: str):
        with self.lock:
            self.requests.append((method, path))
            if not self.pending:
                return None
            self.pending -= 1
            self.spoiled += 1
            return self.fault

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.server.take(self.command, self.path)
        if fault is not None and fault != "cut":
            status, code = FAULTS[fault]
            payload = b"" if self.command == "HEAD" else ERROR_XML % code
            self.send_response(status)
            self.send_header("Connection", "close")  # a kept-alive socket the server dropped costs the client a retry
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        self.send_response(answer.status)
        self.send_header("Connection", "close")
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(name, value)
        length = answer.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length or "0")
        self.end_headers()
        self.wfile.write(data[:len(data) // 2] if fault == "cut" else data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any


@pytest.fixture
def proxy(moto_server, monkeypatch, request):
    """A fresh bucket reached through the fault proxy; yields (proxy, bucket URI)."""
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    bucket = "faults-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    server = FaultyProxy(moto_server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DEEPGEN_S3_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    yield server, f"s3://{bucket}"
    server.shutdown()
    server.server_close()


def test_transient_errors_are_retried_until_the_call_succeeds(proxy):
    server, bucket = proxy
    uri, data = f"{bucket}/runs/a/record.json", bytes(range(256)) * 64
    server.fail(3, "slowdown")  # 3 failures, 4 attempts allowed
    storage.write_bytes(uri, data)
    assert server.spoiled == 3 and len(server.requests) == 4
    server.fail(3, 500)
    assert storage.read_bytes(uri) == data
    assert server.spoiled == 3 and len(server.requests) == 4
    server.fail(2, 503)
    assert storage.exists(uri) and not storage.exists(f"{bucket}/runs/a/missing.json")
    server.fail(3, 503)
    assert [st.rel for st in storage.stat_files(f"{bucket}/runs")] == ["a/record.json"]


def test_more_failures_than_attempts_fail_with_one_line_naming_the_uri(proxy):
    server, bucket = proxy
    uri = f"{bucket}/shards/train-000000.tar"
    server.fail(10, 503)
    with pytest.raises(storage.StorageError) as err:
        storage.write_bytes(uri, b"x" * 100)
    message = str(err.value)
    assert "\n" not in message and uri in message and "after 4 attempt(s)" in message, message
    assert len(server.requests) == 4  # AWS_MAX_ATTEMPTS, all of them spent
    server.fail(10, 503)
    with pytest.raises(storage.StorageError, match="list s3://.*/shards failed after 4 attempt"):
        list(storage.list_files(f"{bucket}/shards"))


def test_a_body_cut_off_mid_stream_resumes_where_it_broke(proxy):
    server, bucket = proxy
    uri, data = f"{bucket}/blob.bin", bytes(range(256)) * 4096  # 1 MiB
    storage.write_bytes(uri, data)
    server.fail(2, "cut")
    assert storage.read_bytes(uri) == data
    assert server.spoiled == 2 and [m for m, _ in server.requests] == ["GET"] * 3
    server.fail(1, "cut")
    with storage.open_read(uri) as stream:  # the way webdataset streams shards
        assert stream.read(1000) == data[:1000] and stream.read() == data[1000:]
    server.fail(10, "cut")
    with pytest.raises(storage.StorageError, match=r"get s3://.*/blob\.bin failed after 4 attempt\(s\): the body"):
        storage.read_bytes(uri)


def test_denied_head_raises_instead_of_passing_for_a_prefix(proxy):
    """403 on HEAD used to read as "not an object, so a prefix": a denied key then listed as an empty folder."""
    server, bucket = proxy
    uri = f"{bucket}/raw/images.tar"
    storage.write_bytes(uri, b"tar bytes")
    server.fail(1, 403)
    with pytest.raises(storage.StorageError, match=r"head s3://.*/raw/images\.tar: access denied \(403\)"):
        storage.exists(uri)
    assert len(server.requests) == 1  # no retries for a denied request
    server.fail(1, 403)
    with pytest.raises(storage.StorageError, match="access denied"):
        list(storage.stat_files(uri))
    with pytest.raises(FileNotFoundError, match=r"no such S3 object: s3://.*/raw/nothing\.tar"):
        storage.read_bytes(f"{bucket}/raw/nothing.tar")
    # a 404 HEAD still means "a prefix"
    assert [st.rel for st in storage.stat_files(f"{bucket}/raw")] == ["images.tar"]


def test_folder_placeholders_are_not_files(proxy, tmp_path):
    """An S3 console's "Create folder" leaves an empty `name/` object; listing it as a file made download_dir write
    a file where the folder belongs."""
    import boto3

    server, bucket = proxy
    storage.write_bytes(f"{bucket}/weights/vae/config.json", b"{}")
    boto3.client("s3", endpoint_url=server.url).put_object(Bucket=bucket.removeprefix("s3://"), Key="weights/vae/",
                                                             Body=b"")
    assert list(storage.list_files(f"{bucket}/weights")) == [f"{bucket}/weights/vae/config.json"]
    local = storage.download_dir(f"{bucket}/weights", tmp_path / "weights")
    assert (local / "vae" / "config.json").read_bytes() == b"{}"
