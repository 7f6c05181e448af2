"""GPU memory of a training stage: GiB per GPU and the largest micro-batch that fits a card, without a GPU.

The activations come from the real forward and backward of the model's modules run on meta tensors (shapes only):
a TorchDispatchMode adds up the bytes of every tensor storage the step creates and subtracts them when freed, so the
peak includes what autograd saves, what the backward allocates and, with activation checkpointing (each VLM layer,
connector layer and DiT block wrapped in `torch.utils.checkpoint`), the recomputation one block at a time. Parameter
gradients are dropped as soon as they are accumulated (what FSDP2's reduce-scatter does; their sharded copies are
counted with the weights). Attention runs as the flash kernel a GPU uses: it saves q, k, v, the output and a float32
log-sum-exp per query row, never the seq x seq probabilities (the meta device would otherwise take the math path).
The peak is measured at micro-batch 1 and 2; their difference is the per-sample slope.

Weights, gradients and AdamW states follow from the stage's freeze schedule and its `parallel:` block (the same
`ParallelConfig` the training loop applies, read from the stage's configuration):
- DDP replicates everything; with bf16 compute, autocast also keeps a bf16 copy of each trained weight.
- FSDP2 shards the trained parameters (fp32 master), their gradients and both AdamW moments over the GPUs; the units
  in flight (the current and the prefetched one: two copies in bf16, plus the unsharded gradients in bf16 and their
  fp32 reduce-scatter input) are added once, for the largest unit (a VLM or connector layer); the root's group (the
  trained DiT, the bridge's own parameters: `deepgen.model.parallel.shard_units` says why) is gathered for the whole
  step: one bf16 copy, its unsharded bf16 gradients and their fp32 reduce-scatter input.
- Frozen parameters are stored in `frozen_dtype`, replicated, never wrapped; buffers follow their component (the
  DiT's position-embedding table is 0.84 GiB in fp32). RL adds a frozen copy of the DiT as the KL reference; an EMA
  (`ema_decay` > 0) one fp32 copy of the trained parameters, sharded like them.

Assumed sample (DESIGN.md §1): a prompt at the VLM's longest accepted length (`vlm.max_prompt_tokens`, 256 for the
full preset: the template plus the caption) and 128 think tokens; alignment and SFT measure an edit sample with one
512-px reference (256 vision tokens in the VLM at the ViT's 448 px, 1,024 reference latent tokens beside the 1,024
target tokens in the DiT), the larger of their two kinds; RL trains on text-to-image rollouts (no reference) with its
VLM and bridge frozen and the MSE flow loss standing in for its objective (the same DiT forward and backward). The
ViT and VAE run without gradients and are not measured (their transients are small beside the DiT's). A micro-batch
fits when its total stays under the card less `HEADROOM` of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from deepgen.model.config import ModelConfig
from deepgen.model.deepgen import DeepGen
from deepgen.model.dit import dit_forward
from deepgen.model.parallel import ParallelConfig, blocks, checkpoint_forward, shard_units, uncheckpoint_forward
from deepgen.model.schedule import COMPONENT_MODULES, meta_model

GiB = 2**30
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MASTER_DTYPE = "fp32"  # trained parameters, their gradients and AdamW's two moments
# Card memory a step may not plan on: CUDA context, NCCL buffers, allocator fragmentation. An assumption, not a
# measurement (no GPU here): check it against a measured peak when a device is lent (issue 17, item 4).
HEADROOM = 0.10


@dataclass(frozen=True)
class MemoryPolicy:
    """The stage's `parallel:` block plus what the plan assumes about its step: the measured sample's reference
    images and RL's frozen reference DiT (both follow from the stage's objective: `stage_policy`)."""

    parallel: ParallelConfig = ParallelConfig()
    references: int = 1  # reference images per measured sample (0: text-to-image)
    frozen_reference_dit: bool = False  # RL: a frozen copy of the DiT for the KL term


def stage_policy(name: str, stage: dict) -> MemoryPolicy:
    """A stage block as in conf/*/parameters_training.yml: its `parallel:` block; RL (objective grpo) trains on
    text-to-image rollouts beside a frozen reference DiT, the flow stages on edit samples with one reference."""
    parallel = ParallelConfig.from_dict(stage.get("parallel"), where=f"stage {name!r}: parallel")
    rl = stage.get("objective", "flow") == "grpo"
    return MemoryPolicy(parallel, references=0 if rl else 1, frozen_reference_dit=rl)


# ------------------------------------------------------------------------------------------- measuring activations

class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created inside the mode and still alive, and their peak. Storages that existed
    before (weights) are registered with `known` and never counted, also when a view of them is returned."""

    def __init__(self, known=()):
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}
        self._known = {id(t.untyped_storage()) for t in known}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = id(storage)
        if key in self._known or key in self._refs:
            return
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)

        def freed(_, size=size, key=key):
            self.live -= size
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)


def _flash_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """scaled_dot_product_attention through the flash kernel (the CPU one, which has meta kernels): it saves what
    the GPU flash kernel saves, and takes grouped key/value heads as they are."""
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill_(
            ~attn_mask, float("-inf"))
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


@contextlib.contextmanager
def flash_attention():
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _flash_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@contextlib.contextmanager
def checkpointed(modules: list[torch.nn.Module]):
    """Each module's forward recomputed in backward (as training's activation checkpointing) while the block runs."""
    for module in modules:
        checkpoint_forward(module)
    try:
        yield
    finally:
        for module in modules:
            uncheckpoint_forward(module)


@contextlib.contextmanager
def grads_dropped(params: list[torch.nn.Parameter]):
    """Free each parameter gradient once accumulated: sharded gradients are counted apart from activations."""
    handles = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None)) for p in params]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def sample_tokens(cfg: ModelConfig, references: int) -> dict[str, int]:
    """Token counts of one measured sample (module docstring)."""
    vision = ((cfg.image_size * 28 // 32) // 28) ** 2 * references  # ViT at 28/32 of the size, 28-px merged patches
    latent = cfg.image_size // 2 ** (len(cfg.vae.block_out_channels) - 1)
    return {"prompt": cfg.vlm.max_prompt_tokens + vision, "think": cfg.scb.num_think_tokens,
            "latent": latent, "dit": (latent // cfg.dit.patch_size) ** 2 * (1 + references)}


def training_step(model: DeepGen, batch: int, references: int, frozen_reference_dit: bool = False) -> torch.Tensor:
    """The stage's flow-loss forward on made-up inputs of the sample's shape, on the model's device and dtype.

    The prompt (token and vision embeddings) enters the VLM's language model as embeddings, the think tokens
    appended, as `PromptEncoder` does after the ViT; then the bridge and the DiT with the reference latents.
    """
    cfg, think = model.cfg, model.scb.think_tokens
    device, dtype = think.device, next(model.dit.parameters()).dtype
    tokens = sample_tokens(cfg, references)
    embed = model.encoder.vlm.get_input_embeddings()
    prompt = embed(torch.zeros(batch, tokens["prompt"], dtype=torch.long, device=device))
    embeds = torch.cat([prompt, think.to(prompt.dtype).unsqueeze(0).expand(batch, -1, -1)], dim=1)
    seq = embeds.shape[1]
    positions = torch.arange(seq, device=device).view(1, 1, seq).expand(3, batch, seq)
    hidden = model.encoder.vlm.language_model(inputs_embeds=embeds, position_ids=positions,
                                              output_hidden_states=True, use_cache=False).hidden_states
    mask = torch.ones(batch, seq, dtype=torch.bool, device=device)
    context, pooled = model.scb(hidden, mask)
    del hidden
    latent = (batch, cfg.dit.in_channels, tokens["latent"], tokens["latent"])
    x_t, target = torch.randn(latent, device=device, dtype=dtype), torch.randn(latent, device=device, dtype=dtype)
    refs = [torch.randn(latent, device=device, dtype=dtype) for _ in range(references)] or None
    timestep = torch.rand(batch, device=device, dtype=dtype) * 1000
    context_mask = mask if cfg.scb.mask_padding else None
    args = (context.to(dtype), pooled.to(dtype), timestep, refs, context_mask)
    if frozen_reference_dit:  # the KL reference: the same architecture, frozen, without gradients
        with torch.no_grad():
            reference_velocity = dit_forward(model.dit, x_t, *args)
        target = target + reference_velocity
    velocity = dit_forward(model.dit, x_t, *args)
    return ((velocity.float() - target.float()) ** 2).mean()


def activation_peak(model: DeepGen, batch: int, policy: MemoryPolicy) -> int:
    """Peak bytes the step allocates beyond the weights: forward, then backward when anything trains."""
    params = [p for p in model.parameters() if p.requires_grad]
    known = list(model.parameters()) + list(model.buffers())
    units = blocks(model) if policy.parallel.activation_checkpointing else []
    with flash_attention(), checkpointed(units), grads_dropped(params), LiveBytes(known) as tracker:
        loss = training_step(model, batch, policy.references, policy.frozen_reference_dit)
        if loss.requires_grad:
            loss.backward()
        del loss
    return tracker.peak


# ----------------------------------------------------------------------------------- weights, gradients, optimizer

def model_state_bytes(model: DeepGen, policy: MemoryPolicy, gpus: int) -> dict[str, int]:
    """Per GPU: weights (frozen, trained, buffers), gradients, AdamW moments, EMA, FSDP2 units in flight, RL
    reference."""
    parallel = policy.parallel
    size = {"compute": DTYPES[parallel.param_dtype].itemsize, "master": DTYPES[MASTER_DTYPE].itemsize,
            "frozen": DTYPES[parallel.frozen_dtype].itemsize}
    sharded = parallel.strategy == "fsdp2"
    weights = grads = optimizer = ema = 0
    for attr in COMPONENT_MODULES.values():
        module = getattr(model, attr)
        trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        buffers = sum(b.numel() for b in module.buffers())
        local = math.ceil(trained / gpus) if sharded else trained
        weights += frozen * size["frozen"] + buffers * (size["master"] if trained else size["frozen"])
        weights += local * size["master"]
        if not sharded and parallel.param_dtype != MASTER_DTYPE:
            weights += trained * size["compute"]  # autocast's cast cache holds each trained weight in bf16
        grads += local * size["master"]
        optimizer += 2 * local * size["master"]
        ema += local * size["master"] if parallel.ema_decay > 0 else 0
    in_flight = 0
    if sharded:
        units = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in shard_units(model)]
        root = sum(p.numel() for p in model.parameters() if p.requires_grad) - sum(units)
        in_flight = max(units, default=0) * (3 * size["compute"] + size["master"])
        in_flight += root * (2 * size["compute"] + size["master"])  # the root's group is gathered for the whole step
    reference = 0
    if policy.frozen_reference_dit:
        reference = sum(t.numel() for t in [*model.dit.parameters(), *model.dit.buffers()]) * size["frozen"]
    return {"weights": weights, "gradients": grads, "optimizer": optimizer, "ema": ema, "fsdp_in_flight": in_flight,
            "reference_dit": reference}


# --------------------------------------------------------------------------------------------------- the plan

def stage_memory(cfg: ModelConfig, stage: dict, policy: MemoryPolicy, gpus: int, card_gib: float) -> dict:
    """GiB per GPU at micro-batch 1, per extra sample, and the largest micro-batch under the card less headroom."""
    if gpus < 1:
        raise ValueError(f"--gpus must be at least 1, got {gpus}")
    model = meta_model(cfg, stage).to(DTYPES[policy.parallel.param_dtype])
    one, two = activation_peak(model, 1, policy), activation_peak(model, 2, policy)
    state = model_state_bytes(model, policy, gpus)
    per_sample = two - one
    fixed = sum(state.values()) + one - per_sample  # what micro-batch 0 would need: the line through 1 and 2
    usable = card_gib * (1 - HEADROOM) * GiB
    micro_batch = max(0, math.floor((usable - fixed) / per_sample)) if per_sample > 0 else 0
    return {"gib_per_gpu": round((fixed + per_sample) / GiB, 2), "micro_batch": micro_batch,
            "gib_per_sample": round(per_sample / GiB, 3),
            "gib_at_micro_batch": round((fixed + per_sample * max(micro_batch, 1)) / GiB, 2),
            "parts_gib": {k: round(v / GiB, 2) for k, v in state.items()} | {"activations": round(one / GiB, 2)},
            "policy": dataclasses.asdict(policy)}


def memory_plan(cfg: ModelConfig, stages: dict[str, dict], gpus: int, card_gib: float = 80.0) -> dict:
    """Every stage that trains the generator (objective flow or grpo, steps > 0), each under its own `parallel:`
    block; the tiny preset's VAE stage (objective vae) is not modelled."""
    plan = {"preset": cfg.preset, "gpus": gpus, "card_gib": card_gib, "headroom": HEADROOM, "stages": {}}
    for name, stage in stages.items():
        if stage.get("objective", "flow") == "vae" or stage.get("steps", 1) == 0:
            continue
        plan["stages"][name] = stage_memory(cfg, {**stage, "name": name}, stage_policy(name, stage), gpus, card_gib)
    return plan


def format_plan(plan: dict) -> str:
    lines = [f"deepgen {plan['preset']} preset: memory per GPU on {plan['gpus']} GPU(s) of {plan['card_gib']:g} GiB "
             f"(real forward + backward on meta tensors; {plan['headroom']:.0%} of the card kept free)", "",
             f"{'stage':<11}{'parallel':<9}{'ckpt':<6}{'weights':>9}{'grads':>8}{'adam':>7}{'ema':>6}{'units':>7}"
             f"{'ref':>6}{'act@1':>8}{'GiB@1':>8}{'/sample':>9}{'micro-batch':>13}{'GiB@mb':>8}"]
    for name, s in plan["stages"].items():
        p, g = s["policy"]["parallel"], s["parts_gib"]
        fits = s["micro_batch"] >= 1
        lines.append(f"{name:<11}{p['strategy']:<9}{'yes' if p['activation_checkpointing'] else 'no':<6}"
                     f"{g['weights']:>9.2f}{g['gradients']:>8.2f}{g['optimizer']:>7.2f}{g['ema']:>6.2f}"
                     f"{g['fsdp_in_flight']:>7.2f}{g['reference_dit']:>6.2f}{g['activations']:>8.2f}"
                     f"{s['gib_per_gpu']:>8.2f}{s['gib_per_sample']:>9.3f}"
                     f"{s['micro_batch'] if fits else 'DOES NOT FIT':>13}{s['gib_at_micro_batch']:>8.2f}")
    lines += ["", "parallel, ckpt, ema: the stage's `parallel:` block (strategy, activation_checkpointing, ema_decay);",
              "weights: frozen parts in the frozen dtype, trained ones as fp32 masters (sharded under FSDP2);",
              "units: FSDP2's gathered root group (the DiT) and largest layer + prefetch, with unsharded grads;",
              "ref: RL's frozen KL-reference DiT;",
              "act@1: peak step allocation at micro-batch 1; micro-batch: the largest that fits (per micro-step:",
              "grad_accumulation multiplies the batch an optimizer step sees, not the memory)."]
    return "\n".join(lines)
