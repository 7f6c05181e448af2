"""The promotion gate: may a candidate replace the champion? A pure decision over two score dicts.

Score keys are dotted paths (`single_object_color`; per-suite scores such as `suites.<suite>.<metric>`, flat or
nested): nested dicts are flattened to those paths, so thresholds and margins can name any score the evaluation
reports. The caller guarantees both dicts come from the same evaluation (same `eval.hash`).

A drop below the champion on a guarded key is a regression when it exceeds the key's margin and, where both sides
report an uncertainty, also `se_multiplier` standard errors of the difference. The uncertainty is `<key>_se` or
`<key>.se`, else a proportion's binomial error sqrt(p(1-p)/n) from a count `<key>.n`, `n.<key>`, `<key>_n` or `n`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType


def flatten(scores: Mapping, prefix: str = "") -> dict[str, float]:
    """{"suites": {"geneval": {"overall": 0.5}}, "colors": 0.2} -> {"suites.geneval.overall": 0.5, "colors": 0.2}."""
    flat: dict[str, float] = {}
    for key, value in scores.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[path] = value
    return flat


@dataclass(frozen=True)
class Gate:
    """metric: the primary score; a candidate must beat the champion's by more than `min_improvement`.
    thresholds: key -> minimum the candidate must reach. no_regression: key -> largest drop below the champion."""

    metric: str = "overall"
    min_improvement: float = 0.0
    thresholds: Mapping[str, float] = field(default_factory=dict)
    no_regression: Mapping[str, float] = field(default_factory=dict)
    se_multiplier: float = 2.0

    def __post_init__(self):
        for name in ("thresholds", "no_regression"):
            table = getattr(self, name)
            if not isinstance(table, Mapping):
                raise ValueError(f"promotion.gate.{name}: expected a mapping of score key -> number, got {table!r}")
            object.__setattr__(self, name, MappingProxyType({str(k): _number(f"{name}.{k}", v)
                                                             for k, v in table.items()}))
        for name in ("min_improvement", "se_multiplier"):
            object.__setattr__(self, name, _number(name, getattr(self, name)))

    @classmethod
    def from_params(cls, params: Mapping) -> Gate:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"promotion.gate: unknown key(s) {unknown} (known: {sorted(known)})")
        return cls(**params)


@dataclass(frozen=True)
class Decision:
    """promote: the candidate may become champion. failed: score key -> why it blocked (a tag each)."""

    promote: bool
    reason: str
    failed: Mapping[str, str]


def decide(gate: Gate, candidate: Mapping, champion: Mapping | None = None) -> Decision:
    """Thresholds first; then, against a champion, the guarded keys must not regress and the metric must improve."""
    cand, champ = flatten(candidate), flatten(champion) if champion is not None else None
    if gate.metric not in cand:
        raise ValueError(f"promotion.gate.metric {gate.metric!r} is not among the candidate's scores "
                         f"({', '.join(sorted(cand)) or 'none'})")
    failed = {k: (f"{k} missing" if k not in cand else f"{k} {cand[k]:.3f} < threshold {t:g}")
              for k, t in gate.thresholds.items() if not cand.get(k, -math.inf) >= t}
    if champ is None:
        if failed:
            return Decision(False, f"thresholds not met: {'; '.join(failed.values())}", failed)
        return Decision(True, f"no champion yet; {gate.metric}={cand[gate.metric]:.3f}", failed)
    for key, margin in gate.no_regression.items():
        if key not in champ:  # nothing to regress from
            continue
        if key not in cand:
            failed[key] = f"{key} missing (champion {champ[key]:.3f})"
            continue
        drop, se = champ[key] - cand[key], _se_difference(cand, champ, key)
        if drop > margin and (se is None or drop > gate.se_multiplier * se):
            noise = "" if se is None else f" and {gate.se_multiplier:g} SE ({gate.se_multiplier * se:.3f})"
            failed[key] = (f"{key} {cand[key]:.3f} regresses from champion {champ[key]:.3f} by {drop:.3f}, "
                           f"beyond margin {margin:g}{noise}")
    best = champ.get(gate.metric, -math.inf)
    if not cand[gate.metric] > best + gate.min_improvement:
        failed[gate.metric] = (f"{gate.metric} {cand[gate.metric]:.3f} does not beat champion {best:.3f} by more "
                               f"than {gate.min_improvement:g}")
    if failed:
        return Decision(False, "; ".join(failed.values()), failed)
    return Decision(True, f"{gate.metric} {cand[gate.metric]:.3f} beats champion {best:.3f} by more than "
                          f"{gate.min_improvement:g}; no guarded score regressed", failed)


def _se_difference(cand: dict, champ: dict, key: str) -> float | None:
    a, b = _stderr(cand, key), _stderr(champ, key)
    return None if a is None or b is None else math.hypot(a, b)


def _stderr(scores: dict, key: str) -> float | None:
    for name in (f"{key}_se", f"{key}.se"):
        if name in scores:
            return float(scores[name])
    p = scores[key]
    for name in (f"{key}.n", f"n.{key}", f"{key}_n", "n"):
        if name in scores and scores[name] > 0 and 0.0 <= p <= 1.0:
            return math.sqrt(p * (1.0 - p) / scores[name])
    return None


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"promotion.gate.{name}: expected a number, got {value!r}")
    return float(value)
