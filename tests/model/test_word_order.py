"""The tiny preset's random VLM is a contextual encoder: word order reaches the DiT, whose joint attention gives
context tokens no positions (deepgen.model.config, `vlm.layer_init_std`; bench/word_order.py prints the table)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen


def swap_distances(overrides: dict) -> list[float]:
    """Per tap: matched-set distance between "make the red circle blue" and "make the blue circle red" over the mean
    token norm (0 = the same bag of vectors)."""
    torch.manual_seed(0)
    model = DeepGen(preset("tiny", overrides)).eval()
    with torch.no_grad():
        a, _ = model.encoder(["make the red circle blue"], model.scb.think_tokens, None)
        b, _ = model.encoder(["make the blue circle red"], model.scb.think_tokens, None)
        context_a, _, _ = model.condition(["make the red circle blue"])
        context_b, _, _ = model.condition(["make the blue circle red"])
    out = []
    for x, y in [(a[t][0], b[t][0]) for t in model.scb.taps] + [(context_a[0], context_b[0])]:
        cost = torch.cdist(x, y).numpy()
        rows, cols = linear_sum_assignment(cost)
        out.append(float(cost[rows, cols].mean()) / x.norm(dim=-1).mean().item())
    return out


def test_a_word_swap_reaches_the_dit_as_a_different_context():
    assert min(swap_distances({})) > 0.05  # measured 0.085-0.171 at the taps


def test_hf_init_at_tiny_width_would_give_a_bag_of_words():
    assert max(swap_distances({"vlm": {"layer_init_std": None}})) < 0.01  # measured 0.001-0.002
