"""Evaluate each model state: `init` (trained VAE, untrained bridge and DiT), `alignment`, `sft`, `rl`; beside them
the baselines `baseline_source` (edits returned unchanged) and `baseline_target` (the ground truth) on the same
prompts, and `rl_vs_sft`: the paired difference of the reward mix between the RL and SFT states."""

from __future__ import annotations

import torch

from deepgen import tracking as mlflow_log
from deepgen.eval.reward import paired_difference
from deepgen.eval.run import evaluate_baselines, evaluate_checkpoint, evaluation_settings, sample_rewards
from pipelines.hooks import tracking


def evaluate_states(curation: dict, evaluation: dict, storage: dict, **states: dict) -> dict:
    """`states`: the record of each evaluated state, by name (init is the VAE stage's checkpoint)."""
    torch.set_flush_denormal(True)
    settings, heldout, cache = evaluation_settings(evaluation), curation["heldout_urls"], storage["evaluation_cache"]
    scores = {state: evaluate_checkpoint(state, record["checkpoint_uri"], heldout, settings, cache, tracking())
              for state, record in states.items()}
    rewards = {s: sample_rewards(s, states[s]["checkpoint_uri"], heldout, settings, cache) for s in ("rl", "sft")}
    rl_vs_sft = paired_difference(rewards["rl"], rewards["sft"])
    mlflow_log.log_metrics(tracking(), {f"eval/rl_vs_sft/{k}": v for k, v in rl_vs_sft.items()}, step=0)
    return {**scores, "rl_vs_sft": rl_vs_sft,
            **evaluate_baselines(states["sft"]["checkpoint_uri"], heldout, settings, tracking())}
