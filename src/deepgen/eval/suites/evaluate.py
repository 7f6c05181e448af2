"""Which suites an evaluation runs (read once from `params:suites`, `suite_defaults`, `suite_workers`) and one model
state's evaluation over them: ShapesBench's keys flat, every other suite under `suites.<suite>`, as run_summary.json
holds them; per-suite and per-category metrics and an image table per suite in MLflow."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from deepgen import tracking as mlflow_log
from deepgen.eval.suites.base import build_suite
from deepgen.eval.suites.runner import Outcome, Workers, run_suites

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuitePlan:
    shapes: object
    suites: tuple
    workers: Workers
    ray_address: str | None = None

    @classmethod
    def from_params(cls, suites: dict | None, defaults: dict | None = None, workers: dict | None = None,
                    ray_address: str | None = None) -> SuitePlan:
        if not isinstance(suites, dict) or "shapes" not in suites:
            raise ValueError("suites: 'shapes' (ShapesBench) is required: promotion, rl_vs_sft and the baselines read "
                             f"its keys (got {sorted(suites or {})})")
        built = {name: build_suite(name, raw, defaults) for name, raw in suites.items()}
        shapes = built.pop("shapes")
        for suite in built.values():  # bad prompt files, folders, detectors or judge keys fail now, not states later
            suite.selected()
            suite.cached_scorer()
        return cls(shapes, tuple(built.values()), Workers.from_dict(workers), ray_address)


@dataclass(frozen=True)
class SuiteContext:
    """ShapesBench's inputs (held-out shards, `evaluation:` settings) and where results go."""

    heldout_urls: list[str]
    settings: dict
    cache_dir: str
    tracking: dict | None = None


def evaluate_states(plan: SuitePlan, checkpoints: dict[str, str], context: SuiteContext) -> dict[str, dict]:
    """Each state's evaluation (state -> checkpoint URI): ShapesBench for all states side by side, then the other
    suites state by state (each already spreads its prompts over the suite workers)."""
    shapes = plan.shapes.evaluate_states(checkpoints, context, plan.workers, plan.ray_address)
    return {state: _with_suites(plan, state, uri, context, shapes[state]) for state, uri in checkpoints.items()}


def evaluate_state(plan: SuitePlan, state: str, checkpoint_uri: str, context: SuiteContext) -> dict:
    return _with_suites(plan, state, checkpoint_uri, context, plan.shapes.evaluate(state, checkpoint_uri, context))


def _with_suites(plan: SuitePlan, state: str, checkpoint_uri: str, context: SuiteContext, shapes: dict) -> dict:
    scores = dict(shapes)
    if not plan.suites:
        return scores
    outcomes = run_suites(list(plan.suites), checkpoint_uri, context.cache_dir, plan.workers, plan.ray_address, state)
    for suite in plan.suites:
        log_suite(context.tracking, state, suite, outcomes[suite.name])
    return {**scores, "suites": {name: outcome.result for name, outcome in outcomes.items()}}


def metric_items(result: dict, prefix: str) -> dict[str, float]:
    """Numeric entries of a suite result as MLflow metrics, nesting joined by "/" (`.n`, `.se` stay suffixes)."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(metric_items(value, f"{prefix}/{key}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}/{key}"] = float(value)
    return out


def log_suite(tracking: dict | None, state: str, suite, outcome: Outcome) -> None:
    from PIL import Image

    from deepgen import storage

    result = outcome.result
    mlflow_log.log_metrics(tracking, metric_items(result, f"eval/{state}/suites/{suite.name}"), step=0)
    rows = outcome.records[: suite.settings.table_rows]
    if tracking and tracking.get("run_id") and rows:
        metric = result.get("metric")
        images = [Image.open(io.BytesIO(storage.read_bytes(r["image"]))).convert("RGB") for r in rows]
        mlflow_log.log_table(tracking, {
            "prompt": [r["prompt"] for r in rows], "category": [r["category"] for r in rows],
            "sample": [r["sample"] for r in rows], "seed": [r["seed"] for r in rows], "image": images,
            "score": [(r.get("scores") or {}).get(metric) for r in rows],
            "scores": [r.get("scores") for r in rows]}, f"evaluation/{state}/{suite.name}_images.json")
    headline = result.get(result.get("metric")) if result.get("scored") else None
    log.info("evaluation %s, suite %s: %s", state, suite.name,
             f"{result['metric']} {headline:.3f} (n={result.get(result['metric'] + '.n')})" if headline is not None
             else f"not scored ({result.get('reason') or result.get('not_scored_tasks') or 'see result'})")
