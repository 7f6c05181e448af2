"""Typed stage configuration. The freeze schedule is data: which components train, and whether the VLM gets LoRA."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from deepgen.model.lora import LoRAConfig
from deepgen.model.parallel import ParallelConfig
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
    # DataLoader processes per worker that read, decode and collate (part of the data order: see train/stream.py).
    # 0 on the tiny CPU run. bench/stream.py on the default shards (2 cores, shared with other work): in-process
    # 26.5 batches/s of 16, with 1 loader worker 23.3, with 2 32.0 (noisy); a batch costs ~40 ms against a ~200 ms
    # step, and the two Ray workers already keep both cores busy, so worker processes only take CPU from them
    loader_workers: int = 0
    # times Ray Train restarts the workers from the latest checkpoint after one dies (resume is exact, so this does
    # not name the run)
    max_failures: int = 0


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
    # DDP or FSDP2, mixed precision, activation checkpointing, gradient accumulation, EMA (deepgen.model.parallel);
    # the memory plan (`deepgen describe --memory`) reads the same block
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    log_every: int = 10
    # A held-out check every `heldout_every` steps (0: none) on `heldout` prompts per category (ShapesWorld), logged
    # as curves (deepgen.train.heldout). It measures, it does not train: neither key names the run.
    heldout_every: int = 0
    heldout: dict[str, int] | None = None
    checkpoint_every: int = 200
    seed: int = 0
    grpo: GRPOConfig | None = None  # objective "grpo": rollouts, rewards, PPO and KL settings
    note: str = ""  # why this schedule (e.g. what the tiny run must learn from scratch), logged as a param

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> "StageConfig":
        known = {f.name for f in fields(cls)}
        if "precision" in data:  # moved into the parallel block (FSDP2's mixed-precision policy reads it too)
            raise ValueError(f"stage {name!r}: `precision` is now `parallel: {{param_dtype: ...}}`")
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
        if not isinstance(data.get("parallel"), ParallelConfig):
            data["parallel"] = ParallelConfig.from_dict(data.get("parallel"), where=f"stage {name!r}: parallel")
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
