"""Content hashes of model folders, and s3:// checkpoints fetched once into a local cache.

A lean stage checkpoint names its base (the parent checkpoint, or the pretrained folders at the root of a chain) by
URI and content hash, so a base that changed after the child was written is refused instead of silently mixed in.
The hash of a folder is the SHA-256 of its file table (relative path -> size and SHA-256 of the bytes, every file but
the manifest and hidden files), so it is computed once, never on every save:

- a deepgen checkpoint (format 2) writes that table as `manifest.json` when it is saved (hashing what it just wrote,
  i.e. only the components the stage trained); its hash is read from there, with each file's size checked;
- any other folder (a pretrained Qwen / SD3.5 folder, a format-1 checkpoint) is hashed file by file, and each file's
  SHA-256 is kept in the cache (DEEPGEN_CACHE/sha256) under its path, size, mtime and inode: a 15 GB base is read
  once per machine, and a rewritten file (new mtime or size) is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from deepgen import storage

MANIFEST_FILE = "manifest.json"
HASH_PREFIX = "sha256:"
_CHUNK = 16 * 2**20


class BaseChangedError(ValueError):
    """A checkpoint's base is no longer the one it was written against (or its files no longer match its manifest)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """The file's SHA-256, computed once per (path, size, mtime, inode) on this machine."""
    from deepgen.model.weights import cache_root

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()).hexdigest()
    entry = cache_root() / "sha256" / key[:2] / key
    if entry.is_file():
        return entry.read_text().strip()
    value = file_sha256(path)
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{key}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    os.replace(tmp, entry)
    return value


def file_table(folder: Path, cached: bool = True) -> dict[str, dict]:
    """rel path -> {"size", "sha256"} for every file under `folder` except the manifest and hidden files."""
    table = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or rel == MANIFEST_FILE or any(part.startswith(".") for part in rel.split("/")):
            continue
        table[rel] = {"size": path.stat().st_size, "sha256": cached_sha256(path) if cached else file_sha256(path)}
    return table


def table_hash(table: dict[str, dict]) -> str:
    return HASH_PREFIX + hashlib.sha256(json.dumps(table, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: Path) -> str:
    """Hash every file of a freshly written checkpoint once, record the table, return the folder's hash."""
    table = file_table(folder, cached=False)
    (folder / MANIFEST_FILE).write_text(json.dumps({"files": table}, indent=1, sort_keys=True))
    return table_hash(table)


def fingerprint(folder: Path, subfolder: str | None = None, name: str | None = None) -> str:
    """The content hash of a local folder (see the module docstring); `name` is how errors call it."""
    target = folder / subfolder if subfolder else folder
    name = name or str(target)
    if not target.is_dir():
        raise FileNotFoundError(f"{name}: folder not found")
    manifest = target / MANIFEST_FILE
    if not manifest.is_file():
        return table_hash(file_table(target))
    table = json.loads(manifest.read_text())["files"]
    for rel, entry in table.items():
        path = target / rel
        size = path.stat().st_size if path.is_file() else None
        if size != entry["size"]:
            found = "missing" if size is None else f"{size} bytes"
            raise BaseChangedError(f"{name}: {rel} is {found}, its manifest says {entry['size']} bytes: the folder "
                                   f"changed after it was written")
    return table_hash(table)


def fetch(uri: str, what: str = "checkpoint") -> Path:
    """A local folder holding `uri`. An s3:// prefix is downloaded into DEEPGEN_CACHE/checkpoints and reused while its
    listing (names, sizes, ETags) is unchanged; a rewritten prefix is downloaded again."""
    if not storage.is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"{what} not found: {uri}")
        return path
    from deepgen.model.weights import cache_root

    uri = uri.rstrip("/")
    entries = list(storage.stat_files(uri))  # without the folder placeholders pyarrow (Ray Train) writes
    listing = [[f.rel, f.size, f.tag] for f in entries]
    if not listing:
        raise FileNotFoundError(f"{what} not found: nothing stored under {uri}")
    local = cache_root() / "checkpoints" / uri[len("s3://"):]
    marker = local / ".listing.json"
    if marker.is_file() and json.loads(marker.read_text()) == listing:
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=local.parent))
    try:
        for entry in entries:
            storage.write_bytes(str(tmp / entry.rel), storage.read_bytes(entry.uri))
        (tmp / ".listing.json").write_text(json.dumps(listing))
        if marker.is_file() and json.loads(marker.read_text()) == listing:
            return local  # a concurrent download (another worker on this node) finished first
        if local.exists():  # an older download of a rewritten prefix
            old = local.parent / f".{local.name}.{os.getpid()}.old"
            os.replace(local, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, local)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local
