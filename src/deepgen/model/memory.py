"""GPU memory of a training stage: GiB per GPU and the largest micro-batch that fits a card, without a GPU.

The activations come from the real forward and backward of the model's modules run on meta tensors (shapes only):
a TorchDispatchMode adds up the bytes of every tensor storage the step creates and subtracts them when freed, so the
peak includes what autograd saves, what the backward allocates and, with activation checkpointing (each VLM layer,
connector layer and DiT block wrapped in `torch.utils.checkpoint`), the recomputation one block at a time. Parameter
gradients are dropped as soon as they are accumulated (what FSDP2's reduce-scatter does; their sharded copies are
counted with the weights). Attention runs as the flash kernel a GPU uses: it saves q, k, v, the output and a float32
log-sum-exp per query row, never the seq x seq probabilities (the meta device would otherwise take the math path).
The peak is measured at micro-batch 1 and 2; their difference is the per-sample slope.

Weights, gradients and AdamW states follow from the stage's freeze schedule and its `MemoryPolicy`:
- DDP replicates everything; with bf16 compute, autocast also keeps a bf16 copy of each trained weight.
- FSDP2 shards the trained parameters (fp32 master), their gradients and both AdamW moments over the GPUs; the units
  in flight (the current and the prefetched one: two copies in bf16, plus the unsharded gradients in bf16 and their
  fp32 reduce-scatter input) are added once, for the largest unit (a DiT block, a VLM or connector layer).
- Frozen parameters are stored in bf16, replicated, never wrapped; buffers follow their component (the DiT's
  position-embedding table is 0.84 GiB in fp32). RL adds a frozen copy of the DiT as the KL reference.

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
from torch.utils.checkpoint import checkpoint

from deepgen.model.config import ModelConfig
from deepgen.model.deepgen import DeepGen
from deepgen.model.dit import dit_forward
from deepgen.model.schedule import COMPONENT_MODULES, meta_model

GiB = 2**30
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Card memory a step may not plan on: CUDA context, NCCL buffers, allocator fragmentation. An assumption, not a
# measurement (no GPU here): check it against a measured peak when a device is lent (issue 17, item 4).
HEADROOM = 0.10


@dataclass(frozen=True)
class MemoryPolicy:
    """How a stage holds the model on its GPUs. Belongs in the stage config (keys named as its fields)."""

    parallelism: str = "fsdp2"  # "ddp": every GPU holds everything; "fsdp2": trained parts sharded over the GPUs
    compute_dtype: str = "bf16"  # the forward's weights and activations
    master_dtype: str = "fp32"  # trained parameters, their gradients, AdamW's two moments
    frozen_dtype: str = "bf16"  # frozen parameters (replicated, never wrapped for gradients)
    activation_checkpointing: bool = True  # per block: VLM layer, connector layer, DiT block
    references: int = 1  # reference images per measured sample (0: text-to-image)
    frozen_reference_dit: bool = False  # RL: a frozen copy of the DiT for the KL term

    def __post_init__(self):
        if self.parallelism not in ("ddp", "fsdp2"):
            raise ValueError(f"memory policy: parallelism must be 'ddp' or 'fsdp2', got {self.parallelism!r}")
        for name in ("compute_dtype", "master_dtype", "frozen_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"memory policy: {name} must be one of {sorted(DTYPES)}, got {getattr(self, name)!r}")


# The full preset on a GPU cluster (issue 17): FSDP2, bf16 compute and frozen parts, checkpointing every block.
# The tiny preset's default is DDP in fp32 on CPU workers without checkpointing.
FULL_POLICIES = {"alignment": MemoryPolicy(), "sft": MemoryPolicy(),
                 "rl": MemoryPolicy(references=0, frozen_reference_dit=True)}
TINY_POLICY = MemoryPolicy(parallelism="ddp", compute_dtype="fp32", frozen_dtype="fp32",
                           activation_checkpointing=False)


def policy_for(preset_name: str, stage: str) -> MemoryPolicy:
    if preset_name == "tiny":
        return dataclasses.replace(TINY_POLICY, frozen_reference_dit=stage == "rl", references=int(stage != "rl"))
    return FULL_POLICIES.get(stage, MemoryPolicy())


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


def blocks(model: DeepGen) -> list[torch.nn.Module]:
    """The checkpointing (and FSDP2) units: VLM decoder layers, connector layers, DiT blocks."""
    scb = list(model.scb.encoder.layers) if model.scb.encoder is not None else []
    return list(model.encoder.vlm.language_model.layers) + scb + list(model.dit.transformer_blocks)


@contextlib.contextmanager
def checkpointed(modules: list[torch.nn.Module]):
    """Each module's forward recomputed in backward (non-reentrant torch.utils.checkpoint) while the block runs."""
    originals = [m.forward for m in modules]
    for module, forward in zip(modules, originals):
        module.forward = lambda *a, _f=forward, **k: checkpoint(_f, *a, use_reentrant=False, **k)
    try:
        yield
    finally:
        for module in modules:
            del module.forward  # the instance attribute; the class's forward shows again


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
    units = blocks(model) if policy.activation_checkpointing else []
    with flash_attention(), checkpointed(units), grads_dropped(params), LiveBytes(known) as tracker:
        loss = training_step(model, batch, policy.references, policy.frozen_reference_dit)
        if loss.requires_grad:
            loss.backward()
        del loss
    return tracker.peak


