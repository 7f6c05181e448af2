"""The evaluation-suite interface: a suite is a prompt set (each prompt with a category and what its scorer needs),
generation settings, and a scorer that may be absent. A suite without a scorer is reported as not scored, with the
reason, never as 0.

Suites register under a name (`@register("ocr")`) and are built from configuration with `build_suite(name, raw)`,
which checks every key: unknown names and options fail before any image is generated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from PIL import Image

from deepgen.eval.suites.judge import JudgeConfig


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt. `source`: the reference image's bytes (edit suites), else None."""

    key: str
    text: str
    category: str
    meta: Mapping = field(default_factory=dict)
    source: bytes | None = None


@dataclass(frozen=True)
class SuiteSettings:
    """How a suite generates: `steps`, `guidance` (CFG), `samples` per prompt, `seed` (image i of the selection gets
    seed + i), `resolution` (square side in pixels; None: the model's image_size), `subset` (prompts, spread
    round-robin over the categories; None: all), `batch_size`, `chunk_size` (prompts per Ray task: the unit of
    resume), `table_rows` (images in the MLflow table), `report_prompts` (prompts shown per suite in the report)."""

    steps: int = 10
    guidance: float = 3.5
    samples: int = 1
    seed: int = 0
    resolution: int | None = None
    subset: int | None = 32
    batch_size: int = 16
    chunk_size: int = 32
    table_rows: int = 200
    report_prompts: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in ("resolution", "subset"):
                continue
            integer = f.name != "guidance"
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                raise ValueError(f"{f.name}: expected {'an integer' if integer else 'a number'}, got {value!r}")
            minimum = 0 if f.name in ("seed", "guidance", "table_rows", "report_prompts") else 1
            if value < minimum:
                raise ValueError(f"{f.name}: must be at least {minimum}, got {value!r}")

    def generation(self) -> dict:
        """What decides the images (the cache key of generated work)."""
        return {k: getattr(self, k) for k in ("steps", "guidance", "samples", "seed", "resolution", "subset",
                                               "batch_size", "chunk_size")}

    def describe(self, selected: int, total: int) -> str:
        size = f"{self.resolution} px" if self.resolution else "the model's size"
        return (f"{selected} of {total} prompts, {self.samples} image(s) each, seed {self.seed}, {self.steps} steps, "
                f"CFG {self.guidance:g}, {size}")


SETTING_KEYS = {f.name for f in dataclasses.fields(SuiteSettings)}


class Scorer(Protocol):
    """Scores one chunk of images. `metric`: the headline key; `protocol`: one line saying how scores are made."""

    metric: str
    protocol: str

    def fingerprint(self) -> str:
        """Changes whenever the scores could: source, engine or model, configuration (never secrets)."""

    def __call__(self, images: list[Image.Image], prompts: list[Prompt]) -> list[dict[str, float] | None]:
        """Per image, its scores by metric (a metric may be absent where it does not apply); None where scoring
        failed (a retry on the next run, never a 0)."""


@dataclass(frozen=True)
class NotScored:
    reason: str


