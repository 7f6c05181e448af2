"""data/08_reporting/run_summary.json: what a run produced, where, and how good it is, in one small file."""

from __future__ import annotations

from pipelines.hooks import tracking


def summarize(curation: dict, vae: dict, alignment: dict, sft: dict, evaluation: dict, registered: dict) -> dict:
    run = tracking()
    return {
        "data_version": curation["data_version"],
        "tracking_uri": run["uri"],
        "mlflow_run_id": run["run_id"],
        "stages": {r["stage"]: {"metrics": r["metrics"], "checkpoint_uri": r["checkpoint_uri"],
                                "run_name": r["run_name"]} for r in (vae, alignment, sft)},
        "evaluation": evaluation,
        "registered_model": {k: registered[k] for k in ("name", "version", "alias")},
        "promotion_reason": registered["reason"],
    }
