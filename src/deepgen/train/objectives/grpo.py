"""MR-GRPO (the paper's third stage) as a training objective: rollouts with a stochastic sampler, several rewards
turned into group-relative advantages, PPO-clip on the trained steps' log-probabilities, KL on velocities to a frozen
copy of the starting DiT, and a small auxiliary flow-matching loss on the SFT data.

`batches()` rolls out: each worker draws `prompts_per_worker` prompts, samples a group of `group_size` images per
prompt from one initial noise (whole groups stay on one worker), scores them and normalises the advantages over every
worker's groups. It then yields `inner_epochs x minibatches` updates over that rollout; each update trains on a random
`train_fraction` of the denoising steps (the same ones for the whole update, gradients summed over them).

A resumed stage continues exactly (same prompts, same rollout noise) when its checkpoint falls between rollouts, as it
always does with one update per rollout (the default); a checkpoint inside a rollout's updates resumes with the next
rollout.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch

from deepgen import tracking as mlflow_log
from deepgen.model.deepgen import Conditioning
from deepgen.model.sampling import log_prob, sample, step_distribution
from deepgen.rl.grpo import batch_normalise, group_advantages, ppo_loss, signal_share, velocity_kl
from deepgen.rl.rewards import build_reward, score_group
from deepgen.train.batches import samples_batch
from deepgen.train.objectives.base import Objective, register
from deepgen.train.preview import grid


@dataclass
class Rollout:
    """One rollout batch of B = prompts x group samples, everything an update needs."""

    cond: Conditioning
    sigmas: torch.Tensor  # (T + 1,)
    latents: torch.Tensor  # (T + 1, B, C, h, w)
    log_probs: torch.Tensor  # (T - 1, B): the stochastic steps
    advantages: torch.Tensor  # (B,)
    steps: list[int]  # the steps trained on
    metrics: dict[str, float] = field(default_factory=dict)

    def select(self, idx: torch.Tensor) -> "Rollout":
        return Rollout(self.cond.select(idx), self.sigmas, self.latents[:, idx], self.log_probs[:, idx],
                       self.advantages[idx], self.steps, self.metrics)


@register("grpo")
class GRPOObjective(Objective):
    previews = True

    def __init__(self, model, stage, context):
        super().__init__(model, stage, context)
        if stage.grpo is None:
            raise ValueError(f"stage {stage.name!r}: objective 'grpo' needs a `grpo:` block")
        self.cfg = stage.grpo
        self.reference = self._reference_dit()
        names = sorted({name for weights in self.cfg.rewards.values() for name, w in weights.items() if w})
        self.rewards = {name: build_reward(name, **self.cfg.reward_options.get(name, {})) for name in names}
        self.generator = torch.Generator().manual_seed(context.seed)
        self.rollouts = 0

    def _reference_dit(self):
        """A frozen copy of the DiT the stage started from (the KL anchor): the model's own on a fresh start, the
        init checkpoint's on a resumed one, so a resumed stage keeps the same reference."""
        source = self.model.dit
        if self.context.resumed and self.context.init.get("checkpoint"):
            from deepgen.model.checkpoint import load_checkpoint

            source = load_checkpoint(self.context.init["checkpoint"]).dit
        reference = copy.deepcopy(source).requires_grad_(False).eval()
        return reference.to(self.model.device)

    def batches(self):
        cfg = self.cfg
        prompts = self.stream("prompts", cfg.prompts_per_worker, source="prompts", collate_fn=samples_batch)
        sft = self.stream("sft", cfg.aux_batch_size, self.stage.keep) if cfg.aux_coef > 0 else None
        while True:
            rollout = self.rollout(next(prompts)["samples"])
            size = rollout.advantages.shape[0]
            for _ in range(cfg.inner_epochs):
                order = torch.randperm(size, generator=self.generator)
                for idx in order.chunk(cfg.minibatches):
                    yield {"rollout": rollout.select(idx.sort().values), "sft": next(sft) if sft else None}

    def data_state(self) -> dict:
        return {**super().data_state(), "generator": self.generator.get_state(), "rollouts": self.rollouts}

    def load_data_state(self, state: dict) -> None:
        super().load_data_state(state)
        self.generator.set_state(state["generator"])
        self.rollouts = int(state["rollouts"])

    def image_sizes(self) -> set[tuple[int, int]]:
        return super().image_sizes() | {(self.model.cfg.image_size, self.model.cfg.image_size)}  # the rollouts'

    @torch.no_grad()
    def rollout(self, samples: list[dict]) -> Rollout:
        cfg, model = self.cfg, self.model
        tic = time.time()
        was_training = model.training
        model.eval()
        groups, size = len(samples), cfg.group_size
        expand = torch.arange(groups).repeat_interleave(size)
        cond = model.conditioning([s["caption"] for s in samples], guidance=cfg.guidance).select(expand)
        shape = model.latent_shape((model.cfg.image_size, model.cfg.image_size))
        noise = torch.randn((groups, *shape), generator=self.generator)[expand].to(model.device)
        trajectory = sample(model.guided_velocity(cond, cfg.guidance), noise, cfg.sample_steps, model.cfg.flow.shift,
                            cfg.ablations.sampler, cfg.eta, self.generator, trajectory=True)
        images = model.decode(trajectory.sample)
        model.train(was_training)
        rewards, weights, failures = self._score(images, samples)
        advantages = group_advantages(rewards, weights, cfg.ablations.reward_norm)
        advantages = batch_normalise(advantages, cfg.adv_clip, self.context.all_reduce_mean).flatten().to(model.device)
        stochastic = len(trajectory.log_probs)
        count = max(1, round(cfg.train_fraction * stochastic))
        steps = sorted(torch.randperm(stochastic, generator=self.generator)[:count].tolist())
        metrics = {"signal_share": signal_share(rewards), "adv_abs_mean": float(advantages.abs().mean()),
                   "adv_max": float(advantages.max()), "adv_min": float(advantages.min()),
                   "rollout_s": time.time() - tic}
        for name, values in rewards.items():
            ok = values[~torch.isnan(values).any(dim=1)]
            if ok.numel():
                metrics[f"reward/{name}/mean"] = float(ok.mean())
                metrics[f"reward/{name}/group_std"] = float(ok.std(dim=1, unbiased=False).mean())
            metrics[f"reward/{name}/failures"] = float(failures[name])
        self.rollouts += 1
        if self.context.tracking and (self.rollouts == 1 or self.rollouts % cfg.image_every == 0):
            total = sum(weights[n][0] * torch.nan_to_num(rewards[n][0]) for n in rewards)
            picture = grid(images[:size], [f"{samples[0]['caption']} | r={float(r):.2f}" for r in total])
            mlflow_log.log_image(self.context.tracking, picture,
                                 f"rl/{self.stage.name}_rollout{self.rollouts:05d}.png")
        return Rollout(cond, trajectory.sigmas, torch.stack(trajectory.latents), torch.stack(trajectory.log_probs),
                       advantages, steps, metrics)

    def _score(self, images, samples):
        """(P, G) rewards per reward name (NaN rows: failed or not in that prompt's set), (P,) weights, failures."""
        cfg, size = self.cfg, self.cfg.group_size
        rewards, weights, failures = {}, {}, {}
        for name, reward in self.rewards.items():
            weights[name] = torch.tensor([float(cfg.weights_for(s).get(name, 0.0)) for s in samples])
            values = torch.full((len(samples), size), math.nan)
            failures[name] = 0
            for p, sample_ in enumerate(samples):
                if weights[name][p] == 0:
                    continue
                scores = score_group(reward, images[p * size:(p + 1) * size], sample_, cfg.reward_retries,
                                     cfg.reward_timeout_s)
                if scores is None:
                    failures[name] += 1
                else:
                    values[p] = torch.tensor(scores, dtype=torch.float32)
            rewards[name] = values
        return rewards, weights, failures

    def forward(self, batch: dict):
        cfg, model, rollout = self.cfg, self.model, batch["rollout"]
        velocity = model.guided_velocity(rollout.cond, cfg.guidance)
        reference = model.guided_velocity(rollout.cond, cfg.guidance, dit=self.reference)
        sigmas, size = rollout.sigmas, rollout.advantages.shape[0]
        sigma_max = float(sigmas[1])
        policy, kls, ratio, clipped = 0.0, 0.0, 0.0, 0.0
        for i in rollout.steps:
            x = rollout.latents[i]
            v = velocity(x, sigmas[i].expand(size))
            dist = step_distribution(cfg.ablations.sampler, x, v, sigmas[i], sigmas[i + 1], cfg.eta, sigma_max)
            loss, stats = ppo_loss(log_prob(cfg.ablations.sampler, rollout.latents[i + 1], dist),
                                   rollout.log_probs[i], rollout.advantages, cfg.clip_range)
            with torch.no_grad():
                v_ref = reference(x, sigmas[i].expand(size))
            kl = velocity_kl(v, v_ref)
            policy = policy + loss
            kls = kls + kl
            ratio += stats["ratio_mean"]
            clipped += stats["clip_fraction"]
        n = len(rollout.steps)
        rl_loss = (policy + cfg.kl_coef * kls) / n
        total = (1 - cfg.aux_coef) * rl_loss
        metrics = {**rollout.metrics, "policy_loss": float(policy.detach()) / n, "kl": float(kls.detach()) / n,
                   "ratio_mean": ratio / n, "clip_fraction": clipped / n}
        if batch["sft"] is not None:
            sft = batch["sft"]
            aux = model.flow_loss(sft["images"].to(model.device), sft["captions"], sft["refs"], sft["ref_images"])
            total = total + cfg.aux_coef * aux
            metrics["aux_sft_loss"] = float(aux.detach())
        return total, metrics
