"""Airflow 3 DAG for the deepgen Kedro pipeline `retrain`, written by kedro-airflow from
airflow_dags/kedro_dag.j2 and conf/base/airflow.yml. Regenerate, do not edit:

    kedro airflow create --pipelines retrain --jinja-file airflow_dags/kedro_dag.j2

Each Kedro node is one task, run in a KedroSession of the project at $DEEPGEN_PROJECT (default: the checkout this
file lies in, symlinks followed). A run's conf `{"kedro_params": {...}}` (nested, as in parameters_*.yml) adds
runtime parameters like `kedro run --params`, e.g. `{"kedro_params": {"data_root": "/srv/deepgen"}}`.

Task `check_retrain` short-circuits: when its output `retrain_decision` has
`needed` false, every later task is skipped.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Param, dag, get_current_context, task

env = "local"
pipeline_name = "retrain"
package_name = "pipelines"
project_path = Path(os.environ.get("DEEPGEN_PROJECT") or Path(__file__).resolve().parents[1])
conf_source = str(project_path / "conf")


def _run_kedro_node(node_names: list[str], load: str | None = None):
    """Run the nodes in a fresh session (Kedro is imported here, not at parse time); return dataset `load`."""
    from kedro.framework.project import configure_project
    from kedro.framework.session import KedroSession

    configure_project(package_name)
    runtime_params = get_current_context()["params"]["kedro_params"]
    with KedroSession.create(project_path=project_path, env=env, conf_source=conf_source,
                             runtime_params=runtime_params) as session:
        session.run(pipeline_names=[pipeline_name], node_names=node_names)
        return session.load_context().catalog.load(load) if load else None


@dag(
    dag_id="deepgen_retrain",
    start_date=datetime(2026, 1, 1),
    max_active_runs=1,
    schedule="0 3 * * *",
    catchup=False,
    params={"kedro_params": Param({}, type="object", description="runtime parameters, as kedro run --params")},
    default_args=dict(
        owner="airflow",
        depends_on_past=False,
        retries=1,
        retry_delay=timedelta(minutes=5),
    ),
)
def deepgen_retrain():

    @task(task_id="curate")
    def curate():
        _run_kedro_node(["curate"])

    @task.short_circuit(task_id="check-retrain")
    def check_retrain():
        decision = _run_kedro_node(["check_retrain"], load="retrain_decision")
        return bool(decision["needed"])

    @task(task_id="curate-rl-prompts")
    def curate_rl_prompts():
        _run_kedro_node(["curate_rl_prompts"])

    @task(task_id="train-vae")
    def train_vae():
        _run_kedro_node(["train_vae"])

    @task(task_id="train-alignment")
    def train_alignment():
        _run_kedro_node(["train_alignment"])

    @task(task_id="train-sft")
    def train_sft():
        _run_kedro_node(["train_sft"])

    @task(task_id="train-rl")
    def train_rl():
        _run_kedro_node(["train_rl"])

    @task(task_id="evaluate-states")
    def evaluate_states():
        _run_kedro_node(["evaluate_states"])

    @task(task_id="register-and-promote")
    def register_and_promote():
        _run_kedro_node(["register_and_promote"])

    @task(task_id="record-retrain")
    def record_retrain():
        _run_kedro_node(["record_retrain"])

    @task(task_id="summarize")
    def summarize():
        _run_kedro_node(["summarize"])

    tasks = {
        "curate": curate(),
        "check-retrain": check_retrain(),
        "curate-rl-prompts": curate_rl_prompts(),
        "train-vae": train_vae(),
        "train-alignment": train_alignment(),
        "train-sft": train_sft(),
        "train-rl": train_rl(),
        "evaluate-states": evaluate_states(),
        "register-and-promote": register_and_promote(),
        "record-retrain": record_retrain(),
        "summarize": summarize(),
    }
    tasks["curate"] >> tasks["check-retrain"]
    tasks["curate"] >> tasks["curate-rl-prompts"]
    tasks["check-retrain"] >> tasks["train-vae"]
    tasks["curate"] >> tasks["train-vae"]
    tasks["curate"] >> tasks["train-alignment"]
    tasks["train-vae"] >> tasks["train-alignment"]
    tasks["curate"] >> tasks["train-sft"]
    tasks["train-alignment"] >> tasks["train-sft"]
    tasks["curate"] >> tasks["train-rl"]
    tasks["curate-rl-prompts"] >> tasks["train-rl"]
    tasks["train-sft"] >> tasks["train-rl"]
    tasks["curate"] >> tasks["evaluate-states"]
    tasks["train-alignment"] >> tasks["evaluate-states"]
    tasks["train-rl"] >> tasks["evaluate-states"]
    tasks["train-sft"] >> tasks["evaluate-states"]
    tasks["train-vae"] >> tasks["evaluate-states"]
    tasks["curate"] >> tasks["register-and-promote"]
    tasks["evaluate-states"] >> tasks["register-and-promote"]
    tasks["train-alignment"] >> tasks["register-and-promote"]
    tasks["train-rl"] >> tasks["register-and-promote"]
    tasks["train-sft"] >> tasks["register-and-promote"]
    tasks["check-retrain"] >> tasks["record-retrain"]
    tasks["register-and-promote"] >> tasks["record-retrain"]
    tasks["curate"] >> tasks["summarize"]
    tasks["evaluate-states"] >> tasks["summarize"]
    tasks["register-and-promote"] >> tasks["summarize"]
    tasks["train-alignment"] >> tasks["summarize"]
    tasks["train-rl"] >> tasks["summarize"]
    tasks["train-sft"] >> tasks["summarize"]
    tasks["train-vae"] >> tasks["summarize"]


deepgen_retrain()