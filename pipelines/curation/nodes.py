"""Thin nodes over deepgen.curation: build the typed parameters, curate, record the data version in MLflow."""

from __future__ import annotations

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.http_dataset_source import HTTPDatasetSource

from deepgen.curation.curate import CurationParams, curate_shapes_world


def curate(curation: dict, storage: dict) -> dict:
    params = dict(curation)
    source = params.pop("source", "shapes_world")
    if source != "shapes_world":
        raise ValueError(f"parameters curation.source: unknown source {source!r}")
    record = curate_shapes_world(CurationParams(**params), storage["shards"])
    if mlflow.active_run():
        dataset = MetaDataset(HTTPDatasetSource(record["manifest_uri"]), name=f"shapes_world",
                              digest=record["data_version"])
        mlflow.log_input(dataset, context="training")
        mlflow.set_tag("data_version", record["data_version"])
    return record
