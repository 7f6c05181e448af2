"""DeepGen checkpoints: a folder with config.json, the tokenizer, and safetensors per component.

LoRA adapters are saved inside the VLM's state dict (the official code drops them from its checkpoints) and the
config records the LoRA settings, so loading rebuilds the same adapters before reading weights. Loading never
unpickles anything: safetensors only.

A component larger than `max_shard_size` (the full preset's VLM: 15 GB in fp32) is sharded as Hugging Face does:
`vlm-00001-of-00004.safetensors` ... plus `vlm.safetensors.index.json` mapping every key to its shard; small
components keep the single `vlm.safetensors`, so tiny checkpoints look as before. The VLM's own Hugging Face config
is stored as vlm_config.json: rebuilding it from our config alone would lose fields a real Qwen folder sets.
Loading builds the model with empty (meta) parameters and assigns the stored tensors, so a 5B checkpoint is read
once instead of first being randomly initialised; a parameter no file provides is reported as missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from deepgen.model.config import ModelConfig
from deepgen.model.deepgen import DeepGen
from deepgen.model.lora import LoRAConfig, add_lora
from deepgen.model.tokenizer import load_tokenizer

COMPONENT_FILES = {"vlm": "encoder", "scb": "scb", "dit": "dit", "vae": "vae"}
CONFIG_FILE = "config.json"
VLM_CONFIG_FILE = "vlm_config.json"
MAX_SHARD_SIZE = 5 * 10**9  # bytes, as Hugging Face's default "5GB"


def save_checkpoint(model: DeepGen, folder: str | Path, extra: dict | None = None,
                    max_shard_size: int = MAX_SHARD_SIZE) -> Path:
    """Write every component (contiguous CPU copies; tied weights stored once by safetensors' rules).

    Everything goes to a hidden folder beside `folder`, renamed into place once complete: a write that fails half
    way (disk full, a killed worker) leaves `folder` as it was and nothing half-written under a checkpoint's name.
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / CONFIG_FILE).is_file():
        raise FileExistsError(f"refusing to replace {folder}: it holds files and is not a deepgen checkpoint")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        model.cfg.vae.scaling_factor = float(model.vae.config.scaling_factor)
        model.cfg.vae.shift_factor = float(model.vae.config.shift_factor)
        lora = getattr(model, "lora", None)
        config = {"model": model.cfg.to_dict(), "lora": dataclasses.asdict(lora) if lora else None, **(extra or {})}
        for name, attr in COMPONENT_FILES.items():
            state = {k: v.detach().to("cpu").contiguous() for k, v in getattr(model, attr).state_dict().items()}
            save_component(_untie(state), staging, name, max_shard_size)
        model.tokenizer.save_pretrained(str(staging / "tokenizer"))
        (staging / VLM_CONFIG_FILE).write_text(model.encoder.vlm.config.to_json_string())
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        _move_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    return folder


def _move_into_place(staging: Path, folder: Path) -> None:
    """rename(2) of a complete folder: atomic onto a new or empty name; an older checkpoint there is moved aside
    first (so for that moment a reader finds no checkpoint, never a mixed one) and deleted after."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    if not folder.exists():
        os.rename(staging, folder)
        return
    old = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.old"
    os.rename(folder, old)
    os.rename(staging, folder)
    shutil.rmtree(old)


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> DeepGen:
    """Rebuild the model from its config and load every component strictly (missing/unexpected keys are errors).

    The checkpoint holds every weight, so `pretrained` folders named in its config are not read again.
    """
    from accelerate import init_empty_weights

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"not a deepgen checkpoint (no {CONFIG_FILE}): {folder}")
    config = json.loads((folder / CONFIG_FILE).read_text())
    cfg = ModelConfig.from_dict(config["model"])
    for part in (cfg.vlm, cfg.dit, cfg.vae):
        part.pretrained = None
    vlm_config = None
    if (folder / VLM_CONFIG_FILE).is_file():
        from transformers import Qwen2_5_VLConfig

        vlm_config = Qwen2_5_VLConfig.from_dict(json.loads((folder / VLM_CONFIG_FILE).read_text()))
    with init_empty_weights(include_buffers=False):
        model = DeepGen(cfg, tokenizer=load_tokenizer(folder / "tokenizer"), vlm_config=vlm_config)
        if config.get("lora"):
            add_lora(model, LoRAConfig(**config["lora"]))
    for name, attr in COMPONENT_FILES.items():
        module = getattr(model, attr)
        state = load_component(folder, name)
        expected = module.state_dict()
        missing = [k for k in expected if k not in state and k not in _tied_keys(module)]
        unexpected = [k for k in state if k not in expected]
        wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and state[k].shape != v.shape]
        if missing or unexpected or wrong:
            raise ValueError(f"checkpoint {folder}/{name} does not fit the {cfg.preset} model: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
        module.load_state_dict(state, strict=False, assign=True)
    still_empty = [n for n, p in model.named_parameters() if p.is_meta]
    if still_empty:
        raise ValueError(f"checkpoint {folder} left parameters unset: {still_empty[:5]}")
    model.vae.register_to_config(scaling_factor=cfg.vae.scaling_factor, shift_factor=cfg.vae.shift_factor)
    model = model.to(device)
    return (model.to(dtype) if dtype is not None else model).eval()


def save_component(state: dict[str, torch.Tensor], folder: Path, name: str, max_shard_size: int) -> None:
    """One file when it fits in `max_shard_size`, else Hugging Face-style shards plus an index."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    for stale in folder.glob(f"{name}-*-of-*.safetensors"):
        stale.unlink()
    (folder / f"{name}.safetensors.index.json").unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(folder / f"{name}.safetensors"))
        return
    (folder / f"{name}.safetensors").unlink(missing_ok=True)
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        filename = f"{name}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / filename))
        weight_map.update(dict.fromkeys(shard, filename))
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{name}.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))


def load_component(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """A component's state dict from its single file or from its shards (every shard named in the index)."""
    single, index_path = folder / f"{name}.safetensors", folder / f"{name}.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if not index_path.is_file():
        raise FileNotFoundError(f"checkpoint {folder} has no {name} weights ({single.name} or {index_path.name})")
    weight_map = json.loads(index_path.read_text())["weight_map"]
    state: dict[str, torch.Tensor] = {}
    for filename in sorted(set(weight_map.values())):
        if not (folder / filename).is_file():
            raise FileNotFoundError(f"checkpoint {folder}: shard {filename} named in {index_path.name} is missing")
        with safe_open(str(folder / filename), framework="pt") as handle:
            for key in handle.keys():
                state[key] = handle.get_tensor(key)
    return state


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
