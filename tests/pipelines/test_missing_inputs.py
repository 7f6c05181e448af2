"""A pipeline run alone on a data folder that no earlier run filled fails in one line naming what to run first, and
opens no MLflow run (pipelines.hooks.InputsHook)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("pipeline, missing, writer", [("reporting", "curation_record", "curation"),
                                                       ("promotion", "curation_record", "curation")])
def test_pipeline_without_its_inputs_names_the_pipeline_to_run_first(tmp_path, pipeline, missing, writer):
    data_root = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "kedro", "run", "--pipelines", pipeline, "--params",
                             f"data_root={data_root}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"kedro run: input '{missing}' (and ") and f"the {writer} pipeline writes it" in last
    assert "Traceback" not in result.stderr + result.stdout
    client = MlflowClient(f"sqlite:///{data_root}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("deepgen-tiny")
    assert experiment is None or not client.search_runs([experiment.experiment_id])
