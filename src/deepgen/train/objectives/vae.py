"""Autoencoder reconstruction (the tiny preset's VAE stage; the full preset loads a pretrained VAE instead)."""

from __future__ import annotations

import torch

from deepgen.model import vae as vae_ops
from deepgen.train.batches import batches, sample_stream
from deepgen.train.objectives.base import Objective, register


@register("vae")
class VAEObjective(Objective):
    def batches(self):
        return batches(sample_stream(self.context.data["train"], seed=self.context.seed, keep=self.stage.keep),
                       self.stage.batch_size)

    def forward(self, batch: dict):
        images = torch.cat([batch["images"], batch["ref_images"][[bool(r) for r in batch["refs"]]]])
        loss, _ = vae_ops.vae_loss(self.model.vae, random_crop(images, self.stage.crop).to(self.model.device),
                                   foreground_weight=self.stage.foreground_weight)
        return loss, {}

    def finish(self) -> None:
        calibrate_latents(self.model, self.context.data["train"])


def random_crop(images_B3HW: torch.Tensor, size: int) -> torch.Tensor:
    """One random window per batch (cheap, and the autoencoder is translation-equivariant anyway)."""
    height, width = images_B3HW.shape[-2:]
    if not size or size >= min(height, width):
        return images_B3HW
    top, left = (int(torch.randint(0, d - size + 1, ())) for d in (height, width))
    return images_B3HW[..., top:top + size, left:left + size]


@torch.no_grad()
def calibrate_latents(model, urls: list[str], num_batches: int = 8) -> None:
    """Set the VAE's shift/scale so training latents have zero mean and unit variance (SD3's normalisation). Only
    for a VAE this stage trained: a pretrained VAE's factors belong to the weights its DiT was trained with."""
    model.eval()
    stream = batches(sample_stream(urls, seed=12345), 32)
    raw = torch.cat([model.vae.encode(next(stream)["images"].to(model.device)).latent_dist.mode()
                     for _ in range(num_batches)])
    shift, scale = raw.mean().item(), 1.0 / raw.std().item()
    model.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    model.train()
