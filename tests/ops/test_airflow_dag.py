"""Scheduled retraining as Airflow runs it: the kept DAG (airflow_dags/) symlinked into a temp AIRFLOW_HOME with a
SQLite metadata DB, run by `airflow dags test` against a folder source in a temp data root.

A first `kedro run --pipelines retrain` trains and registers a model (init: base); then the DAG with unchanged data
must only curate and check, and after new files land in the source it must curate a new data version and train
(from the champion), evaluate and gate it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from deepgen import world
from deepgen.retrain import RetrainParams

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "airflow_dags" / "pipelines_retrain_dag.py"
DAG_ID = "deepgen_retrain"
MODEL = "deepgen-tiny"
BIN = Path(sys.executable).parent
# the chain on a few steps (as tests/pipelines/test_end_to_end.py's SMALL), nested as the DAG's kedro_params take it
SMALL = {
    "vae": {"steps": 12, "checkpoint_every": 6}, "alignment": {"steps": 12, "checkpoint_every": 6},
    "sft": {"steps": 6, "checkpoint_every": 6},
    "rl": {"steps": 2, "checkpoint_every": 2, "batch_size": 4, "log_every": 1,
           "grpo": {"prompts_per_worker": 2, "group_size": 2, "sample_steps": 2, "image_every": 2,
                    "aux_batch_size": 2}},
    "evaluation": {"per_category": 2, "steps": 2, "preview_count": 2, "per_category_overrides": {
        "single_object": 4, **{c: 2 for c in ("two_objects", "counting", "colors", "position", "color_attr")}}},
}
AFTER_THE_CHECK = {"train-vae", "train-alignment", "train-sft", "train-rl", "evaluate-states", "register-and-promote",
                   "record-retrain", "summarize"}


def write_images(folder: Path, n: int, seed: int) -> None:
    """ShapesWorld single objects exported as a folder: a PNG and a JSON sidecar (caption, category, scene spec: the
    RL stage's reward reads the spec) per key. About half are near duplicates, which curation drops."""
    folder.mkdir(parents=True, exist_ok=True)
    for sample in world.generate_samples(n, seed, 64, mix={"single_object": 1.0}):
        sample["image"].save(folder / f"{sample['key']}.png")
        meta = {k: sample[k] for k in ("caption", "category", "spec", "scene_key")}
        (folder / f"{sample['key']}.json").write_text(json.dumps(meta))


def kedro_params(data_root: Path, source: Path, init: str) -> dict:
    return {"data_root": str(data_root), "retrain": {"init": init},
            "curation": {"source": {"type": "folder", "uri": str(source)}}, **SMALL}


def flat(params: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in params.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def run(cmd: list[str], env: dict, timeout: int = 1500) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


class Airflow:
    """A throwaway Airflow: its home, metadata DB and dags folder in a temp dir; the DAG deployed by symlink."""

    def __init__(self, home: Path):
        if not (BIN / "airflow").exists():
            pytest.fail("apache-airflow is not installed in this venv: run `bash scripts/setup.sh test`")
        self.home = home
        (home / "dags").mkdir(parents=True)
        (home / "dags" / DAG_FILE.name).symlink_to(DAG_FILE)
        self.env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "KEDRO_DISABLE_TELEMETRY": "1",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        run([str(BIN / "airflow"), "db", "migrate"], self.env, timeout=300)

    def test_dag(self, params: dict) -> dict[str, str]:
        """Run the DAG once; the state of each of its tasks in that run."""
        run([str(BIN / "airflow"), "dags", "test", DAG_ID, "-f", str(self.home / "dags" / DAG_FILE.name),
             "-c", json.dumps({"kedro_params": params})], self.env)
        with sqlite3.connect(self.home / "airflow.db") as db:
            (run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                                   (DAG_ID,)).fetchone()
            return dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                                   (DAG_ID, run_id)).fetchall())


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A folder source, a model trained and registered on it by `kedro run --pipelines retrain`, and Airflow."""
    tmp = tmp_path_factory.mktemp("retrain")
    source, data_root = tmp / "source", tmp / "data"
    write_images(source, 60, seed=0)
    params = ",".join(f"{k}={v}" for k, v in flat(kedro_params(data_root, source, "base")).items())
    run([sys.executable, "-m", "kedro", "run", "--pipelines", "retrain", "--params", params],
        {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"})
    first = json.loads((data_root / "08_reporting" / "retrain_record.json").read_text())
    return source, data_root, first, Airflow(tmp / "airflow")


def client(data_root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{data_root}/mlflow/mlflow.db")


@pytest.mark.slow  # the module's first call trains the chain once (setup: ~4 min on 2 busy cores), this one ~30 s
def test_unchanged_data_is_a_no_op(deployed):
    source, data_root, first, airflow = deployed
    assert first["registered"]["version"] == 1 and first["init"] == "base"
    runs = sorted(p.name for p in (data_root / "06_models" / "runs").iterdir())

    states = airflow.test_dag(kedro_params(data_root, source, "base"))

    assert states["curate"] == states["check-retrain"] == "success"
    assert set(states.values()) == {"success", "skipped"}, states
    assert {states[t] for t in AFTER_THE_CHECK} == {"skipped"}, states
    decision = json.loads((data_root / "08_reporting" / "retrain_decision.json").read_text())
    assert decision["needed"] is False and decision["existing_version"] == 1
    assert decision["data_version"] == first["data_version"] and decision["config_hash"] == first["config_hash"]
    assert sorted(p.name for p in (data_root / "06_models" / "runs").iterdir()) == runs
    assert len(client(data_root).search_model_versions(f"name = '{MODEL}'")) == 1


@pytest.mark.slow  # the chain as 11 Airflow tasks: ~7 min on 2 busy cores, >20 min in a slow hour (2026-12-03 CI)
@pytest.mark.timeout(2700)
def test_new_files_are_curated_trained_from_the_champion_and_gated(deployed):
    source, data_root, first, airflow = deployed
    write_images(source, 30, seed=1)
    champion = client(data_root).get_model_version_by_alias(MODEL, "champion")

    states = airflow.test_dag(kedro_params(data_root, source, "champion"))

    assert set(states.values()) == {"success"}, states
    record = json.loads((data_root / "08_reporting" / "retrain_record.json").read_text())
    assert record["data_version"] != first["data_version"] and record["needed"] is True
    assert record["init"] == f"models:/{MODEL}/{champion.version}"
    init = json.loads((data_root / "06_models" / "retrain_init_record.json").read_text())
    assert init["checkpoint_uri"] == champion.tags["checkpoint_uri"]
    version = client(data_root).get_model_version(MODEL, str(record["registered"]["version"]))
    assert int(version.version) == 2
    assert version.tags["data_version"] == record["data_version"]
    assert version.tags["config_hash"] == record["config_hash"] != first["config_hash"]
    assert version.tags["promotion.decision"] in ("champion", "challenger") and version.tags["promotion.reason"]
    summary = json.loads((data_root / "08_reporting" / "run_summary.json").read_text())
    assert summary["data_version"] == record["data_version"]
    assert {"init", "alignment", "sft", "rl"} <= set(summary["evaluation"])


def test_kept_dag_is_what_kedro_airflow_generates(tmp_path):
    """The DAG in the repo must follow conf/base/airflow.yml and the pipeline: regenerate it after changing either."""
    run([sys.executable, "-m", "kedro", "airflow", "create", "--pipelines", "retrain", "--jinja-file",
         str(ROOT / "airflow_dags" / "kedro_dag.j2"), "--target-dir", str(tmp_path)],
        {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}, timeout=300)
    assert (tmp_path / DAG_FILE.name).read_text() == DAG_FILE.read_text()


def test_retrain_init_must_be_base_or_champion():
    with pytest.raises(ValueError, match=r"^retrain.init: 'latest' is not one of base, champion$"):
        RetrainParams.from_dict({"init": "latest"})
