"""Existing webdataset / img2dataset shards: tar files (local or S3) streamed member by member, never extracted.

Members are grouped into samples the webdataset way (consecutive members sharing the name up to the first dot of the
base name). The target image is the member with an image extension (`jpg`, `png`, ...), references of an edit are
`src.<ext>` / `src<N>.<ext>` (so this project's own shards read back in), the caption is `txt` or a caption field of
the sample's `json`. img2dataset writes a `.parquet` beside each tar (key, caption, url, status, ...): when present,
its row fills a missing caption and adds metadata.

A member whose path is absolute or climbs out (`../x`), or that is not a regular file (link, device), is never used:
its sample is quarantined with `unsafe_member_path` / `member_not_a_file`. A tar that breaks mid-way yields what it had
and one `tar_unreadable` record.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import tarfile
from collections.abc import Iterator

from deepgen import storage
from deepgen.curation.sources.base import (CAPTION_KEYS, IMAGE_EXTENSIONS, RawRecord, public_settings,
                                           signature_of, unsafe_path)

_SOURCE_EXT = re.compile(r"^src(\d*)\.(\w+)$")
MAX_MEMBER_BYTES = 256 << 20


class TarSource:
    type = "webdataset"
    synthetic = False
    kinds = ("t2i", "edit")
    categories = None

    def __init__(self, uri: str | list[str], category: str = "general", max_member_bytes: int = MAX_MEMBER_BYTES):
        uris = [uri] if isinstance(uri, str) else list(uri)
        self.uris = [storage.absolute(str(u)) for u in uris]
        self.category, self.max_member_bytes = category, max_member_bytes

    def settings(self) -> dict:
        return public_settings({"type": self.type, "category": self.category,
                                "max_member_bytes": self.max_member_bytes})

    def location(self) -> dict:
        return {"uri": self.uris}

    def _stats(self) -> list[storage.FileStat]:
        return [st for u in self.uris for st in storage.stat_files(u)]

    def signature(self) -> str:
        return signature_of(self._stats())

    def records(self, start: int = 0) -> Iterator[RawRecord]:
        stats = self._stats()
        parquet = {st.uri[: -len(".parquet")]: st.uri for st in stats if st.rel.endswith(".parquet")}
        index = 0
        for st in stats:
            if not st.rel.endswith(".tar"):
                continue
            tar_stem = posixpath.basename(st.rel)[: -len(".tar")]
            table = None
            for record in self._tar_records(st.uri, tar_stem):
                if index >= start:
                    if table is None and st.uri[: -len(".tar")] in parquet:
                        table = _read_parquet(parquet[st.uri[: -len(".tar")]])
                    yield _with_table(record, table or {})
                index += 1

    def _tar_records(self, uri: str, tar_stem: str) -> Iterator[RawRecord]:
        group: dict = {}
        group_key = None
        problems: list[str] = []
        try:
            with storage.open_read(uri) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    name = member.name
                    base = posixpath.basename(name)
                    if "." in base:
                        key, ext = posixpath.join(posixpath.dirname(name), base.split(".", 1)[0]), base.split(".", 1)[1]
                    else:
                        key, ext = name, ""
                    if key != group_key and group_key is not None:
                        yield self._record(uri, tar_stem, group_key, group, problems)
                        group, problems = {}, []
                    group_key = key
                    if member.isdir():
                        continue
                    if unsafe_path(name):
                        problems.append("unsafe_member_path")
                        continue
                    if not member.isfile():
                        problems.append("member_not_a_file")
                        continue
                    if member.size > self.max_member_bytes:
                        problems.append("member_too_large")
                        continue
                    handle = tar.extractfile(member)  # a stream over the member's bytes: nothing touches the disk
                    group[ext.lower()] = handle.read() if handle is not None else b""
        except (tarfile.TarError, OSError, EOFError) as e:
            reason = f"tar_unreadable: {type(e).__name__}"
            if group_key is None:
                yield RawRecord(key=f"{tar_stem}-unreadable", origin=uri, error=reason)
            else:  # the sample being read when the tar broke
                yield self._record(uri, tar_stem, group_key, group, [*problems, reason])
            return
        if group_key is not None:
            yield self._record(uri, tar_stem, group_key, group, problems)

    def _record(self, uri: str, tar_stem: str, key: str, members: dict, problems: list[str]) -> RawRecord:
        origin = f"{uri}#{key}"
        full_key = f"{tar_stem}/{key}"
        if problems:
            return RawRecord(key=full_key, origin=origin, error=problems[0])
        target = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
        refs = sorted((int(m.group(1) or 0), ext) for ext in members
                      if (m := _SOURCE_EXT.match(ext)) and m.group(2) in IMAGE_EXTENSIONS)
        meta: dict = {}
        caption = members.get("txt")
        if "json" in members:
            try:
                data = json.loads(members["json"])
            except ValueError:
                data = None
            if isinstance(data, dict):
                field = next((k for k in CAPTION_KEYS if isinstance(data.get(k), str)), None)
                if caption is None and field is not None:
                    caption = data[field]
                meta.update(public_settings({k: v for k, v in data.items() if k not in CAPTION_KEYS}))
        meta["kind"] = "edit" if refs else "t2i"
        meta.setdefault("category", self.category)
        return RawRecord(key=full_key, image=members.get(target) if target else None, caption=caption,
                         sources=tuple(members[ext] for _, ext in refs), meta=meta, origin=origin,
                         error=None if target else "image_missing")


def _read_parquet(uri: str) -> dict:
    """img2dataset's per-shard table, key -> row (only successful downloads carry an image in the tar)."""
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(storage.read_bytes(uri)))
    except Exception:  # noqa: BLE001 - a broken side table loses metadata, not samples
        return {}
    if "key" not in frame.columns:
        return {}
    keep = [c for c in frame.columns if c in ("caption", "url", "width", "height", "original_width",
                                              "original_height", "status", "sha256")]
    return {str(k): {c: _plain(v) for c, v in zip(keep, row)}
            for k, row in zip(frame["key"], frame[keep].itertuples(index=False))}


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and value != value else value


def _with_table(record: RawRecord, table: dict) -> RawRecord:
    row = table.get(record.key.rsplit("/", 1)[-1])
    if row:
        if record.caption is None and isinstance(row.get("caption"), str):
            record.caption = row["caption"]
        record.meta = {**{k: v for k, v in row.items() if k != "caption" and v is not None}, **record.meta}
    return record
