"""Evaluate each model state: `init` (trained VAE, untrained bridge and DiT), `alignment`, `sft`."""

from __future__ import annotations

import torch

from deepgen.eval.run import evaluate_checkpoint
from pipelines.hooks import tracking


def evaluate_states(curation: dict, init: dict, alignment: dict, sft: dict, evaluation: dict,
                    storage: dict) -> dict:
    torch.set_flush_denormal(True)
    states = {"init": init, "alignment": alignment, "sft": sft}
    settings = {k: evaluation[k] for k in ("per_category", "steps", "guidance", "batch_size", "seed", "grid_size")}
    return {state: evaluate_checkpoint(state, record["checkpoint_uri"], curation["heldout_urls"], settings,
                                       storage["evaluation_cache"], tracking())
            for state, record in states.items()}
