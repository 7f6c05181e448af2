"""The shard-browsing notebook stays runnable: executed top to bottom on a small curated set."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from deepgen.curation.curate import CurationParams, curate
from curation_corpus import write_folder

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "browse_shards.ipynb"


def test_browse_shards_notebook_runs(tmp_path, monkeypatch):
    source = write_folder(tmp_path / "input")
    record = curate(CurationParams(source={"type": "folder", "uri": str(source)}, workers=1, progress=False),
                    str(tmp_path / "out"))
    monkeypatch.setenv("DEEPGEN_MANIFEST", record["manifest_uri"])
    monkeypatch.setenv("DEEPGEN_GRID", "4")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws into the notebook
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert record["data_version"] in text
    assert "image_truncated" in text and "geneval" in text
    assert any("image/png" in o.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.outputs)  # the sample grid was drawn
    assert os.environ["DEEPGEN_MANIFEST"] == record["manifest_uri"]
