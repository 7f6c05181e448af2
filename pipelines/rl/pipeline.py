from kedro.pipeline import Node, Pipeline

from pipelines import training
from pipelines.rl.nodes import curate_rl_prompts


def create_pipeline(**kwargs) -> Pipeline:
    prompts = Pipeline([Node(curate_rl_prompts, inputs={"curation": "curation_record", "rl_prompts":
                                                        "params:rl_prompts", "storage": "params:storage"},
                             outputs="rl_prompts_record", name="curate_rl_prompts")])
    return prompts + training.create_pipeline("rl", parent="sft", prompts="rl_prompts_record")
