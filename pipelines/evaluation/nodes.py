"""Evaluate each model state: `init` (trained VAE, untrained bridge and DiT), `alignment`, `sft`."""

from __future__ import annotations

import torch

from deepgen.eval.run import evaluate_checkpoint
from pipelines.hooks import tracking


def evaluate_states(curation: dict, init: dict, alignment: dict, sft: dict, evaluation: dict,
                    storage: dict) -> dict:
    torch.set_flush_denormal(True)
    states = {"init": init, "alignment": alignment, "sft": sft}
    keys = ("per_category", "per_category_overrides", "steps", "guidance", "batch_size", "seed", "grid_size")
    settings = {k: evaluation.get(k) for k in keys}
    return {state: evaluate_checkpoint(state, record["checkpoint_uri"], curation["heldout_urls"], settings,
                                       storage["evaluation_cache"], tracking())
            for state, record in states.items()}
