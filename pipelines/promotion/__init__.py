"""Promotion: register the best stage checkpoint and move the `champion` alias when the gate passes."""

from pipelines.promotion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
