"""The GRPO objective on a tiny model, in one process: a rollout's first update has ratio 1 and no clipping, the KL to
the reference starts at zero, only the DiT gets gradients, and the RL prompt set is curated from training prompts."""

from __future__ import annotations

import json

import pytest
import torch

from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.train.config import StageConfig
from deepgen.train.freeze import apply_schedule
from deepgen.train.objectives import ObjectiveContext, build_objective

STAGE = {"objective": "grpo", "trainable": ["dit"], "steps": 2, "batch_size": 4,
         "grpo": {"prompts_per_worker": 2, "group_size": 3, "sample_steps": 4, "train_fraction": 0.7,
                  "clip_range": 0.2, "kl_weight": 0.1, "aux_weight": 0.1, "aux_batch_size": 2,
                  "rewards": {"text_word": {"ocr": 1.0}, "*": {"shapes": 1.0}}}}


@pytest.fixture(scope="module")
def prompt_record(small_shards, tmp_path_factory):
    from pipelines.rl.nodes import curate_rl_prompts

    record, _, _ = small_shards
    params = {"categories": ["single_object", "two_objects", "text_word"], "heldout_fraction": 0.1,
              "curation": {"heldout_fraction": 0.0, "workers": 1, "progress": False}}
    return curate_rl_prompts(record, params, {"shards": str(tmp_path_factory.mktemp("rl_shards"))})


def test_rl_prompts_are_curated_training_prompts_with_their_specs(small_shards, prompt_record):
    from deepgen.data.shards import read_samples

    record, _, _ = small_shards
    prompts = list(read_samples(prompt_record["train_urls"]))
    heldout_scenes = {s.get("scene_key") for s in read_samples(record["heldout_urls"])}
    assert prompts and prompt_record["data_version"] != record["data_version"]
    assert not prompt_record["heldout_urls"] or not list(read_samples(prompt_record["heldout_urls"]))
    assert {p["kind"] for p in prompts} == {"prompt"}
    assert {p["category"] for p in prompts} <= {"single_object", "two_objects", "text_word"}
    assert all(p["spec"] for p in prompts) and not {p["scene_key"] for p in prompts} & heldout_scenes


def _objective(small_shards, prompt_record, overrides=None):
    record, _, _ = small_shards
    stage = StageConfig.from_dict("rl", {**STAGE, **(overrides or {})})
    torch.manual_seed(0)
    model = DeepGen(preset("tiny"))
    apply_schedule(model, stage)
    context = ObjectiveContext(data={"train": record["train_urls"], "prompts": prompt_record["train_urls"]}, seed=3)
    return build_objective(model, stage, context), model


def test_first_update_of_a_rollout_has_ratio_one_and_zero_kl(small_shards, prompt_record):
    objective, model = _objective(small_shards, prompt_record)
    batch = next(objective.batches())
    rollout = batch["rollout"]
    assert rollout.latents.shape[:2] == (5, 6) and rollout.log_probs.shape == (3, 6)
    assert len(rollout.steps) == 2  # round(0.7 * 3) of the 3 stochastic steps
    assert batch["sft"] is not None and len(batch["sft"]["captions"]) == 2
    loss, metrics = objective(batch)
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and metrics["clip_fraction"] == 0.0
    assert metrics["kl"] == 0.0
    assert 0.0 <= metrics["reward/shapes/mean"] <= 1.0 and metrics["reward/shapes/failures"] == 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.dit.parameters())
    assert all(p.grad is None for p in model.scb.parameters())
    assert all(p.grad is None for p in objective.reference.parameters())


def test_kl_grows_once_the_dit_moves(small_shards, prompt_record):
    objective, model = _objective(small_shards, prompt_record)
    batch = next(objective.batches())
    with torch.no_grad():
        for p in model.dit.parameters():
            p.add_(0.01 * torch.randn_like(p))
    _, metrics = objective(batch)
    assert metrics["kl"] > 0 and metrics["ratio_mean"] != pytest.approx(1.0, abs=1e-6)


def test_sde_sampler_and_ablations_run_from_configuration(small_shards, prompt_record):
    grpo = {**STAGE["grpo"], "ablations": {"sampler": "sde", "reward_norm": False, "kl": False, "aux_sft": False}}
    objective, _ = _objective(small_shards, prompt_record, {"grpo": grpo})
    batch = next(objective.batches())
    assert batch["sft"] is None
    loss, metrics = objective(batch)
    assert torch.isfinite(loss) and metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-5)


def test_grpo_block_needs_the_grpo_objective():
    with pytest.raises(ValueError, match="needs objective 'grpo'"):
        StageConfig.from_dict("rl", {"objective": "flow", "grpo": {}})
    assert json.dumps(StageConfig.from_dict("rl", STAGE).grpo.to_dict())
