"""`kedro viz` draws this project: the graph is exported through kedro-viz's own API (what `kedro viz build` writes to
build/api/) into tmp, in a fresh process as the CLI loads the project, and every stage of the chain is a node there,
in order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["curate", "train_vae", "train_alignment", "train_sft", "train_rl", "evaluate_states", "register_and_promote",
          "summarize"]
PIPELINES = {"__default__", "curation", "vae", "alignment", "sft", "rl", "evaluation", "promotion", "reporting",
             "retrain"}
EXPORT = """
import sys
from pathlib import Path

import fsspec
from kedro_viz.api.rest.responses.save_responses import save_api_responses_to_fs
from kedro_viz.server import load_and_populate_data

load_and_populate_data(Path(sys.argv[1]))
save_api_responses_to_fs(sys.argv[2], fsspec.filesystem("file"), False)
"""


def reachable(edges: list[dict], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo += [e["target"] for e in edges if e["source"] == node]
    return False


def test_viz_graph_has_every_stage_in_order(tmp_path):
    result = subprocess.run([sys.executable, "-c", EXPORT, str(ROOT), str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    graph = json.loads((tmp_path / "api" / "main").read_text())
    assert graph["selected_pipeline"] == "__default__"
    assert {p["id"] for p in graph["pipelines"]} == PIPELINES
    assert {p.name for p in (tmp_path / "api" / "pipelines").iterdir()} == PIPELINES  # one graph per pipeline
    ids = {n["name"]: n["id"] for n in graph["nodes"] if n["type"] == "task"}
    assert set(STAGES) <= set(ids), sorted(ids)
    for before, after in zip(STAGES, STAGES[1:]):  # each stage feeds the next through the datasets between them
        assert reachable(graph["edges"], ids[before], ids[after]), (before, after)
    assert not reachable(graph["edges"], ids["summarize"], ids["curate"])
