"""Convert an official DeepGen-1.0 checkpoint (model.pt / iter_*.pth state dict, or .safetensors) to ours.

The key layout below is read from the official source (github.com/deepgenteam/deepgen,
src/models/sd3_kontext/qwen2_5_vl_sd3_hf_dynamic_fusion.py, and its connector module): the model's `state_dict`
drops every `vae.`, `lmm.` and `ema.` key, so a released checkpoint holds

    meta_queries                          (128, 2048)      -> scb.think_tokens
    projector_1.{weight,bias}             12288 -> 2048    -> scb.in_proj
    projector_2.{weight,bias}             2048 -> 2048     -> scb.pooled_proj   (pooled: mean over the sequence)
    projector_3.{weight,bias}             2048 -> 4096     -> scb.context_proj  (DiT text sequence)
    connector.layers.N.self_attn.{q,k,v}_proj.{weight,bias} -> scb.encoder.layers.N.self_attn.in_proj_* (q;k;v)
    connector.layers.N.self_attn.out_proj.*                 -> scb.encoder.layers.N.self_attn.out_proj.*
    connector.layers.N.layer_norm{1,2}.*                    -> scb.encoder.layers.N.norm{1,2}.*
    connector.layers.N.mlp.fc{1,2}.*                        -> scb.encoder.layers.N.linear{1,2}.*
    transformer.*                         SD3 MMDiT (same module names as diffusers') -> dit.*

The VLM is not in it (its LoRA is lost: the fault DESIGN.md notes) and comes from the Qwen2.5-VL-3B-Instruct folder;
a checkpoint that does carry merged `lmm.` weights has them loaded into the VLM. The VAE comes from the UniPic2 folder.
What was verified: the mapping against the official module definitions (a re-implementation of the official connector
forward equals ours after conversion, tests/model/test_convert.py). Not verified: the key list of the released files
themselves, which cannot be downloaded here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

_LAYER = re.compile(r"^connector\.layers\.(\d+)\.(.+)$")
_RENAMES = {"layer_norm1.": "norm1.", "layer_norm2.": "norm2.", "mlp.fc1.": "linear1.", "mlp.fc2.": "linear2.",
            "self_attn.out_proj.": "self_attn.out_proj."}
_PROJECTORS = {"projector_1.": "in_proj.", "projector_2.": "pooled_proj.", "projector_3.": "context_proj."}
_IGNORED = ("vae.", "ema.", "lmm.lm_head.")


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a .pt/.pth file (tensors only: weights_only) or a .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path} (a DeepSpeed .pth folder must be "
                                f"consolidated to one file first)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "module", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return state


def official_to_deepgen(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Official keys -> {"scb": ..., "dit": ..., "vlm": ...} state dicts in our module names."""
    out: dict[str, dict[str, torch.Tensor]] = {"scb": {}, "dit": {}, "vlm": {}}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("layers."):  # a connector saved on its own (without the `connector.` prefix)
            key = "connector." + key
        if key.startswith(_IGNORED):
            continue
        if key == "meta_queries":
            out["scb"]["think_tokens"] = value
        elif key.startswith(tuple(_PROJECTORS)):
            prefix = key[:len("projector_1.")]
            out["scb"][_PROJECTORS[prefix] + key[len(prefix):]] = value
        elif match := _LAYER.match(key):
            layer, rest = match.groups()
            if m := re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest):
                qkv.setdefault((layer, m.group(2)), {})[m.group(1)] = value
                continue
            new = next((rest.replace(a, b, 1) for a, b in _RENAMES.items() if rest.startswith(a)), None)
            if new is None:
                unknown.append(key)
            else:
                out["scb"][f"encoder.layers.{layer}.{new}"] = value
        elif key.startswith("transformer."):
            out["dit"][key[len("transformer."):]] = value
        elif key.startswith("lmm."):
            if "lora_" in key or ".base_layer." in key:
                raise ValueError(f"official checkpoint has unmerged LoRA on the VLM ({key}); merge it first")
            out["vlm"][_vlm_key(key[len("lmm."):])] = value
        else:
            unknown.append(key)
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"connector layer {layer}: incomplete q/k/v {kind} ({sorted(parts)})")
        out["scb"][f"encoder.layers.{layer}.self_attn.in_proj_{kind}"] = torch.cat([parts[c] for c in "qkv"])
    if unknown:
        raise ValueError(f"official checkpoint has keys deepgen does not know: {unknown[:5]}"
                         + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""))
    return out


