"""The source interface: every input format yields the same raw records, in one deterministic order.

A source does no decoding and no checking beyond what it must to find its records (an unsafe tar member path, a broken
index entry): it yields `RawRecord`s whose image and caption may still be references (`FileRef`, `JsonField`) that the
worker processes read, so reads from S3 run in parallel too. Everything a record needs to be curated is picklable.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_KEYS = ("caption", "prompt", "instruction", "text", "txt")  # JSON fields holding the text, by preference
SECRET_WORDS = ("secret", "password", "token", "credential", "access_key", "api_key")


@dataclass(frozen=True)
class FileRef:
    """A file or S3 object read by the worker that curates the record."""

    uri: str


@dataclass(frozen=True)
class JsonField:
    """A caption inside a JSON file (DeepGen's caption folders: one JSON per image, the text under `key`)."""

    ref: FileRef
    key: str


Image = Any  # bytes | PIL.Image.Image | FileRef
Caption = Any  # str | bytes | FileRef | JsonField | None


@dataclass
class RawRecord:
    key: str  # unique within the source, stable across runs; made shard-safe by `safe_key`
    image: Image = None  # target image (None for prompt-only sources)
    caption: Caption = None  # caption, edit instruction or prompt
    sources: tuple = ()  # reference images of an edit, in order
    meta: dict = field(default_factory=dict)  # kind, category and anything else to keep in the shard's json
    origin: str = ""  # where it came from, for reports (never part of the shards or the data version)
    error: str | None = None  # a reason found while reading the source: the record is quarantined with it
    detail: str = ""  # with `error`: what is wrong with `origin`, in words (the source's warning line; not stored)
    heldout: bool | None = None  # the source's own split (ShapesWorld: by scene); None: by content hash
    sidecar: FileRef | None = None  # a JSON object read by the worker: the caption if none yet, and metadata


class Source(Protocol):
    type: str
    synthetic: bool  # duplicates by design (ShapesWorld): dedup defaults off
    kinds: tuple[str, ...]  # the kinds its records have (contract value set)
    categories: tuple[str, ...] | None  # the categories, when the source knows them

    def settings(self) -> dict:
        """Options that shape the content, without locations or secrets (part of the data version)."""

    def location(self) -> dict:
        """Where the input lives (part of the output folder's fingerprint, not of the data version)."""

    def signature(self) -> str:
        """A cheap hash of the input as it is now (listing with sizes and change tags): new input, new folder."""

    def records(self, start: int = 0) -> Iterator[RawRecord]:
        """Records from position `start` on (a resumed run skips what earlier chunks completed)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_key(key: str) -> str:
    """A key that is safe as a webdataset key and a file name: [A-Za-z0-9_-] only (no dots: webdataset splits keys at
    the first dot; no slashes: nothing may land outside the shard). Folder separators become `__` ("a/b" -> "a__b");
    a key that needed any other change gets a hash of the original as suffix, so two keys never collide."""
    if "__" not in key:
        joined = key.replace("/", "__")
        if joined and not _UNSAFE.search(joined) and len(joined) <= 200 and not key.startswith("/"):
            return joined
    cleaned = _UNSAFE.sub("_", key)[:160]
    return f"{cleaned}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def unsafe_path(path: str) -> bool:
    """True for a member / index path that could point outside its root: absolute, drive letter, `..` component."""
    if not path or path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path) or "\x00" in path:
        return True
    parts = re.split(r"[\\/]+", path)
    return ".." in parts or posixpath.normpath(path.replace("\\", "/")).startswith("..")


def public_settings(options: dict) -> dict:
    """Options with anything named like a secret removed (manifests and logs must never hold credentials)."""
    return {k: v for k, v in options.items() if not any(w in k.lower() for w in SECRET_WORDS)}


def signature_of(stats) -> str:
    """Hash of a listing: (relative name, size, change tag) per file, streamed."""
    h = hashlib.sha256()
    for st in stats:
        h.update(f"{st.rel}\0{st.size}\0{st.tag}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]
