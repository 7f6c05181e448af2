"""SCB taps: the paper's layers for the 36-layer VLM, six evenly spaced for the tiny depth, and what they feed."""

from __future__ import annotations

import pytest
import torch

from deepgen.model.config import SCBConfig, preset
from deepgen.model.scb import StackedChannelBridge, tap_indices


def test_full_vlm_taps_match_the_paper():
    assert tap_indices(36, 6) == [35, 29, 23, 17, 11, 5]


def test_tiny_vlm_taps_are_six_evenly_spaced_pre_norm_layers():
    cfg = preset("tiny")
    taps = tap_indices(cfg.vlm.num_layers, cfg.scb.num_taps)
    assert len(taps) == 6 and len(set(taps)) == 6
    assert max(taps) == cfg.vlm.num_layers - 1  # never the post-norm final entry
    assert len({a - b for a, b in zip(taps, taps[1:])}) == 1  # evenly spaced


def test_too_few_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot tap 6 layers"):
        tap_indices(4, 6)


def test_bridge_reads_exactly_the_tapped_layers_deep_to_shallow():
    torch.manual_seed(0)
    cfg = SCBConfig(num_think_tokens=2, width=16, depth=1, num_heads=2, mlp_size=32)
    bridge = StackedChannelBridge(cfg, vlm_hidden=8, vlm_layers=12, context_dim=12, pooled_dim=10)
    torch.nn.init.normal_(bridge.context_proj.weight)  # zero-init outputs would hide everything
    mask = torch.ones(1, 5, dtype=torch.long)
    states = [torch.randn(1, 5, 8) for _ in range(13)]
    context, pooled = bridge(tuple(states), mask)
    assert context.shape == (1, 5, 12) and pooled.shape == (1, 10)
    untapped = [i for i in range(13) if i not in bridge.taps]
    changed = list(states)
    for i in untapped:
        changed[i] = torch.randn(1, 5, 8)
    assert torch.allclose(bridge(tuple(changed), mask)[0], context)  # untapped layers are ignored
    changed[bridge.taps[0]] = torch.randn(1, 5, 8)
    assert not torch.allclose(bridge(tuple(changed), mask)[0], context)


def test_zero_initialised_outputs_condition_on_nothing():
    bridge = StackedChannelBridge(SCBConfig(num_think_tokens=2, width=16, depth=1, num_heads=2, mlp_size=32),
                                  vlm_hidden=8, vlm_layers=12, context_dim=12, pooled_dim=10)
    context, pooled = bridge(tuple(torch.randn(2, 4, 8) for _ in range(13)), torch.ones(2, 4))
    assert context.abs().max() == 0 and pooled.abs().max() == 0
