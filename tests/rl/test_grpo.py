"""MR-GRPO's advantage and loss mathematics (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from deepgen.rl.config import GRPOConfig
from deepgen.rl.grpo import batch_normalise, group_advantages, ppo_loss, signal_share, velocity_kl


def _rewards(seed: int, groups: int = 4, size: int = 8) -> torch.Tensor:
    return torch.rand(groups, size, generator=torch.Generator().manual_seed(seed))


def test_a_reward_scaled_by_100_does_not_dominate_after_reward_wise_normalisation():
    a, b = _rewards(0), _rewards(1)
    weights = {"a": torch.full((4,), 0.5), "b": torch.full((4,), 0.5)}
    plain = group_advantages({"a": a, "b": b}, weights)
    scaled = group_advantages({"a": a, "b": 100 * b}, weights)
    torch.testing.assert_close(plain, scaled, atol=1e-3, rtol=1e-3)
    # summing raw rewards first (Flow-GRPO's way) lets the large one decide
    raw = group_advantages({"a": a, "b": 100 * b}, weights, normalise_each=False)
    only_b = group_advantages({"b": b}, {"b": torch.ones(4)})
    assert torch.corrcoef(torch.stack([raw.flatten(), only_b.flatten()]))[0, 1] > 0.999
    assert torch.corrcoef(torch.stack([plain.flatten(), only_b.flatten()]))[0, 1] < 0.95


def test_a_failed_reward_leaves_the_others_advantages_intact():
    a, b = _rewards(2), _rewards(3)
    weights = {"a": torch.full((4,), 0.5), "b": torch.full((4,), 0.5)}
    whole = group_advantages({"a": a, "b": b}, weights)
    failed = b.clone()
    failed[1] = math.nan
    partial = group_advantages({"a": a, "b": failed}, weights)
    only_a = group_advantages({"a": a}, {"a": torch.full((4,), 0.5)})
    torch.testing.assert_close(partial[1], only_a[1])  # group 1: b left out, a as it is
    torch.testing.assert_close(partial[[0, 2, 3]], whole[[0, 2, 3]])  # other groups untouched
    assert not torch.isnan(partial).any()


def test_group_advantages_are_centred_per_group_and_weights_pick_the_prompt_set():
    a = _rewards(4)
    adv = group_advantages({"a": a, "b": _rewards(5)}, {"a": torch.tensor([1.0, 1, 0, 0]),
                                                        "b": torch.tensor([0.0, 0, 1, 1])})
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv[:2], group_advantages({"a": a[:2]}, {"a": torch.ones(2)}))


def test_batch_normalisation_and_clipping():
    adv = torch.cat([torch.randn(63, generator=torch.Generator().manual_seed(6)), torch.tensor([100.0])])
    out = batch_normalise(adv, clip=5.0)
    assert float(out.max()) == 5.0 and float(out.min()) >= -5.0
    unclipped = batch_normalise(adv, clip=1e9)
    assert float(unclipped.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(unclipped.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)


def test_signal_share_counts_groups_whose_rewards_differ():
    flat = torch.tensor([[1.0, 1.0], [0.0, 1.0], [math.nan, math.nan], [0.5, 0.5]])
    assert signal_share({"shapes": flat}) == 0.25


def test_ppo_ratio_is_one_and_the_clip_inactive_on_the_rollout_policy():
    logp = torch.randn(16)
    adv = torch.randn(16)
    loss, stats = ppo_loss(logp.clone().requires_grad_(), logp, adv, clip_range=1e-4)
    assert stats["ratio_mean"] == 1.0 and stats["clip_fraction"] == 0.0
    assert float(loss.detach()) == pytest.approx(float(-adv.mean()), abs=1e-6)


def test_ppo_clip_stops_the_gradient_beyond_the_range():
    old = torch.zeros(2)
    new = torch.tensor([0.5, 0.5], requires_grad=True)  # ratio e^0.5, far beyond 1 + 0.2
    loss, stats = ppo_loss(new, old, torch.tensor([1.0, 1.0]), clip_range=0.2)
    loss.backward()
    assert stats["clip_fraction"] == 1.0 and torch.all(new.grad == 0)


def test_kl_on_velocities_is_zero_for_equal_velocities():
    v = torch.randn(2, 4, 3, 3)
    assert float(velocity_kl(v, v.clone())) == 0.0
    assert float(velocity_kl(v, v + 1)) == pytest.approx(1.0)


def test_config_names_bad_keys_and_ablations():
    with pytest.raises(ValueError, match="rl.grpo: unknown key"):
        GRPOConfig.from_dict({"group": 8})
    with pytest.raises(ValueError, match="sampler must be one of"):
        GRPOConfig.from_dict({"ablations": {"sampler": "ddim"}})
    cfg = GRPOConfig.from_dict({"ablations": {"kl": False, "aux_sft": False}})
    assert cfg.kl_coef == 0.0 and cfg.aux_coef == 0.0
    assert cfg.weights_for({"category": "text_word"}) == {"ocr": 1.0}
    assert cfg.weights_for({"category": "two_objects", "kind": "prompt"}) == {"shapes": 1.0}


def test_reward_folders_are_absolute_where_the_config_is_built(tmp_path, monkeypatch):
    """Ray workers run in another directory: conf's relative CLIP folder must name the same folder there."""
    monkeypatch.chdir(tmp_path)
    cfg = GRPOConfig.from_dict({"reward_options": {"clip": {"path": "weights/clip", "device": "cpu"},
                                                   "judge": {"url": "http://127.0.0.1:1/v1"}}})
    assert cfg.reward_options["clip"] == {"path": str(tmp_path / "weights" / "clip"), "device": "cpu"}
    assert cfg.reward_options["judge"] == {"url": "http://127.0.0.1:1/v1"}
    assert GRPOConfig.from_dict(cfg.to_dict()) == cfg  # a worker rebuilding it gets the same config
    assert GRPOConfig.from_dict({"reward_options": {"clip": {"path": "s3://b/clip"}}}).reward_options["clip"] == {
        "path": "s3://b/clip"}
