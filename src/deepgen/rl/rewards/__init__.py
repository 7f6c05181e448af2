"""Rewards for RL as plug-ins: each a class registered under a name (`shapes`, `ocr`, `clip`, `judge`), built from
configuration with `build_reward(name, **options)` and called once per group through `score_group`, which retries
and turns failures into None."""

from deepgen.rl.rewards.base import REWARDS, Reward, build_reward, register, score_group
from deepgen.rl.rewards import clip, judge, ocr, shapes  # noqa: F401  (registers the plug-ins)

__all__ = ["REWARDS", "Reward", "build_reward", "register", "score_group"]
