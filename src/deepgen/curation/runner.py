"""One curation run into one output folder: resume from the finished chunks' progress records, stream the source
through the worker processes chunk by chunk, and end with the reports and the manifest (written last: its presence
means the set is complete). Callers go through `deepgen.curation.curate.curate`, which holds the folder's lock."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from itertools import islice

from tqdm import tqdm

from deepgen import storage
from deepgen.curation.checks import Checks
from deepgen.curation.chunk import ChunkWriter
from deepgen.curation.layout import MANIFEST, PROGRESS, QUARANTINE_REPORT, SPLITS, data_version, record_from_manifest
from deepgen.curation.params import FORMAT_VERSION, RUNTIME_ONLY, CurationParams, resolve_settings
from deepgen.curation.process import Result, process, process_batch
from deepgen.curation.reports import write_reports
from deepgen.curation.sources import Source
from deepgen.curation.tally import Tally

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    pass


class Runner:
    """`fail_after_shards` (tests only) raises after that many shards were written, as an interruption would."""

    def __init__(self, params: CurationParams, source: Source, out: str, fail_after_shards: int | None = None):
        self.params, self.source, self.out = params, source, out
        self.settings = resolve_settings(params, source)
        self.checks = Checks(params, source, self.settings)
        self.fail_after_shards = fail_after_shards
        self.shards_written = 0
        # accumulated over chunks (restored from progress records on resume)
        self.chunks: list[dict] = []
        self.tally = Tally()

    def _shard_written(self) -> None:
        self.shards_written += 1
        if self.fail_after_shards is not None and self.shards_written >= self.fail_after_shards:
            raise Interrupted(f"curation interrupted after {self.shards_written} shard(s) (test hook)")

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
                self.checks.restore_dedup(storage.read_bytes(storage.join(self.out, PROGRESS, chunk["dedup"])))
        if self.chunks:
            log.info("curation: resuming %s after %d finished chunk(s), at record %d", self.out, len(self.chunks),
                     self.chunks[-1]["end"])
        return self.chunks[-1]["end"] if self.chunks else 0

    def _absorb(self, chunk: dict) -> None:
        self.chunks.append(chunk)
        self.tally.absorb(chunk, self.settings["contamination"]["examples"])

    def execute(self) -> dict:
        start = self.restore()
        workers = self.params.workers or os.cpu_count() or 1
        pool = None
        if workers > 1:
            pool = mp.get_context(_start_method()).Pool(workers)
        # set-up that takes seconds (contamination index, GX suites) overlaps with the workers' first records
        self.checks.start_warm_up()
        total = self.params.num_samples if self.source.type == "shapes_world" else None
        bar = tqdm(total=total, initial=start if total else 0, desc="curation", unit="rec", mininterval=5,
                   disable=not self.params.progress)
        try:
            records = self.source.records(start)
            chunk_no = len(self.chunks)
            while True:
                counted = _Counted(islice(records, self.params.chunk_records))  # streamed: never a whole chunk
                results = _results(counted, pool, self.settings, workers)      # of records in memory
                chunk = ChunkWriter(self.checks, self.params, self.settings, self.out, chunk_no, start,
                                    self._shard_written)
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
        """Reports, the failure-rate checks, then the manifest; returns the curation record."""
        t, p = self.tally, self.params
        c = t.counts
        checked = c["contract_checked"]
        failed = c["contract"] + c["contract_shard"]
        reports = write_reports(self.out, self.settings, t, self.chunks)
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
                  "by_reason": dict(sorted(t.reasons.items())), "fixes": dict(sorted(t.fixes.items())),
                  "contamination": {k: dict(sorted(v.items())) for k, v in sorted(t.bench.items())}}
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


class _Counted:
    """An iterator that counts what it gave."""

    def __init__(self, it: Iterable):
        self.it, self.n = iter(it), 0

    def __iter__(self):
        for item in self.it:
            self.n += 1
            yield item


def _start_method() -> str:
    """fork where this process runs no other thread: workers start at once and need no importable __main__
    (`Runner.execute` starts the pool before its warm-up thread). A host with threads of its own (Airflow's task runner: an
    event loop and a socket thread) gets spawn: a forked child there inherits locks other threads held and its
    SIGTERM handler, and one such worker never exited `Pool.terminate` (`airflow dags test`, 2026-12-03)."""
    if threading.active_count() == 1 and "fork" in mp.get_all_start_methods():
        return "fork"
    return "spawn"


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
