"""A folder (or S3 prefix) of images with sidecar files, one sample per key. The layout is a contract:

    KEY.<jpg|jpeg|png|webp>     the image (text-to-image) or the edit's target
    KEY.txt                     its caption, or the edit's instruction
    KEY.json                    optional sidecar object: the caption when there is no KEY.txt (`caption`, `prompt`,
                                `instruction` or `text`); `license` (or `licence`) and `source` (or `url`) go to the
                                per-sample manifest; every other field to the sample's metadata in the shard
    KEY.src.<ext>               an edit's (first) reference image
    KEY.src1.<ext>, KEY.src2.<ext>, ...   further references, in order

KEY is the path relative to the folder up to the first dot of the file name (`a/b.src.png` is key `a/b`), as in
webdataset. Hidden files and folders (temporaries) and files without an extension are not part of any sample, and a
key none of whose files is named above (`README.md`) is not a sample. A broken sample is quarantined with a reason,
its `origin` is the file at fault, and one warning line names that file: a reference or caption without its image
(`edit_target_missing`, `image_missing`), two files for one image (`image_ambiguous`: KEY.jpg beside KEY.png), a
reference number skipped (`source_gap`: KEY.src2 without KEY.src1), or any other file under the key
(`unexpected_file`: KEY.mask.png, KEY.bmp).

The listing is streamed in path order; all names sharing the prefix `key.` are adjacent in that order, so only a
handful of keys are ever pending and memory does not grow with the folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from deepgen import storage
from deepgen.curation.sources.base import FileRef, RawRecord, public_settings, signature_of

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # the contract's image formats (.jpeg is .jpg)
_SOURCE = re.compile(r"^src(\d*)\.(\w+)$")
_WARNED_LIMIT = 10  # broken samples named one warning line each; the rest are in the quarantine report


class FolderSource:
    type = "folder"
    synthetic = False
    kinds = ("t2i", "edit")
    categories = None

    def __init__(self, uri: str, caption_ext: str = "txt", category: str = "general"):
        self.uri = storage.absolute(str(uri))
        self.caption_ext = caption_ext.lstrip(".")
        self.category = category
        self._warned = 0

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
            if any(part.startswith(".") for part in rel.split("/")) or "." not in name:
                continue  # hidden files and folders (temporaries), extension-less files: not part of a sample
            stem, member = name.split(".", 1)
            pending.setdefault(f"{folder}/{stem}" if folder else stem, {})[member] = st
        yield from pending.items()

    def records(self, start: int = 0) -> Iterator[RawRecord]:
        index = 0
        for key, files in self._groups():
            record = self._record(key, files)
            if record is None:
                continue  # no file of the contract under this key (README.md): not a sample
            if index >= start:
                if record.error:
                    self._warn(record)
                yield record
            index += 1

    def _record(self, key: str, files: dict[str, storage.FileStat]) -> RawRecord | None:
        """The sample `key` from its files (member name -> file), or None when none of them is a sample file."""
        targets, refs, texts, unexpected = [], {}, {}, []
        for member, st in sorted(files.items()):
            lower = member.lower()
            if lower in IMAGE_EXTENSIONS:
                targets.append(st)
            elif lower in (self.caption_ext, "json"):
                texts[lower] = st
            elif (m := _SOURCE.match(lower)) and m.group(2) in IMAGE_EXTENSIONS and not m.group(1).startswith("0"):
                refs.setdefault(int(m.group(1) or 0), []).append(st)
            else:
                unexpected.append(st)
        if not (targets or refs or texts):
            return None
        meta = {"kind": "edit" if refs else "t2i", "category": self.category}

        def broken(reason: str, culprit: storage.FileStat, why: str) -> RawRecord:
            return RawRecord(key=key, meta=meta, origin=culprit.uri, error=reason, detail=why)

        if unexpected:
            return broken("unexpected_file", unexpected[0], "not a file of the folder layout (KEY.<jpg|png|webp>, "
                          "KEY.txt, KEY.json, KEY.src.<ext>, KEY.src1.<ext>, ...)")
        if not targets:
            culprit = refs[min(refs)][0] if refs else next(iter(texts.values()))
            return broken("edit_target_missing" if refs else "image_missing", culprit,
                          f"no image {_stem(key)}.<jpg|png|webp> beside it")
        if len(targets) > 1:
            return broken("image_ambiguous", targets[1], f"a second image for {_stem(key)} "
                          f"(beside {_name(targets[0])}); keep one")
        for number, group in sorted(refs.items()):
            if len(group) > 1:
                return broken("image_ambiguous", group[1], f"a second file for reference {number} "
                              f"(beside {_name(group[0])}); keep one")
        if sorted(refs) != list(range(len(refs))):
            gap = next(n for n in range(len(refs) + 1) if n not in refs)
            after = min(n for n in refs if n > gap)
            want = f"{_stem(key)}.src{gap or ''}.<ext>"
            return broken("source_gap", refs[after][0], f"reference {after} without {want} before it")
        caption = texts.get(self.caption_ext) if self.caption_ext != "json" else None
        sidecar = texts.get("json")
        return RawRecord(key=key, image=FileRef(targets[0].uri), caption=caption and FileRef(caption.uri),
                         sources=tuple(FileRef(refs[n][0].uri) for n in sorted(refs)), meta=meta,
                         origin=targets[0].uri, sidecar=sidecar and FileRef(sidecar.uri))

    def _warn(self, record: RawRecord) -> None:
        self._warned += 1
        if self._warned <= _WARNED_LIMIT:
            log.warning("folder source: %s: %s; sample %r quarantined (%s)", record.origin, record.detail,
                        record.key, record.error)
        elif self._warned == _WARNED_LIMIT + 1:
            log.warning("folder source: more broken samples under %s; each is in the quarantine report", self.uri)


def _name(st: storage.FileStat) -> str:
    return st.rel.rsplit("/", 1)[-1]


def _stem(key: str) -> str:
    return key.rsplit("/", 1)[-1]
