"""Which weights a checkpoint stores itself and where the rest come from: the rule, the format version, the chain.

A stage checkpoint stores what its stage trained; everything else is read from its base, named by URI and content
hash (`deepgen.model.fingerprint`), never copied. One rule decides, per component (`storage_plan`):

- trained by the stage: stored (`all`); the VLM under LoRA stores its adapters only (`lora`) when its base weights
  have a source;
- not trained, with a source: not stored (`none`). The source is the parent checkpoint, or at the root of a chain
  the pretrained folder the config names (the full preset's Qwen2.5-VL and SD3.5 folders);
- not trained, with no source (weights drawn at random from a seed, e.g. every tiny component, and the full preset's
  fresh bridge): stored, since nothing else holds them.

So the tiny run's first stage (the VAE, from a seed) writes a complete folder and its later stages lean ones, the
full preset's alignment stores the bridge and its think tokens (1.7 GB of 27 GB), SFT the bridge, the DiT and the
VLM's LoRA adapters, RL the DiT. Loading follows `base` links to the root and lays each child's tensors over its
parent's (`component_sources`). Format 1 (no `format_version`: the complete folders written before) stores all;
a newer format than this code knows is refused.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from deepgen.model.fingerprint import BaseChangedError, fetch, fingerprint

FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
COMPONENT_FILES = {"vlm": "encoder", "scb": "scb", "dit": "dit", "vae": "vae"}
PRETRAINED_SUBFOLDERS = {"vlm": None, "dit": "transformer", "vae": "vae"}  # where each part's folder keeps it
MAX_CHAIN = 64


class CheckpointError(ValueError):
    """A checkpoint this code cannot or must not load: the message names it and says why, on one line."""


def storage_plan(cfg, trained, lora: bool, has_base: bool) -> dict[str, str]:
    """Per component: `all`, `lora` (the VLM's adapters only) or `none` (read from the base). `trained=None`: a
    complete checkpoint (export, conversion, tests)."""
    if trained is None:
        return dict.fromkeys(COMPONENT_FILES, "all")
    trained = set(trained)
    plan = {}
    for name in COMPONENT_FILES:
        source = has_base or bool(getattr(getattr(cfg, name), "pretrained", None))
        if name in trained:
            plan[name] = "lora" if name == "vlm" and lora and source else "all"
        else:
            plan[name] = "none" if source else "all"
    return plan


def pretrained_refs(cfg, plan: dict[str, str]) -> dict[str, dict]:
    """The pretrained folders a root checkpoint reads its unstored components from, with their content hashes (read
    from the hash cache after the first time: the files are hashed once per machine)."""
    from deepgen.model.weights import resolve

    refs = {}
    for name, mode in plan.items():
        uri = getattr(getattr(cfg, name), "pretrained", None)
        if mode != "all" and uri:
            sub = PRETRAINED_SUBFOLDERS[name]
            refs[name] = {"uri": str(uri), "subfolder": sub,
                          "hash": fingerprint(resolve(uri, name), sub, f"pretrained {name} {uri}")}
    return refs


@dataclass(frozen=True)
class Link:
    """One checkpoint of a chain: where it was named, its local folder and its config."""

    uri: str
    folder: Path
    config: dict

    def stored(self, name: str) -> str:
        return self.config.get("stored", {}).get(name, "all")


def read_config(folder: Path, uri: str) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a deepgen checkpoint (no {CONFIG_FILE}): {uri}")
    config = json.loads(path.read_text())
    version = config.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {uri} has format version {version!r}; this deepgen reads versions 1 to "
                              f"{FORMAT_VERSION}: load it with the deepgen that wrote it, or upgrade")
    return config


def read_chain(uri: str) -> list[Link]:
    """The checkpoint and its bases, leaf first; each base's hash is checked against the one its child recorded."""
    links: list[Link] = []
    expected = None
    while uri:
        if any(link.uri == uri for link in links) or len(links) >= MAX_CHAIN:
            raise CheckpointError(f"checkpoint {links[0].uri}: its bases form a loop or a chain over {MAX_CHAIN} "
                                  f"long at {uri}")
        folder = fetch(uri, f"base of checkpoint {links[-1].uri}" if links else "checkpoint")
        if expected is not None:
            found = fingerprint(folder, name=f"base {uri} of checkpoint {links[-1].uri}")
            if found != expected:
                raise BaseChangedError(f"checkpoint {links[-1].uri}: its base {uri} changed after it was written "
                                       f"(hash {found[:19]}..., recorded {expected[:19]}...); restore that base, or "
                                       "retrain from the new one")
        links.append(Link(uri, folder, read_config(folder, uri)))
        base = links[-1].config.get("base")
        uri, expected = (str(base["uri"]), base["hash"]) if base else (None, None)
    return links


def component_files(folder: Path, name: str) -> dict[str, str]:
    """key -> file name of a component's tensors (one file or Hugging Face-style shards); only headers are read."""
    single, index_path = folder / f"{name}.safetensors", folder / f"{name}.safetensors.index.json"
    if single.is_file():
        with safe_open(str(single), framework="pt") as handle:
            return dict.fromkeys(handle.keys(), single.name)
    if not index_path.is_file():
        raise FileNotFoundError(f"checkpoint {folder} has no {name} weights ({single.name} or {index_path.name})")
    weight_map = json.loads(index_path.read_text())["weight_map"]
    for filename in sorted(set(weight_map.values())):
        if not (folder / filename).is_file():
            raise FileNotFoundError(f"checkpoint {folder}: shard {filename} named in {index_path.name} is missing")
    return dict(weight_map)


def canonical(key: str) -> str:
    """LoRA wraps a layer as `<layer>.base_layer`: a parent without LoRA stores the same tensor as `<layer>`."""
    return key.replace(".base_layer.", ".")


@dataclass
class Sources:
    """Where each tensor of one component comes from: canonical key -> (file, stored key), over a pretrained
    folder's module when the chain's root reads the component from one."""

    files: dict[str, tuple[Path, str]] = dataclasses.field(default_factory=dict)
    pretrained: dict | None = None


def component_sources(links: list[Link], name: str, ema: bool = False) -> Sources:
    """Root first, each link's stored tensors replace (`all`) or overlay (`lora`) what its base provided."""
    sources = Sources()
    root = links[-1]
    sources.pretrained = root.config.get("pretrained", {}).get(name)
    for link in reversed(links):
        mode = link.stored(name)
        if mode == "none":
            continue
        if mode == "all":
            sources.files.clear()
            sources.pretrained = None
        prefixes = [name] + ([f"ema-{name}"] if ema and link is links[0] and name in link.config.get("ema", ()) else [])
        for prefix in prefixes:
            for key, filename in component_files(link.folder, prefix).items():
                sources.files[canonical(key)] = (link.folder / filename, key)
    return sources
