"""Curation: a source's raw records -> filters -> contamination check -> dedup -> data contracts -> webdataset shards
(train / held-out) -> manifest, whose content hash is the data version. This module is the entry point (curate a
source, read a curated set back); the work is split by concern:

    params    CurationParams, resolved settings, the fingerprint that names the output folder
    runner    one run: resume, stream records through the worker processes chunk by chunk, manifest last
    chunk     one chunk: contamination, exact + near dedup, GX sample contract per batch; shards; progress record
    checks    what every chunk shares: dedup indexes, contamination index, GX contracts (warmed up in a thread)
    reports   contamination and quarantine reports;  layout  file names, data version, the record nodes pass on

    records --(worker processes: read, decode, check, fix, encode, hash)--> results
            --(this process, per batch: contamination, exact + near dedup, GX sample contract)--> shard buffers
            --(per finished shard: GX shard contract, atomic write)--> shards
            --(per chunk of `chunk_records` records: sample manifest part, dedup state, progress record)
            --(at the end: contamination and quarantine reports, manifest last)

Idempotent: the output folder is named by a fingerprint of the parameters and of the input as listed (names, sizes,
change tags); if its manifest exists, nothing is read or written again. Concurrent runs on the same output take
turns (a lock beside the folder, `deepgen.locks`): the second waits, then reuses the first one's set. Resumable: a
chunk's progress record is written after everything the chunk produced, so an interrupted run restarts at the first
unfinished chunk, with the dedup index restored, and rewrites that chunk's shards with the same bytes: no duplicate,
no missing sample. Deterministic: the same input and parameters give the same shards, whatever the number of
workers; the data version hashes what was curated (parameters, sample keys, shard hashes, counts), not where it
lives, so a local and an S3 copy of the same input give the same version.
"""

from __future__ import annotations

import io
import json
import logging
import os

import pandas as pd

from deepgen import locks, storage
from deepgen.curation.layout import (CONTAMINATION, MANIFEST, QUARANTINE, QUARANTINE_REPORT, ROW_COLUMNS,
                                     record_from_manifest)
from deepgen.curation.params import CurationParams, build_source, resolve_settings
from deepgen.curation.runner import Runner

__all__ = ["CONTAMINATION", "MANIFEST", "QUARANTINE", "QUARANTINE_REPORT", "CurationParams", "curate",
           "curate_shapes_world", "load_quarantine", "load_samples", "resolve_settings"]
log = logging.getLogger(__name__)


def curate(params: CurationParams, out_root: str, *, _fail_after_shards: int | None = None) -> dict:
    """Curate `params.source` into `out_root/<fingerprint>/`; returns the curation record (see `record_from_manifest`).

    `_fail_after_shards` (tests only) raises after that many shards were written, as an interruption would.
    """
    source = build_source(params)
    fingerprint = params.fingerprint(source)
    out = storage.join(storage.absolute(out_root), fingerprint)
    manifest_uri = storage.join(out, MANIFEST)
    if storage.exists(manifest_uri):  # the manifest is written last and atomically: the set is complete
        return _reuse(out, manifest_uri)
    # one writer per output folder: a concurrent run on the same data waits here, then reuses what this one wrote
    with locks.held(f"{out}.lock", f"curation {fingerprint}"):
        if storage.exists(manifest_uri):
            return _reuse(out, manifest_uri)
        return Runner(params, source, out, _fail_after_shards).execute()


def _reuse(out: str, manifest_uri: str) -> dict:
    log.info("curation: %s already holds these samples; reusing it, writing nothing", out)
    return record_from_manifest(json.loads(storage.read_bytes(manifest_uri)), out)


def curate_shapes_world(params: CurationParams, out_root: str) -> dict:
    """Curate the ShapesWorld default source (the spine's entry point; `curate` with `source: shapes_world`)."""
    source_type = params.source if isinstance(params.source, str) else params.source.get("type", "shapes_world")
    if source_type != "shapes_world":
        raise ValueError(f"curate_shapes_world: parameters name source {source_type!r}; call curate() instead")
    return curate(params, out_root)


def load_quarantine(manifest_uri: str) -> dict[str, list[str]]:
    """key -> reasons of every quarantined sample of a curated set (read from the per-sample manifest parts)."""
    manifest = json.loads(storage.read_bytes(manifest_uri))
    out = manifest_uri.rsplit("/", 1)[0] if storage.is_s3(manifest_uri) else os.path.dirname(manifest_uri)
    frame = load_samples(manifest, out)
    bad = frame[frame.status != "kept"]
    return {k: r.split(";") for k, r in zip(bad.key, bad.reasons)}


def load_samples(manifest: dict, out: str) -> pd.DataFrame:
    """The per-sample manifest (every record: kept or quarantined, with reasons, fixes, sizes, hashes)."""
    parts = [pd.read_parquet(io.BytesIO(storage.read_bytes(storage.join(out, name))))
             for name in manifest["files"]["samples"]]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(ROW_COLUMNS))
    return frame.reindex(columns=list(ROW_COLUMNS))  # a set curated before a column existed has it empty
