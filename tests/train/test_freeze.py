"""The freeze schedule and LoRA: what a stage trains, and LoRA weights surviving save and load."""

from __future__ import annotations

import pytest
import torch

from deepgen.model.checkpoint import load_checkpoint, save_checkpoint
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.train.config import StageConfig
from deepgen.train.freeze import apply_schedule


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return DeepGen(preset("tiny"))


def trainable_components(model):
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    return names


def test_alignment_trains_only_bridge_and_dit(tiny):
    counts = apply_schedule(tiny, StageConfig.from_dict("alignment", {"trainable": ["scb", "dit"]}))
    assert trainable_components(tiny) == {"scb", "dit"}
    assert counts["scb"] == sum(p.numel() for p in tiny.scb.parameters())


def test_sft_adds_lora_only_on_vlm_language_layers(tiny):
    stage = StageConfig.from_dict("sft", {"trainable": ["scb", "dit", "vlm"], "lora": {"rank": 4, "alpha": 8}})
    counts = apply_schedule(tiny, stage)
    vlm_trainable = [n for n, p in tiny.encoder.named_parameters() if p.requires_grad]
    assert vlm_trainable and all("lora_" in n and "language_model" in n for n in vlm_trainable)
    assert counts["vlm"] == sum(p.numel() for n, p in tiny.encoder.named_parameters() if "lora_" in n)


def test_unknown_component_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown trainable component"):
        StageConfig.from_dict("x", {"trainable": ["dit", "unet"]})


def test_lora_weights_survive_save_and_load(tiny, tmp_path):
    apply_schedule(tiny, StageConfig.from_dict("sft", {"trainable": ["vlm"], "lora": {"rank": 4, "alpha": 8}}))
    with torch.no_grad():  # LoRA B starts at zero; make the adapters matter
        for name, p in tiny.encoder.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    tiny.eval()
    prompt = ["a red circle in the top left"]

    def hidden(model):  # the VLM's deepest tapped layer: what LoRA changes (the bridge is zero-initialised)
        return model.encoder(prompt, model.scb.think_tokens)[0][model.scb.taps[0]]

    before = hidden(tiny)
    save_checkpoint(tiny, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    lora_keys = [n for n, _ in loaded.encoder.named_parameters() if "lora_" in n]
    assert lora_keys, "LoRA adapters must be rebuilt on load"
    for (n1, p1), (n2, p2) in zip(tiny.encoder.named_parameters(), loaded.encoder.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    with torch.no_grad():
        assert torch.allclose(hidden(loaded), before, atol=1e-6)
        # and the adapters are what makes the difference: zeroing B changes the conditioning
        for name, p in loaded.encoder.named_parameters():
            if "lora_B" in name:
                p.zero_()
        assert not torch.allclose(hidden(loaded), before, atol=1e-4)
