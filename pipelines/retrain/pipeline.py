from kedro.pipeline import Node, Pipeline

from pipelines import training
from pipelines.retrain.nodes import check_retrain, record_retrain


def create_pipeline(steps: dict[str, Pipeline]) -> Pipeline:
    """The default chain (`steps`, as registered), with the check between curation and training and the first stage
    starting from `retrain_init_record` (the champion or the base). Kedro runs every node; the Airflow DAG skips
    the rest when the check finds nothing to do."""
    check = Node(check_retrain,
                 inputs={"curation": "curation_record", "retrain": "params:retrain", "promotion": "params:promotion",
                         "model": "params:model", "parameters": "parameters"},
                 outputs=["retrain_decision", "retrain_init_record"], name="check_retrain")
    record = Node(record_retrain, inputs={"decision": "retrain_decision", "registered": "registered_model"},
                  outputs="retrain_record", name="record_retrain")
    chain = sum((pipeline for name, pipeline in steps.items() if name != "vae"), Pipeline([]))
    return chain + Pipeline([check, record]) + training.create_pipeline("vae", parent="retrain_init")
