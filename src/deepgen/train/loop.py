"""The per-worker training loop that Ray Train runs on every worker (DDP over gloo on CPU, NCCL on GPUs).

Every rank builds the same model; DDP broadcasts rank 0's weights. Rank 0 alone logs to MLflow and writes
checkpoints; every rank calls `ray.train.report` (a collective). A restarted run finds its latest checkpoint through
`ray.train.get_checkpoint()` (same run name and storage path) and continues from that step.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from tqdm import tqdm

from deepgen import tracking as mlflow_log
from deepgen.model import vae as vae_ops
from deepgen.model.checkpoint import load_checkpoint, save_checkpoint
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.train.config import StageConfig
from deepgen.train.freeze import apply_schedule, param_groups
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
    rank = ray.train.get_context().get_world_rank()
    start, resumed = 0, ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as folder:
            model = load_checkpoint(Path(folder) / "model")
            trainer_state = torch.load(Path(folder) / "trainer.pt", weights_only=True)
            start = json.loads((Path(folder) / "state.json").read_text())["step"]
        if rank == 0:
            print(f"{stage.name}: resuming from the step-{start} checkpoint", flush=True)
    else:
        model = init_model(config["init"])
    # Noise, timesteps, caption dropout, crops and LoRA init draw from torch's global generator: seeded per stage, rank
    # and start step (like the data stream), so the same configuration gives the same run; it drew fresh entropy before
    seed = stage.seed * 1000 + rank + 7919 * start
    torch.manual_seed(seed)
    counts = apply_schedule(model, stage)
    if not any(p.requires_grad for p in model.vae.parameters()):
        model.latent_cache = vae_ops.LatentCache()  # frozen VAE: encode each distinct image once
    tracking = config.get("tracking") if rank == 0 else None
    objective = build_objective(model, stage, ObjectiveContext(
        data=config["data"], seed=seed, init=config["init"], resumed=bool(resumed), rank=rank, tracking=tracking,
        all_reduce_mean=_all_reduce_mean))
    if stage.steps == 0:  # e.g. the full preset's VAE stage: package the initial weights as a checkpoint, unchanged
        _report(objective, None, None, 0, rank, config, {"step": 0})
        return
    model.train()
    groups = param_groups(model, stage)
    params = [p for group in groups for p in group["params"]]
    # fused: one kernel over all tensors. Measured with ~3.3M params on 1 CPU thread: 24 ms (default) -> 9 ms per
    # step; in the default run alignment went from 2.2 to 2.5 it/s
    opt = torch.optim.AdamW(groups, lr=stage.optim.lr, betas=stage.optim.betas, weight_decay=stage.optim.weight_decay,
                            fused=True)
    schedule = lr_lambda(stage)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    if resumed:
        opt.load_state_dict(trainer_state["optimizer"])
        sched.load_state_dict(trainer_state["scheduler"])
    if rank == 0 and start == 0:
        mlflow_log.log_params(tracking, {f"{stage.name}.trainable.{k}": str(v) for k, v in counts.items()})
    # broadcast_buffers off: the model's buffers (rotary frequencies, positional tables) never change in training,
    # and DDP's default re-broadcast is a second collective every forward (both ranks wait for each other twice per
    # step). Measured with two gloo workers on 2 cores, alignment config: 296 -> 210 ms per step in one pair of
    # runs, ~7% over three alternating repeats (the machine's speed drifts more than that between runs).
    # find_unused_parameters costs a walk of the autograd graph every step. Only VLM parameters can get no gradient
    # (layers above the deepest SCB tap never reach the loss; the vision tower idles without reference images), so
    # it is on only when the VLM trains (without it DDP fails at SFT's second step).
    vlm_trainable = any(p.requires_grad for p in model.encoder.parameters())
    ddp = ray.train.torch.prepare_model(objective, parallel_strategy_kwargs={"find_unused_parameters": vlm_trainable,
                                                                             "broadcast_buffers": False})
    stream = objective.batches()
    window, extras, tic = [], {}, time.time()
    bar = tqdm(range(start, stage.steps), desc=stage.name, disable=rank != 0, mininterval=15, initial=start,
               total=stage.steps)
    autocast = torch.autocast(ray.train.torch.get_device().type, dtype=torch.bfloat16,
                              enabled=stage.precision == "bf16")
    for step in bar:
        with autocast:
            loss, step_metrics = ddp(next(stream))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, stage.optim.grad_clip)
        opt.step()
        sched.step()
        window.append(loss.item())
        for key, value in step_metrics.items():
            extras.setdefault(key, []).append(value)
        done = step + 1
        if done == stage.steps and rank == 0:  # only rank 0's weights are saved
            objective.finish()
        if done % stage.log_every == 0 or done == stage.steps:
            elapsed = time.time() - tic
            metrics = {f"{stage.name}/loss": sum(window) / len(window), f"{stage.name}/grad_norm": float(grad_norm),
                       f"{stage.name}/lr": stage.optim.lr * schedule(done),  # before lr_scale
                       f"{stage.name}/step_s": elapsed / len(window),
                       f"{stage.name}/samples_per_s": len(window) * stage.batch_size * stage.scaling.num_workers
                       / elapsed,
                       **{f"{stage.name}/{k}": sum(v) / len(v) for k, v in extras.items()}}
            mlflow_log.log_metrics(tracking, metrics, done)
            bar.set_postfix(loss=f"{metrics[f'{stage.name}/loss']:.4f}", refresh=False)
            window, extras, tic = [], {}, time.time()
        if done % stage.checkpoint_every == 0 or done == stage.steps:
            _report(objective, opt, sched, done, rank, config, {"step": done, "loss": loss.item(), "resumed_from": start})


def _all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over the workers (an objective's batch statistics); the tensor itself in a single process."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return tensor
    out = tensor.clone()
    torch.distributed.all_reduce(out)
    return out / torch.distributed.get_world_size()


def _report(objective, opt, sched, step, rank, config, metrics) -> None:
    if rank != 0:
        ray.train.report(metrics)
        return
    model, stage = objective.model, objective.stage
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(model, Path(folder) / "model", extra={"stage": stage.name, "step": step})
        if opt is not None:
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, Path(folder) / "trainer.pt")
        (Path(folder) / "state.json").write_text(json.dumps({"step": step, "stage": stage.name}))
        if step == stage.steps and step and objective.previews and config.get("preview_prompts"):
            grid = preview_grid(model, config["preview_prompts"], seed=stage.seed)
            mlflow_log.log_image(config.get("tracking"), grid, f"samples/{stage.name}_step{step:06d}.png")
        if step == stage.steps:  # the stage's record says what an MLflow outage cost, if anything
            metrics = {**metrics, "tracking": mlflow_log.flush(config.get("tracking"))}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
