"""The DiT: diffusers' SD3 MMDiT, run with reference-image tokens for editing.

For editing (as in UniPic2-Kontext, which DeepGen's DiT comes from), the clean VAE latents of each reference image are
patch-embedded with the same position embedding as the target and appended after the noisy target tokens; the joint
attention sees all of them, but only the target tokens are normed, projected and unpatchified (so the loss is on the
target only). Without references this is exactly `SD3Transformer2DModel.forward`.

Prompts of different lengths are left-padded to one batch. SD3's joint attention has no mask, so `MaskedJointAttention`
adds one: image tokens never attend to padding, and a prompt's image does not depend on its batch-mates. Training
and sampling then run one DiT call per batch instead of one per prompt length (bench/model.py: 8 ShapesWorld prompts
of 4 lengths, forward + backward, 1.6x faster in one call). Without a mask it is diffusers' JointAttnProcessor2_0.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel

from deepgen.model.config import DiTConfig


def build_dit(cfg: DiTConfig) -> SD3Transformer2DModel:
    if cfg.pretrained:
        from deepgen.model.weights import load_pretrained

        dit = load_pretrained(SD3Transformer2DModel, cfg.pretrained, "dit", subfolder="transformer")
    else:
        kwargs = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "pretrained"}
        kwargs["dual_attention_layers"] = tuple(kwargs["dual_attention_layers"])
        dit = SD3Transformer2DModel(**kwargs)
    dit.set_attn_processor(MaskedJointAttention())
    return dit


class MaskedJointAttention:
    """JointAttnProcessor2_0 with an optional key mask (B, 1, 1, tokens + context) for the joint attention.

    The mask applies only where the prompt joins in; the dual-attention layers' image-only branch (SD3.5) has no
    padding and ignores it.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        batch = hidden_states.shape[0]

        def heads(x, norm):
            x = x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
            return norm(x) if norm is not None else x

        q = heads(attn.to_q(hidden_states), attn.norm_q)
        k = heads(attn.to_k(hidden_states), attn.norm_k)
        v = heads(attn.to_v(hidden_states), None)
        num_tokens = hidden_states.shape[1]
        if encoder_hidden_states is None:
            attention_mask = None
        else:
            q = torch.cat([q, heads(attn.add_q_proj(encoder_hidden_states), attn.norm_added_q)], dim=2)
            k = torch.cat([k, heads(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)], dim=2)
            v = torch.cat([v, heads(attn.add_v_proj(encoder_hidden_states), None)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        out = out.transpose(1, 2).reshape(batch, -1, q.shape[1] * q.shape[-1]).to(q.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](out[:, :num_tokens]))
        if encoder_hidden_states is None:
            return hidden_states
        context = out[:, num_tokens:]
        return hidden_states, (context if attn.context_pre_only else attn.to_add_out(context))


def dit_forward(
    dit: SD3Transformer2DModel,
    latents_BCHW: torch.Tensor,
    context_BLD: torch.Tensor,
    pooled_BP: torch.Tensor,
    timestep_B: torch.Tensor,
    references: list[torch.Tensor] | None = None,
    context_mask_BL: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predicted velocity for the target latents; `references` are clean latents (B, C, h, w), any size;
    `context_mask_BL` marks the real prompt tokens (None: attend to the whole context, as the release does)."""
    height, width = latents_BCHW.shape[-2:]
    tokens_BTD = dit.pos_embed(latents_BCHW)
    num_target = tokens_BTD.shape[1]
    if references:
        tokens_BTD = torch.cat([tokens_BTD] + [dit.pos_embed(ref) for ref in references], dim=1)
    temb_BD = dit.time_text_embed(timestep_B, pooled_BP)
    context_BLD = dit.context_embedder(context_BLD)
    kwargs = {}
    if context_mask_BL is not None:
        image_BT = context_mask_BL.new_ones(tokens_BTD.shape[:2], dtype=torch.bool)
        kwargs["attention_mask"] = torch.cat([image_BT, context_mask_BL.bool()], dim=1)[:, None, None, :]
    for block in dit.transformer_blocks:
        context_BLD, tokens_BTD = block(hidden_states=tokens_BTD, encoder_hidden_states=context_BLD, temb=temb_BD,
                                        joint_attention_kwargs=kwargs)
    target_BTD = dit.norm_out(tokens_BTD[:, :num_target], temb_BD)
    target_BTD = dit.proj_out(target_BTD)
    p, c = dit.config.patch_size, dit.out_channels
    h, w = height // p, width // p
    x = target_BTD.reshape(target_BTD.shape[0], h, w, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(target_BTD.shape[0], c, h * p, w * p)
