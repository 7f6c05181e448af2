"""LoRA on the VLM: its settings, injecting the adapters, switching them off, merging them for inference and export.

Adapters are injected with peft's `inject_adapter_in_model`, so the VLM holds peft `LoraLayer`s directly, without a
PeftModel wrapper. Merging folds B @ A * scale into each base weight and puts the plain base layer back: the state
dict returns to the base model's keys (a merged checkpoint loads without LoRA), and outputs equal the unmerged
model's up to float rounding. torch and peft are imported where used: `LoRAConfig` is part of the stage
configuration, which loads without them (peft alone took 5 s to import on this machine).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoRAConfig:
    rank: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def add_lora(model, cfg: LoRAConfig) -> None:
    """Inject LoRA into the VLM's language layers in place (state-dict keys stay readable: ...q_proj.lora_A...)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=cfg.target_modules)
    inject_adapter_in_model(peft_cfg, model.encoder.vlm)
    model.lora = cfg


def lora_layers(model) -> dict:
    """name -> peft LoraLayer inside the VLM."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.encoder.vlm.named_modules() if isinstance(m, LoraLayer)}


def set_lora_enabled(model, enabled: bool) -> None:
    """Bypass (False) or use (True) every adapter without touching weights."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters")
    for layer in layers.values():
        layer.enable_adapters(enabled)


def merge_lora(model) -> int:
    """Merge every adapter into its base layer and remove the adapter modules; returns how many were merged.

    The model's `lora` record is cleared, so `save_checkpoint` writes a plain (LoRA-free) checkpoint.
    """
    import torch

    vlm = model.encoder.vlm
    layers = lora_layers(model)
    with torch.no_grad():
        for name, layer in layers.items():
            layer.enable_adapters(True)
            layer.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = vlm.get_submodule(parent_name) if parent_name else vlm
            setattr(parent, child, layer.get_base_layer())
    model.lora = None
    return len(layers)
