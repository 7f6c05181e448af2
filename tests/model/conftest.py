"""Shared tiny models for the model tests: one thread (the machine's two cores are shared; more threads contend and
ran ~100x slower here), denormals flushed, and a tiny DeepGen whose bridge is perturbed so conditioning matters."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)


def _max_level_diff(x, y) -> int:
    import numpy as np

    return int(np.abs(np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16)).max())


def perturbed(model, scale: float = 0.05, seed: int = 1):
    """The SCB's output projections start at zero (the DiT would ignore the prompt); give them weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.scb.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen

    torch.manual_seed(0)
    return perturbed(DeepGen(preset("tiny"))).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    from deepgen.model.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint (moto) on 127.0.0.1 with dummy credentials; yields a bucket name."""
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"DEEPGEN_S3_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=env["DEEPGEN_S3_ENDPOINT_URL"]).create_bucket(Bucket="models")
    yield "models"
    server.stop()
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def same_images():
    def check(a, b) -> bool:
        """Equal up to one or two 8-bit levels: a reloaded model's tensors can take other CPU kernel paths, whose
        last-bit differences occasionally round a pixel the other way (a different image differs by far more)."""
        return len(a) == len(b) and all(x.size == y.size and _max_level_diff(x, y) <= 2 for x, y in zip(a, b))

    return check
