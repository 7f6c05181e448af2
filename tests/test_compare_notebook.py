"""The version-comparison notebook stays runnable: executed top to bottom against a real MLflow registry (SQLite in
tmp) holding two tiny registered versions, its prompts drawn from a small curated shard set."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import mlflow
import nbformat
from mlflow.tracking import MlflowClient
from nbclient import NotebookClient
from PIL import Image

from deepgen import world
from deepgen.curation.curate import CurationParams, curate
from deepgen.registry import register

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_versions.ipynb"
NAME = "deepgen-compare"
OLD = {"overall": 0.40, "single_object_color": 0.90, "single_object_color.n": 144, "colors": 0.25}
NEW = {"overall": 0.60, "single_object_color": 0.85, "single_object_color.n": 144, "colors": 0.50}


def test_compare_versions_notebook_runs(tmp_path, monkeypatch, tiny_checkpoints):
    record = curate(CurationParams(num_samples=60, workers=1, progress=False), str(tmp_path / "shards"))
    uri, before = f"sqlite:///{tmp_path / 'mlflow.db'}", mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("compare", (tmp_path / "artifacts").as_uri()))
        for checkpoint, scores in zip(tiny_checkpoints[:2], (OLD, NEW)):
            with mlflow.start_run():
                register(checkpoint, NAME, scores, record["data_version"], eval_hash="h1")
        MlflowClient().set_registered_model_alias(NAME, "champion", "1")
    finally:
        mlflow.set_tracking_uri(before)

    prompts = len(world.CATEGORIES)  # one per category: the held-out shards hold a few, edits come from the top-up
    for key, value in {"MLFLOW_TRACKING_URI": uri, "DEEPGEN_MODEL": NAME, "DEEPGEN_VERSION_A": "champion",
                       "DEEPGEN_VERSION_B": "2", "DEEPGEN_PROMPTS": str(prompts), "DEEPGEN_STEPS": "2",
                       "DEEPGEN_MANIFEST": record["manifest_uri"], "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws into the notebook
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    html = "\n".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert f"{prompts} prompts from the held-out shards of data version {record['data_version']}" in text
    assert "WARNING" not in text  # both versions carry eval.hash h1
    for cell in ("v1 (champion)", "v2", "overall", "single_object_color", "colors", "0.200", "-0.050", "144"):
        assert cell in html, cell  # the versions overview and the scores table, side by side with differences
    pngs = [Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))) for o in outputs
            if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # the bar chart and the image grid
    grid = pngs[1].convert("RGB")
    assert grid.height > grid.width and len(grid.getcolors(1 << 20)) > 50  # one row per prompt, drawn images
