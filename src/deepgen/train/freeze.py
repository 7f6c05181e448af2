"""The freeze schedule of a configured stage (`deepgen.model.schedule` holds the rule) and its optimizer groups."""

from __future__ import annotations

from deepgen.model.deepgen import DeepGen
from deepgen.model.schedule import COMPONENT_MODULES, freeze
from deepgen.train.config import StageConfig


def apply_schedule(model: DeepGen, stage: StageConfig) -> dict[str, int]:
    """Freeze everything, then unfreeze the stage's components (LoRA-only for the VLM when `stage.lora`).

    Returns trainable parameter counts per component, for the log and MLflow params.
    """
    return freeze(model, stage.trainable, stage.lora, stage.name)


def param_groups(model: DeepGen, stage: StageConfig) -> list[dict]:
    """The trainable parameters as optimizer groups, one per component, lr scaled by `stage.optim.lr_scale`."""
    groups = []
    for component in stage.trainable:
        params = [p for p in getattr(model, COMPONENT_MODULES[component]).parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": stage.optim.lr * stage.optim.lr_scale.get(component, 1.0),
                           "name": component})
    return groups
