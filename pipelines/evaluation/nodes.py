"""Evaluate each model state: `init` (trained VAE, untrained bridge and DiT), `alignment`, `sft`, `rl`, on the suites
of `params:suites` (ShapesBench always; others per environment); beside them the baselines `baseline_source` (edits
returned unchanged) and `baseline_target` (the ground truth) on the same prompts, `rl_vs_sft` (the paired difference
of the reward mix between the RL and SFT states), and the report `evaluation/report.html`."""

from __future__ import annotations

import torch

from deepgen import tracking as mlflow_log
from deepgen.eval.reward import paired_difference
from deepgen.eval.run import evaluate_baselines, evaluation_settings, sample_rewards
from deepgen.eval.suites import SuiteContext, SuitePlan, log_report
from deepgen.eval.suites import evaluate_states as evaluate_each
from pipelines.hooks import tracking


def evaluate_states(curation: dict, evaluation: dict, storage: dict, suites: dict, suite_defaults: dict,
                    suite_workers: dict, ray: dict, **states: dict) -> dict:
    """`states`: the record of each evaluated state, by name (init is the VAE stage's checkpoint)."""
    torch.set_flush_denormal(True)
    settings, heldout, cache = evaluation_settings(evaluation), curation["heldout_urls"], storage["evaluation_cache"]
    plan = SuitePlan.from_params(suites, suite_defaults, suite_workers, ray.get("address"))
    context = SuiteContext(heldout, settings, cache, tracking())
    scores = evaluate_each(plan, {state: record["checkpoint_uri"] for state, record in states.items()}, context)
    rewards = {s: sample_rewards(s, states[s]["checkpoint_uri"], heldout, settings, cache) for s in ("rl", "sft")}
    rl_vs_sft = paired_difference(rewards["rl"], rewards["sft"])
    mlflow_log.log_metrics(tracking(), {f"eval/rl_vs_sft/{k}": v for k, v in rl_vs_sft.items()}, step=0)
    result = {**scores, "rl_vs_sft": rl_vs_sft,
              **evaluate_baselines(states["sft"]["checkpoint_uri"], heldout, settings, tracking())}
    log_report(result, plan, tracking())
    return result
