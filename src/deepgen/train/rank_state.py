"""Each rank's own part of a checkpoint, `rank{r}.data.pt` beside the model (Ray Train puts every rank's reported
files into the same checkpoint folder): where the rank's data streams are and the random generators it draws noise,
timesteps, caption dropout and crops from. Restored on resume, so a resumed run continues with the same batches and
the same noise as a run that never stopped, for a seed and world size. Plain tensors, ints, strs and lists only:
loaded with weights_only=True.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch


def file_name(rank: int) -> str:
    return f"rank{rank}.data.pt"


def capture(objective, world_size: int) -> dict:
    """Call after a step, before the next batch is drawn."""
    state = {"world_size": world_size, "data": objective.data_state(), "torch": torch.get_rng_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save(folder: str | Path, rank: int, state: dict) -> None:
    torch.save(state, Path(folder) / file_name(rank))


def load(folder: str | Path, rank: int, world_size: int) -> dict | None:
    """The rank's saved state, or None for a checkpoint written without one."""
    path = Path(folder) / file_name(rank)
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=True)
    if state["world_size"] != world_size:
        raise ValueError(f"{path}: saved by a run of {state['world_size']} workers, this one has {world_size}")
    return state


def restore_generators(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
