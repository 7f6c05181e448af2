"""The promotion gate against a real MLflow registry (SQLite in tmp) with tiny real checkpoints: a better candidate
becomes champion, a worse one stays challenger with the failing key in its tags, a champion scored under an older
scorer is re-scored by a real evaluation, and two promotions at once leave one consistent champion; a registered
version loads through MLflow's own pyfunc loader without unpickling anything."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from deepgen.registry import Gate, decide, promote, register, set_champion
from deepgen.registry.gate import flatten

torch.set_num_threads(1)

GOOD = {"overall": 0.40, "single_object_color": 0.90, "single_object_shape": 0.60}
GATE = Gate(metric="overall", no_regression={"single_object_color": 0.03, "single_object_shape": 0.03})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real MLflow tracking store (SQLite) with one experiment; the global tracking URI is restored after."""
    root = tmp_path_factory.mktemp("mlflow")
    uri, before = f"sqlite:///{root / 'mlflow.db'}", mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("gate", (root / "artifacts").as_uri()))
    yield uri
    mlflow.set_tracking_uri(before)


def _register(checkpoint: str, name: str, scores: dict, eval_hash: str = "h1") -> int:
    with mlflow.start_run():
        return register(checkpoint, name, scores, "data-v1", eval_hash=eval_hash)["version"]


def test_a_regression_beyond_margin_blocks_and_names_the_key():
    worse_color = {**GOOD, "overall": 0.45, "single_object_color": 0.80}
    decision = decide(GATE, worse_color, GOOD)
    assert not decision.promote and set(decision.failed) == {"single_object_color"}
    assert "single_object_color 0.800 regresses from champion 0.900" in decision.reason
    assert decide(GATE, {**GOOD, "overall": 0.45, "single_object_color": 0.88}, GOOD).promote  # within margin


def test_a_drop_within_two_standard_errors_is_noise_not_a_regression():
    champion = {**GOOD, "single_object_color.n": 32}
    candidate = {**GOOD, "overall": 0.45, "single_object_color": 0.80, "single_object_color.n": 32}
    assert decide(GATE, candidate, champion).promote  # drop 0.10 < 2 * sqrt(.09/32 + .16/32) = 0.18
    many = {"single_object_color.n": 2000}
    decision = decide(GATE, {**candidate, **many}, {**champion, **many})  # 2 SE = 0.023 at n=2000
    assert not decision.promote and "and 2 SE" in decision.failed["single_object_color"]
    se = {"single_object_color_se": 0.06}
    assert decide(GATE, {**candidate, **se}, {**GOOD, **se}).promote  # 2 * 0.085 > 0.10


def test_thresholds_take_dotted_keys_of_nested_suites():
    gate = Gate(metric="overall", thresholds={"suites.geneval.overall": 0.5, "single_object_color": 0.5})
    nested = {"overall": 0.4, "single_object_color": 0.9, "suites": {"geneval": {"overall": 0.45}}}
    assert flatten(nested)["suites.geneval.overall"] == 0.45
    decision = decide(gate, nested, None)
    assert not decision.promote and set(decision.failed) == {"suites.geneval.overall"}
    assert decide(gate, {**nested, "suites": {"geneval": {"overall": 0.55}}}, None).promote


def test_bad_gate_settings_are_one_line_errors_naming_the_key():
    with pytest.raises(ValueError, match=r"promotion.gate: unknown key\(s\) \['margins'\]"):
        Gate.from_params({"metric": "overall", "margins": {}})
    with pytest.raises(ValueError, match="promotion.gate.thresholds.colors: expected a number"):
        Gate.from_params({"thresholds": {"colors": "high"}})
    with pytest.raises(ValueError, match="promotion.gate.metric 'geneval' is not among the candidate's scores"):
        decide(Gate(metric="geneval"), GOOD, None)


