"""The RL reward mix scored on held-out prompts, and the paired comparison of two model states on it.

Each evaluated image of a prompt set the mix covers gets the weighted sum of its rewards (the default: `shapes` on
text-to-image prompts, `ocr` on `text_word`); other categories (edits, reasoning) get None and stay out of the mean.
Both states are generated from the same prompts with the same seeds, so their per-sample rewards pair up.
"""

from __future__ import annotations

import math

from PIL import Image

from deepgen.rl.rewards import REWARDS, build_reward, score_group
from deepgen.world import KINDS

DEFAULT_MIX = {"text_word": {"ocr": 1.0}, **{c: {"shapes": 1.0} for c in KINDS["t2i"]}}
Z_95 = 1.959964  # normal quantile: the default run pairs ~300 prompts, where t and z agree to 0.3%


def reward_modules() -> list:
    """The modules of the rewards the default mix uses (their source is part of the evaluation's hash)."""
    import sys

    return [sys.modules[REWARDS[name].__module__] for name in
            sorted({n for weights in DEFAULT_MIX.values() for n in weights})]


def sample_rewards(images: list[Image.Image], samples: list[dict], mix: dict | None = None) -> list[float | None]:
    """Per sample, its weighted reward (None outside the mix or where a reward failed)."""
    mix = mix or DEFAULT_MIX
    rewards = {name: build_reward(name) for weights in mix.values() for name in weights}
    out: list[float | None] = []
    for image, sample in zip(images, samples):
        weights = mix.get(sample.get("category"))
        if not weights:
            out.append(None)
            continue
        total = 0.0
        for name, weight in weights.items():
            scores = score_group(rewards[name], [image], sample)
            if scores is None:
                total = None
                break
            total += weight * scores[0]
        out.append(total)
    return out


def mean_reward(values: list[float | None]) -> dict[str, float]:
    kept = [v for v in values if v is not None]
    return {"reward": sum(kept) / len(kept) if kept else math.nan, "reward.n": float(len(kept))}


def paired_difference(after: list[float | None], before: list[float | None]) -> dict[str, float]:
    """Mean of after - before over the samples both scored, with a 95% normal interval."""
    if len(after) != len(before):
        raise ValueError(f"paired comparison of {len(after)} against {len(before)} samples: not the same prompts")
    diffs = [a - b for a, b in zip(after, before) if a is not None and b is not None]
    n = len(diffs)
    if n < 2:
        raise ValueError(f"paired comparison needs at least 2 scored samples, got {n}")
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
    return {"delta": mean, "ci_low": mean - Z_95 * se, "ci_high": mean + Z_95 * se, "n": n}
