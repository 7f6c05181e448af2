"""The checks every chunk of a run shares: exact and near dedup indexes (filled across chunks, restored on resume),
the contamination index and the great-expectations contracts. The last two take seconds to build, so a warm-up
thread builds them while the worker processes decode the first records."""

from __future__ import annotations

import io
import logging
import threading

import numpy as np

from deepgen.curation.params import CurationParams
from deepgen.curation.sources import Source

log = logging.getLogger(__name__)


class Checks:
    def __init__(self, params: CurationParams, source: Source, settings: dict):
        from deepgen.curation.dedup import ExactIndex, NearIndex

        self.params, self.source, self.settings = params, source, settings
        dd = settings["dedup"]
        self.exact = ExactIndex() if dd["exact"] else None
        self.near = NearIndex(dd["near_threshold"]) if dd["near"] else None
        self._contamination = None
        self._contracts: dict | None = None
        self._warmed: threading.Thread | None = None
        self._lock = threading.RLock()

    @property
    def dedup(self) -> bool:
        return self.exact is not None or self.near is not None

    def restore_dedup(self, state: bytes) -> None:
        """Add a finished chunk's kept hashes (its `dedup-*.npz`) to the indexes."""
        arrays = np.load(io.BytesIO(state))
        if self.exact is not None:
            self.exact.add(arrays["exact"])
        if self.near is not None:
            self.near.add(arrays["near"], arrays["near_aux"], arrays["near_has_aux"])

    def start_warm_up(self) -> None:
        """Build the slow helpers in a thread; call after any worker pool has forked (no child inherits its lock)."""
        self._warmed = threading.Thread(target=self._warm_up, daemon=True)
        self._warmed.start()

    def _warm_up(self) -> None:
        try:
            self.contamination()
            self.contracts()
        except Exception:  # noqa: BLE001 - the main thread builds them again and raises there
            log.debug("curation: warm-up failed", exc_info=True)

    def wait_warm(self) -> None:
        if self._warmed is not None:
            self._warmed.join()
            self._warmed = None

    def contamination(self):
        cfg = self.settings["contamination"]
        if not cfg["enabled"]:
            return None
        with self._lock:  # the warm-up thread may be building it
            if self._contamination is None:
                self._contamination = _cached_index(cfg["benchmarks"], cfg["threshold"])
        return self._contamination

    def contracts(self) -> dict:
        with self._lock:
            return self._build_contracts()

    def _build_contracts(self) -> dict:
        if self._contracts is None:
            from deepgen.curation import contracts as C

            p, s, src = self.params, self.settings, self.source
            images = "prompt" not in src.kinds
            multiple = s["resize"]["multiple"] if s["resize"]["policy"] == "fix_pixels" else None
            ratio = C.max_size_ratio(s["resize"]["image_size"], multiple, s["filters"]["max_aspect_ratio"]) \
                if multiple else None
            self._contracts = {
                "samples": C.Contract(C.sample_expectations(
                    s["resize"]["image_size"], list(src.kinds), list(src.categories) if src.categories else None,
                    p.max_caption_chars, images=images, min_side=s["filters"]["min_side"], multiple=multiple,
                    max_size_ratio=ratio), "samples"),
                "shards": C.Contract(C.shard_expectations(p.shard_max_bytes, p.shard_max_count,
                                                          p.max_caption_chars), "shards"),
            }
        return self._contracts


_INDEXES: dict = {}


def _cached_index(benchmarks, threshold):
    """One contamination index per (benchmark folder, threshold) per process (building one takes ~2 s)."""
    from deepgen.curation.contamination import ContaminationIndex, load_benchmarks

    key = (str(benchmarks), threshold)
    if key not in _INDEXES:
        _INDEXES[key] = ContaminationIndex(load_benchmarks(benchmarks), threshold=threshold)
    return _INDEXES[key]
