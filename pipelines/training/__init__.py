"""Training stages (vae, alignment, sft): one pipeline shape, a stage name and its parent stage."""

from pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
