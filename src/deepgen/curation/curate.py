"""Curation: a source's raw records -> filters -> contamination check -> dedup -> data contracts -> webdataset shards
(train / held-out) -> manifest, whose content hash is the data version.

    records --(worker processes: read, decode, check, fix, encode, hash)--> results
            --(this process, per batch: contamination, exact + near dedup, GX sample contract)--> shard buffers
            --(per finished shard: GX shard contract, atomic write)--> shards
            --(per chunk of `chunk_records` records: sample manifest part, dedup state, progress record)
            --(at the end: contamination and quarantine reports, manifest last)

Idempotent: the output folder is named by a fingerprint of the parameters and of the input as listed (names, sizes,
change tags); if its manifest exists, nothing is read or written again. Resumable: a chunk's progress record is written
after everything the chunk produced, so an interrupted run restarts at the first unfinished chunk, with the dedup index
restored, and rewrites that chunk's shards with the same bytes: no duplicate, no missing sample. Deterministic: the
same input and parameters give the same shards, whatever the number of workers; the data version hashes what was
curated (parameters, sample keys, shard hashes, counts), not where it lives, so a local and an S3 copy of the same
input give the same version.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice

import numpy as np
import pandas as pd
from tqdm import tqdm

from deepgen import storage
from deepgen.curation import filters
from deepgen.curation.process import Result, process, process_batch
from deepgen.curation.sources import Source, make_source
from deepgen.data.shards import tar_bytes

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.json"
QUARANTINE_REPORT = "quarantine.md"
CONTAMINATION = "contamination.json"
PROGRESS = "_progress"
SAMPLES = "samples"
FORMAT_VERSION = 2  # bump when shard layout, manifest schema or curation semantics change
SPLITS = ("train", "heldout")
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


# --------------------------------------------------------------------------------------------------------------------
# Public entry points


def curate(params: CurationParams, out_root: str, *, _fail_after_shards: int | None = None) -> dict:
    """Curate `params.source` into `out_root/<fingerprint>/`; returns the curation record (see `record_from_manifest`).

    `_fail_after_shards` (tests only) raises after that many shards were written, as an interruption would.
    """
    source = build_source(params)
    out = storage.join(storage.absolute(out_root), params.fingerprint(source))
    manifest_uri = storage.join(out, MANIFEST)
    if storage.exists(manifest_uri):
        log.info("curation: %s already holds these samples; reusing it, writing nothing", out)
        return record_from_manifest(json.loads(storage.read_bytes(manifest_uri)), out)
    run = _Run(params, source, out, _fail_after_shards)
    return run.execute()


def curate_shapes_world(params: CurationParams, out_root: str) -> dict:
    """Curate the ShapesWorld default source (the spine's entry point; `curate` with `source: shapes_world`)."""
    source_type = params.source if isinstance(params.source, str) else params.source.get("type", "shapes_world")
    if source_type != "shapes_world":
        raise ValueError(f"curate_shapes_world: parameters name source {source_type!r}; call curate() instead")
    return curate(params, out_root)


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
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(_ROW_COLUMNS))


# --------------------------------------------------------------------------------------------------------------------
# The run

_ROW_COLUMNS = ("key", "origin", "status", "reasons", "fixes", "split", "shard", "kind", "category", "caption",
                "caption_chars", "width", "height", "orig_width", "orig_height", "orig_mode", "content_hash", "phash",
                "contamination")


class _Interrupted(RuntimeError):
    pass


@dataclass
class Tally:
    """What every chunk counts and the run sums over chunks (a resumed run re-sums the finished chunks' records)."""

    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    fixes: Counter = field(default_factory=Counter)
    bench: dict[str, Counter] = field(default_factory=dict)  # benchmark -> {"exact": n, "near": n}
    examples: dict[str, dict[str, list]] = field(default_factory=dict)  # benchmark -> kind -> matched examples
    contract_failures: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        """The keys a chunk's progress record carries."""
        return {"counts": dict(self.counts), "reasons": dict(self.reasons), "fixes": dict(self.fixes),
                "contamination": {k: dict(v) for k, v in self.bench.items()}, "examples": self.examples,
                "contract_failures": self.contract_failures}

    def absorb(self, record: dict, example_limit: int) -> None:
        self.counts.update(record["counts"])
        self.reasons.update(record["reasons"])
        self.fixes.update(record["fixes"])
        for name, c in record["contamination"].items():
            self.bench.setdefault(name, Counter()).update(c)
        for name, kinds in record["examples"].items():
            for kind, items in kinds.items():
                have = self.examples.setdefault(name, {}).setdefault(kind, [])
                have.extend(items[: max(0, example_limit - len(have))])
        self.contract_failures.extend(record["contract_failures"])


