"""The freeze schedule as model-level data: which components a stage trains, and whether the VLM trains as LoRA.

Training (`deepgen.train.freeze`) and the meta-device descriptions (`deepgen.model.describe`, `.memory`, built by
`meta_model`) apply the same function, so a stage's counts and memory are what it actually trains; model code never
imports training code.
"""

from __future__ import annotations

import torch

from deepgen.model.config import ModelConfig
from deepgen.model.deepgen import DeepGen
from deepgen.model.lora import LoRAConfig, add_lora
from deepgen.model.tokenizer import build_tiny_tokenizer

COMPONENT_MODULES = {"vlm": "encoder", "scb": "scb", "dit": "dit", "vae": "vae"}

# The paper's schedule (DESIGN.md §1): what each stage trains. Keys as in conf/base/parameters_training.yml.
PAPER_STAGES: dict[str, dict] = {
    "alignment": {"trainable": ["scb"]},
    "sft": {"trainable": ["scb", "dit", "vlm"], "lora": {"rank": 64, "alpha": 128, "dropout": 0.05}},
    "rl": {"trainable": ["dit"]},
}


def freeze(model, trainable, lora: LoRAConfig | None = None, stage: str = "stage") -> dict[str, int]:
    """Freeze everything, then unfreeze `trainable` components (LoRA-only for the VLM when `lora` is given).

    Returns trainable parameter counts per component, for the log and MLflow params.
    """
    bad = sorted(set(trainable) - set(COMPONENT_MODULES))
    if bad:
        raise ValueError(f"stage {stage!r}: unknown trainable component(s) {bad}; "
                         f"choose from {tuple(COMPONENT_MODULES)}")
    if lora is not None and getattr(model, "lora", None) is None:
        add_lora(model, lora)
    model.requires_grad_(False)
    counts = {}
    for component in trainable:
        module = getattr(model, COMPONENT_MODULES[component])
        if component == "vlm" and getattr(model, "lora", None) is not None:
            params = [p for n, p in module.named_parameters() if "lora_" in n]
        else:
            params = list(module.parameters())
        for p in params:
            p.requires_grad_(True)
        counts[component] = sum(p.numel() for p in params)
    if getattr(model, "lora", None) is not None and "vlm" in trainable and counts.get("vlm", 0) == 0:
        raise ValueError(f"stage {stage!r}: LoRA matched no VLM module ({model.lora.target_modules})")
    return counts


def meta_model(cfg: ModelConfig, stage: dict | None = None) -> DeepGen:
    """DeepGen with meta tensors; with `stage`, its freeze schedule applied (and LoRA injected when it has one).

    Pretrained folders are not read (their architecture is the config's); the tokenizer is the offline one, which
    only supplies special-token ids (the vocabulary size comes from the config).
    """
    cfg = ModelConfig.from_dict(cfg.to_dict())
    for part in (cfg.vlm, cfg.dit, cfg.vae):
        part.pretrained = None
    with torch.device("meta"):
        model = DeepGen(cfg, build_tiny_tokenizer(min(cfg.vlm.vocab_size, 1024)))
    return apply_stage(model, stage) if stage is not None else model


def apply_stage(model: DeepGen, stage: dict) -> DeepGen:
    """The stage's freeze schedule from its plain-data block (`trainable`, optional `lora`); other keys ignored."""
    lora = LoRAConfig(**stage["lora"]) if stage.get("lora") else None
    with torch.device("meta"):
        freeze(model, tuple(stage.get("trainable", ("scb",))), lora, stage.get("name", "stage"))
    return model
