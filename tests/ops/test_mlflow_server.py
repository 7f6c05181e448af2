"""The pipeline against a tracking server as a team runs it: `mlflow server` with the basic-auth app on PostgreSQL,
artifacts on S3 (loopback), the pipeline's MLflow user and password read from Kedro credentials. One short `kedro
run` (the default pipeline, a few steps per stage) serves every test: what reached the server, who is refused, and
that secrets planted in the credentials reached no output."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import requests
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # a whole `kedro run` (minutes)
USER = "pipeline"
# Each stage a few steps: the run proves the wiring, not the model.
TINY = {
    "curation.num_samples": 200, "curation.shard_max_count": 100,
    "vae.steps": 4, "vae.checkpoint_every": 4, "alignment.steps": 4, "alignment.checkpoint_every": 4,
    "sft.steps": 2, "sft.checkpoint_every": 2, "rl.steps": 1, "rl.checkpoint_every": 1,
    "rl.grpo.prompts_per_worker": 1, "rl.grpo.group_size": 2, "rl.grpo.sample_steps": 2,
    "evaluation.per_category": 1, "evaluation.steps": 2,
    **{f"evaluation.per_category_overrides.{c}": 1 for c in ("single_object", "two_objects", "counting", "colors",
                                                             "position", "color_attr")},
    "evaluation.preview_count": 2,
}


@dataclass
class Run:
    result: subprocess.CompletedProcess
    data_root: Path
    ray_dir: Path
    summary: dict
    password: str
    s3_secret: str


@pytest.fixture(scope="module")
def pipeline_run(auth_server, tmp_path_factory):
    """`kedro run` with a conf env of its own: the server as tracking URI, the user's password and an S3 secret key
    (both random, i.e. planted) in its credentials.yml. The environment carries no MLflow or AWS credentials, so
    the run authenticates only if the hook exports what credentials.yml holds."""
    password, s3_secret = f"pw-{secrets.token_hex(12)}", f"s3-{secrets.token_hex(12)}"
    auth_server.create_user(USER, password)
    tmp = tmp_path_factory.mktemp("server-run")
    conf = tmp / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "server").mkdir()  # credentials only: an env's parameters would replace base's sections (Kedro 1.7)
    (conf / "server" / "credentials.yml").write_text(yaml.safe_dump({
        "mlflow": {"username": USER, "password": password},
        "s3": {"aws_access_key_id": "pipeline-key-id", "aws_secret_access_key": s3_secret}}))
    data_root = tmp / "data"
    ray_dir = Path(tempfile.mkdtemp(prefix="dgray"))  # short: Ray's socket paths must stay under 107 characters
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(KEDRO_DISABLE_TELEMETRY="1", RAY_TMPDIR=str(ray_dir))
    server = {"tracking.uri": auth_server.uri, "tracking.experiment": "deepgen-server",
              "tracking.artifact_root": "null"}  # null: the server's default, proxied to S3
    params = ",".join(f"{k}={v}" for k, v in {"data_root": data_root, **server, **TINY}.items())
    try:
        result = subprocess.run([sys.executable, "-m", "kedro", "run", "--conf-source", str(conf), "--env", "server",
                                 "--params", params],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        summary = json.loads((data_root / "08_reporting" / "run_summary.json").read_text())
        yield Run(result, data_root, ray_dir, summary, password, s3_secret)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.fixture
def client(pipeline_run, auth_server, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pipeline_run.password)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.uri)
    return MlflowClient(auth_server.uri)


def test_run_metrics_artifacts_and_champion_live_on_the_server(pipeline_run, auth_server, client, tmp_path):
    summary = pipeline_run.summary
    assert summary["tracking_uri"] == auth_server.uri
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval/sft/overall"] == pytest.approx(summary["evaluation"]["sft"]["overall"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "alignment/loss")] == [4]
    # artifacts went through the server to S3: the evaluation grids and the logged model are objects in the bucket
    keys = auth_server.object_keys()
    run_prefix = f"runs/{run.info.experiment_id}/{run.info.run_id}/artifacts/"
    assert any(k.startswith(run_prefix + "evaluation/") and k.endswith("sft_samples.png") for k in keys), keys
    reg = summary["registered_model"]
    champion = client.get_model_version_by_alias(reg["name"], "champion")
    assert int(champion.version) == reg["version"] and champion.tags["promotion.decision"] == "champion"
    assert champion.source.startswith("models:/m-")  # MLflow 3: a logged model, stored beside the runs
    assert any(k.endswith(f"/{champion.source.removeprefix('models:/')}/artifacts/MLmodel") for k in keys), keys
    mlmodel = mlflow.artifacts.download_artifacts(f"models:/{reg['name']}@champion/MLmodel", dst_path=str(tmp_path),
                                                tracking_uri=auth_server.uri, registry_uri=auth_server.uri)
    assert "checkpoint" in yaml.safe_load(Path(mlmodel).read_text())["flavors"]["python_function"]["artifacts"]


def test_clients_without_valid_credentials_are_refused(pipeline_run, auth_server, monkeypatch):
    run_id = pipeline_run.summary["mlflow_run_id"]
    response = requests.get(f"{auth_server.uri}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
    assert response.status_code == 401
    wrong = requests.get(f"{auth_server.uri}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30,
                         auth=(USER, pipeline_run.password + "x"))
    assert wrong.status_code == 401
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MlflowException) as refused:
        MlflowClient(auth_server.uri).get_run(run_id)
    assert refused.value.get_http_status_code() == 401


def test_planted_secrets_reach_no_output(pipeline_run, auth_server, client):
    """Every place a run writes to: its console, MLflow (runs, experiments, logged and registered models, versions),
    every artifact object, every file under data_root (run_summary.json among them) and Ray's session folder."""
    outputs: dict[str, bytes] = {"kedro stdout": pipeline_run.result.stdout.encode(),
                                 "kedro stderr": pipeline_run.result.stderr.encode()}
    experiments = client.search_experiments()
    ids = [e.experiment_id for e in experiments]
    outputs["experiments"] = repr([(e.name, e.tags, e.artifact_location) for e in experiments]).encode()
    for run in client.search_runs(ids):
        outputs[f"run {run.info.run_id}"] = repr((run.info.run_name, run.data.params, run.data.tags,
                                                  sorted(run.data.metrics))).encode()
    for model in client.search_logged_models(ids):
        outputs[f"logged model {model.model_id}"] = repr((model.name, model.params, model.tags)).encode()
    for registered in client.search_registered_models():
        outputs[f"registered {registered.name}"] = repr((registered.tags, registered.aliases,
                                                        registered.description)).encode()
        for version in client.search_model_versions(f"name = '{registered.name}'"):
            outputs[f"version {version.version}"] = repr((version.tags, version.source, version.description)).encode()
    for key in auth_server.object_keys():
        outputs[f"s3 {key}"] = auth_server.s3.get_object(Bucket=auth_server.bucket, Key=key)["Body"].read()
    for root in (pipeline_run.data_root, pipeline_run.ray_dir):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                outputs[str(path)] = path.read_bytes()
    assert (pipeline_run.data_root / "08_reporting" / "run_summary.json").as_posix() in outputs
    assert any(k.startswith("s3 ") for k in outputs) and any(k.startswith("run ") for k in outputs)
    for secret in (pipeline_run.password, pipeline_run.s3_secret):
        leaks = [name for name, data in outputs.items() if secret.encode() in data]
        assert not leaks, f"planted secret found in: {leaks[:10]}"
