"""The reward interface, its registry, and `score_group`: the one place a reward's failure becomes None (the group is
left out of that reward's normalisation), never a silent zero that would read as "all samples equally bad"."""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import threading
from typing import Protocol

from PIL import Image

log = logging.getLogger(__name__)


class Reward(Protocol):
    name: str
    bounds: tuple[float, float]  # every score lies in [low, high]; score_group rejects anything outside

    def __call__(self, images: list[Image.Image], sample: dict) -> list[float]:
        """One group: G images generated for ONE prompt `sample` (a curated sample dict) -> one float per image.
        May raise; may be slow."""


REWARDS: dict[str, type] = {}


def register(name: str):
    """Class decorator: adds a reward under `name` (and sets its `name`)."""
    def add(cls: type) -> type:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is registered twice ({REWARDS[name].__module__}, {cls.__module__})")
        cls.name = name
        REWARDS[name] = cls
        return cls
    return add


def build_reward(name: str, **options) -> Reward:
    """An instance of the registered reward `name`; unknown names and options fail here, not mid-training."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known: {', '.join(sorted(REWARDS))}")
    try:
        inspect.signature(REWARDS[name]).bind(**options)
    except TypeError as e:
        raise ValueError(f"reward {name!r}: bad options {sorted(options)}: {e}") from None
    return REWARDS[name](**options)


class _Failed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


_warned: set[tuple[str, str]] = set()


def score_group(reward: Reward, images: list[Image.Image], sample: dict, retries: int = 2,
                timeout_s: float = 30.0) -> list[float] | None:
    """The reward's scores for one group, or None when it raised, timed out or returned garbage (not a list, wrong
    length, non-numbers, NaN/inf, outside `reward.bounds`) on the first try and on each of `retries` more.

    A call that times out cannot be killed (it runs in a daemon thread); it finishes or dies with the process.
    One warning per reward and failure kind per process; later ones go to debug.
    """
    for attempt in range(retries + 1):
        try:
            return _checked(_call(reward, images, sample, timeout_s), len(images), reward.bounds)
        except _Failed as failure:
            key = (reward.name, failure.kind)
            level = logging.DEBUG if key in _warned else logging.WARNING
            _warned.add(key)
            log.log(level, "reward %s %s (try %d of %d): %s%s", reward.name, failure.kind, attempt + 1, retries + 1,
                    failure, "" if level == logging.DEBUG else "; further failures of this kind go to debug")
    return None


def _call(reward: Reward, images: list[Image.Image], sample: dict, timeout_s: float):
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = reward(images, sample)
        except Exception as e:  # noqa: BLE001 - any error of a plug-in is a failed try
            box["error"] = e

    thread = threading.Thread(target=run, name=f"reward-{reward.name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise _Failed("timed out", f"no answer within {timeout_s:g} s")
    if "error" in box:
        raise _Failed(f"raised {type(box['error']).__name__}", (str(box["error"]).splitlines() or [""])[0])
    return box["value"]


def _checked(values, n: int, bounds: tuple[float, float]) -> list[float]:
    if hasattr(values, "tolist"):  # numpy arrays
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise _Failed("returned a non-list", f"got {type(values).__name__}")
    if len(values) != n:
        raise _Failed("returned the wrong length", f"{len(values)} scores for {n} images")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise _Failed("returned non-numbers", f"types {sorted({type(v).__name__ for v in values})}")
    scores = [float(v) for v in values]
    if not all(math.isfinite(v) for v in scores):
        raise _Failed("returned NaN/inf", f"{scores}")
    low, high = bounds
    if not all(low <= v <= high for v in scores):
        raise _Failed("returned scores out of range", f"{scores} not within [{low}, {high}]")
    return scores
