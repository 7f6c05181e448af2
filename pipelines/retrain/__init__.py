"""Scheduled retraining: curate, skip when a model for this data and configuration is registered, else the chain."""

from pipelines.retrain.pipeline import create_pipeline

__all__ = ["create_pipeline"]
