"""The full preset is the paper's architecture to the parameter, counted on the meta device (no download)."""

from __future__ import annotations

import json

import pytest
import torch

from deepgen.model.config import preset
from deepgen.model.describe import describe, format_report
from deepgen.model.schedule import meta_model
from deepgen.model.scb import tap_indices


@pytest.fixture(scope="module")
def full_report():
    return describe("full")


@pytest.fixture(scope="module")
def full_counts(full_report):
    return full_report["components"]


def test_scb_and_dit_match_the_release(full_counts):
    assert full_counts["scb"]["params"] == 432_449_532
    assert full_counts["dit"]["params"] == 2_243_171_520
    assert full_counts["dit"]["buffers"] == 384 * 384 * 1536 == 226_492_416
    assert full_counts["dit"]["stored"] == 2_469_663_936


def test_vlm_and_vae_are_qwen25vl_3b_and_the_sd35_vae(full_counts):
    # Qwen2.5-VL-3B-Instruct (tied embeddings) and SD3.5's 16-channel VAE; all four parts sum to the 6,740,556,127
    # tensor elements stored in the diffusers-format release.
    assert full_counts["vlm"]["params"] == 3_754_622_976
    assert full_counts["vae"]["params"] == 83_819_683
    assert sum(c["stored"] for c in full_counts.values()) == 6_740_556_127


def test_full_preset_structure():
    cfg = preset("full")
    assert tap_indices(cfg.vlm.num_layers, cfg.scb.num_taps) == [35, 29, 23, 17, 11, 5]
    model = meta_model(cfg)
    scb = model.scb
    assert scb.think_tokens.shape == (128, 2048)
    assert scb.in_proj.in_features == 12288 and scb.in_proj.out_features == 2048
    layer = scb.encoder.layers[0]
    assert len(scb.encoder.layers) == 6 and layer.self_attn.num_heads == 32 and layer.norm_first
    assert layer.linear1.out_features == 11946 and layer.norm1.eps == 1e-6
    assert scb.encoder.norm is None  # no final norm
    assert (scb.context_proj.out_features, scb.pooled_proj.out_features) == (4096, 2048)
    assert model.dit.config.joint_attention_dim == 4096 and model.dit.config.in_channels == 16
    assert model.vae.config.latent_channels == 16


def test_output_projections_start_at_zero_as_in_the_paper():
    torch.manual_seed(0)
    from deepgen.model.scb import StackedChannelBridge

    paper = preset("tiny", {"scb": {"output_init_std": 0.0, "depth": 2}}).scb
    scb = StackedChannelBridge(paper, 64, 12, 128, 128)
    for proj in (scb.context_proj, scb.pooled_proj):
        assert proj.weight.abs().sum() == 0 and proj.bias.abs().sum() == 0
    assert scb.in_proj.weight.abs().sum() > 0 and len(scb.encoder.layers) == 2
    tiny = StackedChannelBridge(preset("tiny").scb, 64, 12, 128, 128)  # from-scratch DiT: small init, no encoder
    assert tiny.encoder is None and 0.03 < tiny.context_proj.weight.std() < 0.07


def test_stage_counts_follow_the_freeze_schedule(full_report):
    report = full_report
    sft, align, rl = report["stages"]["sft"], report["stages"]["alignment"], report["stages"]["rl"]
    assert align["scb"] == {"trainable": 432_449_532, "frozen": 0}
    assert align["vlm"]["trainable"] == 0 and align["dit"]["trainable"] == 0
    # LoRA r64 on q,k,v,o,gate,up,down of 36 layers: 64 * (in + out) summed per layer
    assert sft["vlm"]["trainable"] == 36 * 64 * (4096 + 2304 + 2304 + 4096 + 3 * (2048 + 11008)) == 119_734_272
    assert sft["vlm"]["frozen"] == 3_754_622_976
    assert rl["dit"]["trainable"] == 2_243_171_520 and rl["scb"]["trainable"] == 0


def test_describe_prints_counts(full_report, capsys):
    from deepgen.cli import main

    table = format_report(full_report)
    assert "432,449,532" in table and "2,469,663,936" in table and "119,734,272" in table

    assert main(["describe", "--preset", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preset"] == "tiny"
    assert report["components"]["scb"]["params"] == sum(p.numel() for p in meta_model(preset("tiny")).scb.parameters())
    assert main(["describe", "--preset", "huge"]) == 2
    assert "unknown model preset" in capsys.readouterr().err
