from kedro.pipeline import Node, Pipeline

from pipelines.reporting.nodes import summarize


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(summarize,
             inputs={"curation": "curation_record", "vae": "vae_record", "alignment": "alignment_record",
                     "sft": "sft_record", "evaluation": "evaluation", "registered": "registered_model"},
             outputs="run_summary", name="summarize"),
    ])
