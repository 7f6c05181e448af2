from kedro.pipeline import Node, Pipeline

from pipelines.reporting.nodes import summarize

STAGES = ("vae", "alignment", "sft", "rl")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(summarize,
             inputs={"curation": "curation_record", "evaluation": "evaluation", "registered": "registered_model",
                     **{stage: f"{stage}_record" for stage in STAGES}},
             outputs="run_summary", name="summarize"),
    ])
