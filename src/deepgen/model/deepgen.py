"""DeepGen: VLM -> SCB -> SD3 MMDiT in one module; text-to-image and editing share one forward.

Images cross this boundary as tensors in [-1, 1] (B, 3, H, W) for training and PIL images for generation.
Editing samples carry reference images: the VLM sees them as vision tokens, the DiT as clean latents.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from deepgen.model import vae as vae_ops
from deepgen.model.config import ModelConfig
from deepgen.model.dit import build_dit, dit_forward
from deepgen.model.flow import euler_sample, guided, noisy_latents, training_sigmas
from deepgen.model.scb import StackedChannelBridge
from deepgen.model.tokenizer import build_tiny_tokenizer, load_tokenizer
from deepgen.model.vae import build_vae
from deepgen.model.vlm import PromptEncoder, build_vlm

Refs = list[list[Image.Image]] | None  # per sample: its reference images (empty list for text-to-image)


def build_tokenizer(cfg: ModelConfig):
    return load_tokenizer(cfg.vlm.pretrained) if cfg.vlm.pretrained else build_tiny_tokenizer(cfg.vlm.vocab_size)


class DeepGen(nn.Module):
    def __init__(self, cfg: ModelConfig, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg)
        vlm = build_vlm(cfg.vlm, tokenizer)
        self.encoder = PromptEncoder(vlm, tokenizer, cfg.vlm)
        text = vlm.config.text_config
        self.dit = build_dit(cfg.dit)
        self.scb = StackedChannelBridge(
            cfg.scb, text.hidden_size, text.num_hidden_layers,
            self.dit.config.joint_attention_dim, self.dit.config.pooled_projection_dim,
        )
        self.vae = build_vae(cfg.vae)

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def device(self) -> torch.device:
        return self.scb.think_tokens.device

    def condition(self, captions: list[str], refs: Refs = None):
        """(context_BLD, pooled_BP) for the DiT from the prompts and reference images."""
        hidden_states, mask = self.encoder(captions, self.scb.think_tokens, refs)
        return self.scb(hidden_states, mask)

    def encode_images(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.vae.training):
            return vae_ops.encode(self.vae, images_B3HW)

    def velocity(self, x_BCHW, sigma_B, context_BLD, pooled_BP, ref_latents=None):
        return dit_forward(self.dit, x_BCHW, context_BLD, pooled_BP, sigma_B * 1000.0, ref_latents)

    def flow_loss(self, images_B3HW: torch.Tensor, captions: list[str], refs: Refs = None,
                  ref_images_B3HW: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """Flow-matching MSE on the target latents. Edit samples (refs non-empty) must come with `ref_images_B3HW`
        (one reference each, same size as the target); text-to-image and edit samples form separate DiT groups."""
        flow = self.cfg.flow
        batch = len(captions)
        drop = torch.rand(batch, generator=generator) < flow.caption_dropout if self.training else torch.zeros(batch)
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        context, pooled = self.condition(captions, refs)
        x0 = self.encode_images(images_B3HW)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        sigma = training_sigmas(batch, flow.num_train_timesteps, flow.shift, generator).to(x0)
        x_t = noisy_latents(x0, noise, sigma)
        is_edit = torch.tensor([bool(r) for r in refs] if refs else [False] * batch)
        loss = x0.new_zeros(())
        for group in (~is_edit, is_edit):
            if not group.any():
                continue
            idx = group.nonzero().squeeze(1).to(x0.device)
            ref_latents = [self.encode_images(ref_images_B3HW[idx])] if group is is_edit else None
            v = self.velocity(x_t[idx], sigma[idx], context[idx], pooled[idx], ref_latents)
            target = (noise - x0)[idx]
            loss = loss + ((v.float() - target.float()) ** 2).mean() * len(idx) / batch
        return loss

    @torch.no_grad()
    def generate(self, prompts: list[str], refs: Refs = None, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, negative_prompt: str | None = None,
                 size: tuple[int, int] | None = None, progress=None) -> list[Image.Image]:
        """Euler sampling with CFG; sample i uses noise from seed + i, so a prompt's image does not depend on batch."""
        flow = self.cfg.flow
        steps = steps or flow.sample_steps
        guidance = flow.guidance_scale if guidance is None else guidance
        height, width = size or (self.cfg.image_size, self.cfg.image_size)
        edit = bool(refs) and any(refs)
        if negative_prompt is None:
            negative_prompt = flow.edit_negative_prompt if edit else ""
        context, pooled = self.condition(list(prompts) + [negative_prompt] * len(prompts),
                                         (refs + refs) if edit else None)
        ref_latents = None
        if edit:
            ref_tensor = torch.stack([pil_to_tensor(r[0].resize((width, height))) for r in refs]).to(self.device)
            ref_latents = [self.encode_images(ref_tensor).repeat(2, 1, 1, 1)]
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        shape = (self.vae.config.latent_channels, height // factor, width // factor)
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i))
                             for i in range(len(prompts))]).to(self.device)

        def velocity(x, sigma):
            v = self.velocity(torch.cat([x, x]), torch.cat([sigma, sigma]), context, pooled, ref_latents)
            cond, uncond = v.chunk(2)
            return guided(cond, uncond, guidance)

        latents = euler_sample(velocity, noise, steps, flow.shift, progress)
        return [tensor_to_pil(img) for img in vae_ops.decode(self.vae, latents)]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, 3).permute(2, 0, 1).float() / 127.5 - 1.0


def tensor_to_pil(image_3HW: torch.Tensor) -> Image.Image:
    data = ((image_3HW.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(data)