class _Run:
    def __init__(self, params: CurationParams, source: Source, out: str, fail_after_shards: int | None):
        self.params, self.source, self.out = params, source, out
        self.settings = resolve_settings(params, source)
        self.fail_after_shards = fail_after_shards
        self.shards_written = 0
        dd = self.settings["dedup"]
        from deepgen.curation.dedup import ExactIndex, NearIndex

        self.exact = ExactIndex() if dd["exact"] else None
        self.near = NearIndex(dd["near_threshold"]) if dd["near"] else None
        self._contamination = None
        self._contracts: dict | None = None
        self._warmed: threading.Thread | None = None
        self._lock = threading.RLock()
        # accumulated over chunks (restored from progress records on resume)
        self.chunks: list[dict] = []
        self.tally = Tally()

    # -- lazily built helpers ----------------------------------------------------------------------------------------

    def _warm_up(self) -> None:
        try:
            self.contamination()
            self.contracts()
        except Exception:  # noqa: BLE001 - the main thread builds them again and raises there
            log.debug("curation: warm-up failed", exc_info=True)

    def _wait_warm(self) -> None:
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

    # -- resume ------------------------------------------------------------------------------------------------------

    def restore(self) -> int:
        """Load the progress records of finished chunks (contiguous from 0); returns the record index to go on from."""
        names = sorted(st.rel for st in storage.stat_files(storage.join(self.out, PROGRESS))
                       if st.rel.startswith("chunk-") and st.rel.endswith(".json"))
        for expected, name in enumerate(names):
            if name != f"chunk-{expected:05d}.json":
                break
            chunk = json.loads(storage.read_bytes(storage.join(self.out, PROGRESS, name)))
            self._absorb(chunk)
            if chunk.get("dedup"):
                state = np.load(io.BytesIO(storage.read_bytes(storage.join(self.out, PROGRESS, chunk["dedup"]))))
                if self.exact is not None:
                    self.exact.add(state["exact"])
                if self.near is not None:
                    self.near.add(state["near"], state["near_aux"], state["near_has_aux"])
        if self.chunks:
            log.info("curation: resuming %s after %d finished chunk(s), at record %d", self.out, len(self.chunks),
                     self.chunks[-1]["end"])
        return self.chunks[-1]["end"] if self.chunks else 0

    def _absorb(self, chunk: dict) -> None:
        self.chunks.append(chunk)
        self.tally.absorb(chunk, self.settings["contamination"]["examples"])

    # -- main loop ---------------------------------------------------------------------------------------------------

    def execute(self) -> dict:
        start = self.restore()
        workers = self.params.workers or os.cpu_count() or 1
        pool = None
        if workers > 1:
            import multiprocessing as mp

            # fork: workers start at once and need no importable __main__; the pool is forked before this process
            # starts any thread of its own (the warm-up below), so no child inherits a half-held lock
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            context = mp.get_context(method)
            pool = context.Pool(workers)
        # set-up that takes seconds (contamination index, GX suites) overlaps with the workers' first records; the
        # thread starts after the pool has forked, so no child inherits a half-held lock
        warmup = threading.Thread(target=self._warm_up, daemon=True)
        warmup.start()
        self._warmed = warmup
        total = self.params.num_samples if self.source.type == "shapes_world" else None
        bar = tqdm(total=total, initial=start if total else 0, desc="curation", unit="rec", mininterval=5,
                   disable=not self.params.progress)
        try:
            records = self.source.records(start)
            chunk_no = len(self.chunks)
            while True:
                counted = _Counted(islice(records, self.params.chunk_records))  # streamed: never a whole chunk
                results = _results(counted, pool, self.settings, workers)      # of records in memory
                chunk = _Chunk(self, chunk_no, start)
                chunk.consume(results, bar)
                if counted.n == 0 and chunk_no > 0:
                    break
                chunk.end = start + counted.n
                self._absorb(chunk.finish())
                start += counted.n
                chunk_no += 1
                if counted.n < self.params.chunk_records:
                    break
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
        return self.finish()

    def finish(self) -> dict:
        c, p = self.tally.counts, self.params
        checked = c["contract_checked"]
        failed = c["contract"] + c["contract_shard"]
        reports = self._write_reports()
        if checked and failed / checked > p.max_failure_rate:
            raise ValueError(f"curation: {failed} of {checked} samples broke the data contracts "
                             f"({failed / checked:.1%} > max_failure_rate {p.max_failure_rate:.1%}); see "
                             f"{storage.join(self.out, QUARANTINE_REPORT)}")
        if p.max_reject_rate is not None and c["records"] and c["rejected"] / c["records"] > p.max_reject_rate:
            raise ValueError(f"curation: the filters rejected {c['rejected']} of {c['records']} records "
                             f"({c['rejected'] / c['records']:.1%} > max_reject_rate {p.max_reject_rate:.1%}); see "
                             f"{storage.join(self.out, QUARANTINE_REPORT)}")
        splits = {}
        for split in SPLITS:
            shards = [s for chunk in self.chunks for s in chunk["shards"][split]]
            keys = hashlib.sha256("\n".join(ch["keys_sha256"][split] for ch in self.chunks).encode()).hexdigest()
            categories: Counter = Counter()
            for chunk in self.chunks:
                categories.update(chunk["categories"][split])
            splits[split] = {"shards": shards, "count": sum(s["count"] for s in shards), "keys_sha256": keys,
                             "categories": dict(sorted(categories.items()))}
        if not splits["train"]["count"]:
            raise ValueError(f"curation: no sample reached a training shard ({c['records']} records read); see "
                             f"{storage.join(self.out, QUARANTINE_REPORT)}")
        counts = {"records": c["records"], "kept": c["kept"], "quarantined": c["records"] - c["kept"],
                  "rejected": c["rejected"], "duplicates": c["duplicate"], "near_duplicates": c["near_duplicate"],
                  "contaminated": c["contaminated"], "contamination_flagged": c["contamination_flagged"],
                  "contract": c["contract"], "contract_shard": c["contract_shard"],
                  "by_reason": dict(sorted(self.tally.reasons.items())), "fixes": dict(sorted(self.tally.fixes.items())),
                  "contamination": {k: dict(sorted(v.items())) for k, v in sorted(self.tally.bench.items())}}
        settings = json.loads(json.dumps(self.settings, default=str))
        params = {k: v for k, v in asdict(p).items() if k not in RUNTIME_ONLY and k != "source"}
        manifest = {"format": FORMAT_VERSION, "source": self.source.settings(), "params": params,
                    "settings": settings, "splits": splits, "counts": counts,
                    "quarantined": counts["quarantined"],
                    "location": {"source": self.source.location(), "output": self.out},
                    "files": {"samples": [ch["samples"] for ch in self.chunks], **reports}}
        manifest["data_version"] = data_version(manifest)
        storage.write_bytes(storage.join(self.out, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True).encode())
        log.info("curation: wrote %d train / %d held-out samples (%d of %d records quarantined), data version %s",
                 splits["train"]["count"], splits["heldout"]["count"], counts["quarantined"], counts["records"],
                 manifest["data_version"])
        return record_from_manifest(manifest, self.out)

    def _write_reports(self) -> dict:
        cfg = self.settings["contamination"]
        contamination = {"enabled": cfg["enabled"], "excluded": cfg["exclude"], "threshold": cfg["threshold"],
                         "benchmarks": cfg["benchmarks"] or "packaged",
                         "flagged": self.tally.counts["contamination_flagged"],
                         "per_benchmark": {name: {"exact": self.tally.bench.get(name, Counter())["exact"],
                                                  "near": self.tally.bench.get(name, Counter())["near"],
                                                  "examples": self.tally.examples.get(name, {})}
                                           for name in sorted(set(self.tally.bench) | set(self.tally.examples))}}
        storage.write_bytes(storage.join(self.out, CONTAMINATION),
                            json.dumps(contamination, indent=2, sort_keys=True, ensure_ascii=False).encode())
        quarantine = {"counts": {"quarantined": self.tally.counts["records"] - self.tally.counts["kept"],
                                 "rejected": self.tally.counts["rejected"], "duplicates": self.tally.counts["duplicate"],
                                 "near_duplicates": self.tally.counts["near_duplicate"],
                                 "contaminated": self.tally.counts["contaminated"], "contract": self.tally.counts["contract"],
                                 "contract_shard": self.tally.counts["contract_shard"]},
                      "by_reason": dict(sorted(self.tally.reasons.items())),
                      "examples": [e for ch in self.chunks for e in ch["quarantine_examples"]][:50],
                      "contract_failures": self.tally.contract_failures,
                      "samples_manifest": [ch["samples"] for ch in self.chunks]}
        storage.write_bytes(storage.join(self.out, QUARANTINE),
                            json.dumps(quarantine, indent=2, sort_keys=True, ensure_ascii=False).encode())
        storage.write_bytes(storage.join(self.out, QUARANTINE_REPORT), _readable_report(quarantine, contamination))
        return {"quarantine": QUARANTINE, "quarantine_report": QUARANTINE_REPORT, "contamination": CONTAMINATION}