class Suite:
    """A prompt suite. Subclasses set `name` (by `register`), `title`, `source` (origin and licence, one line),
    `options` (suite-specific option -> default), `uses_judge`, and implement `load_prompts` and `scorer`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    source: ClassVar[str] = ""
    options: ClassVar[dict] = {}
    uses_judge: ClassVar[bool] = False
    edits: ClassVar[bool] = False  # prompts carry a source image; the report shows it beside the result

    def __init__(self, settings: SuiteSettings, options: dict, judge: JudgeConfig) -> None:
        self.settings, self.opts, self.judge = settings, {**self.options, **options}, judge

    def load_prompts(self) -> list[Prompt]:
        raise NotImplementedError

    def scorer(self) -> Scorer | NotScored:
        raise NotImplementedError

    def cached_scorer(self) -> Scorer | NotScored:
        """The scorer, built once per suite object (a detector loads once for all states)."""
        if not hasattr(self, "_scorer"):
            self._scorer = self.scorer()
        return self._scorer

    def selected(self) -> list[Prompt]:
        prompts = self.load_prompts()
        if not prompts:
            raise ValueError(f"suite {self.name}: no prompts")
        return round_robin(prompts, self.settings.subset)

    def summarize(self, rows: list[tuple[Prompt, dict[str, float]]]) -> dict:
        """Means over prompts (a prompt's samples averaged first) with `.n` and `.se`, overall and per category."""
        return summarize(rows)

    def judge_or_reason(self) -> NotScored | None:
        if not self.judge.configured:
            return NotScored("no judge endpoint configured (suite_defaults.judge.url)")
        return None


SUITES: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in SUITES:
            raise ValueError(f"suite {name!r} is registered twice ({SUITES[name].__module__}, {cls.__module__})")
        cls.name = name
        SUITES[name] = cls
        return cls
    return add


def build_suite(name: str, raw: Mapping | None, defaults: Mapping | None = None):
    """The suite `name` with `defaults` (suite_defaults) under its own settings `raw` (suites.<name>)."""
    if name not in SUITES:
        raise ValueError(f"suites: unknown suite {name!r}; known: {', '.join(sorted(SUITES))}")
    cls = SUITES[name]
    if getattr(cls, "flat", False):
        return cls(raw or {})
    merged = {**(defaults or {}), **(raw or {})}
    judge = JudgeConfig.from_dict({**((defaults or {}).get("judge") or {}), **((raw or {}).get("judge") or {})})
    unknown = sorted(set(merged) - SETTING_KEYS - set(cls.options) - {"judge"})
    if unknown:
        raise ValueError(f"suites.{name}: unknown key(s) {unknown} (settings: {sorted(SETTING_KEYS)}; "
                         f"options: {sorted(cls.options) or 'none'})")
    if (raw or {}).get("judge") and not cls.uses_judge:
        raise ValueError(f"suites.{name}: takes no judge (it is not judge-scored)")
    try:
        settings = SuiteSettings(**{k: v for k, v in merged.items() if k in SETTING_KEYS})
    except (TypeError, ValueError) as e:
        raise ValueError(f"suites.{name}: {e}") from None
    return cls(settings, {k: v for k, v in merged.items() if k in cls.options}, judge)


def round_robin(prompts: list[Prompt], n: int | None) -> list[Prompt]:
    """Up to n prompts, taken in turn from each category in file order (deterministic; every category counts)."""
    if n is None or n >= len(prompts):
        return list(prompts)
    by_category: dict[str, list[Prompt]] = defaultdict(list)
    for p in prompts:
        by_category[p.category].append(p)
    picked, depth = [], 0
    while len(picked) < n:
        picked += [group[depth] for group in by_category.values() if depth < len(group)][: n - len(picked)]
        depth += 1
    return picked


def stats(values: list[float]) -> tuple[float, int, float | None]:
    """Mean, n and standard error (sample sd / sqrt(n); None below 2 values)."""
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return mean, n, se


def put(out: dict, key: str, values: list[float]) -> None:
    mean, n, se = stats(values)
    out[key], out[f"{key}.n"] = mean, n
    if se is not None:
        out[f"{key}.se"] = se


def summarize(rows: list[tuple[Prompt, dict[str, float]]]) -> dict:
    overall: dict[str, list[float]] = defaultdict(list)
    by_category: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for prompt, scores in rows:
        for key, value in scores.items():
            overall[key].append(value)
            by_category[prompt.category][key].append(value)
    out: dict = {}
    for key in sorted(overall):
        put(out, key, overall[key])
    out["categories"] = {}
    for category in sorted(by_category):
        out["categories"][category] = {}
        for key in sorted(by_category[category]):
            put(out["categories"][category], key, by_category[category][key])
    return out


def fingerprint(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_hash(*modules) -> str:
    """Hash of modules' source files: a changed scorer invalidates its cached scores."""
    from pathlib import Path

    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).hexdigest()[:16]
