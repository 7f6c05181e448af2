"""MR-GRPO's mathematics, apart from any model: advantages from several rewards, the PPO-clip policy loss and the
KL penalty on velocities (DESIGN.md section 1). Parallelism stays out: batch statistics go through `all_reduce_mean`,
which the caller backs with torch.distributed when it runs on several workers.

Rewards arrive per prompt group as (P, G) tensors, with a NaN row where a reward failed for that group: a failed
reward is left out of that group's advantage (the others' stay intact), never read as a zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EPS = 1e-4  # DESIGN: (R - mean_group) / (std_group + 1e-4)


def _group_normalised(rewards_PG: torch.Tensor) -> torch.Tensor:
    mean = rewards_PG.mean(dim=1, keepdim=True)
    std = rewards_PG.std(dim=1, keepdim=True, unbiased=False)
    return (rewards_PG - mean) / (std + EPS)


def group_advantages(rewards: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
                     normalise_each: bool = True) -> torch.Tensor:
    """(P, G) advantages before batch normalisation.

    `rewards[name]` is (P, G) with NaN rows for failed groups; `weights[name]` is (P,), the weight of that reward in
    each prompt's set. With `normalise_each` (MR-GRPO) every reward is normalised within its group, then weighted and
    summed, so a reward on a large scale does not drown the others; without it (Flow-GRPO) the weighted raw rewards
    are summed and the sum normalised once."""
    names = sorted(rewards)
    if not names:
        raise ValueError("no rewards to compute advantages from")
    shape = rewards[names[0]].shape
    if normalise_each:
        total = torch.zeros(shape)
        for name in names:
            ok = ~torch.isnan(rewards[name]).any(dim=1)
            part = torch.zeros(shape)
            if ok.any():
                part[ok] = _group_normalised(rewards[name][ok])
            total += weights[name].view(-1, 1) * part
        return total
    summed = torch.zeros(shape)
    for name in names:
        summed += weights[name].view(-1, 1) * torch.nan_to_num(rewards[name], nan=0.0)
    return _group_normalised(summed)


def batch_normalise(advantages: torch.Tensor, clip: float,
                    all_reduce_mean: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> torch.Tensor:
    """Normalise over the whole batch (every worker's groups: `all_reduce_mean` averages a tensor across workers),
    then clip to +-clip."""
    flat = advantages.flatten()
    stats = all_reduce_mean(torch.stack([flat.mean(), (flat ** 2).mean()]))
    mean, var = stats[0], (stats[1] - stats[0] ** 2).clamp_min(0)
    return ((advantages - mean) / (var.sqrt() + EPS)).clamp(-clip, clip)


def signal_share(rewards: dict[str, torch.Tensor]) -> float:
    """Share of groups in which some reward differs between samples: only those carry a gradient."""
    varied = None
    for values in rewards.values():
        spread = values.std(dim=1, unbiased=False) > 1e-6  # NaN rows compare False
        varied = spread if varied is None else varied | spread
    return float(varied.float().mean()) if varied is not None else 0.0


def ppo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
             clip_range: float) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip on per-sample log-probabilities of one denoising step: mean over samples of
    max(-A r, -A clip(r, 1 - e, 1 + e)), r = exp(log p - log p_old)."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    stats = {"ratio_mean": float(ratio.detach().mean()),
             "clip_fraction": float(((ratio.detach() - 1).abs() > clip_range).float().mean())}
    return loss, stats


def velocity_kl(velocity: torch.Tensor, reference_velocity: torch.Tensor) -> torch.Tensor:
    """The KL penalty on velocities: for two Gaussian steps with the same std it is proportional to the squared
    difference of their means, which is linear in the velocity difference."""
    return ((velocity.float() - reference_velocity.float()) ** 2).mean()
