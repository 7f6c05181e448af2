"""The objective interface and its registry (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from deepgen.model.deepgen import DeepGen
from deepgen.train.config import StageConfig

OBJECTIVES: dict[str, type["Objective"]] = {}


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class ObjectiveContext:
    """What an objective may know about its run, beyond the model and the stage config."""

    data: dict[str, list[str]]  # stream name -> shard URLs ("train"; the RL stage also "prompts")
    seed: int  # this worker's stream seed (stage seed, rank and start step)
    init: dict = field(default_factory=dict)  # the stage's initial weights ({"checkpoint": uri} or a preset)
    resumed: bool = False  # the model was loaded from this stage's own checkpoint, not from `init`
    rank: int = 0
    tracking: dict | None = None  # MLflow run on rank 0, None elsewhere
    all_reduce_mean: Callable[[torch.Tensor], torch.Tensor] = _identity  # mean of a tensor over all workers


def register(name: str):
    def add(cls):
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return add


class Objective(nn.Module):
    name = ""
    previews = False  # whether the final checkpoint gets a sample grid (models that generate)

    def __init__(self, model: DeepGen, stage: StageConfig, context: ObjectiveContext):
        super().__init__()
        self.model, self.stage, self.context = model, stage, context

    def batches(self) -> Iterator[dict]:
        raise NotImplementedError

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once after the last training step, on the rank that saves, before the final checkpoint."""


def build_objective(model: DeepGen, stage: StageConfig, context: ObjectiveContext) -> Objective:
    if stage.objective not in OBJECTIVES:
        raise ValueError(f"stage {stage.name!r}: unknown objective {stage.objective!r}; choose from "
                         f"{sorted(OBJECTIVES)}")
    return OBJECTIVES[stage.objective](model, stage, context)
