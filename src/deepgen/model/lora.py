"""LoRA on the VLM: switch it off, or merge it into the base weights for inference and export.

Adapters are injected by `deepgen.train.freeze.add_lora` (peft `inject_adapter_in_model`), so the VLM holds peft
`LoraLayer`s directly, without a PeftModel wrapper. Merging folds B @ A * scale into each base weight and puts the
plain base layer back: the state dict returns to the base model's keys (a merged checkpoint loads without LoRA),
and outputs equal the unmerged model's up to float rounding.
"""

from __future__ import annotations

import torch
from peft.tuners.lora import LoraLayer


def lora_layers(model) -> dict[str, LoraLayer]:
    return {name: m for name, m in model.encoder.vlm.named_modules() if isinstance(m, LoraLayer)}


def set_lora_enabled(model, enabled: bool) -> None:
    """Bypass (False) or use (True) every adapter without touching weights."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters")
    for layer in layers.values():
        layer.enable_adapters(enabled)


@torch.no_grad()
def merge_lora(model) -> int:
    """Merge every adapter into its base layer and remove the adapter modules; returns how many were merged.

    The model's `lora` record is cleared, so `save_checkpoint` writes a plain (LoRA-free) checkpoint.
    """
    vlm = model.encoder.vlm
    layers = lora_layers(model)
    for name, layer in layers.items():
        layer.enable_adapters(True)
        layer.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = vlm.get_submodule(parent_name) if parent_name else vlm
        setattr(parent, child, layer.get_base_layer())
    model.lora = None
    return len(layers)
