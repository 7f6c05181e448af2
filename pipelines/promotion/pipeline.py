from kedro.pipeline import Node, Pipeline

from pipelines.promotion.nodes import register_and_promote


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(register_and_promote,
             inputs={"alignment": "alignment_record", "sft": "sft_record", "rl": "rl_record",
                     "evaluation": "evaluation", "curation": "curation_record", "promotion": "params:promotion",
                     "evaluation_params": "params:evaluation", "storage": "params:storage", "model": "params:model"},
             outputs="registered_model", name="register_and_promote"),
    ])
