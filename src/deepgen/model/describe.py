"""`deepgen describe`: parameter counts per component and per training stage, from the real modules, no download.

The model is built on the meta device (shapes only, no memory, no weights), so the full 6.5B-parameter preset is
described in about a second on a laptop. Stage counts come from the training code's own freeze schedule
(`deepgen.train.freeze.apply_schedule`), so they are what a stage would actually train, LoRA included.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from deepgen.model.config import ModelConfig, preset
from deepgen.model.deepgen import DeepGen
from deepgen.model.tokenizer import build_tiny_tokenizer

COMPONENTS = {"vlm": "encoder", "scb": "scb", "dit": "dit", "vae": "vae"}

# The paper's schedule (DESIGN.md §1): what each stage trains. Keys as in conf/base/parameters_training.yml.
PAPER_STAGES: dict[str, dict] = {
    "alignment": {"trainable": ["scb"]},
    "sft": {"trainable": ["scb", "dit", "vlm"], "lora": {"rank": 64, "alpha": 128, "dropout": 0.05}},
    "rl": {"trainable": ["dit"]},
}


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
    from deepgen.train.config import StageConfig
    from deepgen.train.freeze import apply_schedule

    with torch.device("meta"):
        apply_schedule(model, StageConfig.from_dict(stage.get("name", "stage"), stage))
    return model


def component_counts(model: DeepGen) -> dict[str, dict[str, int]]:
    out = {}
    for name, attr in COMPONENTS.items():
        module = getattr(model, attr)
        params = sum(p.numel() for p in module.parameters())
        buffers = sum(b.numel() for _, b in module.named_buffers() if _persistent(module, _))
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        out[name] = {"params": params, "buffers": buffers, "stored": params + buffers,
                     "trainable": trainable, "frozen": params - trainable}
    return out


def describe(preset_name: str, stages: dict[str, dict] | None = None, overrides: dict | None = None) -> dict:
    cfg = preset(preset_name, overrides)
    stages = PAPER_STAGES if stages is None else stages
    base = meta_model(cfg)
    report = {"preset": preset_name, "components": component_counts(base), "stages": {}}
    for name, stage in stages.items():  # LoRA changes the module tree: those stages get a model of their own
        model = meta_model(cfg) if stage.get("lora") else base
        counts = component_counts(apply_stage(model, {**stage, "name": name}))
        report["stages"][name] = {c: {"trainable": v["trainable"], "frozen": v["frozen"]} for c, v in counts.items()}
    return report


def format_report(report: dict) -> str:
    comps = report["components"]
    lines = [f"deepgen {report['preset']} preset: parameters from the real modules on the meta device "
             "(no weights read, nothing downloaded)", "",
             f"{'component':<10}{'parameters':>16}{'buffers':>16}{'stored':>16}"]
    for name, c in comps.items():
        lines.append(f"{name:<10}{c['params']:>16,}{c['buffers']:>16,}{c['stored']:>16,}")
    total = {k: sum(c[k] for c in comps.values()) for k in ("params", "buffers", "stored")}
    lines.append(f"{'total':<10}{total['params']:>16,}{total['buffers']:>16,}{total['stored']:>16,}")
    lines += ["", "buffers: persistent buffers saved with the weights (the DiT's position-embedding table).", "",
              f"{'stage':<11}{'component':<10}{'trainable':>16}{'frozen':>16}"]
    for stage, counts in report["stages"].items():
        for name, c in counts.items():
            lines.append(f"{stage:<11}{name:<10}{c['trainable']:>16,}{c['frozen']:>16,}")
        trainable = sum(c["trainable"] for c in counts.values())
        frozen = sum(c["frozen"] for c in counts.values())
        lines.append(f"{stage:<11}{'total':<10}{trainable:>16,}{frozen:>16,}")
    return "\n".join(lines)


def load_stages(path: str | Path) -> dict[str, dict]:
    """Stage blocks from a parameters file like conf/base/parameters_training.yml (top-level stage names)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    return {name: block for name, block in data.items() if isinstance(block, dict) and "trainable" in block}


def _persistent(module: torch.nn.Module, name: str) -> bool:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    return leaf not in owner._non_persistent_buffers_set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="full", help="model preset: full or tiny")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--stages", help="a parameters file with stage blocks (default: the paper's schedule)")


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        stages = load_stages(args.stages) if args.stages else None
        report = describe(args.preset, stages)
    except (ValueError, FileNotFoundError) as err:
        print(f"deepgen describe: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
