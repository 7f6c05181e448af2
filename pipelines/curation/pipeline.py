from kedro.pipeline import Node, Pipeline

from pipelines.curation.nodes import curate


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(curate, inputs=["params:curation", "params:storage"], outputs="curation_record", name="curate"),
    ])
