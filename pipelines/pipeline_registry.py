"""Pipelines, registered explicitly (find_pipelines expects a different package layout: STACK.md)."""

from kedro.pipeline import Pipeline

from pipelines import curation, evaluation, promotion, reporting, retrain, rl, training


def register_pipelines() -> dict[str, Pipeline]:
    steps = {
        "curation": curation.create_pipeline(),
        "vae": training.create_pipeline("vae", parent=None),
        "alignment": training.create_pipeline("alignment", parent="vae"),
        "sft": training.create_pipeline("sft", parent="alignment"),
        "rl": rl.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "promotion": promotion.create_pipeline(),
        "reporting": reporting.create_pipeline(),
    }
    # `retrain` (the scheduled entry, outside the default run): the chain behind a data/configuration check
    return {**steps, "__default__": sum(steps.values(), Pipeline([])), "retrain": retrain.create_pipeline(steps)}
