"""Autoencoder reconstruction (the tiny preset's VAE stage; the full preset loads a pretrained VAE instead)."""

from __future__ import annotations

import torch

from deepgen.model import vae as vae_ops
from deepgen.train.batches import training_batches
from deepgen.train.objectives.base import Objective, register


@register("vae")
class VAEObjective(Objective):
    def batches(self):
        return self.stream("train", self.stage.batch_size, self.stage.keep)

    def forward(self, batch: dict):
        """Targets and every reference of the targets' size (a batch holds one target size; other references wait
        for no one: they are left out)."""
        size = batch["images"].shape[-2:]
        refs = [r for rs in batch["ref_images"] for r in rs if r.shape[-2:] == size]
        images = torch.cat([batch["images"], torch.stack(refs)]) if refs else batch["images"]
        loss, _ = vae_ops.vae_loss(self.model.vae, random_crop(images, self.stage.crop).to(self.model.device),
                                   foreground_weight=self.stage.foreground_weight)
        return loss, {}

    def image_sizes(self) -> set[tuple[int, int]]:
        crop = self.stage.crop
        return {(min(h, crop), min(w, crop)) if crop else (h, w) for h, w in super().image_sizes()}

    def finish(self) -> None:
        if vae_from_scratch(self.context.init):
            calibrate_latents(self.model, self.context.data["train"])


def vae_from_scratch(init: dict) -> bool:
    """Whether the stage's VAE started from random weights, the only case its latent normalisation is measured: a
    pretrained VAE (a `vae.pretrained` folder) or one from a parent checkpoint keeps the scaling/shift factors the
    DiT was trained with, even when this stage fine-tunes it. (A zero-step stage never calls `finish`.)"""
    from deepgen.model.config import preset

    return not init.get("checkpoint") and not preset(init["preset"], init.get("overrides")).vae.pretrained


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
    stream = training_batches(urls, 32, seed=12345)
    raw = torch.cat([model.vae.encode(next(stream)["images"].to(model.device)).latent_dist.mode().flatten()
                     for _ in range(num_batches)])  # flat: batches may differ in size
    shift, scale = raw.mean().item(), 1.0 / raw.std().item()
    model.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    model.train()
