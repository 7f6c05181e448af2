"""Thin nodes over deepgen.curation: build the typed parameters, curate, record the data version in MLflow."""

from __future__ import annotations

import json

import mlflow
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException

from deepgen import storage as store
from deepgen.curation.curate import CurationParams
from deepgen.curation.curate import curate as run_curation


def curate(curation: dict, storage: dict) -> dict:
    params = CurationParams.from_dict(dict(curation))
    record = run_curation(params, storage["shards"])
    if mlflow.active_run():
        source = params.source if isinstance(params.source, str) else params.source.get("type", "shapes_world")
        dataset = MetaDataset(HTTPDatasetSource(record["manifest_uri"]), name=source, digest=record["data_version"])
        try:
            mlflow.log_input(dataset, context="training")
        except MlflowException:  # MLflow looks the dataset up, then inserts it: a concurrent run on the same data
            mlflow.log_input(dataset, context="training")  # may insert it in between; now the lookup finds it
        mlflow.set_tag("data_version", record["data_version"])
        counts = json.loads(store.read_bytes(record["manifest_uri"]))["counts"]
        mlflow.log_metrics({f"curation/{k}": float(counts[k]) for k in
                            ("records", "kept", "quarantined", "rejected", "duplicates", "near_duplicates",
                             "contaminated", "contract")})
    return record
