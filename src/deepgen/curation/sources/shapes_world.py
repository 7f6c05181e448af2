"""ShapesWorld (the default source): procedurally generated samples, deterministic per (seed, index).

Images arrive as PIL images (nothing to decode); the held-out split is ShapesWorld's own, by scene. Scenes repeat by
design (the tiny model needs many renders of each combination), so deduplication is off unless asked for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from deepgen.curation.sources.base import RawRecord


class ShapesWorldSource:
    type = "shapes_world"
    synthetic = True

    def __init__(self, num_samples: int, seed: int, image_size: int, mix: dict | None, heldout_fraction: float):
        from deepgen import world

        self.num_samples, self.seed, self.image_size, self.mix = num_samples, seed, image_size, mix
        self.heldout_fraction = heldout_fraction
        self.kinds = tuple(world.KINDS)
        self.categories = tuple(world.CATEGORIES)

    def settings(self) -> dict:
        return {"type": self.type, "num_samples": self.num_samples, "seed": self.seed, "image_size": self.image_size,
                "mix": self.mix}

    def location(self) -> dict:
        return {}

    def signature(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    def records(self, start: int = 0) -> Iterator[RawRecord]:
        from deepgen import world

        samples = world.generate_samples(self.num_samples, self.seed, self.image_size, self.mix)
        for i, sample in enumerate(samples):
            if i < start:
                continue  # generation is per index; skipping still renders, but only up to `start`
            meta = {k: v for k, v in sample.items() if k not in ("key", "image", "source_image", "caption")}
            source = sample.get("source_image")
            yield RawRecord(key=sample["key"], image=sample["image"], caption=sample["caption"],
                            sources=(source,) if source is not None else (), meta=meta,
                            origin=f"shapes_world:{self.seed}:{i}",
                            heldout=world.sample_is_held_out(sample, self.heldout_fraction))
