from kedro.pipeline import Node, Pipeline

from pipelines.promotion.nodes import register_and_promote


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(register_and_promote,
             inputs={"final": "sft_record", "evaluation": "evaluation", "promotion": "params:promotion",
                     "model": "params:model"},
             outputs="registered_model", name="register_and_promote"),
    ])
