"""Shared fixtures: a small curated shard set (real webdataset tars) and a loopback S3 endpoint (moto's server
mode), each started once per session."""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
torch.set_flush_denormal(True)


@pytest.fixture(scope="module", autouse=True)
def mlflow_tracking_uri_kept():
    """MLflow's tracking URI is process-global (and mirrored into MLFLOW_TRACKING_URI): a module that sets it and
    forgets sent a later module's registry lookups to its own SQLite store (CI, 2026-12-02). Each module ends with it
    as it began: unset if it was."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:  # nothing could have set it otherwise
        sys.modules["mlflow"].set_tracking_uri(before)


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


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> list[str]:
    """Three tiny checkpoints that differ in their bridge weights (perturbed, so prompts and models matter)."""
    from deepgen.model.checkpoint import save_checkpoint
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen

    torch.manual_seed(0)
    model = DeepGen(preset("tiny")).eval()
    root, paths = tmp_path_factory.mktemp("ckpts"), []
    for seed in (1, 2, 3):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.scb.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        paths.append(str(save_checkpoint(model, root / f"m{seed}")))
    return paths
