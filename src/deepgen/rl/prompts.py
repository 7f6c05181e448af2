"""The RL prompt set as data: prompts drawn from the training split of a curated ShapesWorld version, written as a
JSONL prompt file that curation's `prompts` source turns into its own shards and data version (with the benchmark
contamination check). Each line keeps what the rewards need: category and scene spec (the `shapes` reward), the
words (the `ocr` reward reads them from the caption).

A prompt is never from a held-out scene: it comes from the train split, and any scene the held-out rule marks is
dropped again here (the split is by scene, so a held-out scene cannot reach the train split, but a changed rule
must not leak one either).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from deepgen import storage
from deepgen.world import is_held_out


def prompt_lines(samples: Iterable[dict], categories: Iterable[str], heldout_fraction: float) -> list[dict]:
    """One entry per distinct caption of the wanted categories, in shard order (deterministic)."""
    wanted, seen, out = set(categories), set(), []
    for sample in samples:
        if sample.get("category") not in wanted or sample.get("kind") == "edit" or sample["caption"] in seen:
            continue  # an edit's instruction is no text-to-image prompt (a folder source's edits share its category)
        if is_held_out(sample.get("scene_key", ""), heldout_fraction):
            continue
        seen.add(sample["caption"])
        out.append({"prompt": sample["caption"], "category": sample["category"], "spec": sample.get("spec"),
                    "scene_key": sample.get("scene_key")})
    if not out:
        raise ValueError(f"no training prompts of the categories {sorted(wanted)} in the curated shards")
    return out


def write_prompt_file(lines: list[dict], folder: str) -> str:
    """The prompts as `<content hash>.jsonl` under `folder` (written once, atomically); returns its URI."""
    body = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
    uri = storage.join(folder, f"rl-prompts-{hashlib.sha256(body).hexdigest()[:16]}.jsonl")
    if not storage.exists(uri):
        storage.write_bytes(uri, body)
    return uri
