"""An exponential moving average of the trained weights (`parallel.ema_decay`), updated after each optimizer step.

The averages have the parameters' own layout: plain tensors under DDP, DTensor shards under FSDP2 (each rank
averages its shard; nothing is gathered until a checkpoint writes them). `applied()` swaps them into the model for a
moment, so the checkpoint's EMA weights are gathered and written by the same code as its weights.
"""

from __future__ import annotations

import contextlib

import torch


class EMA:
    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.params = named_params
        self.shadow = {name: p.detach().clone() for name, p in named_params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} trained parameter(s), e.g. {missing[:3]}")
        for name, value in self.shadow.items():
            value.copy_(state[name])

    @contextlib.contextmanager
    def applied(self):
        """The averages in the parameters' place (no gradients flow), the trained weights back afterwards."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for name, p in self.params.items():
            kept = p.detach().clone()
            p.copy_(self.shadow[name])
            self.shadow[name].copy_(kept)
