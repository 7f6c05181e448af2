"""Promotion of a run's best stage checkpoint: register it, gate it against the champion on one evaluation
(re-scoring a champion that was scored under another), and log a side-by-side report to the MLflow run.

It sits above the registry, which knows nothing of evaluation, because re-scoring and the report generate images.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from deepgen import tracking as mlflow_log
from deepgen.eval.run import evaluate_checkpoint, evaluation_hash, evaluation_samples, grid_picks
from deepgen.eval.shapes import generate_all
from deepgen.registry import Gate, load_model, promote, register
from deepgen.registry.gate import flatten
from deepgen.registry.load import scores_of, version_checkpoint
from deepgen.train.preview import grid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionConfig:
    """`params:promotion`, read once: the registered model's name, the stages that are candidates, the gate, and how
    many evaluation prompts the side-by-side report generates with both models."""

    model_name: str
    candidates: tuple[str, ...]
    gate: Gate
    report_prompts: int

    @classmethod
    def from_params(cls, params: dict, preset: str) -> PromotionConfig:
        candidates = params.get("candidates")
        if not candidates or not all(isinstance(c, str) for c in candidates):
            raise ValueError(f"promotion.candidates: expected a list of stage names, got {candidates!r}")
        return cls(params["model_name"].format(preset=preset), tuple(candidates),
                   Gate.from_params(params.get("gate") or {}), int(params.get("report", {}).get("prompts", 8)))


@dataclass(frozen=True)
class EvaluationContext:
    """What the evaluation ran on, so the champion can be re-scored and drawn on exactly the same prompts."""

    heldout_urls: list[str]
    settings: dict
    cache_dir: str
    tracking: dict | None = None

    @property
    def hash(self) -> str:
        return evaluation_hash(self.heldout_urls, self.settings)


def promote_best(records: dict[str, dict], evaluation: dict[str, dict], config: PromotionConfig,
                 context: EvaluationContext) -> dict:
    """Register the candidate stage with the best primary metric (ties: the later stage in `config.candidates`) and
    let the gate decide its alias. Returns the promotion result plus `stage` and `eval_hash`."""
    missing = [s for s in config.candidates if s not in records or s not in evaluation]
    if missing:
        raise ValueError(f"promotion.candidates: no record or evaluation for {missing} "
                         f"(records: {sorted(records)}, evaluated: {sorted(evaluation)})")
    metric = config.gate.metric
    ranked = sorted(config.candidates, key=lambda s: (flatten(evaluation[s]).get(metric, -math.inf),
                                                       config.candidates.index(s)))
    stage, eval_hash = ranked[-1], context.hash
    log.info("promotion: candidate %s (%s %s) among %s", stage, metric, flatten(evaluation[stage]).get(metric),
             ", ".join(config.candidates))
    record, scores = records[stage], evaluation[stage]
    registered = register(record["checkpoint_uri"], config.model_name, scores, record["data_version"],
                          eval_hash=eval_hash, tags={"stage": stage, "run_name": record.get("run_name", "")})

    def rescore(champion) -> dict:
        return evaluate_checkpoint(f"champion-v{champion.version}", version_checkpoint(champion),
                                   context.heldout_urls, context.settings, context.cache_dir, context.tracking)

    result = promote(config.model_name, registered["version"], scores, config.gate, eval_hash=eval_hash,
                     rescore=rescore)
    if config.report_prompts and context.tracking and context.tracking.get("run_id"):
        log_report(config, context, result, stage, record["checkpoint_uri"], scores)
    return {**result, "stage": stage, "eval_hash": eval_hash}


def log_report(config: PromotionConfig, context: EvaluationContext, result: dict, stage: str, checkpoint_uri: str,
               scores: dict) -> None:
    """`promotion/report.md` (scores side by side, the decision and its reasons) and `promotion/side_by_side.png`
    (the first `report_prompts` evaluation prompts, round-robin over categories, drawn by each model at the
    evaluation's seed, steps and guidance) in the MLflow run."""
    client = MlflowClient(context.tracking["uri"])
    name, version = config.model_name, result["version"]
    columns = [(f"candidate v{version} ({stage})", checkpoint_uri, flatten(scores))]
    if result["compared_with"] is not None:
        champion = client.get_model_version(name, str(result["compared_with"]))
        columns.insert(0, (f"champion v{champion.version}", version_checkpoint(champion), scores_of(champion.tags)))
    run_id = context.tracking["run_id"]
    client.log_text(run_id, _table(config.gate, result, columns, context), "promotion/report.md")
    settings = context.settings
    per_model = []  # [(image, caption) per prompt] per column
    for label, uri, _ in columns:
        model = load_model(uri)
        samples = evaluation_samples(context.heldout_urls, settings, model.cfg.image_size)
        picked = [samples[i] for i in grid_picks(samples, config.report_prompts)]
        images = generate_all(model, picked, settings.get("batch_size", 32), settings.get("seed", 0),
                              settings.get("steps"), settings.get("guidance"), desc=f"report {label}")
        per_model.append([(image, f"{label.split(' (')[0]}: {s['caption']}") for image, s in zip(images, picked)])
    cells = [cell for row in zip(*per_model) for cell in row]  # one row per prompt, one column per model
    mlflow_log.log_image(context.tracking, grid([c[0] for c in cells], [c[1] for c in cells], columns=len(columns)),
                         "promotion/side_by_side.png")


def _table(gate: Gate, result: dict, columns: list[tuple[str, str, dict]], context: EvaluationContext) -> str:
    keys = sorted({k for _, _, s in columns for k in s if not k.endswith((".n", "_se", ".se"))})
    settings = context.settings
    lines = [f"# {result['name']} v{result['version']}: {result['alias']}", "",
             f"Reason: {result['reason']}", "",
             f"Evaluation `{context.hash}`: seed {settings.get('seed')}, steps {settings.get('steps')}, guidance "
             f"{settings.get('guidance')}; images: the first prompts of that evaluation, same seeds for each model.",
             "", "| score | " + " | ".join(label for label, _, _ in columns) + " | gate |",
             "|---" * (len(columns) + 2) + "|"]
    for key in keys:
        cells = [_cell(s, key) for _, _, s in columns]
        rule = []
        if key in gate.thresholds:
            rule.append(f">= {gate.thresholds[key]:g}")
        if key in gate.no_regression:
            rule.append(f"drop <= {gate.no_regression[key]:g}")
        if key == gate.metric:
            rule.append(f"primary, +{gate.min_improvement:g}")
        if key in result.get("failed", ()):
            rule.append("**failed**")
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {', '.join(rule)} |")
    return "\n".join(lines) + "\n"


def _cell(scores: dict, key: str) -> str:
    if key not in scores:
        return "-"
    n = scores.get(f"{key}.n")
    return f"{scores[key]:.3f}" + (f" (n={int(n)})" if n is not None else "")
