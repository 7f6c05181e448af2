"""Curation: samples -> data contracts -> webdataset shards (train / held-out by scene) -> manifest.

The output folder is named by a fingerprint of the curation parameters, and the manifest is written last: if it
exists, the same input and parameters were curated before and nothing is written again. The data version is the
content hash of the manifest (sample keys, shard hashes, parameters): equal data, equal version, on any machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import pandas as pd
from tqdm import tqdm

from deepgen import storage
from deepgen.curation.contracts import sample_expectations, shard_expectations, validate
from deepgen.data.shards import ShardSink, encode_sample, shard_infos

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.json"
FORMAT_VERSION = 1  # bump when shard layout or manifest schema changes


@dataclass
class CurationParams:
    num_samples: int = 4000
    seed: int = 0
    image_size: int = 64
    heldout_fraction: float = 0.1
    mix: dict[str, float] | None = None
    shard_max_count: int = 1000
    shard_max_bytes: int = 64 << 20
    max_caption_chars: int = 512
    max_failure_rate: float = 0.01
    extra: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        payload = json.dumps({"format": FORMAT_VERSION, **self.__dict__}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def curate_shapes_world(params: CurationParams, out_root: str) -> dict:
    """Curate the ShapesWorld default source; returns the curation record (see `record_from_manifest`)."""
    from deepgen import world

    out = storage.join(storage.absolute(out_root), params.fingerprint())
    manifest_uri = storage.join(out, MANIFEST)
    if storage.exists(manifest_uri):
        log.info("curation: %s already holds these samples; reusing it, writing nothing", out)
        return record_from_manifest(json.loads(storage.read_bytes(manifest_uri)), out)
    samples = world.generate_samples(params.num_samples, params.seed, params.image_size, params.mix)
    rows, kept = [], []
    for sample in tqdm(samples, total=params.num_samples, desc="curation: generate", mininterval=5):
        split = "heldout" if world.sample_is_held_out(sample, params.heldout_fraction) else "train"
        rows.append({"key": sample["key"], "caption": sample["caption"], "kind": sample["kind"],
                     "category": sample["category"], "split": split, "width": sample["image"].width,
                     "height": sample["image"].height})
        kept.append(sample)
    frame = pd.DataFrame(rows)
    contract = validate(frame, sample_expectations(params.image_size, list(world.KINDS),
                                                   list(world.CATEGORIES), params.max_caption_chars), "samples")
    quarantined = {frame.key[i]: reasons for i, reasons in contract.failed_rows.items()}
    rate = len(quarantined) / max(1, len(frame))
    _write_quarantine(out, quarantined, contract.report)
    if rate > params.max_failure_rate:
        raise ValueError(f"curation: {len(quarantined)} of {len(frame)} samples broke the data contract "
                         f"({rate:.1%} > max_failure_rate {params.max_failure_rate:.1%}); see {out}/{QUARANTINE}")
    sinks = {split: ShardSink(storage.join(out, split), split, params.shard_max_count, params.shard_max_bytes)
             for split in ("train", "heldout")}
    keys: dict[str, list[str]] = {"train": [], "heldout": []}
    for sample, row in tqdm(list(zip(kept, rows)), desc="curation: write shards", mininterval=5):
        if row["key"] in quarantined:
            continue
        sinks[row["split"]].add(encode_sample(sample))
        keys[row["split"]].append(row["key"])
    splits = {}
    for split, sink in sinks.items():
        infos = shard_infos(sink.close())
        shard_check = validate(pd.DataFrame(infos), shard_expectations(params.shard_max_bytes), f"shards_{split}")
        if infos and not shard_check.success:
            raise ValueError(f"curation: shard statistics of split {split!r} broke the contract: "
                             f"{[r for r in shard_check.report if not r['success']]}")
        splits[split] = {"shards": infos, "count": len(keys[split]),
                         "keys_sha256": hashlib.sha256("\n".join(keys[split]).encode()).hexdigest(),
                         "categories": frame[frame.split == split].category.value_counts().sort_index().to_dict()}
    manifest = {"format": FORMAT_VERSION, "source": "shapes_world", "params": params.__dict__, "splits": splits,
                "quarantined": len(quarantined)}
    manifest["data_version"] = data_version(manifest)
    storage.write_bytes(manifest_uri, json.dumps(manifest, indent=2, sort_keys=True).encode())
    log.info("curation: wrote %d train / %d held-out samples, data version %s", splits["train"]["count"],
             splits["heldout"]["count"], manifest["data_version"])
    return record_from_manifest(manifest, out)


def data_version(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "data_version"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_from_manifest(manifest: dict, out: str) -> dict:
    """The small record that flows between Kedro nodes: version, where the shards are, counts."""
    urls = {split: [storage.join(out, split, s["name"]) for s in info["shards"]]
            for split, info in manifest["splits"].items()}
    return {"data_version": manifest["data_version"], "manifest_uri": storage.join(out, MANIFEST),
            "train_urls": urls["train"], "heldout_urls": urls["heldout"],
            "counts": {split: info["count"] for split, info in manifest["splits"].items()}}


def _write_quarantine(out: str, quarantined: dict[str, list[str]], report: list[dict]) -> None:
    if quarantined:
        body = {"samples": quarantined, "expectations": report}
        storage.write_bytes(storage.join(out, QUARANTINE), json.dumps(body, indent=2).encode())
