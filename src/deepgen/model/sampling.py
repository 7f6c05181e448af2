"""Samplers for rectified flow, apart from the model (as diffusers keeps pipelines apart from models): generation and
evaluation integrate with Euler; RL rolls out with a stochastic step whose per-step Gaussian gives a log-probability.

Noise levels s run from 1 (noise) to 0 (data) on the scheduler's shifted grid; the DiT predicts v = eps - x0, so
x0^ = x - s v and eps^ = x + (1 - s) v. Every step maps (x at s, v, s, s') to the distribution of x at s':

- `euler`: deterministic, mean x + (s' - s) v, std 0 (no log-prob).
- `cps` (DeepGen's Coefficients-Preserving Sampling): std = s' sin(eta pi / 2),
  mean = (1 - s') x0^ + sqrt(s'^2 - std^2) eps^, log p = -mean((x' - mean)^2). The fresh noise and the predicted noise
  together keep the noise coefficient at exactly s' (what the name preserves).
- `sde` (Flow-GRPO's reverse SDE): std_t = eta sqrt(s / (1 - s)), mean = x (1 + std_t^2 dt / (2 s)) +
  v (1 + std_t^2 (1 - s) / (2 s)) dt with dt = s' - s < 0, std = std_t sqrt(-dt), and the Gaussian log-density
  averaged over the latent's elements.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deepgen.model.flow import shifted_sigmas

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_BCHW, sigma_B) -> v_BCHW
SAMPLERS = ("euler", "cps", "sde")


@dataclass(frozen=True)
class StepDistribution:
    """x at the next noise level ~ N(mean, std^2) per element; std is (B, 1, 1, 1), zero for Euler."""

    mean: torch.Tensor
    std: torch.Tensor


@dataclass
class Trajectory:
    """A rollout: latents[i] is x at sigmas[i] (latents[0] the initial noise, latents[-1] the sample); log_probs[i] and
    stds[i] belong to the step latents[i] -> latents[i + 1]."""

    sigmas: torch.Tensor  # (T + 1,)
    latents: list[torch.Tensor]  # T + 1 tensors (B, C, H, W)
    means: list[torch.Tensor]
    stds: list[torch.Tensor]
    log_probs: list[torch.Tensor]  # (B,) per stochastic step: all but the last (whose std is 0); none for Euler

    @property
    def sample(self) -> torch.Tensor:
        return self.latents[-1]


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance."""
    return uncond + scale * (cond - uncond)


def _per_sample(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A noise level (scalar or per sample) as (B, 1, 1, 1), broadcastable against `like`."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.expand(like.shape[0]).reshape(-1, *([1] * (like.dim() - 1)))


def step_distribution(sampler: str, x: torch.Tensor, v: torch.Tensor, sigma, sigma_next,
                      eta: float = 0.0, sigma_max: float | None = None) -> StepDistribution:
    """The distribution of x at `sigma_next` given x at `sigma` and the predicted velocity `v` (see module doc)."""
    s, s_next = _per_sample(sigma, x), _per_sample(sigma_next, x)
    if sampler == "euler":
        return StepDistribution(x + (s_next - s) * v, torch.zeros_like(s))
    if sampler == "cps":
        x0, eps = x - s * v, x + (1 - s) * v
        std = s_next * math.sin(eta * math.pi / 2)
        return StepDistribution((1 - s_next) * x0 + torch.sqrt((s_next ** 2 - std ** 2).clamp_min(0)) * eps, std)
    if sampler == "sde":
        dt = s_next - s
        # at s = 1 the SDE's std diverges: Flow-GRPO evaluates it at the grid's second level there
        s_std = torch.where(s >= 1, torch.as_tensor(sigma_max if sigma_max is not None else 0.99).to(s), s)
        std_t = eta * torch.sqrt(s_std / (1 - s_std))
        mean = x * (1 + std_t ** 2 / (2 * s) * dt) + v * (1 + std_t ** 2 * (1 - s) / (2 * s)) * dt
        return StepDistribution(mean, std_t * torch.sqrt(-dt))
    raise ValueError(f"unknown sampler {sampler!r}; choose from {SAMPLERS}")


def log_prob(sampler: str, x_next: torch.Tensor, dist: StepDistribution) -> torch.Tensor:
    """Per-sample log-probability of `x_next` (B,). CPS uses DeepGen's form -mean((x' - mean)^2), which drops the
    std (constant within a step, so it cancels in the PPO ratio); SDE the full Gaussian density, averaged."""
    dims = tuple(range(1, x_next.dim()))
    sq = (x_next.detach() - dist.mean) ** 2
    if sampler == "cps":
        return -sq.mean(dim=dims)
    if sampler == "sde":
        var = dist.std ** 2
        return (-sq / (2 * var) - torch.log(dist.std) - 0.5 * math.log(2 * math.pi)).mean(dim=dims)
    raise ValueError(f"sampler {sampler!r} has no log-probability (choose 'cps' or 'sde')")


def sample(velocity: VelocityFn, noise: torch.Tensor, num_steps: int, shift: float, sampler: str = "euler",
           eta: float = 0.0, generator: torch.Generator | None = None, trajectory: bool = False,
           progress=None) -> Trajectory:
    """Integrate from pure noise (s=1) to data (s=0) on the shifted grid; `velocity` already applies CFG.

    Stochastic samplers draw their step noise from `generator` (CPU, so a seed gives the same rollout on any device);
    with `trajectory` every intermediate latent, mean, std and log-prob is kept (RL), else only the last latent."""
    sigmas = shifted_sigmas(num_steps, shift).to(noise.device)
    sigma_max = float(sigmas[1]) if num_steps > 1 else 0.99
    x = noise
    out = Trajectory(sigmas, [x], [], [], [])
    steps = range(num_steps) if progress is None else progress(range(num_steps))
    for i in steps:
        s, s_next = sigmas[i], sigmas[i + 1]
        dist = step_distribution(sampler, x, velocity(x, s.expand(x.shape[0])), s, s_next, eta, sigma_max)
        stochastic = sampler != "euler" and bool((dist.std > 0).any())
        if stochastic:
            fresh = torch.randn(x.shape, generator=generator).to(x)
            x = dist.mean + dist.std * fresh
        else:
            x = dist.mean
        if trajectory:
            out.latents.append(x)
            out.means.append(dist.mean)
            out.stds.append(dist.std)
            if stochastic:
                out.log_probs.append(log_prob(sampler, x, dist))
    if not trajectory:
        out.latents.append(x)
    return out


@torch.no_grad()
def euler_sample(velocity: VelocityFn, noise: torch.Tensor, num_steps: int, shift: float, progress=None):
    """The final latent of an Euler integration (generation and evaluation)."""
    return sample(velocity, noise, num_steps, shift, "euler", progress=progress).sample
