"""The freeze schedule: which parameters a stage trains. LoRA adapters on the VLM are added here (peft)."""

from __future__ import annotations

from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model

from deepgen.model.deepgen import DeepGen
from deepgen.train.config import LoRAConfig, StageConfig

COMPONENT_MODULES = {"vlm": "encoder", "scb": "scb", "dit": "dit", "vae": "vae"}


def add_lora(model: DeepGen, cfg: LoRAConfig) -> None:
    """Inject LoRA into the VLM's language layers in place (state-dict keys stay readable: ...q_proj.lora_A...)."""
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=cfg.target_modules)
    inject_adapter_in_model(peft_cfg, model.encoder.vlm)
    model.lora = cfg


def apply_schedule(model: DeepGen, stage: StageConfig) -> dict[str, int]:
    """Freeze everything, then unfreeze the stage's components (LoRA-only for the VLM when `stage.lora`).

    Returns trainable parameter counts per component, for the log and MLflow params.
    """
    if stage.lora is not None and getattr(model, "lora", None) is None:
        add_lora(model, stage.lora)
    model.requires_grad_(False)
    counts = {}
    for component in stage.trainable:
        module = getattr(model, COMPONENT_MODULES[component])
        if component == "vlm" and getattr(model, "lora", None) is not None:
            params = [p for n, p in module.named_parameters() if "lora_" in n]
        else:
            params = list(module.parameters())
        for p in params:
            p.requires_grad_(True)
        counts[component] = sum(p.numel() for p in params)
    if getattr(model, "lora", None) is not None and "vlm" in stage.trainable and counts.get("vlm", 0) == 0:
        raise ValueError(f"stage {stage.name!r}: LoRA matched no VLM module ({model.lora.target_modules})")
    return counts


def param_groups(model: DeepGen, stage: StageConfig) -> list[dict]:
    """The trainable parameters as optimizer groups, one per component, lr scaled by `stage.optim.lr_scale`."""
    groups = []
    for component in stage.trainable:
        params = [p for p in getattr(model, COMPONENT_MODULES[component]).parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": stage.optim.lr * stage.optim.lr_scale.get(component, 1.0),
                           "name": component})
    return groups
