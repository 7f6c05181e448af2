"""The RL stage (MR-GRPO): curate its prompt set, then train from the SFT checkpoint."""

from pipelines.rl.pipeline import create_pipeline

__all__ = ["create_pipeline"]
