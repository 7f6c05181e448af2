"""Stacked Channel Bridging (SCB): the bridge from the VLM to the DiT.

Hidden states of `num_taps` evenly spaced VLM layers (pre-final-norm; for 36 layers the tuple indices 35,29,23,17,11,5)
are concatenated deep->shallow on channels (6 x 2048 = 12288), projected to the connector width, fused by a
bidirectional pre-LN encoder, and read out by zero-initialised projections: the DiT text sequence and, mean-pooled,
its pooled vector. Zero init means an untrained bridge conditions the DiT on nothing: training starts from the
unconditional model instead of from noise. The tiny preset (random VLM, DiT from scratch) drops the encoder and
starts the projections small instead (its config holds the measurement). The learnable think tokens live here
because they are trained with it.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from deepgen.model.config import SCBConfig


def tap_indices(num_layers: int, num_taps: int) -> list[int]:
    """Evenly spaced hidden-state tuple indices, deepest first, skipping the final (post-norm) entry.

    hidden_states has num_layers + 1 entries (0 = embeddings); entry num_layers is after the final norm, so the
    deepest tap is num_layers - 1. 36 layers, 6 taps: step 6 -> 35, 29, 23, 17, 11, 5.
    """
    step = num_layers // num_taps
    if step < 1:
        raise ValueError(f"cannot tap {num_taps} layers of a {num_layers}-layer VLM")
    return [num_layers - 1 - i * step for i in range(num_taps)]


class StackedChannelBridge(nn.Module):
    def __init__(self, cfg: SCBConfig, vlm_hidden: int, vlm_layers: int, context_dim: int, pooled_dim: int):
        super().__init__()
        self.taps = tap_indices(vlm_layers, cfg.num_taps)
        self.mask_padding = cfg.mask_padding
        self.think_tokens = nn.Parameter(torch.randn(cfg.num_think_tokens, vlm_hidden) / math.sqrt(vlm_hidden))
        self.in_proj = nn.Linear(cfg.num_taps * vlm_hidden, cfg.width)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.num_heads, cfg.mlp_size, dropout=0.0,
            activation=functools.partial(F.gelu, approximate="tanh"), batch_first=True, norm_first=True,
            layer_norm_eps=cfg.layer_norm_eps,
        )
        # depth 0 (the tiny preset): no fusion encoder; nn.TransformerEncoder cannot hold zero layers
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False) if cfg.depth else None
        self.context_proj = nn.Linear(cfg.width, context_dim)
        self.pooled_proj = nn.Linear(cfg.width, pooled_dim)
        for proj in (self.context_proj, self.pooled_proj):
            nn.init.normal_(proj.weight, std=cfg.output_init_std)  # std 0 (the paper) is exactly zero
            nn.init.zeros_(proj.bias)

    def forward(self, hidden_states: tuple[torch.Tensor, ...], mask_BS: torch.Tensor):
        """hidden_states: the VLM's tuple (num_layers + 1 entries of (B, S, H)). Returns (context_BSC, pooled_BP)."""
        stacked_BSK = torch.cat([hidden_states[i] for i in self.taps], dim=-1)  # K = taps * H
        x_BSW = self.in_proj(stacked_BSK.to(self.in_proj.weight.dtype))
        if not self.mask_padding:  # the release: padding tokens take part in attention and in the mean
            mask_BS = torch.ones_like(mask_BS)
        if self.encoder is not None:
            x_BSW = self.encoder(x_BSW, src_key_padding_mask=~mask_BS.bool() if self.mask_padding else None)
        context_BSC = self.context_proj(x_BSW)
        weights_BS1 = mask_BS.unsqueeze(-1).to(x_BSW.dtype)
        mean_BW = (x_BSW * weights_BS1).sum(1) / weights_BS1.sum(1).clamp(min=1)
        return context_BSC, self.pooled_proj(mean_BW)
