"""`deepgen describe`: parameter counts per component and per training stage, from the real modules, no download.

The model is built on the meta device (shapes only, no memory, no weights), so the full 6.5B-parameter preset is
described in about a second on a laptop. Stage counts come from the freeze rule training applies
(`deepgen.model.schedule.freeze`), so they are what a stage would actually train, LoRA included. With `--memory`,
the GiB per GPU and the largest micro-batch per stage (`deepgen.model.memory`) under each stage's `parallel:` block,
read from the preset's training configuration (`MEMORY_STAGES`, relative to the project folder) or `--stages`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.model.memory import format_plan, memory_plan
from deepgen.model.schedule import COMPONENT_MODULES, PAPER_STAGES, apply_stage, meta_model

# Where each preset's stages are configured (conf/cluster runs the full preset): `--memory` plans those stages
MEMORY_STAGES = {"full": "conf/cluster/parameters_training.yml", "tiny": "conf/base/parameters_training.yml"}


def component_counts(model: DeepGen) -> dict[str, dict[str, int]]:
    out = {}
    for name, attr in COMPONENT_MODULES.items():
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


def memory_stages(preset_name: str) -> dict[str, dict]:
    """The stage blocks a preset trains with, `parallel:` blocks included: the memory plan reads the same
    configuration as training (from the project folder, as `kedro run` does)."""
    if preset_name not in MEMORY_STAGES:
        raise ValueError(f"no stage configuration known for preset {preset_name!r}: pass --stages FILE")
    path = Path(MEMORY_STAGES[preset_name])
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run from the project folder or pass --stages FILE")
    return load_stages(path)


def _persistent(module: torch.nn.Module, name: str) -> bool:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    return leaf not in owner._non_persistent_buffers_set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="full", help="model preset: full or tiny")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--stages", help="a parameters file with stage blocks (default: the paper's schedule; with "
                                         "--memory, the preset's own: " + ", ".join(
                                             f"{k} {v}" for k, v in MEMORY_STAGES.items()) + ")")
    parser.add_argument("--memory", action="store_true",
                        help="GiB per GPU and the largest micro-batch per stage instead of parameter counts "
                             "(exit 1 when a stage does not fit)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs a stage runs on (with --memory)")
    parser.add_argument("--card-gib", type=float, default=80.0, help="memory of one GPU in GiB (with --memory)")


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        stages = load_stages(args.stages) if args.stages else None
        if args.memory:
            plan = memory_plan(preset(args.preset), stages or memory_stages(args.preset), args.gpus, args.card_gib)
        else:
            report = describe(args.preset, stages)
    except (ValueError, FileNotFoundError) as err:
        print(f"deepgen describe: {err}", file=sys.stderr)
        return 2
    if not args.memory:
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 0
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    too_big = [name for name, stage in plan["stages"].items() if stage["micro_batch"] < 1]
    if too_big:
        print(f"deepgen describe: stage(s) {too_big} do not fit {args.card_gib:g} GiB on {args.gpus} GPU(s)",
              file=sys.stderr)
    return 1 if too_big else 0
