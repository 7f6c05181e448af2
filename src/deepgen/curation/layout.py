"""The layout of a curated set (file names, the per-sample manifest's columns) and what is derived from its manifest:
the data version and the small record that flows between pipeline steps. Shared by the writer and every reader."""

from __future__ import annotations

import hashlib
import json

from deepgen import storage

MANIFEST = "manifest.json"
QUARANTINE = "quarantine.json"
QUARANTINE_REPORT = "quarantine.md"
CONTAMINATION = "contamination.json"
PROGRESS = "_progress"
SAMPLES = "samples"
SPLITS = ("train", "heldout")
ROW_COLUMNS = ("key", "origin", "status", "reasons", "fixes", "split", "shard", "kind", "category", "caption",
               "caption_chars", "width", "height", "orig_width", "orig_height", "orig_mode", "content_hash", "phash",
               "contamination", "license", "source")


def data_version(manifest: dict) -> str:
    """Content hash of the manifest, without where things live (locations, file lists) or the version itself."""
    body = {k: v for k, v in manifest.items() if k not in ("data_version", "location", "files")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_from_manifest(manifest: dict, out: str) -> dict:
    """The small record that flows between Kedro nodes: version, where the shards are, counts."""
    urls = {split: [storage.join(out, split, s["name"]) for s in info["shards"]]
            for split, info in manifest["splits"].items()}
    return {"data_version": manifest["data_version"], "manifest_uri": storage.join(out, MANIFEST),
            "train_urls": urls["train"], "heldout_urls": urls["heldout"],
            "counts": {split: info["count"] for split, info in manifest["splits"].items()}}
