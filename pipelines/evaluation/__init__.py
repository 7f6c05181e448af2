"""Evaluation: held-out ShapesWorld prompts and edits, scored per category, for every model state."""

from pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
