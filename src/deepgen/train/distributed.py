"""How a stage's objective runs on its Ray Train workers (`stage.parallel`): DDP, or FSDP2 with the trained parts
sharded. The loop wraps the objective with `wrap` and never branches on the strategy; objectives own their forward
and know nothing of it.

DDP (the tiny CPU default, unchanged): Ray Train's `prepare_model`; rank 0 saves the weights and the optimizer.

FSDP2: `torch.distributed.fsdp.fully_shard` on each trained unit (`deepgen.model.parallel.shard_units`: VLM and
connector layers), then on the objective as the root, whose group holds the rest of what trains (the DiT: the model
calls it a rank-dependent number of times per step, so it is gathered once per step), inside the Ray Train loop
(Ray's `prepare_model(parallel_strategy="fsdp")` is FSDP1). Frozen parameters are ignored: replicated, stored in
`frozen_dtype`, never wrapped for gradients. With bf16, `MixedPrecisionPolicy` gathers parameters in bf16 and reduces
gradients in `reduce_dtype`; the fp32 masters stay sharded. The training state (trained parameters, AdamW moments,
EMA) is saved sharded with torch.distributed.checkpoint: every rank writes its own files into `sharded/` of its
reported folder, and Ray Train copies every rank's folder into one checkpoint folder (Ray 2.60:
`ray.train.report` broadcasts rank 0's folder name to all ranks, ray/train/v2/_internal/execution/context.py). Rank 0
also writes the usable model folder from the gathered full state, so evaluation and inference read it as before.

Either way: bf16 autocast when `param_dtype` is bf16, TF32 for what stays fp32 on CUDA, attention through torch SDPA
(the VLM's `sdpa` implementation, the DiT's MaskedJointAttention), activation checkpointing per block, gradient
accumulation (no gradient sync before the last micro-batch) and an optional EMA (`deepgen.train.ema`).
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path

import ray.train.torch
import torch
import torch.distributed as dist

from deepgen.model.parallel import ParallelConfig, blocks, checkpoint_forward, shard_units
from deepgen.model.schedule import COMPONENT_MODULES

SHARDED_DIR = "sharded"  # torch.distributed.checkpoint files of the FSDP2 training state, one set per rank
TRAINER_FILE = "trainer.pt"  # DDP: optimizer + scheduler (+ EMA); FSDP2: the scheduler
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def wrap(objective: torch.nn.Module, cfg: ParallelConfig) -> "Strategy":
    """Prepare the objective (its model frozen and LoRA'd already) for training under `cfg`."""
    device = ray.train.torch.get_device()
    if device.type == "cuda":  # TF32 for the fp32 matmuls and convolutions autocast leaves (the new-style switches)
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    if cfg.frozen_dtype != "fp32":
        with torch.no_grad():
            for p in objective.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(DTYPES[cfg.frozen_dtype])
    if cfg.activation_checkpointing:
        for block in blocks(objective.model):
            checkpoint_forward(block)
    return (FSDP2 if cfg.strategy == "fsdp2" else DDP)(objective, cfg, device)


def component_params(model) -> dict[str, torch.nn.Parameter]:
    """The trained parameters by their model-level names (as in the checkpoint, e.g. `dit.proj_out.weight`)."""
    return {f"{attr}.{name}": p for attr in COMPONENT_MODULES.values()
            for name, p in getattr(model, attr).named_parameters() if p.requires_grad}


class Strategy:
    sharded = False  # every rank holds part of the training state (and must join every save, gather and preview)

    def __init__(self, objective, cfg: ParallelConfig, device: torch.device):
        self.objective, self.cfg, self.device = objective, cfg, device
        self.module = objective  # what the loop calls with a batch

    def micro_step(self, last: bool):
        """Around one micro-batch's forward and backward: gradients are synchronised only on the last one."""
        return contextlib.nullcontext()

    def gather(self) -> None:
        """Before a batch is drawn: the model usable by the objective's `batches()` (RL rolls out with it); the
        forward that follows finds it ready."""

    def gathered(self):
        """The model usable outside the wrapped forward for a while (previews, an objective's `finish`)."""
        return contextlib.nullcontext()

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def weights_state(self) -> dict[str, torch.Tensor] | None:
        """The whole model's state for `save_checkpoint(state_dict=...)` on rank 0; None: the modules' own."""
        return None

    def trained_state(self, components: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Copies of the named components' full state (model-level keys, on the CPU) on rank 0; {} elsewhere."""
        out = {}
        for component in components:
            attr = COMPONENT_MODULES[component]
            module = getattr(self.objective.model, attr)
            trained = {id(p) for p in module.parameters() if p.requires_grad}  # copied; the rest never changes
            out |= {f"{attr}.{k}": v.detach().to("cpu", copy=True) if id(v) in trained else v.detach()
                    for k, v in module.state_dict(keep_vars=True).items()}
        return out

    def save(self, folder: Path, rank: int, opt, sched, ema) -> None:
        if rank == 0:
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
            if ema is not None:
                state["ema"] = ema.state_dict()
            torch.save(state, folder / TRAINER_FILE)

    def load(self, folder: Path, opt, sched, ema) -> None:
        state = torch.load(folder / TRAINER_FILE, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(_saved_ema(state, folder))


_NO_BUFFER_SYNC = ("forward_sync_buffers" if "forward_sync_buffers" in
                   inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
                   else "broadcast_buffers")


class DDP(Strategy):
    def __init__(self, objective, cfg, device):
        super().__init__(objective, cfg, device)
        # broadcast_buffers off: the model's buffers (rotary frequencies, positional tables) never change in
        # training, and DDP's default re-broadcast is a second collective every forward (both ranks wait for each
        # other twice per step). Measured with two gloo workers on 2 cores, alignment config: 296 -> 210 ms per step
        # in one pair of runs, ~7% over three alternating repeats (the machine's speed drifts more than that).
        # find_unused_parameters costs a walk of the autograd graph every step. Only VLM parameters can get no
        # gradient (layers above the deepest SCB tap never reach the loss; the vision tower idles without reference
        # images), so it is on only when the VLM trains (without it DDP fails at SFT's second step).
        # (torch 2.13 renamed the flag forward_sync_buffers and warns on the old name in every stage's log)
        vlm_trainable = any(p.requires_grad for p in objective.model.encoder.parameters())
        self.module = ray.train.torch.prepare_model(
            objective, parallel_strategy_kwargs={"find_unused_parameters": vlm_trainable, _NO_BUFFER_SYNC: False})

    def micro_step(self, last: bool):
        no_sync = getattr(self.module, "no_sync", None)  # a single worker is not wrapped
        return contextlib.nullcontext() if last or no_sync is None else no_sync()


class FSDP2(Strategy):
    sharded = True

    def __init__(self, objective, cfg, device):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        super().__init__(objective, cfg, device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        objective.to(device)
        trained = [p for p in objective.parameters() if p.requires_grad]
        with torch.no_grad():  # as DDP does: every rank starts from rank 0's weights (LoRA init draws per rank)
            for p in trained:
                dist.broadcast(p.data, src=0)
        frozen = {p for p in objective.parameters() if not p.requires_grad}
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        bf16 = cfg.param_dtype == "bf16"
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                                      reduce_dtype=DTYPES[cfg.reduce_dtype] if bf16 else None)
        for unit in shard_units(objective.model):
            fully_shard(unit, mesh=mesh, mp_policy=policy, ignored_params=frozen)
        fully_shard(objective, mesh=mesh, mp_policy=policy, ignored_params=frozen)
        # The objective is the root. A unit run before the root's first forward (a rollout, a preview) would become
        # a root of its own: initialise the root now (torch has no public call for this).
        fully_shard.state(objective)._lazy_init()

    def micro_step(self, last: bool):
        self.module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def gather(self) -> None:
        self.module.unshard()  # the root's group (the DiT); a no-op in the forward after it. Units gather themselves

    @contextlib.contextmanager
    def gathered(self):
        self.module.unshard()
        try:
            yield
        finally:
            self.module.reshard()

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        from torch.distributed.tensor import DTensor

        total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if isinstance(total, DTensor):  # a partial norm per shard: reduce it over the ranks
            total = total.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        return total

    def weights_state(self) -> dict[str, torch.Tensor]:
        return self.trained_state(tuple(COMPONENT_MODULES))

    def trained_state(self, components: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Components holding shards are gathered with `get_model_state_dict(full_state_dict, cpu_offload)` (a
        collective: rank 0 ends with full CPU tensors); their frozen parameters and unsharded components are read as
        they are, on rank 0 only."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        from torch.distributed.tensor import DTensor

        rank0 = dist.get_rank() == 0
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        out = {}
        for component in components:
            attr = COMPONENT_MODULES[component]
            module = getattr(self.objective.model, attr)
            state = {}
            if any(isinstance(p, DTensor) for p in module.parameters()):
                state = get_model_state_dict(module, options=options)
            if rank0:
                state |= {k: v.detach() for k, v in module.state_dict().items() if k not in state}
                out |= {f"{attr}.{k}": v for k, v in state.items()}
        return out

    def _sharded_state(self, opt, ema) -> dict:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        options = StateDictOptions(ignore_frozen_params=True)
        state = {"model": get_model_state_dict(self.objective, options=options),
                 "optimizer": get_optimizer_state_dict(self.objective, opt, options=options)}
        if ema is not None:
            state["ema"] = ema.state_dict()
        return state

    def save(self, folder: Path, rank: int, opt, sched, ema) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save(self._sharded_state(opt, ema), checkpoint_id=str(folder / SHARDED_DIR))
        if rank == 0:
            torch.save({"scheduler": sched.state_dict()}, folder / TRAINER_FILE)

    def load(self, folder: Path, opt, sched, ema) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        if not (folder / SHARDED_DIR).is_dir():
            raise FileNotFoundError(f"{folder}: no {SHARDED_DIR}/ training state (was it written by a DDP run? the "
                                    "strategy names the run, so a changed one trains anew)")
        saved = dcp.FileSystemReader(str(folder / SHARDED_DIR)).read_metadata().state_dict_metadata
        if ema is not None and not any(key.startswith("ema.") for key in saved):
            raise ValueError(f"{folder}: the stage keeps an EMA but its checkpoint has none")
        state = self._sharded_state(opt, ema)
        # A parameter that never had a gradient (a VLM layer above the deepest tap) has no AdamW state to load: the
        # template (every parameter's, made up by torch) drops it, so the optimizer holds none, as before the stop
        moments = state["optimizer"]["state"]
        for fqn in [fqn for fqn, values in moments.items()
                    if not any(f"optimizer.state.{fqn}.{name}" in saved for name in values)]:
            del moments[fqn]
        dcp.load(state, checkpoint_id=str(folder / SHARDED_DIR))
        # Not strict: the frozen parameters are not in it (they come from the model folder), and the parameters
        # dropped above have no optimizer state. dcp.load was strict: every key of the template was in the checkpoint.
        set_state_dict(self.objective, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(ignore_frozen_params=True, strict=False))
        sched.load_state_dict(torch.load(folder / TRAINER_FILE, weights_only=True)["scheduler"])


def _saved_ema(state: dict, folder: Path) -> dict:
    if "ema" not in state:
        raise ValueError(f"{folder}: the stage keeps an EMA but its checkpoint has none")
    return state["ema"]
