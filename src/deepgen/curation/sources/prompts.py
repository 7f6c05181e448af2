"""A prompt-only list (for the RL stage): .txt one per line, .jsonl / .json with a prompt field, .csv with a prompt
column (the formats `deepgen check-contamination` reads), local or on S3; one file or a folder / prefix of them.

In .jsonl objects, the fields beside the prompt (e.g. `category`, and the scene `spec` a program-scored reward needs)
travel into the shard's json; `kind` stays "prompt"."""

from __future__ import annotations

import json
import posixpath
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deepgen import storage
from deepgen.curation.sources.base import RawRecord, public_settings, signature_of

SUFFIXES = (".txt", ".jsonl", ".json", ".csv")


class PromptSource:
    type = "prompts"
    synthetic = False
    kinds = ("prompt",)
    categories = None

    def __init__(self, uri: str | list[str], category: str = "general"):
        uris = [uri] if isinstance(uri, str) else list(uri)
        self.uris = [storage.absolute(str(u)) for u in uris]
        self.category = category

    def settings(self) -> dict:
        return public_settings({"type": self.type, "category": self.category})

    def location(self) -> dict:
        return {"uri": self.uris}

    def _files(self) -> list[storage.FileStat]:
        return [st for u in self.uris for st in storage.stat_files(u) if st.rel.lower().endswith(SUFFIXES)]

    def signature(self) -> str:
        return signature_of(self._files())

    def records(self, start: int = 0) -> Iterator[RawRecord]:
        from deepgen.curation.contamination import read_prompt_file

        index = 0
        for st in self._files():
            name = posixpath.basename(st.rel)
            stem = name.rsplit(".", 1)[0]
            try:
                with tempfile.TemporaryDirectory() as tmp:  # the reader takes a path; S3 objects land here briefly
                    path = Path(tmp, name)
                    path.write_bytes(storage.read_bytes(st.uri))
                    prompts = read_prompt_file(path)
                    extras = _jsonl_extras(path, len(prompts))
            except (OSError, ValueError) as e:
                if index >= start:
                    yield RawRecord(key=f"{stem}-unreadable", origin=st.uri,
                                    error=f"prompt_file_unreadable: {str(e).split(': ', 1)[-1][:200]}")
                index += 1
                continue
            for no, prompt in enumerate(prompts):
                if index >= start:
                    yield RawRecord(key=f"{stem}-{no:08d}", caption=prompt, origin=f"{st.uri}#{no}",
                                    meta={"category": self.category, **extras[no], "kind": "prompt"})
                index += 1


def _jsonl_extras(path: Path, count: int) -> list[dict]:
    """Per prompt, the other fields of its JSONL object (empty for other formats and for plain strings)."""
    if path.suffix.lower() != ".jsonl":
        return [{}] * count
    from deepgen.curation.contamination import PROMPT_FIELDS, _prompt_of

    extras = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line) if line.strip() else None
        if item is not None and _prompt_of(item, str(path)).strip():  # the reader drops blank prompts too
            extras.append({k: v for k, v in item.items() if k.casefold() not in PROMPT_FIELDS}
                          if isinstance(item, dict) else {})
    if len(extras) != count:
        raise ValueError(f"{path}: {count} prompts but {len(extras)} JSONL objects")
    return extras