def test_better_candidate_becomes_champion_worse_stays_challenger(tiny_checkpoints, store, tmp_path):
    client, name = MlflowClient(), "gate-better-worse"
    first = _register(tiny_checkpoints[0], name, GOOD)
    assert promote(name, first, GOOD, GATE, eval_hash="h1")["alias"] == "champion"

    better = {"overall": 0.50, "single_object_color": 0.95, "single_object_shape": 0.62}
    second = _register(tiny_checkpoints[1], name, better)
    result = promote(name, second, better, GATE, eval_hash="h1")
    assert result["alias"] == "champion" and result["compared_with"] == first
    replaced = client.get_model_version(name, str(first)).tags
    assert replaced["promotion.decision"] == "replaced" and replaced["promotion.replaced_by"] == f"v{second}"

    worse = {"overall": 0.55, "single_object_color": 0.70, "single_object_shape": 0.62}
    third = _register(tiny_checkpoints[2], name, worse)
    result = promote(name, third, worse, GATE, eval_hash="h1")
    assert result["alias"] == "challenger" and result["failed"] == ["single_object_color"]
    tags = client.get_model_version(name, str(third)).tags
    assert tags["promotion.decision"] == "challenger"
    assert "regresses from champion 0.950" in tags["promotion.failed.single_object_color"]
    assert f"vs champion v{second}" in tags["promotion.reason"]
    assert int(client.get_model_version_by_alias(name, "champion").version) == second
    assert int(client.get_model_version_by_alias(name, "challenger").version) == third
    for key in ("git.commit", "git.dirty", "package.torch", "package.mlflow", "package.deepgen"):
        assert tags[key]
    assert tags["data_version"] == "data-v1" and tags["eval.hash"] == "h1" and tags["eval.overall"] == "0.550000"
    history = json.loads(client.get_registered_model(name).tags["champion.history"])
    assert [(e["version"], e["previous"], e["action"]) for e in history] == [(first, None, "promote"),
                                                                              (second, first, "promote")]
    assert all(e["user"] and e["time"].endswith("Z") for e in history)

    set_champion(name, third, "accepted by hand: the colour drop is a scorer issue")  # the gate's verdict goes
    tags = client.get_model_version(name, str(third)).tags
    assert tags["promotion.decision"] == "champion" and not any(k.startswith("promotion.failed.") for k in tags)
    assert client.get_model_version(name, str(second)).tags["promotion.replaced_by"] == f"v{third}"
    assert "challenger" not in client.get_registered_model(name).aliases


