"""data/08_reporting/run_summary.json: what a run produced, where, and how good it is, in one small file."""

from __future__ import annotations

from pipelines.hooks import tracking

STAGE_KEYS = ("metrics", "checkpoint_uri", "run_name", "image_sizes", "prompt_data_version", "platform")


def summarize(curation: dict, evaluation: dict, registered: dict, **stages: dict) -> dict:
    """`stages`: the record of every training stage, by name."""
    run = tracking()
    return {
        "data_version": curation["data_version"],
        "tracking_uri": run["uri"],
        "mlflow_run_id": run["run_id"],
        "stages": {r["stage"]: {k: r[k] for k in STAGE_KEYS if k in r} for r in stages.values()},
        "evaluation": evaluation,
        "registered_model": {k: registered[k] for k in ("name", "version", "alias")},
        "promotion_reason": registered["reason"],
    }