def deepgen_to_official(model) -> dict[str, torch.Tensor]:
    """The inverse (our SCB + DiT in the official layout): for tests, and to hand weights back to the official code."""
    state = {"meta_queries": model.scb.think_tokens.detach()}
    inverse = {v: k for k, v in _PROJECTORS.items()}
    for key, value in model.scb.state_dict().items():
        if key == "think_tokens":
            continue
        head = key.split(".")[0] + "."
        if head in inverse:
            state[inverse[head] + key[len(head):]] = value
            continue
        _, _, layer, rest = key.split(".", 3)
        if rest.startswith("self_attn.in_proj_"):
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip("qkv", value.chunk(3)):
                state[f"connector.layers.{layer}.self_attn.{name}_proj.{kind}"] = part
            continue
        old = next(a + rest[len(b):] for a, b in _RENAMES.items() if rest.startswith(b))
        state[f"connector.layers.{layer}.{old}"] = value
    state.update({f"transformer.{k}": v for k, v in model.dit.state_dict().items()})
    return state


def load_official(model, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Load an official state dict into `model` strictly per component present; returns tensors loaded per part."""
    parts = official_to_deepgen(state)
    if not parts["scb"] or not parts["dit"]:
        raise ValueError("not an official DeepGen checkpoint: it needs connector/projector/meta_queries and "
                         "transformer.* keys")
    targets = {"scb": model.scb, "dit": model.dit, "vlm": model.encoder.vlm}
    for name, part in parts.items():
        if not part:
            continue
        module = targets[name]
        expected = module.state_dict()
        missing = sorted(set(expected) - set(part))
        unexpected = sorted(set(part) - set(expected))
        wrong = [f"{k} {tuple(part[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in part and part[k].shape != v.shape]
        if missing or unexpected or wrong:
            raise ValueError(f"official {name} weights do not fit the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
        module.load_state_dict({k: v.to(expected[k].dtype) for k, v in part.items()})
    return {name: len(part) for name, part in parts.items()}


def _vlm_key(key: str) -> str:
    """Qwen2_5_VLForConditionalGeneration keys (old or new transformers layout) -> Qwen2_5_VLModel keys."""
    for old, new in (("model.language_model.", "language_model."), ("model.visual.", "visual."),
                     ("visual.", "visual."), ("model.", "language_model.")):
        if key.startswith(old):
            return new + key[len(old):]
    return key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--official", required=True, help="official model.pt / iter_*.pth / .safetensors file")
    parser.add_argument("--vlm", required=True, help="Qwen2.5-VL-3B-Instruct folder (local or s3://)")
    parser.add_argument("--diffusion", required=True,
                        help="UniPic2-SD3.5M-Kontext-2B (or SD3.5-Medium) folder with transformer/, vae/, scheduler/")
    parser.add_argument("--out", required=True, help="output checkpoint folder")
    parser.add_argument("--preset", default="full")


def run(args: argparse.Namespace) -> int:
    from deepgen.model.checkpoint import save_checkpoint
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen

    try:
        state = read_official(args.official)
        cfg = preset(args.preset, {"vlm": {"pretrained": args.vlm}, "dit": {"pretrained": args.diffusion},
                                   "vae": {"pretrained": args.diffusion}})
        model = DeepGen(cfg)
        counts = load_official(model, state)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"deepgen convert: {err}", file=sys.stderr)
        return 2
    save_checkpoint(model, args.out, extra={"converted_from": str(args.official)})
    print(f"converted {args.official} -> {args.out} (tensors: {counts})")
    return 0
