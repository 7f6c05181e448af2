"""Shared fixtures: a small curated shard set (real webdataset tars) and a loopback S3 endpoint (moto's server
mode), each started once per session."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory):
    from deepgen.curation.curate import CurationParams, curate_shapes_world

    out = tmp_path_factory.mktemp("shards")
    params = CurationParams(num_samples=300, seed=3, shard_max_count=64)
    return curate_shapes_world(params, str(out)), params, out


@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_server, monkeypatch, request):
    """A fresh bucket on the loopback S3 endpoint, with dummy credentials in the environment; yields its s3:// URI."""
    import boto3

    monkeypatch.setenv("DEEPGEN_S3_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-never-logged")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = "deepgen-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"
