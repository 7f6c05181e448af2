"""The DiT: diffusers' SD3 MMDiT, run with reference-image tokens for editing.

For editing (as in UniPic2-Kontext, which DeepGen's DiT comes from), the clean VAE latents of each reference image are
patch-embedded with the same position embedding as the target and appended after the noisy target tokens; the joint
attention sees all of them, but only the target tokens are normed, projected and unpatchified (so the loss is on the
target only). Without references this is exactly `SD3Transformer2DModel.forward`.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import SD3Transformer2DModel

from deepgen.model.config import DiTConfig


def build_dit(cfg: DiTConfig) -> SD3Transformer2DModel:
    if cfg.pretrained:
        from deepgen.model.weights import load_pretrained

        return load_pretrained(SD3Transformer2DModel, cfg.pretrained, "dit", subfolder="transformer")
    kwargs = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "pretrained"}
    kwargs["dual_attention_layers"] = tuple(kwargs["dual_attention_layers"])
    return SD3Transformer2DModel(**kwargs)


def dit_forward(
    dit: SD3Transformer2DModel,
    latents_BCHW: torch.Tensor,
    context_BLD: torch.Tensor,
    pooled_BP: torch.Tensor,
    timestep_B: torch.Tensor,
    references: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Predicted velocity for the target latents; `references` are clean latents (B, C, h, w), any size."""
    height, width = latents_BCHW.shape[-2:]
    tokens_BTD = dit.pos_embed(latents_BCHW)
    num_target = tokens_BTD.shape[1]
    if references:
        tokens_BTD = torch.cat([tokens_BTD] + [dit.pos_embed(ref) for ref in references], dim=1)
    temb_BD = dit.time_text_embed(timestep_B, pooled_BP)
    context_BLD = dit.context_embedder(context_BLD)
    for block in dit.transformer_blocks:
        context_BLD, tokens_BTD = block(hidden_states=tokens_BTD, encoder_hidden_states=context_BLD, temb=temb_BD)
    target_BTD = dit.norm_out(tokens_BTD[:, :num_target], temb_BD)
    target_BTD = dit.proj_out(target_BTD)
    p, c = dit.config.patch_size, dit.out_channels
    h, w = height // p, width // p
    x = target_BTD.reshape(target_BTD.shape[0], h, w, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(target_BTD.shape[0], c, h * p, w * p)
