"""Public benchmark prompt files (see SOURCES.md), shipped inside the package so contamination checks need no download.

`BENCHDATA_DIR` is computed from this file's location, so it points at the source tree under an editable install and at
the installed copy otherwise.
"""

from pathlib import Path

BENCHDATA_DIR: Path = Path(__file__).resolve().parent
