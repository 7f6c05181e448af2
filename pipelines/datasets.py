"""Catalog datasets of this project."""

from __future__ import annotations

import json
from typing import Any

from kedro.io.core import get_filepath_str
from kedro_datasets.json import JSONDataset

from deepgen import storage


class AtomicJSONDataset(JSONDataset):
    """kedro-datasets' JSONDataset truncates and rewrites a local file in place, so a second `kedro run` on the same
    data folder can load a half-written record; this one writes a temporary file and renames it over the old one."""

    def save(self, data: Any) -> None:
        if self._protocol != "file":  # object stores replace an object whole already
            return super().save(data)
        path = get_filepath_str(self._get_save_path(), self._protocol)
        storage.write_bytes(path, json.dumps(data, **self._save_args).encode())
        self._invalidate_cache()
