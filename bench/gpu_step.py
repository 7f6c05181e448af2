"""The full preset's DiT + SCB training step on one GPU in bf16: samples/s and MFU, FSDP2 and activation checkpointing
each on and off.

What runs: the full preset's bridge (6 taps of the 2048-wide VLM, the release's 6-layer connector, 128 think tokens)
and its SD3.5-Medium DiT, built from the config with random weights (no download), both trained (fp32 master weights,
fused AdamW, gradient clipping, as the loop does). The 3B VLM is NOT run: random hidden states of its shape stand in
for its six tapped layers (prompt tokens + think tokens, 2048 wide), so the step is the bridge and DiT forward +
backward that every flow stage pays on top of the VLM. The sample is a 512-px text-to-image one: 1,024 latent
tokens, a 256-token prompt + 128 think tokens (DESIGN.md section 1); `--references 1` adds a 1,024-token reference.

Four layouts: the plain module with autocast bf16 (what DDP runs on each GPU; with one GPU there is nothing to
all-reduce) or FSDP2 (`torch.distributed.fsdp.fully_shard` on a 1-rank process group: each DiT block and connector
layer a unit, then the root; bf16 parameters, fp32 gradient reduction); each with activation checkpointing (every
DiT block and connector layer recomputed in backward) off and on. A layout that runs out of memory halves its
micro-batch and says so.

MFU: model FLOPs per sample (FlopCounterMode over the same step on meta tensors, without checkpointing: the
recomputation is not model work; attention's two matmuls forward and four backward) x samples/s over the GPU's peak
dense bf16 FLOP/s (`deepgen.train.throughput`; `DEEPGEN_PEAK_TFLOPS` overrides). Target: >= 40%.

Without a GPU it prints one line and exits 0; `--tiny` runs the same code on the tiny preset on the CPU (a smoke
test of the code path: its timings and MFU mean nothing).

    .venv/bin/python bench/gpu_step.py [--batch 16] [--steps 10] [--warmup 3] [--references 0]
        [--layouts plain,plain+ac,fsdp2,fsdp2+ac] [--compile] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time

import torch
from torch import nn

LAYOUTS = ("plain", "plain+ac", "fsdp2", "fsdp2+ac")
TARGET_MFU = 0.40


class DiTSCBStep(nn.Module):
    """The bridge and the DiT as one module whose forward is the flow loss (FSDP2's root gathers what the units
    leave: the DiT's embedders and output layers, the bridge's projections)."""

    def __init__(self, cfg):
        super().__init__()
        from deepgen.model.dit import build_dit
        from deepgen.model.scb import StackedChannelBridge

        self.cfg = cfg
        self.dit = build_dit(cfg.dit)
        self.scb = StackedChannelBridge(cfg.scb, cfg.vlm.hidden_size, cfg.vlm.num_layers,
                                        self.dit.config.joint_attention_dim, self.dit.config.pooled_projection_dim)

    def forward(self, hidden, mask, x_t, target, timestep, refs):
        from deepgen.model.dit import dit_forward

        context, pooled = self.scb(hidden, mask)
        velocity = dit_forward(self.dit, x_t, context, pooled, timestep, refs,
                               mask if self.cfg.scb.mask_padding else None)
        return ((velocity.float() - target.float()) ** 2).mean()


def make_inputs(cfg, batch: int, references: int, device, seed: int = 0) -> tuple:
    """Random stand-ins of the step's shapes: the VLM's hidden states (only the tapped layers), latents, timesteps."""
    from deepgen.model.memory import sample_tokens
    from deepgen.model.scb import tap_indices

    tokens = sample_tokens(cfg, references)
    seq = tokens["prompt"] + tokens["think"]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(device)  # noqa: E731
    hidden = [None] * (cfg.vlm.num_layers + 1)
    for i in tap_indices(cfg.vlm.num_layers, cfg.scb.num_taps):
        hidden[i] = rand(batch, seq, cfg.vlm.hidden_size)
    latent = (batch, cfg.dit.in_channels, tokens["latent"], tokens["latent"])
    mask = torch.ones(batch, seq, dtype=torch.bool, device=device)
    refs = [rand(*latent) for _ in range(references)] or None
    timestep = (torch.rand(batch, generator=gen) * 1000).to(device)
    return hidden, mask, rand(*latent), rand(*latent), timestep, refs


def flops_per_sample(cfg, references: int) -> int:
    """Model FLOPs of one sample's forward + backward, counted on meta tensors (no checkpointing)."""
    from deepgen.train.throughput import count_flops

    with torch.device("meta"):
        model = DiTSCBStep(cfg)
    inputs = make_inputs(cfg, 1, references, "meta")
    return count_flops(lambda: model(*inputs).backward())


@contextlib.contextmanager
def process_group(device: torch.device):
    """A 1-rank process group (FSDP2 needs one): NCCL on a GPU, gloo on the CPU."""
    import torch.distributed as dist

    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{folder}/pg",
                                rank=0, world_size=1, device_id=device if device.type == "cuda" else None)
        try:
            yield
        finally:
            dist.destroy_process_group()


