"""Training objectives as plug-ins: the loop builds one by the stage's `objective` name and never branches on it.

An objective is what DDP (or FSDP) wraps: `forward(batch) -> (loss, metrics)`; it also owns the stream of batches it
trains on (`batches()`) and what happens when the stage's weights are final (`finish()`). Parallelism stays out of
objectives: they see a model and, where a statistic spans the whole batch, `context.all_reduce_mean`.
"""

from deepgen.train.objectives.base import OBJECTIVES, Objective, ObjectiveContext, build_objective
from deepgen.train.objectives import flow, grpo, vae  # noqa: F401  (each registers itself)

__all__ = ["OBJECTIVES", "Objective", "ObjectiveContext", "build_objective"]
