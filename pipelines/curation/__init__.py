"""Curation: raw sources -> validated webdataset shards + manifest (the data version)."""

from pipelines.curation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