def test_champion_scored_under_an_older_scorer_is_rescored(tiny_checkpoints, store, small_shards, tmp_path):
    from deepgen.eval.promotion import EvaluationContext, PromotionConfig, promote_best
    from deepgen.eval.run import evaluate_checkpoint

    client, name = MlflowClient(), "gate-rescore"
    shards, _, _ = small_shards
    settings = {"per_category": 1, "per_category_overrides": {}, "steps": 2, "guidance": 3.5, "batch_size": 16,
                "seed": 0, "grid_size": 4}
    config = PromotionConfig.from_params({"model_name": name, "candidates": ["alignment", "sft"],
                                          "gate": {"metric": "overall"}, "report": {"prompts": 3}}, "tiny")
    stale = {"overall": 0.9, "colors": 0.9}  # numbers from an older scorer: no candidate here could beat them
    champion = _register(tiny_checkpoints[0], name, stale, eval_hash="older-scorer")
    promote(name, champion, stale, config.gate, eval_hash="older-scorer")

    with mlflow.start_run() as run:
        context = EvaluationContext(shards["heldout_urls"], settings, str(tmp_path / "cache"),
                                    {"uri": store, "run_id": run.info.run_id})
        records = {stage: {"checkpoint_uri": ckpt, "data_version": "data-v2", "run_name": f"{stage}-x"}
                   for stage, ckpt in (("alignment", tiny_checkpoints[1]), ("sft", tiny_checkpoints[2]))}
        result = promote_best(records, {"alignment": {"overall": 0.3}, "sft": {"overall": 0.5}}, config, context)

    assert result["stage"] == "sft" and result["alias"] == "champion" and result["compared_with"] == champion
    assert f"re-scored under evaluation {context.hash}" in result["reason"]
    real = evaluate_checkpoint(f"champion-v{champion}", tiny_checkpoints[0], shards["heldout_urls"], settings,
                               str(tmp_path / "cache"))  # the re-scoring's cached result
    assert real["overall"] < 0.5  # an untrained tiny model; the stale 0.9 would have blocked the candidate
    old = client.get_model_version(name, str(champion)).tags
    assert old["eval.hash"] == context.hash and old["eval.overall"] == f"{real['overall']:.6f}"
    assert old["eval.colors"] == f"{real['colors']:.6f}" and old["eval.rescored_at"]
    assert old["promotion.decision"] == "replaced"
    new = client.get_model_version(name, str(result["version"])).tags
    assert new["stage"] == "sft" and new["eval.hash"] == context.hash and new["checkpoint_uri"] == tiny_checkpoints[2]

    report = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/promotion/report.md")
    assert f"| champion v{champion} | candidate v{result['version']} (sft) |" in report
    assert f"| overall | {real['overall']:.3f}" in report
    grid = Image.open(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/promotion/side_by_side.png"))
    assert grid.size == (2 * 128, 3 * (128 + 40))  # two models side by side, one row per report prompt


def test_two_promotions_at_once_leave_one_consistent_champion(tiny_checkpoints, store, tmp_path):
    client, name = MlflowClient(), "gate-concurrent"
    base = _register(tiny_checkpoints[0], name, GOOD)
    promote(name, base, GOOD, GATE, eval_hash="h1")
    candidates = {}
    for i, overall in enumerate((0.6, 0.7)):
        copy = shutil.copytree(tiny_checkpoints[1 + i], tmp_path / f"copy{i}")
        candidates[_register(str(copy), name, {**GOOD, "overall": overall})] = {**GOOD, "overall": overall}
    barrier, results = threading.Barrier(2), []

    def go(version: int) -> None:
        barrier.wait()
        results.append(promote(name, version, candidates[version], GATE, eval_hash="h1"))

    threads = [threading.Thread(target=go, args=(v,)) for v in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    best = max(candidates, key=lambda v: candidates[v]["overall"])  # whichever went first, the 0.7 one wins
    assert len(results) == 2
    assert int(client.get_model_version_by_alias(name, "champion").version) == best
    history = json.loads(client.get_registered_model(name).tags["champion.history"])
    assert history[-1]["version"] == best
    assert all(e["previous"] == p["version"] for p, e in zip(history, history[1:]))  # no move saw a stale champion
    decisions = {int(v.version): v.tags["promotion.decision"] for v in client.search_model_versions(f"name='{name}'")}
    assert [v for v, d in decisions.items() if d == "champion"] == [best]


def test_a_registered_version_loads_through_mlflow_without_unpickling(tiny_checkpoints, store):
    """Logged from code (registry/pyfunc_code.py): MLflow rebuilds the model by running that file, so the version
    holds no pickle, and `mlflow.pyfunc.load_model` gives a model that generates."""
    version = _register(tiny_checkpoints[0], "gate-pyfunc", GOOD)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/gate-pyfunc/{version}"))
    assert not list(folder.rglob("*.pkl")) and (folder / "pyfunc_code.py").exists()
    out = mlflow.pyfunc.load_model(f"models:/gate-pyfunc/{version}").predict(
        pd.DataFrame({"prompt": ["a blue square"]}), params={"steps": 1})
    image = Image.open(io.BytesIO(base64.b64decode(out["png_base64"][0])))
    assert list(out["prompt"]) == ["a blue square"] and image.size[0] > 0
