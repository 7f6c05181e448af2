"""DeepGen's own JSON indices (the official code's data format), read without extracting anything:

  * T2I pre-training: `{"image": "<path>", "annotation": "<path>.json"}`, the caption under `caption_key` (default
    "caption") of the annotation file in `caption_root`;
  * T2I SFT: `{"type": "T2I_SFT", "txt": "<caption>", "image_path": "<path>"}`;
  * editing: `{"input_image": ["<path>", ...], "output_image": "<path>", "instruction": "<text>"}`.

`index` is one .json (a list of entries) or .jsonl file, or a folder / prefix of them (sorted); image paths are relative
to `image_root`. Entries are keyed `<index file stem>-<entry number>`; an entry that fits none of the shapes, or whose
path is absolute or climbs out of its root (`..`), is quarantined with the reason, never read.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

from deepgen import storage
from deepgen.curation.sources.base import FileRef, JsonField, RawRecord, public_settings, signature_of, unsafe_path


class DeepGenJsonSource:
    type = "deepgen_json"
    synthetic = False
    kinds = ("t2i", "edit")
    categories = None

    def __init__(self, index: str, image_root: str, caption_root: str | None = None, caption_key: str = "caption",
                 category: str = "general"):
        self.index = storage.absolute(str(index))
        self.image_root = storage.absolute(str(image_root))
        self.caption_root = storage.absolute(str(caption_root)) if caption_root else None
        self.caption_key, self.category = caption_key, category

    def settings(self) -> dict:
        return public_settings({"type": self.type, "caption_key": self.caption_key, "category": self.category})

    def location(self) -> dict:
        return {"index": self.index, "image_root": self.image_root, "caption_root": self.caption_root}

    def _index_files(self) -> list[storage.FileStat]:
        return [st for st in storage.stat_files(self.index) if st.rel.lower().endswith((".json", ".jsonl"))]

    def signature(self) -> str:
        roots = [self.index, self.image_root] + ([self.caption_root] if self.caption_root else [])
        return signature_of(st for root in dict.fromkeys(roots) for st in storage.stat_files(root))

    def _entries(self) -> Iterator[tuple[str, int, object]]:
        for st in self._index_files():
            stem = posixpath.basename(st.rel).rsplit(".", 1)[0]
            text = storage.read_bytes(st.uri).decode("utf-8-sig")
            if st.rel.lower().endswith(".jsonl"):
                for no, line in enumerate(text.splitlines()):
                    if line.strip():
                        try:
                            yield stem, no, json.loads(line)
                        except json.JSONDecodeError:
                            yield stem, no, None
            else:
                data = json.loads(text)
                for no, entry in enumerate(data if isinstance(data, list) else [data]):
                    yield stem, no, entry

    def records(self, start: int = 0) -> Iterator[RawRecord]:
        for index, (stem, no, entry) in enumerate(self._entries()):
            if index >= start:
                yield self._record(f"{stem}-{no:08d}", entry, f"{self.index}#{stem}:{no}")

    def _image(self, path) -> FileRef | None:
        if not isinstance(path, str) or unsafe_path(path):
            return None
        return FileRef(storage.join(self.image_root, path))

    def _record(self, key: str, entry, origin: str) -> RawRecord:
        bad = RawRecord(key=key, origin=origin, error="index_entry_invalid")
        if not isinstance(entry, dict):
            return bad
        meta = {"category": self.category}
        if "output_image" in entry:  # edit triplet
            inputs = entry.get("input_image")
            inputs = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(inputs, list) or not inputs:
                return bad
            refs = [self._image(p) for p in [*inputs, entry["output_image"]]]
            if any(r is None for r in refs):
                return RawRecord(key=key, origin=origin, error="unsafe_path")
            return RawRecord(key=key, image=refs[-1], caption=entry.get("instruction"), sources=tuple(refs[:-1]),
                             meta={**meta, "kind": "edit"}, origin=origin)
        if "image_path" in entry or entry.get("type") == "T2I_SFT":  # T2I SFT
            image = self._image(entry.get("image_path"))
            if image is None:
                return RawRecord(key=key, origin=origin,
                                 error="unsafe_path" if isinstance(entry.get("image_path"), str) else bad.error)
            return RawRecord(key=key, image=image, caption=entry.get("txt"), meta={**meta, "kind": "t2i"},
                             origin=origin)
        if "image" in entry and "annotation" in entry:  # T2I pre-training: caption in a JSON file
            image, annotation = self._image(entry["image"]), entry["annotation"]
            if image is None or not isinstance(annotation, str) or unsafe_path(annotation) or not self.caption_root:
                return RawRecord(key=key, origin=origin, error="unsafe_path" if image is None or (
                    isinstance(annotation, str) and unsafe_path(annotation)) else "index_entry_invalid")
            caption = JsonField(FileRef(storage.join(self.caption_root, annotation)), self.caption_key)
            return RawRecord(key=key, image=image, caption=caption, meta={**meta, "kind": "t2i"}, origin=origin)
        return bad
