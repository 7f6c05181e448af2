"""Curation's typed parameters and the settings resolved from them: what names the output folder (the fingerprint),
what the worker processes get and what the manifest records. Read once; nothing here reads or writes data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from deepgen.curation import filters
from deepgen.curation.sources import Source, make_source

FORMAT_VERSION = 2  # bump when shard layout, manifest schema or curation semantics change
RUNTIME_ONLY = ("workers", "progress")  # parameters that cannot change the output

DEFAULT_DEDUP = {
    "exact": None,  # content hash of the decoded pixels; null: on, except for synthetic sources (ShapesWorld)
    "near": None,  # perceptual hash within `near_threshold` bits; null: as `exact`
    "near_threshold": 4,  # Hamming distance over the 64-bit DCT hash
    "include_caption": False,  # true: an image is a duplicate only with the same (normalised) caption
}
DEFAULT_CONTAMINATION = {
    "enabled": True,
    "exclude": True,  # false: matches are reported and kept
    "threshold": 0.7,  # near match: word-set Jaccard similarity at least this
    "benchmarks": None,  # a benchmark data folder; null: the packaged one (deepgen.benchdata)
    "examples": 5,  # examples kept per benchmark and match kind in the report
}


@dataclass
class CurationParams:
    source: dict | str = "shapes_world"  # {type: shapes_world|folder|deepgen_json|webdataset|prompts, ...}
    num_samples: int = 4000  # ShapesWorld: how many samples
    seed: int = 0  # ShapesWorld
    image_size: int = 64  # ShapesWorld render size, and the resize policy's target sqrt(H*W)
    heldout_fraction: float = 0.1
    mix: dict[str, float] | None = None  # ShapesWorld
    shard_max_count: int = 1000
    shard_max_bytes: int = 64 << 20
    max_caption_chars: int = 512
    max_failure_rate: float = 0.01  # samples quarantined by the data contracts, over those checked
    max_reject_rate: float | None = None  # samples rejected by the filters, over all records; null: no limit
    filters: dict = field(default_factory=dict)  # overrides of filters.DEFAULT_FILTERS
    resize: dict = field(default_factory=dict)  # overrides of filters.DEFAULT_RESIZE
    dedup: dict = field(default_factory=dict)  # overrides of DEFAULT_DEDUP
    contamination: dict = field(default_factory=dict)  # overrides of DEFAULT_CONTAMINATION
    png_compress_level: int = 6
    chunk_records: int = 50000  # resume unit: records per chunk (its last shard per split may be partial)
    contract_batch_rows: int = 10000  # rows per GX validation (GX costs ~0.2-0.5 s per call, whatever the size)
    contract_batch_bytes: int = 256 << 20  # ... or fewer, when their encoded samples reach this many bytes
    workers: int | None = None  # processes decoding and checking; null: all cores; 1: in this process
    progress: bool = True  # progress bars
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, params: dict) -> "CurationParams":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"parameters curation: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**params)

    def fingerprint(self, source: Source | None = None) -> str:
        """Names the output folder: the parameters (runtime-only ones left out) and the input as it is now."""
        body = {k: v for k, v in asdict(self).items() if k not in RUNTIME_ONLY}
        if source is not None:
            body["input"] = {"location": source.location(), "signature": source.signature()}
        payload = json.dumps({"format": FORMAT_VERSION, **body}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_source(params: CurationParams) -> Source:
    return make_source(params.source, shapes_world={
        "num_samples": params.num_samples, "seed": params.seed, "image_size": params.image_size, "mix": params.mix,
        "heldout_fraction": params.heldout_fraction})


def resolve_settings(params: CurationParams, source: Source) -> dict:
    """Every knob with its default filled in: what the workers get and what the manifest records."""
    def merged(defaults: dict, given: dict, name: str) -> dict:
        unknown = sorted(set(given or {}) - set(defaults))
        if unknown:
            raise ValueError(f"parameters curation.{name}: unknown keys {unknown} (known: {sorted(defaults)})")
        return {**defaults, **(given or {})}

    flt = merged(filters.DEFAULT_FILTERS, params.filters, "filters")
    flt["max_caption_chars"] = params.max_caption_chars
    resize = merged(filters.DEFAULT_RESIZE, params.resize, "resize")
    resize["image_size"] = resize["image_size"] or params.image_size
    dedup = merged(DEFAULT_DEDUP, params.dedup, "dedup")
    images = "prompt" not in source.kinds
    dedup["exact"] = (not source.synthetic) if dedup["exact"] is None else bool(dedup["exact"])
    dedup["near"] = ((not source.synthetic) if dedup["near"] is None else bool(dedup["near"])) and images
    contamination = merged(DEFAULT_CONTAMINATION, params.contamination, "contamination")
    return {"filters": flt, "resize": resize, "dedup": dedup, "contamination": contamination,
            "caption": {"max_caption_chars": params.max_caption_chars},
            "heldout_fraction": params.heldout_fraction, "png_compress_level": params.png_compress_level}
