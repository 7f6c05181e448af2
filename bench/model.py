"""Model benchmarks: SCB conditioning cost against the paper's last-layer baseline, and the full preset's memory.

1. Step time, tiny preset, same process: a training step (flow loss forward + backward + AdamW, the alignment
   schedule: SCB + DiT trainable) with SCB (6 stacked VLM layers) against last-layer conditioning (`scb.num_taps=1`:
   the last pre-norm hidden state, same connector). Runs alternate so machine load hits both alike; the median of
   the rounds is compared. The paper's claim to check: SCB costs at most 15% more.
2. DiT time for a batch of prompts of mixed lengths, tiny preset, same process: one call with the padding masked
   out of the joint attention against one call per prompt length (what is needed without a mask, since padding the
   DiT attends to changes the result), forward + backward, batch 8 of ShapesWorld-like captions.
3. Memory tables, full preset, per training stage (`deepgen.model.memory`, what `deepgen describe --memory` prints):
   one GPU holding everything (DDP, bf16, no activation checkpointing), then the cluster policy (FSDP2 over
   `--gpus`, checkpointing every block); activations from the real forward and backward on meta tensors.

    .venv/bin/python bench/model.py [--rounds 8] [--batch 8] [--skip-time] [--skip-memory] [--gpus 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.model.describe import memory_stages
from deepgen.model.memory import format_plan, memory_plan


# ---------------------------------------------------------------- 1. SCB against last-layer conditioning, step time

def training_step_timer(num_taps: int, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = DeepGen(preset("tiny", {"scb": {"num_taps": num_taps}})).train()
    model.encoder.requires_grad_(False)
    model.vae.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, 64, 64, generator=gen) * 2 - 1
    captions = [f"a {c} circle at the top left" for c in ("red", "green", "blue", "yellow")] * (batch // 4 + 1)

    def step() -> float:
        tic = time.perf_counter()
        loss = model.flow_loss(images, captions[:batch], generator=torch.Generator().manual_seed(seed))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - tic

    return step


def time_conditioning(rounds: int, batch: int, steps_per_round: int = 3) -> dict[str, float]:
    timers = {"scb": training_step_timer(6, batch), "last_layer": training_step_timer(1, batch)}
    for timer in timers.values():  # warm-up: allocator, first-call overheads
        timer(), timer()
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            samples[name].append(statistics.median(timer() for _ in range(steps_per_round)))
    return {name: statistics.median(values) for name, values in samples.items()}


# ------------------------------------------------------- 2. mixed prompt lengths: one masked call or one per length

def time_padding_mask(rounds: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = DeepGen(preset("tiny")).train()
    words = ["a red circle", "two blue squares on the left", "a green triangle at the bottom right",
             "a purple square to the left of a yellow circle", "three orange circles"]
    captions = [words[i % len(words)] for i in range(batch)]
    with torch.no_grad():
        context, pooled, mask = model.condition(captions)
    x, sigma = torch.randn(batch, 4, 16, 16), torch.rand(batch)
    lengths = mask.sum(1).tolist()

    def masked() -> None:
        model.velocity(x, sigma, context, pooled, context_mask_BL=mask).square().mean().backward()

    def per_length() -> None:
        for n in sorted(set(lengths)):
            idx = torch.tensor([i for i, m in enumerate(lengths) if m == n])
            model.velocity(x[idx], sigma[idx], context[idx, -n:], pooled[idx]).square().mean().backward()

    timers = {"masked": masked, "per_length": per_length}
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds + 1):  # the first round warms up
        for name, fn in timers.items():
            tic = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - tic)
    return {name: statistics.median(values[1:]) for name, values in samples.items()} | {"groups": len(set(lengths))}


# ------------------------------------------------------------------------ 3. memory per stage, full preset (meta)

def memory_tables(gpus: int) -> str:
    """One GPU holding everything (DDP, bf16, no checkpointing) against the cluster policy (FSDP2 on `gpus`)."""
    stages = memory_stages("full")  # conf/cluster/parameters_training.yml (run from the project folder)
    replicated = {name: {**stage, "parallel": {**(stage.get("parallel") or {}), "strategy": "ddp",
                                               "activation_checkpointing": False}}
                  for name, stage in stages.items()}
    cfg = preset("full")
    return "\n\n".join([format_plan(memory_plan(cfg, replicated, 1)), format_plan(memory_plan(cfg, stages, gpus))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the sharded memory table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals made CPU steps 5x slower on this machine
    if not args.skip_time:
        times = time_conditioning(args.rounds, args.batch)
        ratio = times["scb"] / times["last_layer"]
        verdict = "within" if ratio <= 1.15 else "ABOVE"
        print(f"tiny preset, training step (batch {args.batch}, 64 px, SCB + DiT trainable, {args.threads} thread), "
              f"median of {args.rounds} alternating rounds:")
        print(f"  last-layer conditioning {times['last_layer'] * 1000:8.1f} ms/step")
        print(f"  SCB (6 stacked layers)  {times['scb'] * 1000:8.1f} ms/step")
        print(f"  ratio SCB / last-layer  {ratio:8.3f}  ({verdict} the 15% overhead target)")
        print()
        times = time_padding_mask(args.rounds, args.batch)
        print(f"tiny DiT forward + backward, {args.batch} prompts of {times['groups']} token lengths:")
        print(f"  one call per length     {times['per_length'] * 1000:8.1f} ms")
        print(f"  one masked call         {times['masked'] * 1000:8.1f} ms")
        print(f"  speed-up                {times['per_length'] / times['masked']:8.2f}x")
        print()
    if not args.skip_memory:
        print(memory_tables(args.gpus))


if __name__ == "__main__":
    main()
