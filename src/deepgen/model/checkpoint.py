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

Format 2 (`format_version` in config.json): a stage checkpoint stores only what its stage trained and names its base
(parent checkpoint or pretrained folders) by URI and content hash (`deepgen.model.lineage` has the rule);
`manifest.json` lists every file's size and SHA-256. `deepgen export` writes a complete, self-contained folder.
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
from safetensors.torch import save_file

from deepgen import storage
from deepgen.model.config import ModelConfig
from deepgen.model.deepgen import DeepGen
from deepgen.model.fingerprint import BaseChangedError, fetch, fingerprint, write_manifest
from deepgen.model.lineage import (COMPONENT_FILES, CONFIG_FILE, FORMAT_VERSION, CheckpointError, Link, Sources,
                                   canonical, component_files, component_sources, pretrained_refs, read_chain,
                                   storage_plan)
from deepgen.model.lora import LoRAConfig, add_lora
from deepgen.model.tokenizer import load_tokenizer

__all__ = ["BaseChangedError", "COMPONENT_FILES", "CONFIG_FILE", "CheckpointError", "FORMAT_VERSION",
           "checkpoint_hash", "load_checkpoint", "save_checkpoint", "stored_tensors"]
VLM_CONFIG_FILE = "vlm_config.json"
MAX_SHARD_SIZE = 5 * 10**9  # bytes, as Hugging Face's default "5GB"


