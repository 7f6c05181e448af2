"""How a stage holds the model on its workers: the `parallel:` block of a stage's configuration, and the model's units.

One config is read by both the training loop (`deepgen.train.distributed` applies it) and the memory plan
(`deepgen.model.memory`, `deepgen describe --memory`), so the plan describes what a stage actually runs. It lives
beside the model (as `LoRAConfig` does) because model code never imports training code; it loads without torch.

Units: activation checkpointing wraps each VLM decoder layer, connector layer and DiT block (`blocks`); FSDP2 gathers
the trained VLM and connector layers one at a time (`shard_units`) and the rest of what trains (the DiT, the
bridge's own parameters, the think tokens) as the root's group, once per step.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

STRATEGIES = ("ddp", "fsdp2")
DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class ParallelConfig:
    """Defaults are the tiny CPU run's: DDP in fp32, nothing checkpointed, one micro-batch per step, no EMA."""

    strategy: str = "ddp"  # "ddp": every worker holds everything; "fsdp2": trained parts sharded over the workers
    param_dtype: str = "fp32"  # compute dtype: "bf16" autocasts the forward (and is FSDP2's all-gather dtype)
    reduce_dtype: str = "fp32"  # FSDP2's gradient reduce-scatter dtype (DDP reduces in the gradients' fp32)
    frozen_dtype: str = "fp32"  # storage of frozen parameters (replicated, never wrapped for gradients)
    activation_checkpointing: bool = False  # recompute each block's forward in backward (VLM, connector, DiT)
    grad_accumulation: int = 1  # micro-batches of `batch_size` per optimizer step (gradients synced on the last)
    ema_decay: float = 0.0  # > 0: an EMA of the trained weights, saved beside them (load_checkpoint(..., ema=True))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "parallel") -> "ParallelConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**data)
        cfg.check(where)
        return cfg

    def check(self, where: str = "parallel") -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"{where}.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("param_dtype", "reduce_dtype", "frozen_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{where}.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        if self.frozen_dtype == "bf16" and self.param_dtype != "bf16":
            raise ValueError(f"{where}: frozen_dtype bf16 needs param_dtype bf16 (fp32 compute cannot read bf16 "
                             "frozen weights)")
        if not isinstance(self.grad_accumulation, int) or self.grad_accumulation < 1:
            raise ValueError(f"{where}.grad_accumulation must be a whole number >= 1, got {self.grad_accumulation!r}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"{where}.ema_decay must be in [0, 1), got {self.ema_decay!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def blocks(model) -> list:
    """The activation-checkpointing units: VLM decoder layers, connector layers, DiT blocks."""
    scb = list(model.scb.encoder.layers) if model.scb.encoder is not None else []
    return list(model.encoder.vlm.language_model.layers) + scb + list(model.dit.transformer_blocks)


def shard_units(model) -> list:
    """FSDP2's units, each gathered in its forward and reduced after its backward: the trained VLM decoder layers
    and connector layers, which run once per forward on every rank. The DiT stays in the root's group (gathered once
    per step, reduced once): the model runs it once per reference layout in a batch (and RL once per denoising step
    trained), a count that differs between ranks, while FSDP2 needs every rank to gather and reduce each unit the same
    number of times. Measured: with a unit per DiT block, two gloo workers whose batches split into one and two
    layouts aborted in the DiT's first all-gather."""
    dit = set(model.dit.transformer_blocks)
    return [m for m in blocks(model) if m not in dit and any(p.requires_grad for p in m.parameters())]


def checkpoint_forward(module) -> None:
    """From now on `module`'s forward is recomputed in backward (non-reentrant torch.utils.checkpoint). An instance
    attribute, so state-dict keys stay as they are (checkpoint_wrapper would prefix them) and module hooks (FSDP2's
    gathering) still run around it."""
    module.forward = functools.partial(_checkpointed, module.forward)


def uncheckpoint_forward(module) -> None:
    del module.forward  # the instance attribute; the class's forward shows again


def _checkpointed(forward, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint

    return checkpoint(forward, *args, use_reentrant=False, **kwargs)
