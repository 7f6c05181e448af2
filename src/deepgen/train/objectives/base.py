"""The objective interface and its registry (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from deepgen.model.deepgen import DeepGen
from deepgen.train.batches import collate, training_batches
from deepgen.train.config import StageConfig
from deepgen.train.stream import BatchStream

OBJECTIVES: dict[str, type["Objective"]] = {}


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class ObjectiveContext:
    """What an objective may know about its run, beyond the model and the stage config."""

    data: dict[str, list[str]]  # stream name -> shard URLs ("train"; the RL stage also "prompts")
    seed: int  # this worker's own seed (stage seed and rank) for an objective's generators; streams use the stage's
    init: dict = field(default_factory=dict)  # the stage's initial weights ({"checkpoint": uri} or a preset)
    resumed: bool = False  # the model was loaded from this stage's own checkpoint, not from `init`
    rank: int = 0
    world_size: int = 1
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
        self.streams: dict[str, BatchStream] = {}
        self._resume_state: dict = {}

    def batches(self) -> Iterator[dict]:
        raise NotImplementedError

    def stream(self, name: str, batch_size: int, keep: dict[str, float] | None = None, source: str = "train",
               collate_fn=collate) -> BatchStream:
        """This rank's share of `context.data[source]` as batches; continues from a restored state of `name`."""
        ctx = self.context
        self.streams[name] = training_batches(
            ctx.data[source], batch_size, self.stage.seed, keep, rank=ctx.rank, world_size=ctx.world_size,
            loader_workers=self.stage.scaling.loader_workers, state=self._resume_state.get("streams", {}).get(name),
            collate_fn=collate_fn)
        return self.streams[name]

    def data_state(self) -> dict:
        """Where this rank's streams are (plain ints, strs, lists, tensors: saved with the checkpoint per rank)."""
        return {"streams": {name: s.state_dict() for name, s in self.streams.items()}}

    def load_data_state(self, state: dict) -> None:
        """Continue from `data_state()`'s result; called before `batches()`."""
        self._resume_state = state

    def image_sizes(self) -> set[tuple[int, int]]:
        """The (height, width) of the images this rank trained on so far (restored states included)."""
        return {size for s in self.streams.values() for size in s.sizes}

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once after the last training step, on the rank that saves, before the final checkpoint."""


def build_objective(model: DeepGen, stage: StageConfig, context: ObjectiveContext) -> Objective:
    if stage.objective not in OBJECTIVES:
        raise ValueError(f"stage {stage.name!r}: unknown objective {stage.objective!r}; choose from "
                         f"{sorted(OBJECTIVES)}")
    return OBJECTIVES[stage.objective](model, stage, context)