def save_checkpoint(model: DeepGen, folder: str | Path, extra: dict | None = None,
                    max_shard_size: int = MAX_SHARD_SIZE, *, trained=None, base: str | None = None,
                    ema: dict[str, dict[str, torch.Tensor]] | None = None,
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the checkpoint (contiguous CPU copies; tied weights stored once by safetensors' rules).

    `trained`: the components the stage trains; the checkpoint then stores those and references the rest to `base`
    (the parent checkpoint's URI) or to the pretrained folders in the config (`deepgen.model.lineage`). None (the
    default): every component, a complete checkpoint. `ema`: component -> EMA state with the stored keys, kept beside
    the weights (`deepgen export --ema` uses it). `state_dict`: the whole model's state when the caller gathered it
    (e.g. from FSDP shards) instead of the modules' own.

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
        plan = storage_plan(model.cfg, trained, lora is not None, base is not None)
        lineage: dict = {"stored": plan}
        if base is not None:
            base = storage.absolute(str(base))
            lineage["base"] = {"uri": base, "hash": checkpoint_hash(base)}
        refs = pretrained_refs(model.cfg, plan) if base is None else {}
        if refs:
            lineage["pretrained"] = refs
        config = {**(extra or {}), "format_version": FORMAT_VERSION, "model": model.cfg.to_dict(),
                  "lora": dataclasses.asdict(lora) if lora else None, **lineage}
        stored = stored_tensors(model, plan, state_dict)
        for name, state in stored.items():
            save_component(_untie(_cpu(state)), staging, name, max_shard_size)
        for name, state in (ema or {}).items():
            if set(state) != set(stored.get(name, {})):
                raise ValueError(f"EMA weights for {name} must have the keys this checkpoint stores for it "
                                 f"({plan.get(name, 'unknown component')})")
            save_component(_untie(_cpu(state)), staging, f"ema-{name}", max_shard_size)
        if ema:
            config["ema"] = sorted(ema)
        model.tokenizer.save_pretrained(str(staging / "tokenizer"))
        (staging / VLM_CONFIG_FILE).write_text(model.encoder.vlm.config.to_json_string())
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        write_manifest(staging)
        _move_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    return folder


def stored_tensors(model: DeepGen, plan: dict[str, str], state_dict: dict[str, torch.Tensor] | None = None
                   ) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors a checkpoint with `plan` (`lineage.storage_plan`) writes, per component. Reads no data, so on a
    meta-device model it gives a checkpoint's keys and bytes without materialising any weight."""
    out = {}
    for name, attr in COMPONENT_FILES.items():
        mode = plan[name]
        if mode == "none":
            continue
        if state_dict is None:
            state = getattr(model, attr).state_dict()
        else:
            state = {k[len(attr) + 1:]: v for k, v in state_dict.items() if k.startswith(f"{attr}.")}
        out[name] = {k: v for k, v in state.items() if mode == "all" or "lora_" in k}
    return out


def checkpoint_hash(uri: str | Path) -> str:
    """A checkpoint's content hash (from its manifest; a format-1 folder is hashed once and cached)."""
    return fingerprint(fetch(str(uri)), name=f"checkpoint {uri}")


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


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
                    dtype: torch.dtype | None = None, *, ema: bool = False) -> DeepGen:
    """Rebuild the model from its config and load every component strictly (missing/unexpected keys are errors).

    `folder`: a local folder or an s3:// prefix. A lean checkpoint's bases are followed to the root (each checked
    against the hash its child recorded) and each child's tensors laid over its parent's; only tensors that end up
    in the model are read. `ema`: use the checkpoint's EMA weights for the components it has them for.
    """
    from accelerate import init_empty_weights

    links = read_chain(str(folder))
    leaf = links[0]
    if ema and not leaf.config.get("ema"):
        raise CheckpointError(f"checkpoint {folder} has no EMA weights")
    cfg = ModelConfig.from_dict(leaf.config["model"])
    for part in (cfg.vlm, cfg.dit, cfg.vae):
        part.pretrained = None
    vlm_config = None
    if (leaf.folder / VLM_CONFIG_FILE).is_file():
        from transformers import Qwen2_5_VLConfig

        vlm_config = Qwen2_5_VLConfig.from_dict(json.loads((leaf.folder / VLM_CONFIG_FILE).read_text()))
    with init_empty_weights(include_buffers=False):
        model = DeepGen(cfg, tokenizer=load_tokenizer(leaf.folder / "tokenizer"), vlm_config=vlm_config)
        if leaf.config.get("lora"):
            add_lora(model, LoRAConfig(**leaf.config["lora"]))
    for name, attr in COMPONENT_FILES.items():
        module = getattr(model, attr)
        sources = component_sources(links, name, ema)
        expected = module.state_dict()
        wanted = {canonical(k) for k in expected}
        base_state = _pretrained_state(sources.pretrained, name, cfg, leaf) if sources.pretrained else {}
        have = set(sources.files) | set(base_state)
        keys = {k: canonical(k) for k in expected if canonical(k) in have}
        shapes = _shapes(sources, keys, base_state)
        missing = [k for k in expected if canonical(k) not in have and k not in _tied_keys(module)]
        unexpected = sorted(k for k in have if k not in wanted)
        wrong = [f"{k} {shapes[k]} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in shapes and shapes[k] != tuple(v.shape)]
        if missing or unexpected or wrong:
            raise ValueError(f"checkpoint {folder}/{name} does not fit the {cfg.preset} model: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
        state = {k: v.to(expected[k].dtype) for k, v in _read_tensors(sources, keys, base_state).items()}
        module.load_state_dict(state, strict=False, assign=True)
    still_empty = [n for n, p in model.named_parameters() if p.is_meta]
    if still_empty:
        raise ValueError(f"checkpoint {folder} left parameters unset: {still_empty[:5]}")
    model.vae.register_to_config(scaling_factor=cfg.vae.scaling_factor, shift_factor=cfg.vae.shift_factor)
    model = model.to(device)
    return (model.to(dtype) if dtype is not None else model).eval()


def _shapes(sources: Sources, keys: dict[str, str], base_state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """module key -> stored shape, from the files' headers (nothing read yet)."""
    by_file: dict[Path, list[tuple[str, str]]] = {}
    shapes = {}
    for key, canon in keys.items():
        if canon in sources.files:
            path, stored_key = sources.files[canon]
            by_file.setdefault(path, []).append((key, stored_key))
        else:
            shapes[key] = tuple(base_state[canon].shape)
    for path, pairs in by_file.items():
        with safe_open(str(path), framework="pt") as handle:
            for key, stored_key in pairs:
                shapes[key] = tuple(handle.get_slice(stored_key).get_shape())
    return shapes


def _read_tensors(sources: Sources, keys: dict[str, str], base_state: dict[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """module key -> tensor, each file opened once and only the tensors the model takes read from it."""
    by_file: dict[Path, list[tuple[str, str]]] = {}
    state = {}
    for key, canon in keys.items():
        if canon in sources.files:
            path, stored_key = sources.files[canon]
            by_file.setdefault(path, []).append((key, stored_key))
        else:
            state[key] = base_state[canon]
    for path, pairs in by_file.items():
        with safe_open(str(path), framework="pt") as handle:
            for key, stored_key in pairs:
                state[key] = handle.get_tensor(stored_key)
    return state


def _pretrained_state(ref: dict, name: str, cfg: ModelConfig, leaf: Link) -> dict[str, torch.Tensor]:
    """A component read from the pretrained folder at the root of the chain (hash checked first), canonical keys."""
    import copy

    from deepgen.model.dit import build_dit
    from deepgen.model.vae import build_vae
    from deepgen.model.vlm import build_vlm
    from deepgen.model.weights import resolve

    found = fingerprint(resolve(ref["uri"], name), ref.get("subfolder"), f"pretrained {name} {ref['uri']}")
    if found != ref["hash"]:
        raise BaseChangedError(f"checkpoint {leaf.uri}: its pretrained {name} folder {ref['uri']} changed after the "
                               f"chain was written (hash {found[:19]}..., recorded {ref['hash'][:19]}...)")
    part = copy.deepcopy(getattr(cfg, name))
    part.pretrained = ref["uri"]
    if name == "vlm":
        module = build_vlm(part, load_tokenizer(leaf.folder / "tokenizer"))
        return {canonical(f"vlm.{k}"): v for k, v in module.state_dict().items()}
    module = build_dit(part) if name == "dit" else build_vae(part)
    return {canonical(k): v for k, v in module.state_dict().items()}


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
    state: dict[str, torch.Tensor] = {}
    by_file: dict[str, list[str]] = {}
    for key, filename in component_files(folder, name).items():
        by_file.setdefault(filename, []).append(key)
    for filename, keys in sorted(by_file.items()):
        with safe_open(str(folder / filename), framework="pt") as handle:
            for key in keys:
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