# ----------------------------------------------------------------------------------- weights, gradients, optimizer

def model_state_bytes(model: DeepGen, policy: MemoryPolicy, gpus: int) -> dict[str, int]:
    """Per GPU: weights (frozen, trained, buffers), gradients, AdamW moments, FSDP2 units in flight, RL reference."""
    size = {role: DTYPES[getattr(policy, f"{role}_dtype")].itemsize for role in ("compute", "master", "frozen")}
    weights = grads = optimizer = 0
    for attr in COMPONENT_MODULES.values():
        module = getattr(model, attr)
        trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        buffers = sum(b.numel() for b in module.buffers())
        shards = gpus if policy.parallelism == "fsdp2" else 1
        weights += frozen * size["frozen"] + buffers * (size["master"] if trained else size["frozen"])
        weights += math.ceil(trained / shards) * size["master"]
        if policy.parallelism == "ddp" and policy.compute_dtype != policy.master_dtype:
            weights += trained * size["compute"]  # autocast's cast cache holds each trained weight in bf16
        grads += math.ceil(trained / shards) * size["master"]
        optimizer += 2 * math.ceil(trained / shards) * size["master"]
    in_flight = 0
    if policy.parallelism == "fsdp2":
        unit = max((sum(p.numel() for p in m.parameters() if p.requires_grad) for m in blocks(model)), default=0)
        in_flight = unit * (3 * size["compute"] + size["master"])
    reference = 0
    if policy.frozen_reference_dit:
        reference = sum(t.numel() for t in [*model.dit.parameters(), *model.dit.buffers()]) * size["frozen"]
    return {"weights": weights, "gradients": grads, "optimizer": optimizer, "fsdp_in_flight": in_flight,
            "reference_dit": reference}


# --------------------------------------------------------------------------------------------------- the plan

def stage_memory(cfg: ModelConfig, stage: dict, policy: MemoryPolicy, gpus: int, card_gib: float) -> dict:
    """GiB per GPU at micro-batch 1, per extra sample, and the largest micro-batch under the card less headroom."""
    if gpus < 1:
        raise ValueError(f"--gpus must be at least 1, got {gpus}")
    model = meta_model(cfg, stage).to(DTYPES[policy.compute_dtype])
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


def memory_plan(cfg: ModelConfig, stages: dict[str, dict], gpus: int, card_gib: float = 80.0,
                policies: dict[str, MemoryPolicy] | None = None) -> dict:
    policies = policies or {}
    plan = {"preset": cfg.preset, "gpus": gpus, "card_gib": card_gib, "headroom": HEADROOM, "stages": {}}
    for name, stage in stages.items():
        policy = policies.get(name) or policy_for(cfg.preset, name)
        plan["stages"][name] = stage_memory(cfg, {**stage, "name": name}, policy, gpus, card_gib)
    return plan


def format_plan(plan: dict) -> str:
    lines = [f"deepgen {plan['preset']} preset: memory per GPU on {plan['gpus']} GPU(s) of {plan['card_gib']:g} GiB "
             f"(real forward + backward on meta tensors; {plan['headroom']:.0%} of the card kept free)", "",
             f"{'stage':<11}{'parallel':<9}{'ckpt':<6}{'weights':>9}{'grads':>8}{'adam':>7}{'units':>7}{'ref':>6}"
             f"{'act@1':>8}{'GiB@1':>8}{'/sample':>9}{'micro-batch':>13}{'GiB@mb':>8}"]
    for name, s in plan["stages"].items():
        p, g = s["policy"], s["parts_gib"]
        fits = s["micro_batch"] >= 1
        lines.append(f"{name:<11}{p['parallelism']:<9}{'yes' if p['activation_checkpointing'] else 'no':<6}"
                     f"{g['weights']:>9.2f}{g['gradients']:>8.2f}{g['optimizer']:>7.2f}{g['fsdp_in_flight']:>7.2f}"
                     f"{g['reference_dit']:>6.2f}{g['activations']:>8.2f}{s['gib_per_gpu']:>8.2f}"
                     f"{s['gib_per_sample']:>9.3f}{s['micro_batch'] if fits else 'DOES NOT FIT':>13}"
                     f"{s['gib_at_micro_batch']:>8.2f}")
    lines += ["", "weights: frozen parts in the frozen dtype, trained ones as fp32 masters (sharded under FSDP2);",
              "units: FSDP2's gathered block + prefetch + unsharded grads; ref: RL's frozen KL-reference DiT;",
              "act@1: peak step allocation at micro-batch 1; micro-batch: the largest that fits."]
    return "\n".join(lines)
