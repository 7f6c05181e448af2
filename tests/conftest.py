"""Shared fixtures: a small curated shard set (real webdataset tars), built once per session."""

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
