"""Two `kedro run`s started together on one data folder: one curates and trains, the other waits on the locks and
reuses what the first wrote; nothing is written twice and every record agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"curation.num_samples": 120, "curation.shard_max_count": 40, "curation.progress": False, "vae.steps": 4,
         "vae.checkpoint_every": 4, "evaluation.preview_count": 1}
# deepgen's own INFO lines, unwrapped, are the evidence of who curated and who trained
LOGGING = """
version: 1
disable_existing_loggers: false
formatters: {plain: {format: "%(name)s %(levelname)s %(message)s"}}
handlers: {out: {class: logging.StreamHandler, stream: ext://sys.stdout, formatter: plain}}
loggers: {deepgen: {level: INFO}}
root: {level: WARNING, handlers: [out]}
"""


def start(data_root: Path, logging_config: Path) -> subprocess.Popen:
    params = ",".join(f"{k}={v}" for k, v in {"data_root": data_root, **SMALL}.items())
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", "curation,vae", "--params", params]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1",
                                 "KEDRO_LOGGING_CONFIG": str(logging_config)})


def test_two_runs_on_one_data_folder_curate_and_train_once(tmp_path):
    data_root = tmp_path / "data"
    logging_config = tmp_path / "logging.yml"
    logging_config.write_text(LOGGING)
    runs = [start(data_root, logging_config), start(data_root, logging_config)]
    logs = [run.communicate(timeout=600)[0] for run in runs]
    for run, log in zip(runs, logs):
        assert run.returncode == 0, log[-4000:]

    curated = [log for log in logs if "curation: wrote" in log]
    reused = [log for log in logs if "already holds these samples; reusing it" in log]
    assert len(curated) == 1 and len(reused) == 1, "exactly one run curates, the other reuses its shards"
    folders = [p for p in (data_root / "03_primary" / "shards").iterdir() if p.is_dir()]
    assert len(folders) == 1
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    on_disk = {p.name for p in folders[0].rglob("*.tar")}
    assert on_disk == {s["name"] for s in shards}  # written once: no second copy, no leftover temporary file
    assert not [p for p in folders[0].rglob("*") if p.name.endswith(".tmp")]

    trained = [log for log in logs if "stage vae: training run" in log]
    assert len(trained) == 1, "exactly one run trains the stage, the other reuses its record"
    assert sum("stage vae: run" in log and "reusing it" in log for log in logs) == 1
    vae_runs = [p for p in (data_root / "06_models" / "runs").iterdir() if p.is_dir()]
    assert [p.name.split("-")[0] for p in vae_runs] == ["vae"]
    record = json.loads((vae_runs[0] / "record.json").read_text())
    assert record["run_name"] == vae_runs[0].name
    assert json.loads((data_root / "06_models" / "vae_record.json").read_text())["checkpoint_uri"] == \
        record["checkpoint_uri"]

    client = MlflowClient(f"sqlite:///{data_root / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepgen-tiny")
    tracked = client.search_runs([experiment.experiment_id])
    assert len(tracked) == 2 and {r.info.status for r in tracked} == {"FINISHED"}
    assert {r.data.tags["data_version"] for r in tracked} == {manifest["data_version"]}
    curation = json.loads((data_root / "03_primary" / "curation_record.json").read_text())
    assert curation["data_version"] == manifest["data_version"]
