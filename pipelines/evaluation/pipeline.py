from kedro.pipeline import Node, Pipeline

from pipelines.evaluation.nodes import evaluate_states


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(evaluate_states,
             inputs={"curation": "curation_record", "init": "vae_record", "alignment": "alignment_record",
                     "sft": "sft_record", "evaluation": "params:evaluation", "storage": "params:storage"},
             outputs="evaluation", name="evaluate_states"),
    ])
