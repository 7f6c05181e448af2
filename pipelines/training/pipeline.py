from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from pipelines.training.nodes import train_stage


def create_pipeline(stage: str, parent: str | None, prompts: str | None = None) -> Pipeline:
    """`stage` trains from `parent`'s checkpoint, or from the preset's fresh weights when there is no parent;
    `prompts` names a curated prompt set's record (the RL stage)."""
    inputs = {"curation": "curation_record", "stage": f"params:{stage}", "model": "params:model",
              "storage": "params:storage", "ray": "params:ray", "evaluation": "params:evaluation"}
    if parent:
        inputs["parent"] = f"{parent}_record"
    if prompts:
        inputs["prompts"] = prompts
    func = update_wrapper(partial(train_stage, stage), train_stage)
    return Pipeline([Node(func, inputs=inputs, outputs=f"{stage}_record", name=f"train_{stage}")])
