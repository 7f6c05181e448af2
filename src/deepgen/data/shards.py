"""webdataset shards: deterministic writing (same samples -> same bytes -> same hashes) and streaming reads.

A shard member set per sample: `png` (target image), `txt` (caption or edit instruction), `json` (kind, category,
spec, scene key, ...), and for edits `src.png` (the reference image). Tars get a fixed mtime so their bytes, and so
the data version, do not depend on when or where curation ran. Each shard is written whole (atomically) once full:
memory stays bounded by the shard size.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import webdataset as wds
from PIL import Image

from deepgen import storage


@dataclass(frozen=True)
class ShardInfo:
    name: str
    sha256: str
    count: int
    bytes: int


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def encode_sample(sample: dict) -> dict:
    """A ShapesWorld-style sample dict -> webdataset members (bytes)."""
    meta = {k: v for k, v in sample.items() if k not in ("key", "image", "source_image", "caption")}
    record = {
        "__key__": sample["key"],
        "png": png_bytes(sample["image"]),
        "txt": sample["caption"].encode("utf-8"),
        "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }
    if sample.get("source_image") is not None:
        record["src.png"] = png_bytes(sample["source_image"])
    return record


class ShardSink:
    """Collects encoded samples into shards of at most `max_count` samples / about `max_bytes` bytes."""

    def __init__(self, out_uri: str, prefix: str, max_count: int = 1000, max_bytes: int = 64 << 20):
        self.out_uri, self.prefix = out_uri, prefix
        self.max_count, self.max_bytes = max_count, max_bytes
        self.shards: list[ShardInfo] = []
        self._buffer: io.BytesIO | None = None
        self._writer: wds.TarWriter | None = None
        self._count = 0

    def add(self, record: dict) -> None:
        if self._writer is None:
            self._buffer = io.BytesIO()
            self._writer = wds.TarWriter(self._buffer, mtime=0.0)
        self._writer.write(record)
        self._count += 1
        if self._count >= self.max_count or self._buffer.tell() >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        data = self._buffer.getvalue()
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        storage.write_bytes(storage.join(self.out_uri, name), data)
        self.shards.append(ShardInfo(name, hashlib.sha256(data).hexdigest(), self._count, len(data)))
        self._writer, self._buffer, self._count = None, None, 0

    def close(self) -> list[ShardInfo]:
        self.flush()
        return self.shards


def shard_infos(items: Iterable[ShardInfo]) -> list[dict]:
    return [asdict(s) for s in items]


def _s3_stream(url: str, mode: str = "rb", bufsize: int = 8192):
    return storage.open_read(url)


wds.gopen_schemes["s3"] = _s3_stream  # stream s3:// shards through boto3 (s3fs fights boto3: STACK.md)


def read_samples(urls: list[str]) -> Iterator[dict]:
    """Every sample of the given shards in order, decoded: image/source_image as PIL RGB, caption str, meta dict."""
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
    for raw in dataset:
        yield decoded(raw)


def decoded(raw: dict) -> dict:
    sample = dict(raw["json"])
    sample["key"] = raw["__key__"]
    sample["caption"] = raw["txt"]
    sample["image"] = raw["png"].convert("RGB")
    src = raw.get("src.png")
    sample["source_image"] = src.convert("RGB") if src is not None else None
    return sample
