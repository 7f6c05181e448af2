"""Typed settings of the RL stage (MR-GRPO). The paper's values are the defaults where they are scale-free; the tiny
run sets its own, with the measurement beside each, in conf/base/parameters_training.yml under `rl.grpo`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from deepgen import storage

SAMPLERS = ("cps", "sde")


@dataclass(frozen=True)
class Ablations:
    """Switches that turn the paper's choices off, one at a time (README has what each did)."""

    reward_norm: bool = True  # false: weighted sum of raw rewards, then one group normalisation (Flow-GRPO's way)
    kl: bool = True  # false: no KL to the frozen reference
    aux_sft: bool = True  # false: no auxiliary SFT loss
    sampler: str = "cps"  # "cps" (DeepGen) | "sde" (Flow-GRPO)


@dataclass(frozen=True)
class GRPOConfig:
    prompts_per_worker: int = 4  # prompts per rollout on each worker; whole groups stay on one worker
    group_size: int = 8  # G samples per prompt, from the same initial noise
    sample_steps: int = 50  # denoising steps of a rollout
    eta: float = 0.7  # CPS noise angle / SDE noise level
    guidance: float = 1.0  # CFG in rollouts (the paper: none)
    train_fraction: float = 0.6  # share of the first sample_steps - 1 steps trained on per rollout
    clip_range: float = 1e-4  # PPO ratio clip
    adv_clip: float = 5.0  # advantages clipped to +-adv_clip after batch normalisation
    kl_weight: float = 5e-7  # on the velocity difference to the frozen reference
    aux_weight: float = 1e-4  # l in (1 - l) * RL + l * SFT
    aux_batch_size: int = 4  # SFT samples per update for the auxiliary loss
    inner_epochs: int = 1  # passes over one rollout batch
    minibatches: int = 1  # updates per pass (1: one update per rollout; the PPO ratio is then 1)
    # prompt set (a sample's category, else its kind, else "*") -> reward -> weight. The paper: text prompts
    # judge 0.2 / clip 0.1 / ocr 0.7, others judge 0.7 / clip 0.3
    rewards: dict[str, dict[str, float]] = field(default_factory=lambda: {"text_word": {"ocr": 1.0},
                                                                          "*": {"shapes": 1.0}})
    reward_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # reward -> options (clip path, ...)
    reward_retries: int = 2
    reward_timeout_s: float = 60.0
    image_every: int = 50  # log one group's images every N rollouts
    ablations: Ablations = field(default_factory=Ablations)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "rl.grpo") -> "GRPOConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        ablations = dict(data.pop("ablations", None) or {})
        bad = sorted(set(ablations) - {f.name for f in fields(Ablations)})
        if bad:
            raise ValueError(f"{where}.ablations: unknown key(s) {bad}; known: reward_norm, kl, aux_sft, sampler")
        if ablations.get("sampler", "cps") not in SAMPLERS:
            raise ValueError(f"{where}.ablations.sampler must be one of {SAMPLERS}, got {ablations['sampler']!r}")
        # a reward's local folder (the CLIP reward's `path`) made absolute where the config is built: Ray workers run
        # in another directory, and a relative path from conf failed there (`kedro run --env example_real`)
        data["reward_options"] = {name: {k: storage.absolute(str(v)) if k == "path" else v for k, v in opts.items()}
                                  for name, opts in (data.get("reward_options") or {}).items()}
        config = cls(**data, ablations=Ablations(**ablations))
        if config.group_size < 2:
            raise ValueError(f"{where}.group_size must be at least 2 (advantages are relative within a group)")
        if config.sample_steps < 2:
            raise ValueError(f"{where}.sample_steps must be at least 2")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def kl_coef(self) -> float:
        return self.kl_weight if self.ablations.kl else 0.0

    @property
    def aux_coef(self) -> float:
        return self.aux_weight if self.ablations.aux_sft else 0.0

    def weights_for(self, sample: dict) -> dict[str, float]:
        """The reward weights of the prompt set a sample belongs to."""
        for key in (sample.get("category"), sample.get("kind"), "*"):
            if key in self.rewards:
                return self.rewards[key]
        raise ValueError(f"rl.grpo.rewards has no entry for category {sample.get('category')!r} or kind "
                         f"{sample.get('kind')!r} and no '*'")