def build(cfg, layout: str, device: torch.device, compile_blocks: bool) -> tuple[nn.Module, bool]:
    """The step module in `layout`; returns it and whether the forward needs autocast (the plain module)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    torch.manual_seed(0)
    with torch.device(device):
        model = DiTSCBStep(cfg)
    model.to(device)  # buffers made from numpy (the DiT's position table) are created on the CPU
    # torchtitan's order: checkpointing, then compile, then FSDP2, each per unit (block or connector layer)
    lists = [model.dit.transformer_blocks] + ([model.scb.encoder.layers] if model.scb.encoder is not None else [])
    for units in lists:
        for i, unit in enumerate(units):
            if layout.endswith("+ac"):
                unit = checkpoint_wrapper(unit)
            if compile_blocks:
                unit.compile()
            units[i] = unit
    if not layout.startswith("fsdp2"):
        return model, True
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for units in lists:
        for unit in units:
            fully_shard(unit, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model, False


def run_layout(cfg, layout: str, batch: int, args, device: torch.device) -> dict:
    model, autocast = build(cfg, layout, device, args.compile)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    inputs = make_inputs(cfg, batch, args.references, device)
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync()
            start = time.perf_counter()
        with cast:
            loss = model(*inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    del model, opt, inputs
    return {"step_s": seconds, "samples_per_s": batch / seconds, "peak_gib": peak_gib, "loss": float(loss.detach())}


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int,
                        help="micro-batch per step, halved on out-of-memory (default 16; 2 with --tiny)")
    parser.add_argument("--steps", type=int, help="timed steps per layout (default 10; 1 with --tiny)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 3; 1 with --tiny)")
    parser.add_argument("--references", type=int, default=0, help="reference images per sample (edits: 1)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--compile", action="store_true", help="torch.compile each DiT block and connector layer")
    parser.add_argument("--tiny", action="store_true", help="the tiny preset on the CPU: a smoke run of the code")
    args = parser.parse_args()
    for name, full, tiny in (("batch", 16, 2), ("steps", 10, 1), ("warmup", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    bad = sorted(set(layouts) - set(LAYOUTS))
    if bad:
        sys.exit(f"bench/gpu_step.py: unknown layout(s) {bad}; choose from {LAYOUTS}")
    if not args.tiny and not torch.cuda.is_available():
        print(f"bench/gpu_step.py: no CUDA GPU here (torch {torch.__version__}); nothing measured. Run it on a GPU "
              "machine with a CUDA build of torch, or with --tiny for a CPU smoke run of the same code.")
        return

    from deepgen.model.config import preset
    from deepgen.train.throughput import peak_flops

    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = preset("tiny" if args.tiny else "full")
    device = torch.device("cpu") if args.tiny else torch.device("cuda", torch.cuda.current_device())
    if args.tiny:
        cfg = dataclasses.replace(cfg, scb=dataclasses.replace(cfg.scb, depth=2))  # exercise connector units too
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (--tiny smoke run)"
    peak = peak_flops(device)
    flops = flops_per_sample(cfg, args.references)
    with torch.device("meta"):
        counts = DiTSCBStep(cfg)
    dit_params = sum(p.numel() for p in counts.dit.parameters())
    scb_params = sum(p.numel() for p in counts.scb.parameters())
    print(f"{cfg.preset} preset DiT ({dit_params / 1e6:,.0f} M params) + SCB ({scb_params / 1e6:,.0f} M), both "
          f"trained, on {name}; " + (f"peak bf16 {peak / 1e12:.4g} TFLOP/s" if peak else
                                     "no peak FLOP/s known for it (set DEEPGEN_PEAK_TFLOPS): MFU not computed"))
    print(f"the VLM is not run: random hidden states of its shape stand in for its tapped layers; "
          f"{cfg.image_size} px, {args.references} reference(s); {flops / 1e12:.4g} model TFLOP per sample "
          f"(forward + backward); {args.warmup} warm-up + {args.steps} timed steps per layout", flush=True)
    results = {}
    with process_group(device):
        for layout in layouts:
            batch, result = args.batch, None
            while batch >= 1 and result is None:
                try:
                    result = run_layout(cfg, layout, batch, args, device)
                except torch.OutOfMemoryError:
                    print(f"  {layout:<9} out of memory at micro-batch {batch}; halving", flush=True)
                    batch //= 2
                free(device)  # outside the handler: its traceback held the model
            if result is None:
                print(f"  {layout:<9} does not fit at micro-batch 1", flush=True)
                continue
            tflops = result["samples_per_s"] * flops / 1e12
            mfu = f"MFU {tflops * 1e12 / peak:6.1%}" if peak else "MFU n/a"
            results[layout] = tflops * 1e12 / peak if peak else None
            print(f"  {layout:<9} micro-batch {batch:>3}: {result['step_s'] * 1000:8.1f} ms/step "
                  f"{result['samples_per_s']:8.2f} samples/s {tflops:8.4g} TFLOP/s  {mfu}  "
                  f"peak memory {result['peak_gib']:.1f} GiB  (loss {result['loss']:.3f})", flush=True)
    measured = {k: v for k, v in results.items() if v is not None}
    if measured:
        best = max(measured, key=measured.get)
        verdict = "meets" if measured[best] >= TARGET_MFU else "BELOW"
        print(f"best MFU {measured[best]:.1%} ({best}): {verdict} the {TARGET_MFU:.0%} target")
    else:
        print(f"{len(results)} layout(s) ran; MFU needs a GPU's peak FLOP/s")


if __name__ == "__main__":
    main()
