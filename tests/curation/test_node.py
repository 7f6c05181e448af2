"""The Kedro node builds the parameters from conf (the source chosen by `type`) and returns the curation record."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curation_corpus import write_folder

ROOT = Path(__file__).resolve().parents[2]


def test_node_curates_the_configured_source(tmp_path):
    from pipelines.curation.nodes import curate

    conf = yaml.safe_load((ROOT / "conf" / "base" / "parameters_curation.yml").read_text())["curation"]
    source = write_folder(tmp_path / "input")
    record = curate({**conf, "source": {"type": "folder", "uri": str(source)}, "workers": 1, "progress": False},
                    {"shards": str(tmp_path / "shards")})
    assert set(record) == {"data_version", "manifest_uri", "train_urls", "heldout_urls", "counts"}
    assert Path(record["manifest_uri"]).is_file() and record["counts"]["train"] > 0
    with pytest.raises(ValueError, match="unknown source"):
        curate({**conf, "source": {"type": "laion"}}, {"shards": str(tmp_path / "shards")})
    with pytest.raises(ValueError, match="unknown keys"):
        curate({**conf, "num_sample": 3}, {"shards": str(tmp_path / "shards")})
