"""A folder (or S3 prefix) of images with sidecar captions, grouped by key the webdataset way (the file name up to its
first dot): `a/b.jpg` + `a/b.txt` (the caption) and/or `a/b.json` (an object with a caption / prompt / instruction /
text field; its other fields are kept as metadata). An edit triplet is `a/b.png` (the target) with `a/b.src.png`
(or `a/b.src0.png`, `a/b.src1.jpg`, ... for several references) and the instruction in `a/b.txt`.

The listing is streamed in path order; all names sharing the prefix `key.` are adjacent in that order, so only a
handful of keys are ever pending and memory does not grow with the folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from deepgen import storage
from deepgen.curation.sources.base import IMAGE_EXTENSIONS, FileRef, RawRecord, public_settings, signature_of

_SOURCE_EXT = re.compile(r"^src(\d*)\.(\w+)$")


class FolderSource:
    type = "folder"
    synthetic = False
    kinds = ("t2i", "edit")
    categories = None

    def __init__(self, uri: str, caption_ext: str = "txt", category: str = "general"):
        self.uri = storage.absolute(str(uri))
        self.caption_ext = caption_ext.lstrip(".")
        self.category = category

    def settings(self) -> dict:
        return public_settings({"type": self.type, "caption_ext": self.caption_ext, "category": self.category})

    def location(self) -> dict:
        return {"uri": self.uri}

    def signature(self) -> str:
        return signature_of(storage.stat_files(self.uri))

    def _groups(self) -> Iterator[tuple[str, dict[str, storage.FileStat]]]:
        pending: dict[str, dict[str, storage.FileStat]] = {}
        for st in storage.stat_files(self.uri, sizes=False):
            rel = st.rel
            if pending:
                for key in [k for k in pending if not rel.startswith(k + ".")]:
                    yield key, pending.pop(key)
            folder, _, name = rel.rpartition("/")
            if name.startswith(".") or "." not in name:
                continue  # hidden files (temporaries) and extension-less files are not part of a sample
            stem, ext = name.split(".", 1)
            pending.setdefault(f"{folder}/{stem}" if folder else stem, {})[ext.lower()] = st
        yield from pending.items()

    def records(self, start: int = 0) -> Iterator[RawRecord]:
        index = 0
        for key, files in self._groups():
            target = next((ext for ext in IMAGE_EXTENSIONS if ext in files), None)
            if target is None:
                continue  # a caption without an image, or some other file: not a sample
            if index >= start:
                yield self._record(key, files, target)
            index += 1

    def _record(self, key: str, files: dict, target: str) -> RawRecord:
        refs = sorted((int(m.group(1) or 0), ext) for ext in files
                      if (m := _SOURCE_EXT.match(ext)) and m.group(2) in IMAGE_EXTENSIONS)
        sources = tuple(FileRef(files[ext].uri) for _, ext in refs)
        caption = FileRef(files[self.caption_ext].uri) if self.caption_ext in files.keys() - {"json"} else None
        sidecar = FileRef(files["json"].uri) if "json" in files else None
        meta = {"kind": "edit" if sources else "t2i", "category": self.category}
        return RawRecord(key=key, image=FileRef(files[target].uri), caption=caption, sources=sources, meta=meta,
                         origin=files[target].uri, sidecar=sidecar)