_INDEXES: dict = {}


def _cached_index(benchmarks, threshold):
    """One contamination index per (benchmark folder, threshold) per process (building one takes ~2 s)."""
    from deepgen.curation.contamination import ContaminationIndex, load_benchmarks

    key = (str(benchmarks), threshold)
    if key not in _INDEXES:
        _INDEXES[key] = ContaminationIndex(load_benchmarks(benchmarks), threshold=threshold)
    return _INDEXES[key]


class _Counted:
    """An iterator that counts what it gave."""

    def __init__(self, it: Iterable):
        self.it, self.n = iter(it), 0

    def __iter__(self):
        for item in self.it:
            self.n += 1
            yield item


def _results(records: Iterable, pool, settings: dict, workers: int, batch: int = 32) -> Iterator[Result]:
    """Results in record order. With a pool, records are sent in batches of 32 and at most 16 batches per worker are
    in flight: enough for the workers to keep going while this process validates and writes, and a bound on memory
    (a tar source carries image bytes in its records)."""
    if pool is None:
        for record in records:
            yield process(record, settings)
        return
    pending: deque = deque()
    group: list = []
    for record in records:
        group.append(record)
        if len(group) == batch:
            pending.append(pool.apply_async(process_batch, (group, settings)))
            group = []
            if len(pending) >= 16 * workers:
                yield from pending.popleft().get()
    if group:
        pending.append(pool.apply_async(process_batch, (group, settings)))
    while pending:
        yield from pending.popleft().get()


