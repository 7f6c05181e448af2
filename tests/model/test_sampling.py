"""The samplers' mathematics: the CPS step keeps the noise level, log-probabilities follow their formulas, Euler is
the deterministic limit, and generation goes through the same module."""

from __future__ import annotations

import math

import pytest
import torch

from deepgen.model.flow import shifted_sigmas
from deepgen.model.sampling import log_prob, sample, step_distribution


def test_cps_step_keeps_the_noise_level_at_the_next_sigma():
    """With the exact velocity of x = (1 - s) x0 + s eps, the CPS step's result is (1 - s') x0 plus noise of std s':
    the predicted noise and the fresh noise together carry exactly s'."""
    torch.manual_seed(0)
    n, s, s_next, eta = 200_000, torch.tensor(0.8), torch.tensor(0.55), 0.7
    x0, eps = torch.full((n, 1, 1, 1), 0.3), torch.randn(n, 1, 1, 1)
    x = (1 - s) * x0 + s * eps
    dist = step_distribution("cps", x, eps - x0, s, s_next, eta)
    x_next = dist.mean + dist.std * torch.randn(n, 1, 1, 1)
    noise = (x_next - (1 - s_next) * x0).flatten()
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(noise.std()) == pytest.approx(float(s_next), rel=0.01)
    assert float(dist.std.flatten()[0]) == pytest.approx(float(s_next) * math.sin(eta * math.pi / 2))


def test_log_probs_follow_their_formulas():
    torch.manual_seed(1)
    x, v = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    s, s_next = torch.tensor(0.7), torch.tensor(0.5)
    for sampler in ("cps", "sde"):
        dist = step_distribution(sampler, x, v, s, s_next, eta=0.7, sigma_max=0.9)
        x_next = dist.mean + dist.std * torch.randn_like(x)
        got = log_prob(sampler, x_next, dist)
        if sampler == "cps":
            want = -((x_next - dist.mean) ** 2).mean(dim=(1, 2, 3))
        else:
            normal = torch.distributions.Normal(dist.mean, dist.std.expand_as(dist.mean))
            want = normal.log_prob(x_next).mean(dim=(1, 2, 3))
        torch.testing.assert_close(got, want)


def test_sde_mean_is_the_euler_step_when_eta_is_zero():
    x, v = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    s, s_next = torch.tensor(0.6), torch.tensor(0.4)
    euler = step_distribution("euler", x, v, s, s_next)
    for sampler in ("sde", "cps"):
        torch.testing.assert_close(step_distribution(sampler, x, v, s, s_next, eta=0.0).mean, euler.mean)


def test_trajectory_records_every_step_and_is_reproducible():
    def velocity(x, sigma):
        return x * 0.5 - 0.1

    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    runs = [sample(velocity, noise, 6, 3.0, "cps", eta=0.7, generator=torch.Generator().manual_seed(5),
                   trajectory=True) for _ in range(2)]
    first = runs[0]
    assert len(first.latents) == 7 and len(first.means) == 6
    assert len(first.log_probs) == 5  # the last step lands on s = 0 with no noise
    torch.testing.assert_close(first.sample, runs[1].sample)
    torch.testing.assert_close(first.sigmas, shifted_sigmas(6, 3.0))
    euler = sample(velocity, noise, 6, 3.0, "euler")
    assert len(euler.latents) == 2 and not euler.log_probs


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        step_distribution("ddim", torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), 0.5, 0.4)
