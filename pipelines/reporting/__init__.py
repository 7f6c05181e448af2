"""Reporting: the run summary that ties data version, MLflow run, stages, evaluation and registry together."""

from pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