class _Chunk:
    """Everything one chunk of records produces: shards, per-sample rows, dedup state, counts, progress record."""

    def __init__(self, run: _Run, number: int, start: int):
        self.run, self.number, self.start, self.end = run, number, start, start
        self.params, self.settings = run.params, run.settings
        self.rows: list[dict] = []
        self.tally = Tally()
        self.q_examples: list[dict] = []
        self.q_seen: Counter = Counter()
        self.rejected_texts: list[tuple[Result, dict]] = []  # rejected records with a caption, until the next batch
        self.buffers: dict[str, list[tuple[Result, dict]]] = {s: [] for s in SPLITS}
        self.buffer_bytes = {s: 0 for s in SPLITS}
        self.shards: dict[str, list[dict]] = {s: [] for s in SPLITS}
        self.keys: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.categories: dict[str, Counter] = {s: Counter() for s in SPLITS}
        self.pending_shards: list[tuple[str, list[tuple[Result, dict]]]] = []
        self.dedup_kept: dict[str, list] = {"exact": [], "near": [], "near_aux": [], "near_has_aux": []}

    def consume(self, results: Iterable[Result], bar) -> None:
        batch: list[tuple[Result, dict]] = []
        batch_bytes = 0
        for result in results:
            self.tally.counts["records"] += 1
            bar.update(1)
            row = self._row(result)
            self.rows.append(row)
            if result.reasons:
                self._quarantine(row, "rejected", result.reasons)
                self.tally.counts["rejected"] += 1
                if result.caption:  # still checked against the benchmarks, so the report misses no copied prompt
                    self.rejected_texts.append((result, row))
                continue
            for fix in result.fixes:
                self.tally.fixes[fix] += 1
            batch.append((result, row))
            batch_bytes += result.nbytes
            if len(batch) >= self.params.contract_batch_rows or batch_bytes >= self.params.contract_batch_bytes:
                self._batch(batch)
                batch, batch_bytes = [], 0
        if batch or self.rejected_texts:
            self._batch(batch)

    @staticmethod
    def _row(r: Result) -> dict:
        return {"key": r.key, "origin": r.origin, "status": "kept", "reasons": "", "fixes": ";".join(r.fixes),
                "split": None, "shard": None, "kind": r.kind, "category": r.category, "caption": r.caption,
                "caption_chars": len(r.caption) if r.caption is not None else None, "width": r.width,
                "height": r.height, "orig_width": r.orig_width, "orig_height": r.orig_height,
                "orig_mode": r.orig_mode,
                "content_hash": None if r.content_hash is None else f"{r.content_hash:016x}",
                "phash": None if r.phash is None else f"{r.phash:016x}", "contamination": None}

    def _quarantine(self, row: dict, status: str, reasons: list[str]) -> None:
        row["status"], row["reasons"] = status, ";".join(reasons)
        for reason in reasons:
            self.tally.reasons[reason] += 1
        self.q_seen[status] += 1
        if self.q_seen[status] <= 5:  # a few examples of every kind of quarantine
            self.q_examples.append({"key": row["key"], "origin": row["origin"], "status": status,
                                    "reasons": reasons})

    def _batch(self, pairs: list[tuple[Result, dict]]) -> None:
        """Contamination, dedup, sample contract for a batch of filter-passing results; then into shard buffers."""
        batch = [r for r, _ in pairs]
        rowof = [row for _, row in pairs]
        self.run._wait_warm()
        alive = np.ones(len(batch), bool)

        index = self.run.contamination()
        if index is not None:
            self._contamination(index, batch, rowof, alive)
        self.rejected_texts = []

        if self.run.exact is not None:
            hashes = np.array([r.content_hash for r in batch], dtype=np.uint64)
            dup = self.run.exact.query_and_add(hashes, alive)
            for i in np.nonzero(dup)[0]:
                alive[i] = False
                self._quarantine(rowof[i], "duplicate", ["exact_duplicate"])
                self.tally.counts["duplicate"] += 1
            self.dedup_kept["exact"].extend(hashes[alive].tolist())
        if self.run.near is not None:
            has = np.array([r.phash is not None for r in batch], bool)
            hashes = np.array([r.phash or 0 for r in batch], dtype=np.uint64)
            aux = np.array([r.aux_phash or 0 for r in batch], dtype=np.uint64)
            has_aux = np.array([r.aux_phash is not None for r in batch], bool)
            dup = self.run.near.query_and_add(hashes, aux, has_aux, alive & has)
            for i in np.nonzero(dup)[0]:
                alive[i] = False
                self._quarantine(rowof[i], "near_duplicate", ["near_duplicate"])
                self.tally.counts["near_duplicate"] += 1
            kept = alive & has
            self.dedup_kept["near"].extend(hashes[kept].tolist())
            self.dedup_kept["near_aux"].extend(aux[kept].tolist())
            self.dedup_kept["near_has_aux"].extend(has_aux[kept].tolist())

        live = [i for i in range(len(batch)) if alive[i]]
        if not live:
            return
        for i in live:
            rowof[i]["split"] = "heldout" if batch[i].heldout else "train"
        frame = _contract_frame([rowof[i] for i in live], self.settings["resize"]["image_size"],
                                self.settings["resize"]["multiple"])
        result = self.run.contracts()["samples"].run(frame)
        self.tally.counts["contract_checked"] += len(live)
        if not result.success:
            self.tally.contract_failures.append({"chunk": self.number, "kind": "samples", "rows": len(live),
                                           "quarantined": len(result.failed_rows), "whole_batch": result.whole_batch,
                                           "expectations": result.failures()})
        for pos, i in enumerate(live):
            broken = result.failed_rows.get(pos)
            if broken:
                rowof[i]["split"] = None
                self._quarantine(rowof[i], "contract", [f"contract:{b}" for b in broken])
                self.tally.counts["contract"] += 1
                continue
            self._add(batch[i], rowof[i])
        self._write_pending()

    def _contamination(self, index, batch: list[Result], rowof: list[dict], alive: np.ndarray) -> None:
        """Check the batch's texts (and those of records the filters rejected since the last batch, so the report is
        complete) against the benchmark prompts; flagged samples of the batch are quarantined unless only reported."""
        cfg = self.settings["contamination"]
        results = batch + [r for r, _ in self.rejected_texts]
        rows = rowof + [row for _, row in self.rejected_texts]
        report = index.check([r.caption for r in results])
        for name, found in report.per_benchmark.items():
            for kind, matches in (("exact", found.exact), ("near", found.near)):
                if not matches:
                    continue
                self.tally.bench.setdefault(name, Counter())[kind] += len(matches)
                have = self.tally.examples.setdefault(name, {}).setdefault(kind, [])
                for m in matches:
                    label = f"{name}:{kind}"
                    row = rows[m.index]
                    row["contamination"] = label if not row["contamination"] else f"{row['contamination']};{label}"
                    if len(have) < cfg["examples"]:
                        have.append({"key": results[m.index].key, "text": m.text,
                                     "benchmark_prompt": m.benchmark_prompt, "similarity": m.similarity})
        self.tally.counts["contamination_flagged"] += len(report.flagged)
        for i in sorted(report.flagged):
            labels = [f"contaminated:{lbl}" for lbl in rows[i]["contamination"].split(";")]
            if i >= len(batch):  # already quarantined by a filter: the match is added to its reasons
                rows[i]["reasons"] = ";".join([rows[i]["reasons"], *labels])
                for label in labels:
                    self.tally.reasons[label] += 1
            elif cfg["exclude"]:
                alive[i] = False
                self._quarantine(rows[i], "contaminated", labels)
                self.tally.counts["contaminated"] += 1

    def _add(self, result: Result, row: dict) -> None:
        split = row["split"]
        self.buffers[split].append((result, row))
        self.buffer_bytes[split] += result.nbytes
        if len(self.buffers[split]) >= self.params.shard_max_count or \
                self.buffer_bytes[split] >= self.params.shard_max_bytes:
            self._close_shard(split)

    def _close_shard(self, split: str) -> None:
        if self.buffers[split]:
            self.pending_shards.append((split, self.buffers[split]))
            self.buffers[split], self.buffer_bytes[split] = [], 0

    def _write_pending(self) -> None:
        """Validate the statistics of every finished shard (one GX call), then write the passing ones atomically."""
        if not self.pending_shards:
            return
        built = []
        for split, items in self.pending_shards:
            number = len(self.shards[split]) + sum(1 for b in built if b[0] == split)
            name = f"{split}-{self.number:05d}-{number:05d}.tar"
            data = tar_bytes(result.members for result, _ in items)
            captions = [len(result.caption) for result, _ in items]
            info = {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "count": len(items), "bytes": len(data),
                    "caption_chars_mean": round(float(np.mean(captions)), 3),
                    "kinds": dict(sorted(Counter(result.kind for result, _ in items).items()))}
            built.append((split, items, data, info))
        self.pending_shards = []
        frame = pd.DataFrame([{k: v for k, v in info.items() if k != "kinds"} for *_, info in built])
        check = self.run.contracts()["shards"].run(frame)
        if not check.success:
            self.tally.contract_failures.append({"chunk": self.number, "kind": "shards", "rows": len(built),
                                           "quarantined": len(check.failed_rows), "whole_batch": check.whole_batch,
                                           "expectations": check.failures(), "shards": list(frame.name)})
        for pos, (split, items, data, info) in enumerate(built):
            broken = check.failed_rows.get(pos)
            if broken:  # the shard is not written: its samples are quarantined with the shard's failure
                for result, row in items:
                    row["split"] = None
                    self._quarantine(row, "contract_shard", [f"contract_shard:{b}" for b in broken])
                    self.tally.counts["contract_shard"] += 1
                continue
            storage.write_bytes(storage.join(self.run.out, split, info["name"]), data)
            self.run.shards_written += 1
            self.shards[split].append(info)  # per-shard statistics, as the shard contract saw them
            for result, row in items:
                row["shard"] = info["name"]
                self.keys[split].append(result.key)
                self.categories[split][result.category] += 1
                self.tally.counts["kept"] += 1
            if self.run.fail_after_shards is not None and self.run.shards_written >= self.run.fail_after_shards:
                raise _Interrupted(f"curation interrupted after {self.run.shards_written} shard(s) (test hook)")

    def finish(self) -> dict:
        for split in SPLITS:
            self._close_shard(split)
        self._write_pending()
        out, n = self.run.out, self.number
        frame = pd.DataFrame(self.rows, columns=list(_ROW_COLUMNS))
        for col in ("caption_chars", "width", "height", "orig_width", "orig_height"):
            frame[col] = frame[col].astype("Int64")
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        samples_name = f"{SAMPLES}/part-{n:05d}.parquet"
        storage.write_bytes(storage.join(out, samples_name), buf.getvalue())
        dedup_name = None
        if self.run.exact is not None or self.run.near is not None:
            buf = io.BytesIO()
            np.savez(buf, exact=np.array(self.dedup_kept["exact"], np.uint64),
                     near=np.array(self.dedup_kept["near"], np.uint64),
                     near_aux=np.array(self.dedup_kept["near_aux"], np.uint64),
                     near_has_aux=np.array(self.dedup_kept["near_has_aux"], bool))
            dedup_name = f"dedup-{n:05d}.npz"
            storage.write_bytes(storage.join(out, PROGRESS, dedup_name), buf.getvalue())
        chunk = {"chunk": n, "start": self.start, "end": self.end, "shards": self.shards,
                 "keys_sha256": {s: hashlib.sha256("\n".join(self.keys[s]).encode()).hexdigest() for s in SPLITS},
                 "categories": {s: dict(self.categories[s]) for s in SPLITS},
                 **self.tally.record(), "quarantine_examples": self.q_examples,
                 "samples": samples_name, "dedup": dedup_name}
        # the progress record goes last: once it exists, everything above is complete
        storage.write_bytes(storage.join(out, PROGRESS, f"chunk-{n:05d}.json"),
                            json.dumps(chunk, sort_keys=True, ensure_ascii=False, default=str).encode())
        return chunk


