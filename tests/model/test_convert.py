"""The converter from the official checkpoint layout. The official connector's forward is re-implemented here from
its published source (SigLIP-style pre-LN layers: layer_norm1 -> q/k/v/out_proj attention without a mask ->
residual; layer_norm2 -> fc1 -> gelu(tanh) -> fc2 -> residual; no final norm; llm2dit: projector_1 -> connector,
pooled = projector_2(mean over all tokens), sequence = projector_3), so the test checks meaning, not only names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepgen.model.config import preset
from deepgen.model.convert import deepgen_to_official, load_official, official_to_deepgen
from deepgen.model.deepgen import DeepGen


def official_llm2dit(state: dict, x: torch.Tensor, heads: int, eps: float = 1e-6):
    def linear(name, h):
        return F.linear(h, state[f"{name}.weight"], state[f"{name}.bias"])

    h = linear("projector_1", x)
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("connector.layers.")})
    for i in layers:
        p = f"connector.layers.{i}"
        r = F.layer_norm(h, h.shape[-1:], state[f"{p}.layer_norm1.weight"], state[f"{p}.layer_norm1.bias"], eps)
        b, s, d = r.shape
        q, k, v = (linear(f"{p}.self_attn.{n}_proj", r).view(b, s, heads, d // heads).transpose(1, 2) for n in "qkv")
        attn = torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, dim=-1) @ v
        h = h + linear(f"{p}.self_attn.out_proj", attn.transpose(1, 2).reshape(b, s, d))
        r = F.layer_norm(h, h.shape[-1:], state[f"{p}.layer_norm2.weight"], state[f"{p}.layer_norm2.bias"], eps)
        h = h + linear(f"{p}.mlp.fc2", F.gelu(linear(f"{p}.mlp.fc1", r), approximate="tanh"))
    return linear("projector_2", h.mean(1)), linear("projector_3", h)


@pytest.fixture(scope="module")
def release_like():
    """Tiny widths with the release's connector semantics (eps 1e-6, no padding mask), random non-zero weights."""
    torch.manual_seed(0)
    model = DeepGen(preset("tiny", {"scb": {"layer_norm_eps": 1e-6, "mask_padding": False, "depth": 2}})).eval()
    with torch.no_grad():
        for p in model.scb.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_official_connector_equals_ours_after_conversion(release_like):
    state = deepgen_to_official(release_like)
    assert "meta_queries" in state and "connector.layers.0.self_attn.q_proj.weight" in state
    assert "projector_3.weight" in state and "transformer.proj_out.weight" in state
    torch.manual_seed(1)
    taps = release_like.scb.taps
    hidden = [torch.randn(2, 9, 64) for _ in range(13)]
    stacked = torch.cat([hidden[i] for i in taps], dim=-1)
    pooled_ref, seq_ref = official_llm2dit(state, stacked, heads=4)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :3] = False  # left padding: the release attends to it and averages over it too
    with torch.no_grad():
        seq, pooled = release_like.scb(tuple(hidden), mask)
    torch.testing.assert_close(seq, seq_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pooled, pooled_ref, rtol=1e-4, atol=1e-5)


def test_conversion_round_trip_gives_the_same_model(release_like):
    state = deepgen_to_official(release_like)
    torch.manual_seed(5)
    fresh = DeepGen(preset("tiny", {"scb": {"layer_norm_eps": 1e-6, "mask_padding": False, "depth": 2}}),
                    release_like.tokenizer).eval()
    fresh.encoder.load_state_dict(release_like.encoder.state_dict())
    fresh.vae.load_state_dict(release_like.vae.state_dict())
    counts = load_official(fresh, {**state, "vae.decoder.conv_in.weight": torch.zeros(1), "ema.steps": torch.zeros(1)})
    assert counts["vlm"] == 0 and counts["scb"] == len(release_like.scb.state_dict())
    for name in ("scb", "dit"):
        mine, theirs = getattr(fresh, name).state_dict(), getattr(release_like, name).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_merged_vlm_weights_and_bad_keys():
    weight = torch.zeros(2)
    parts = official_to_deepgen({"lmm.model.layers.0.mlp.up_proj.weight": weight,
                                 "lmm.model.language_model.norm.weight": weight,
                                 "lmm.visual.blocks.0.attn.qkv.weight": weight, "lmm.lm_head.weight": weight,
                                 "module.transformer.proj_out.bias": weight})
    assert sorted(parts["vlm"]) == ["language_model.layers.0.mlp.up_proj.weight", "language_model.norm.weight",
                                    "visual.blocks.0.attn.qkv.weight"]
    assert list(parts["dit"]) == ["proj_out.bias"]
    with pytest.raises(ValueError, match="unmerged LoRA"):
        official_to_deepgen({"lmm.model.layers.0.self_attn.q_proj.lora_A.default.weight": weight})
    with pytest.raises(ValueError, match="keys deepgen does not know: \\['mystery.weight'\\]"):
        official_to_deepgen({"mystery.weight": weight})
    with pytest.raises(ValueError, match="incomplete q/k/v"):
        official_to_deepgen({"connector.layers.0.self_attn.q_proj.weight": weight})
