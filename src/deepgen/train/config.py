"""Typed stage configuration. The freeze schedule is data: which components train, and whether the VLM gets LoRA."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from deepgen.model.lora import LoRAConfig
from deepgen.rl.config import GRPOConfig

OBJECTIVES = ("flow", "vae", "grpo")  # deepgen.train.objectives registers one plug-in under each name
COMPONENTS = ("vlm", "scb", "dit", "vae")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_fraction: float = 0.01
    grad_clip: float = 1.0
    min_lr_ratio: float = 0.0
    # component -> multiplier on lr. Tiny: the bridge at ~3e-4 or less; with depth 0 and a small output init this is
    # the setting under which position learned (src/deepgen/model/config.py has the measurement).
    lr_scale: dict[str, float] = field(default_factory=dict)


@dataclass
class ScalingConfig:
    """Ray Train workers. Locally 2 CPU workers with one torch thread each (DDP over gloo)."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: int = 1
    torch_threads: int = 1


@dataclass
class StageConfig:
    name: str
    objective: str = "flow"  # "flow" (DiT flow matching), "vae" (autoencoder reconstruction) or "grpo" (RL)
    trainable: tuple[str, ...] = ("scb",)
    lora: LoRAConfig | None = None
    steps: int = 1000
    batch_size: int = 16  # per worker
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    keep: dict[str, float] | None = None  # category/kind -> probability its samples are used (stage data mix)
    foreground_weight: float = 0.0  # objective "vae": extra loss weight on non-background pixels (sparse scenes)
    crop: int = 0  # objective "vae": train on random crops of this size (fully convolutional; 32 px costs 1/4)
    precision: str = "fp32"  # "bf16": autocast on GPUs (the full preset); fp32 on CPU
    log_every: int = 10
    checkpoint_every: int = 200
    seed: int = 0
    grpo: GRPOConfig | None = None  # objective "grpo": rollouts, rewards, PPO and KL settings
    note: str = ""  # why this schedule (e.g. what the tiny run must learn from scratch), logged as a param

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> "StageConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"stage {name!r}: unknown key(s) {unknown}; known: {sorted(known)}")
        data = dict(data)
        bad = sorted(set(data.get("trainable", ())) - set(COMPONENTS))
        if bad:
            raise ValueError(f"stage {name!r}: unknown trainable component(s) {bad}; choose from {COMPONENTS}")
        if data.get("objective", "flow") not in OBJECTIVES:
            raise ValueError(f"stage {name!r}: objective must be one of {OBJECTIVES}, got {data['objective']!r}")
        if data.get("grpo") is not None or data.get("objective") == "grpo":
            if data.get("objective") != "grpo":
                raise ValueError(f"stage {name!r}: a `grpo:` block needs objective 'grpo'")
            data["grpo"] = GRPOConfig.from_dict(data.get("grpo"), where=f"{name}.grpo")
        if data.get("precision", "fp32") not in ("fp32", "bf16"):
            raise ValueError(f"stage {name!r}: precision must be 'fp32' or 'bf16', got {data['precision']!r}")
        data["trainable"] = tuple(data.get("trainable", ("scb",)))
        if data.get("lora"):
            data["lora"] = LoRAConfig(**data["lora"])
        optim = dict(data.get("optim", {}))
        if "betas" in optim:
            optim["betas"] = tuple(optim["betas"])
        bad = sorted(set(optim.get("lr_scale") or {}) - set(COMPONENTS))
        if bad:
            raise ValueError(f"stage {name!r}: optim.lr_scale names unknown component(s) {bad}; choose from {COMPONENTS}")
        data["optim"] = OptimConfig(**optim)
        data["scaling"] = ScalingConfig(**data.get("scaling", {}))
        data.pop("name", None)
        return cls(name=name, **data)