def _contract_frame(rows: list[dict], image_size: int, multiple: int) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(_ROW_COLUMNS))
    if frame["width"].notna().any():
        w, h = frame["width"].astype(float), frame["height"].astype(float)
        frame["width_mod"] = (w % multiple).astype(int)
        frame["height_mod"] = (h % multiple).astype(int)
        frame["size_ratio"] = np.sqrt(w * h) / image_size
    return frame


def _readable_report(quarantine: dict, contamination: dict) -> bytes:
    lines = ["# Curation quarantine report", ""]
    c = quarantine["counts"]
    lines += [f"- quarantined: {c['quarantined']} (filters {c['rejected']}, exact duplicates {c['duplicates']}, "
              f"near duplicates {c['near_duplicates']}, contaminated {c['contaminated']}, "
              f"data contract {c['contract']} + {c['contract_shard']} in failed shards)", "", "## Reasons", ""]
    lines += [f"- `{reason}`: {n}" for reason, n in quarantine["by_reason"].items()] or ["- none"]
    lines += ["", "## Examples", ""]
    lines += [f"- `{e['key']}` ({e['status']}): {', '.join(e['reasons'])} <- {e['origin']}"
              for e in quarantine["examples"]] or ["- none"]
    lines += ["", "## Data contract failures", ""]
    for f in quarantine["contract_failures"] or []:
        lines.append(f"- chunk {f['chunk']} {f['kind']}: {f['quarantined']} of {f['rows']} rows"
                     + (" (whole batch)" if f["whole_batch"] else ""))
        lines += [f"  - {e['expectation']}: {e['unexpected_count']} unexpected, e.g. "
                  f"{e.get('partial_unexpected_list', [])[:3]}" for e in f["expectations"]]
    if not quarantine["contract_failures"]:
        lines.append("- none")
    lines += ["", "## Benchmark contamination", "",
              f"threshold {contamination['threshold']}, matches "
              f"{'excluded' if contamination['excluded'] else 'kept (reported only)'}", ""]
    for name, b in contamination["per_benchmark"].items():
        lines.append(f"- {name}: exact {b['exact']}, near {b['near']}")
        for kind, items in b["examples"].items():
            lines += [f"  - {kind} {e['similarity']:.2f}: {e['text'][:100]!r} ~ {e['benchmark_prompt'][:100]!r}"
                      for e in items[:3]]
    if not contamination["per_benchmark"]:
        lines.append("- no matches")
    return ("\n".join(lines) + "\n").encode()
