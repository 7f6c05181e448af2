"""DeepGen checkpoints: a folder with config.json, the tokenizer, and one safetensors file per component.

LoRA adapters are saved inside the VLM's state dict (the official code drops them from its checkpoints) and the
config records the LoRA settings, so loading rebuilds the same adapters before reading weights. Loading never
unpickles anything: safetensors only.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from deepgen.model.config import ModelConfig
from deepgen.model.deepgen import DeepGen
from deepgen.model.tokenizer import load_tokenizer

COMPONENT_FILES = {"vlm": "encoder", "scb": "scb", "dit": "dit", "vae": "vae"}
CONFIG_FILE = "config.json"


def save_checkpoint(model: DeepGen, folder: str | Path, extra: dict | None = None) -> Path:
    """Write every component (contiguous CPU copies; tied weights stored once by safetensors' rules)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.cfg.vae.scaling_factor = float(model.vae.config.scaling_factor)
    model.cfg.vae.shift_factor = float(model.vae.config.shift_factor)
    lora = getattr(model, "lora", None)
    config = {"model": model.cfg.to_dict(), "lora": dataclasses.asdict(lora) if lora else None, **(extra or {})}
    for name, attr in COMPONENT_FILES.items():
        state = {k: v.detach().to("cpu").contiguous() for k, v in getattr(model, attr).state_dict().items()}
        save_file(_untie(state), str(folder / f"{name}.safetensors"))
    model.tokenizer.save_pretrained(str(folder / "tokenizer"))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> DeepGen:
    """Rebuild the model from its config and load every component strictly (missing/unexpected keys are errors)."""
    from deepgen.train.config import LoRAConfig
    from deepgen.train.freeze import add_lora

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"not a deepgen checkpoint (no {CONFIG_FILE}): {folder}")
    config = json.loads((folder / CONFIG_FILE).read_text())
    cfg = ModelConfig.from_dict(config["model"])
    model = DeepGen(cfg, tokenizer=load_tokenizer(folder / "tokenizer"))
    if config.get("lora"):
        add_lora(model, LoRAConfig(**config["lora"]))
    for name, attr in COMPONENT_FILES.items():
        module = getattr(model, attr)
        state = load_file(str(folder / f"{name}.safetensors"))
        missing, unexpected = module.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in _tied_keys(module)]
        if missing or unexpected:
            raise ValueError(f"checkpoint {folder}/{name}.safetensors does not fit the {cfg.preset} model: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.vae.register_to_config(scaling_factor=cfg.vae.scaling_factor, shift_factor=cfg.vae.shift_factor)
    return model.to(device).eval()


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage; keep the first name of each shared tensor."""
    seen, out = set(), {}
    for key, value in state.items():
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if ptr in seen:
            continue
        seen.add(ptr)
        out[key] = value
    return out


def _tied_keys(module: torch.nn.Module) -> set[str]:
    state = module.state_dict()
    ptrs: dict = {}
    tied = set()
    for key, value in state.items():
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if ptr in ptrs:
            tied.add(key)
        ptrs.setdefault(ptr, key)
    return tied
