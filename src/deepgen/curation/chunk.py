"""One chunk of curation: a run's resume unit. It takes the processed results of `chunk_records` records, applies
the run-wide checks (contamination, exact + near dedup, sample contract) per batch, groups what passes into shard
buffers, checks and writes finished shards atomically, and ends with the chunk's per-sample manifest part, dedup
state and progress record, written last so that its presence means everything above is complete."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from deepgen import storage
from deepgen.curation.checks import Checks
from deepgen.curation.layout import PROGRESS, ROW_COLUMNS, SAMPLES, SPLITS
from deepgen.curation.params import CurationParams
from deepgen.curation.process import Result
from deepgen.curation.tally import Tally
from deepgen.data.shards import tar_bytes


class ChunkWriter:
    """`on_shard` is called after each shard is written (the runner counts them; a test hook interrupts there)."""

    def __init__(self, checks: Checks, params: CurationParams, settings: dict, out: str, number: int, start: int,
                 on_shard: Callable[[], None]):
        self.checks, self.params, self.settings, self.out = checks, params, settings, out
        self.number, self.start, self.end = number, start, start
        self.on_shard = on_shard
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
                "phash": None if r.phash is None else f"{r.phash:016x}", "contamination": None,
                "license": r.license, "source": r.source}

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
        self.checks.wait_warm()
        alive = np.ones(len(batch), bool)

        index = self.checks.contamination()
        if index is not None:
            self._contamination(index, batch, rowof, alive)
        self.rejected_texts = []

        exact, near = self.checks.exact, self.checks.near
        if exact is not None:
            hashes = np.array([r.content_hash for r in batch], dtype=np.uint64)
            dup = exact.query_and_add(hashes, alive)
            for i in np.nonzero(dup)[0]:
                alive[i] = False
                self._quarantine(rowof[i], "duplicate", ["exact_duplicate"])
                self.tally.counts["duplicate"] += 1
            self.dedup_kept["exact"].extend(hashes[alive].tolist())
        if near is not None:
            has = np.array([r.phash is not None for r in batch], bool)
            hashes = np.array([r.phash or 0 for r in batch], dtype=np.uint64)
            aux = np.array([r.aux_phash or 0 for r in batch], dtype=np.uint64)
            has_aux = np.array([r.aux_phash is not None for r in batch], bool)
            dup = near.query_and_add(hashes, aux, has_aux, alive & has)
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
        result = self.checks.contracts()["samples"].run(frame)
        self.tally.counts["contract_checked"] += len(live)
        if not result.success:
            self.tally.contract_failures.append({"chunk": self.number, "kind": "samples", "rows": len(live),
                                                 "quarantined": len(result.failed_rows),
                                                 "whole_batch": result.whole_batch,
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
        check = self.checks.contracts()["shards"].run(frame)
        if not check.success:
            self.tally.contract_failures.append({"chunk": self.number, "kind": "shards", "rows": len(built),
                                                 "quarantined": len(check.failed_rows),
                                                 "whole_batch": check.whole_batch,
                                                 "expectations": check.failures(), "shards": list(frame.name)})
        for pos, (split, items, data, info) in enumerate(built):
            broken = check.failed_rows.get(pos)
            if broken:  # the shard is not written: its samples are quarantined with the shard's failure
                for result, row in items:
                    row["split"] = None
                    self._quarantine(row, "contract_shard", [f"contract_shard:{b}" for b in broken])
                    self.tally.counts["contract_shard"] += 1
                continue
            storage.write_bytes(storage.join(self.out, split, info["name"]), data)
            self.shards[split].append(info)  # per-shard statistics, as the shard contract saw them
            for result, row in items:
                row["shard"] = info["name"]
                self.keys[split].append(result.key)
                self.categories[split][result.category] += 1
                self.tally.counts["kept"] += 1
            self.on_shard()

    def finish(self) -> dict:
        """Flush the last shards, then write the samples part, the dedup state and (last) the progress record."""
        for split in SPLITS:
            self._close_shard(split)
        self._write_pending()
        out, n = self.out, self.number
        frame = pd.DataFrame(self.rows, columns=list(ROW_COLUMNS))
        for col in ("caption_chars", "width", "height", "orig_width", "orig_height"):
            frame[col] = frame[col].astype("Int64")
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        samples_name = f"{SAMPLES}/part-{n:05d}.parquet"
        storage.write_bytes(storage.join(out, samples_name), buf.getvalue())
        dedup_name = None
        if self.checks.dedup:
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
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    if frame["width"].notna().any():
        w, h = frame["width"].astype(float), frame["height"].astype(float)
        frame["width_mod"] = (w % multiple).astype(int)
        frame["height_mod"] = (h % multiple).astype(int)
        frame["size_ratio"] = np.sqrt(w * h) / image_size
    return frame
