from kedro.pipeline import Node, Pipeline

from pipelines.evaluation.nodes import evaluate_states

STATES = {"init": "vae_record", "alignment": "alignment_record", "sft": "sft_record", "rl": "rl_record"}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(evaluate_states,
             inputs={"curation": "curation_record", "evaluation": "params:evaluation", "storage": "params:storage",
                     "suites": "params:suites", "suite_defaults": "params:suite_defaults",
                     "suite_workers": "params:suite_workers", "ray": "params:ray", **STATES},
             outputs="evaluation", name="evaluate_states"),
    ])
