"""Pipelines, registered explicitly (find_pipelines expects a different package layout: STACK.md)."""

from kedro.pipeline import Pipeline

from pipelines import curation, evaluation, promotion, reporting, training


def register_pipelines() -> dict[str, Pipeline]:
    steps = {
        "curation": curation.create_pipeline(),
        "vae": training.create_pipeline("vae", parent=None),
        "alignment": training.create_pipeline("alignment", parent="vae"),
        "sft": training.create_pipeline("sft", parent="alignment"),
        "evaluation": evaluation.create_pipeline(),
        "promotion": promotion.create_pipeline(),
        "reporting": reporting.create_pipeline(),
    }
    return {**steps, "__default__": sum(steps.values(), Pipeline([]))}
