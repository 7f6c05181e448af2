"""`deepgen registry` on a real MLflow store (SQLite in tmp) holding tiny real checkpoints: list and show, promote by
hand, rollback that restores the previous champion and says so, one-line failures (run as a user runs it, in a
subprocess), the tracking URI read from the project's conf, and two promotions at once from two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from deepgen.cli import main
from deepgen.registry import register

torch.set_num_threads(1)
NAME = "deepgen-cli"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A project folder (conf/base/parameters.yml as the repo has it) whose data/mlflow/mlflow.db holds NAME with
    four versions, none champion yet (copies of one tiny checkpoint: the registry tells them apart by path)."""
    from deepgen.model.checkpoint import save_checkpoint
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen

    project = tmp_path_factory.mktemp("project")
    (project / "conf" / "base").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters.yml", project / "conf" / "base")
    (project / "data" / "mlflow").mkdir(parents=True)
    uri, before = f"sqlite:///{project / 'data' / 'mlflow' / 'mlflow.db'}", mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("cli", (project / "artifacts").as_uri()))
    torch.manual_seed(0)
    first = save_checkpoint(DeepGen(preset("tiny")), project / "ckpt" / "v1")
    with mlflow.start_run():
        for i in range(1, 5):
            path = first if i == 1 else shutil.copytree(first, project / "ckpt" / f"v{i}")
            register(str(path), NAME, {"overall": 0.1 * i}, f"data-{i}", eval_hash="h1")
    yield uri, project
    mlflow.set_tracking_uri(before)


def cli(*argv: str, cwd: Path | None = None, uri: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    args = [sys.executable, "-m", "deepgen.cli", "registry", *argv] + (["--tracking-uri", uri] if uri else [])
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def champion(uri: str) -> int:
    return int(MlflowClient(uri).get_model_version_by_alias(NAME, "champion").version)


def test_rollback_without_history_fails_in_one_line(store):
    uri, _ = store
    result = cli("rollback", NAME, "--reason", "bad release", uri=uri)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"deepgen registry rollback: {NAME}: no earlier champion to roll back to (current: none)"]


@pytest.mark.parametrize("argv, message", [
    (["show", "no-such-model"], "unknown registered model 'no-such-model'"),
    (["show", f"{NAME}/99"], f"{NAME} has no version 99"),
    (["show", f"{NAME}@nightly"], f"{NAME} has no alias 'nightly'"),
    (["promote", NAME, "99", "--reason", "x"], f"{NAME} has no version 99"),
    (["rollback", "no-such-model", "--reason", "x"], "unknown registered model 'no-such-model'"),
])
def test_unknown_model_or_version_is_one_line(store, capsys, argv, message):
    uri, _ = store
    assert main(["registry", *argv, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_missing_store_is_one_line_not_an_empty_new_one(tmp_path, capsys):
    assert main(["registry", "list", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"deepgen registry list: no MLflow store at {tmp_path / 'none.db'} (run the pipeline first, or give "
        f"--tracking-uri)"]
    assert not (tmp_path / "none.db").exists()


def test_promote_then_rollback_restores_the_previous_champion(store, capsys):
    uri, project = store
    for version, reason in ((1, "first release"), (2, "better colours")):
        assert main(["registry", "promote", NAME, str(version), "--reason", reason, "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{NAME}: champion v1 -> v2 (better colours)"

    result = cli("rollback", NAME, "--reason", "v2 draws red as green", cwd=project)  # the URI from conf/
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{NAME}: champion rolled back from v2 to v1 (v2 draws red as green)"
    client = MlflowClient(uri)
    assert champion(uri) == 1
    rolled = client.get_model_version(NAME, "2").tags
    assert rolled["promotion.decision"] == "rolled_back" and rolled["promotion.replaced_by"] == "v1"
    restored = client.get_model_version(NAME, "1").tags
    assert restored["promotion.decision"] == "champion" and restored["promotion.reason"] == "v2 draws red as green"

    assert main(["registry", "show", NAME, "--json", "--tracking-uri", uri]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(e["version"], e["action"], e["reason"]) for e in shown["history"]] == [
        (1, "promote", "first release"), (2, "promote", "better colours"), (1, "rollback", "v2 draws red as green")]
    assert {v["version"]: v["decision"] for v in shown["versions"]} == {1: "champion", 2: "rolled_back", 3: None,
                                                                          4: None}
    assert main(["registry", "rollback", NAME, "--reason", "again", "--tracking-uri", uri]) == 2
    assert "no earlier champion to roll back to (current: v1)" in capsys.readouterr().err
    assert champion(uri) == 1


def test_list_and_show_a_version(store, capsys):
    uri, _ = store
    assert main(["registry", "list", "--tracking-uri", uri]) == 0
    assert NAME in capsys.readouterr().out
    assert main(["registry", "show", f"{NAME}/3", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{NAME} v3") and "  data_version: data-3" in out and "  eval.overall: 0.300000" in out
    assert "  git.commit: " in out and "  package.torch: " in out


def test_two_promotions_at_once_leave_one_consistent_champion(store):
    uri, _ = store
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([sys.executable, "-m", "deepgen.cli", "registry", "promote", NAME, str(v), "--reason",
                               f"race {v}", "--tracking-uri", uri], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for v in (3, 4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    client = MlflowClient(uri)
    history = json.loads(client.get_registered_model(NAME).tags["champion.history"])
    last_two = history[-2:]
    assert {e["version"] for e in last_two} == {3, 4}
    assert last_two[1]["previous"] == last_two[0]["version"]  # the second move saw the first one's result
    assert champion(uri) == last_two[1]["version"]
    decisions = {int(v.version): v.tags.get("promotion.decision") for v in client.search_model_versions(
        f"name='{NAME}'")}
    assert [v for v, d in decisions.items() if d == "champion"] == [champion(uri)]
