"""Flow matching: the noise-level grid and the training target (samplers live in `deepgen.model.sampling`).

Rectified flow as in SD3: x_s = (1 - s) x0 + s eps, the DiT predicts v = eps - x0, s in (0, 1]. Training draws s from
the scheduler's shifted grid (shift 3.0 for SD3.5 at 512 px); sampling integrates dx/ds = v from s=1 to 0 in Euler
steps on the same shifted grid. The DiT's timestep input is s * 1000.
"""

from __future__ import annotations

import torch


def shifted_sigmas(num_steps: int, shift: float) -> torch.Tensor:
    """num_steps + 1 noise levels from 1 to 0, shifted as FlowMatchEulerDiscreteScheduler does."""
    s = torch.linspace(1.0, 0.0, num_steps + 1)
    return shift * s / (1 + (shift - 1) * s)


def training_sigmas(batch: int, num_train_timesteps: int, shift: float, generator=None) -> torch.Tensor:
    """Uniform draws from the shifted training grid (the scheduler's `sigmas` without the final 0)."""
    grid = shifted_sigmas(num_train_timesteps, shift)[:-1]
    return grid[torch.randint(0, num_train_timesteps, (batch,), generator=generator)]


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigma_B: torch.Tensor) -> torch.Tensor:
    s = sigma_B.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - s) * x0 + s * noise
