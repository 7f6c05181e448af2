"""Inference for users: a pipeline object and the `deepgen generate` / `deepgen edit` commands."""

from deepgen.inference.pipeline import DeepGenPipeline, load_image

__all__ = ["DeepGenPipeline", "load_image"]
