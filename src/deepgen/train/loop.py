"""The per-worker training loop that Ray Train runs on every worker (DDP or FSDP2 over gloo on CPU, NCCL on GPUs).

Every rank builds the same model; the stage's `parallel:` block says how the objective is wrapped
(`deepgen.train.distributed`: DDP broadcasts rank 0's weights; FSDP2 shards the trained parts), with mixed precision,
activation checkpointing, gradient accumulation and an optional EMA. Rank 0 alone logs to MLflow and writes the model
folder; every rank calls `ray.train.report` (a collective). A restarted run finds its latest checkpoint through
`ray.train.get_checkpoint()` (same run name and storage path) and continues from that step.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from tqdm import tqdm

from deepgen import tracking as mlflow_log
from deepgen.model import vae as vae_ops
from deepgen.model.checkpoint import load_checkpoint, save_checkpoint, stored_tensors
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.model.lineage import storage_plan
from deepgen.train import distributed, rank_state, throughput
from deepgen.train.config import StageConfig
from deepgen.train.ema import EMA
from deepgen.train.freeze import apply_schedule, param_groups
from deepgen.train.heldout import heldout_scores
from deepgen.train.objectives import ObjectiveContext, build_objective
from deepgen.train.preview import preview_grid


def init_model(init: dict) -> DeepGen:
    """From a parent checkpoint, or fresh from a preset (seeded: every rank builds identical weights)."""
    if init.get("checkpoint"):
        return load_checkpoint(init["checkpoint"])
    torch.manual_seed(init.get("seed", 0))
    return DeepGen(preset(init["preset"], init.get("overrides")))


def lr_lambda(stage: StageConfig):
    warmup = max(1, int(stage.optim.warmup_fraction * stage.steps))
    floor = stage.optim.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, stage.steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def train_loop(config: dict) -> None:
    stage = StageConfig.from_dict(config["stage"]["name"], config["stage"])
    torch.set_num_threads(stage.scaling.torch_threads)
    torch.set_flush_denormal(True)  # denormal weights made CPU steps 5x slower mid-run here
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    start, resumed, saved = 0, ray.train.get_checkpoint(), None
    resumed_files = contextlib.ExitStack()  # the resumed checkpoint stays readable until its trainer state is loaded
    if resumed:
        with contextlib.nullcontext(resumed_files.enter_context(resumed.as_directory())) as folder:
            model = load_checkpoint(Path(folder) / "model")
            start = json.loads((Path(folder) / "state.json").read_text())["step"]
            saved = rank_state.load(folder, rank, world)
        if saved is None:
            print(f"{stage.name}: rank {rank} finds no data state in the checkpoint: its stream starts over",
                  flush=True)
        if rank == 0:
            print(f"{stage.name}: resuming from the step-{start} checkpoint", flush=True)
    else:
        model = init_model(config["init"])
    # Noise, timesteps, caption dropout, crops and LoRA init draw from torch's global generator: seeded per stage and
    # rank here; a resumed rank restores its generators and data position (rank_state) just before its first step, so
    # it continues with the batches and noise of a run that never stopped
    seed = stage.seed * 1000 + rank
    torch.manual_seed(seed)
    random.seed(seed)
    counts = apply_schedule(model, stage)
    if not any(p.requires_grad for p in model.vae.parameters()):
        model.latent_cache = vae_ops.LatentCache()  # frozen VAE: encode each distinct image once
    tracking = config.get("tracking") if rank == 0 else None
    objective = build_objective(model, stage, ObjectiveContext(
        data=config["data"], seed=seed, init=config["init"], resumed=bool(resumed), rank=rank, world_size=world,
        tracking=tracking, all_reduce_mean=_all_reduce_mean))
    if stage.steps == 0:  # e.g. the full preset's VAE stage: package the initial weights as a checkpoint, unchanged
        _report(objective, None, None, 0, rank, config, {"step": 0, "image_sizes": []})
        return
    model.train()
    parallel = distributed.wrap(objective, stage.parallel)  # DDP or FSDP2 (before the optimizer: FSDP2 swaps params)
    groups = param_groups(model, stage)
    params = [p for group in groups for p in group["params"]]
    # fused: one kernel over all tensors. Measured with ~3.3M params on 1 CPU thread: 24 ms (default) -> 9 ms per
    # step; in the default run alignment went from 2.2 to 2.5 it/s
    opt = torch.optim.AdamW(groups, lr=stage.optim.lr, betas=stage.optim.betas, weight_decay=stage.optim.weight_decay,
                            fused=True)
    schedule = lr_lambda(stage)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    ema = EMA(distributed.component_params(model), stage.parallel.ema_decay) if stage.parallel.ema_decay else None
    if resumed:
        parallel.load(Path(folder), opt, sched, ema)
    resumed_files.close()
    if rank == 0 and start == 0:
        mlflow_log.log_params(tracking, {f"{stage.name}.trainable.{k}": str(v) for k, v in counts.items()})
    if saved is not None:
        objective.load_data_state(saved["data"])
    stream = objective.batches()
    checks = config.get("heldout") if stage.heldout_every and rank == 0 and not parallel.sharded else None
    if checks and start == 0:  # the curve's first point
        _heldout_check(model, checks, stage, 0, tracking)
    if saved is not None:
        rank_state.restore_generators(saved)
    window, extras, tic = [], {}, time.time()
    bar = tqdm(range(start, stage.steps), desc=stage.name, disable=rank != 0, mininterval=15, initial=start,
               total=stage.steps)
    device = ray.train.torch.get_device()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=stage.parallel.param_dtype == "bf16")
    micro_steps = stage.parallel.grad_accumulation
    # MFU on GPUs (rank 0, flow stages): model FLOPs per sample counted once, on the first batch's shape
    peak = throughput.peak_flops(device) if rank == 0 and stage.objective == "flow" else None
    sample_flops = None
    for step in bar:
        opt.zero_grad(set_to_none=True)
        for micro in range(micro_steps):  # gradients summed over the micro-batches, synchronised on the last
            parallel.gather()  # FSDP2: the DiT's weights whole before the batch is drawn (RL rolls out with them)
            batch = next(stream)
            if peak and sample_flops is None:
                counting = time.time()
                sample_flops = throughput.batch_sample_flops(model, config["stage"], batch)
                tic += time.time() - counting  # seconds on meta tensors, not training time
            with parallel.micro_step(last=micro == micro_steps - 1):
                with autocast:
                    loss, step_metrics = parallel.module(batch)
                (loss / micro_steps if micro_steps > 1 else loss).backward()
            window.append(loss.item())
            for key, value in step_metrics.items():
                extras.setdefault(key, []).append(value)
        grad_norm = parallel.clip_grad_norm_(params, stage.optim.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update()
        done = step + 1
        if done == stage.steps and (rank == 0 or parallel.sharded):  # the rank that saves; under FSDP2 every rank
            with parallel.gathered():
                objective.finish()
        if done % stage.log_every == 0 or done == stage.steps:
            elapsed = time.time() - tic
            metrics = {f"{stage.name}/loss": sum(window) / len(window), f"{stage.name}/grad_norm": float(grad_norm),
                       f"{stage.name}/lr": stage.optim.lr * schedule(done),  # before lr_scale
                       f"{stage.name}/step_s": elapsed * micro_steps / len(window),  # window: micro-batches
                       f"{stage.name}/samples_per_s": len(window) * stage.batch_size * stage.scaling.num_workers
                       / elapsed,
                       **{f"{stage.name}/{k}": sum(v) / len(v) for k, v in extras.items()}}
            if sample_flops:  # one GPU per worker
                metrics[f"{stage.name}/mfu"] = throughput.mfu(metrics[f"{stage.name}/samples_per_s"], sample_flops,
                                                              peak, stage.scaling.num_workers)
            mlflow_log.log_metrics(tracking, metrics, done)
            bar.set_postfix(loss=f"{metrics[f'{stage.name}/loss']:.4f}", refresh=False)
            window, extras, tic = [], {}, time.time()
        if checks and (done % stage.heldout_every == 0 or done == stage.steps):
            _heldout_check(model, checks, stage, done, tracking)
        if done % stage.checkpoint_every == 0 or done == stage.steps:
            metrics = {"step": done, "loss": loss.item(), "resumed_from": start}
            if done == stage.steps:  # the distinct (height, width) every rank trained on, in the stage's record
                metrics["image_sizes"] = _all_image_sizes(objective)
            _report(objective, opt, sched, done, rank, config, metrics, parallel, ema)


def _all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over the workers (an objective's batch statistics); the tensor itself in a single process."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return tensor
    out = tensor.clone()
    torch.distributed.all_reduce(out)
    return out / torch.distributed.get_world_size()


def _all_image_sizes(objective) -> list[list[int]]:
    sizes = sorted(objective.image_sizes())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, sizes)
        sizes = sorted({tuple(size) for rank_sizes in gathered for size in rank_sizes})
    return [list(size) for size in sizes]


def _heldout_check(model, samples: list[dict], stage: StageConfig, step: int, tracking) -> None:
    """On the logging rank (DDP: the others wait at the next all-reduce; FSDP2 runs skip it: every rank would have to
    join the generation)."""
    scores = heldout_scores(model, samples, seed=stage.seed)
    mlflow_log.log_metrics(tracking, {f"{stage.name}/heldout/{k}": v for k, v in scores.items()}, step)
    print(f"{stage.name} step {step} held-out: " + json.dumps({k: round(v, 3) for k, v in scores.items()}), flush=True)


def _report(objective, opt, sched, step, rank, config, metrics, parallel=None, ema=None) -> None:
    """Every rank reports its own rank_state file (under FSDP2 also its shard of the training state); Ray Train puts
    them into one checkpoint folder with rank 0's. Under FSDP2 every rank joins the gathers and the preview."""
    state = rank_state.capture(objective, ray.train.get_context().get_world_size())
    model, stage, base = objective.model, objective.stage, config["init"].get("checkpoint")
    joins = rank == 0 or (parallel is not None and parallel.sharded)
    grid = None
    if joins and step == stage.steps and step and objective.previews and config.get("preview_prompts"):
        with parallel.gathered() if parallel is not None else contextlib.nullcontext():
            grid = preview_grid(model, config["preview_prompts"], seed=stage.seed)
    weights = parallel.weights_state() if parallel is not None else None  # None: the modules' own state
    averages = _ema_weights(model, stage, base, parallel, ema) if ema is not None and joins else None
    with tempfile.TemporaryDirectory() as folder:
        rank_state.save(folder, rank, state)
        if opt is not None:
            parallel.save(Path(folder), rank, opt, sched, ema)
        if rank == 0:
            # lean: what the stage trains, the rest referenced to the init checkpoint (or pretrained folders) by hash
            save_checkpoint(model, Path(folder) / "model", extra={"stage": stage.name, "step": step},
                            trained=stage.trainable, base=base, state_dict=weights, ema=averages)
            (Path(folder) / "state.json").write_text(json.dumps({"step": step, "stage": stage.name}))
            if grid is not None:
                mlflow_log.log_image(config.get("tracking"), grid, f"samples/{stage.name}_step{step:06d}.png")
            if step == stage.steps:  # the stage's record says what an MLflow outage cost, if anything
                metrics = {**metrics, "tracking": mlflow_log.flush(config.get("tracking")),
                           "platform": throughput.platform(ray.train.torch.get_device())}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _ema_weights(model, stage, base, parallel, ema) -> dict[str, dict[str, torch.Tensor]]:
    """The EMA as the checkpoint stores it: per trained component, the keys its weights have there (the trained
    parameters averaged, the rest as they are), gathered like the weights."""
    with ema.applied():
        state = parallel.trained_state(stage.trainable)
    plan = storage_plan(model.cfg, stage.trainable, getattr(model, "lora", None) is not None, base is not None)
    stored = stored_tensors(model, plan, state)
    return {name: tensors for name, tensors in stored.items() if name in stage.trainable and tensors}
