"""webdataset shards: deterministic writing (same samples -> same bytes -> same hashes) and streaming reads.

A shard member set per sample: `png` (target image), `txt` (caption or edit instruction), `json` (kind, category,
spec, scene key, ...), and for edits `src.png` (the reference image; `src1.png`, `src2.png`, ... for further ones).
Prompt-only sets (RL prompts) have `txt` and `json` alone. Tars get a fixed mtime so their bytes, and so
the data version, do not depend on when or where curation ran. Each shard is built in memory and written whole
(atomically) once full: memory stays bounded by the shard size.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator

import webdataset as wds
from PIL import Image

from deepgen import storage


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


_BLOCK, _RECORD = 512, 10240


def _ustar_header(name: bytes, size: int) -> bytes:
    """A POSIX ustar header as webdataset's TarWriter would write it (mode 0444, owner bigdata, mtime 0), built
    directly: tarfile's own path adds a pax header per member for a float mtime and costs ~0.1 ms per member."""
    h = bytearray(_BLOCK)
    h[0 : len(name)] = name
    h[100:108] = b"0000444\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[265:272] = h[297:304] = b"bigdata"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def tar_bytes(records: Iterable[dict]) -> bytes:
    """One shard's bytes from encoded records (members as bytes, `__key__` as str): byte for byte what
    `webdataset.TarWriter(format="USTAR_FORMAT", mtime=0)` writes (members sorted by extension), faster; equal records,
    equal bytes. Names longer than 100 bytes get a pax header."""
    import tarfile

    out = io.BytesIO()
    for record in records:
        key = record["__key__"]
        for ext in sorted(k for k in record if not k.startswith("_")):
            data = record[ext]
            data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            name = f"{key}.{ext}".encode("utf-8")
            if len(name) <= 100:
                out.write(_ustar_header(name, len(data)))
            else:  # a long name needs a pax header
                info = tarfile.TarInfo(name.decode("utf-8"))
                info.size, info.mode, info.uname, info.gname = len(data), 0o444, "bigdata", "bigdata"
                out.write(info.tobuf(format=tarfile.PAX_FORMAT))
            out.write(data)
            out.write(b"\0" * (-len(data) % _BLOCK))
    out.write(b"\0" * (2 * _BLOCK))
    out.write(b"\0" * (-out.tell() % _RECORD))
    return out.getvalue()


def _s3_stream(url: str, mode: str = "rb", bufsize: int = 8192):
    return storage.open_read(url)


wds.gopen_schemes["s3"] = _s3_stream  # stream s3:// shards through boto3 (s3fs fights boto3: STACK.md)


def read_samples(urls: list[str]) -> Iterator[dict]:
    """Every sample of the given shards in order, decoded: image/source_image as PIL RGB, caption str, meta dict."""
    if not urls:
        return
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
    for raw in dataset:
        yield decoded(raw)


def shard_records(url: str) -> list[dict]:
    """One shard's samples undecoded, in order: members as bytes, `__key__` and `__url__` as str, grouped as
    webdataset groups them (the training stream filters and buckets on these, and decodes only what it trains on).

    The shard is read whole and its plain ustar headers parsed directly: Python's tarfile cost ~0.15 ms per member
    here, most of the stream's time on the tiny run. Anything else (pax or GNU long names) goes through webdataset."""
    data = storage.read_bytes(url)
    try:
        members = list(_ustar_members(data))
    except _NotPlainUstar:
        return list(wds.tarfile_samples([{"url": url}]))
    records: list[dict] = []
    for name, body in members:
        key, dot, ext = name.rpartition("/")[2].partition(".")
        if not dot or not key:
            continue
        key = name[: len(name) - len(ext) - 1]
        ext = ext.lower()
        if not records or records[-1]["__key__"] != key:
            records.append({"__key__": key, "__url__": url})
        if ext in records[-1]:
            raise ValueError(f"{url}: duplicate member {name}")
        records[-1][ext] = body
    return records


class _NotPlainUstar(Exception):
    pass


def _ustar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file in a tar of plain ustar headers (what `tar_bytes` writes)."""
    pos, end = 0, len(data)
    while pos + _BLOCK <= end:
        header = data[pos:pos + _BLOCK]
        if header[0] == 0:  # end-of-archive blocks
            return
        if header[257:262] != b"ustar" or header[124] & 0x80:  # not ustar, or a base-256 size
            raise _NotPlainUstar
        kind = header[156:157]
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        body_end = pos + _BLOCK + size
        if body_end > end:
            raise ValueError("truncated tar member")
        if kind in (b"0", b"\0"):
            name = header[:100].split(b"\0", 1)[0]
            prefix = header[345:500].split(b"\0", 1)[0]
            yield (prefix + b"/" + name if prefix else name).decode("utf-8"), data[pos + _BLOCK:body_end]
        elif kind != b"5":  # directories are skipped, pax/GNU headers need tarfile
            raise _NotPlainUstar
        pos = body_end + (-size % _BLOCK)


def png_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image, from the PNG header when it is one (no decoding)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return height, width
    with Image.open(io.BytesIO(data)) as image:
        return image.height, image.width


def decode_record(raw: dict) -> dict:
    """An undecoded shard record (`shard_records`) as `decoded` makes it."""
    members = {k: v for k, v in raw.items() if k.startswith("__")}
    members["json"] = json.loads(raw["json"]) if raw.get("json") else {}
    members["txt"] = raw["txt"].decode("utf-8")
    for name, data in raw.items():
        if name == "png" or (name.startswith("src") and name.endswith(".png")):
            members[name] = Image.open(io.BytesIO(data))
    return decoded(members)


def decoded(raw: dict) -> dict:
    """A webdataset sample (decoded with "pil") as the dict training and evaluation use: the json's fields plus key,
    caption, image (None for prompt-only sets), source_image (the first reference or None) and source_images (all)."""
    sample = dict(raw["json"])
    sample["key"] = raw["__key__"]
    sample["caption"] = raw["txt"]
    sample["image"] = raw["png"].convert("RGB") if raw.get("png") is not None else None
    refs = [raw["src.png"]] if raw.get("src.png") is not None else []
    i = 1
    while raw.get(f"src{i}.png") is not None:
        refs.append(raw[f"src{i}.png"])
        i += 1
    sample["source_images"] = [r.convert("RGB") for r in refs]
    sample["source_image"] = sample["source_images"][0] if refs else None
    return sample
