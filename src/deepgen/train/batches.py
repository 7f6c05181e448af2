"""Batches for the objectives: decoded samples -> tensors (`collate`), and the stream builders they use.

The stream itself (each rank's share of the shards, epochs, aspect-ratio buckets, resumable position) is
`deepgen.train.stream`; see its docstring.
"""

from __future__ import annotations

import torch

from deepgen.model.deepgen import pil_to_tensor
from deepgen.train.stream import BatchStream, StreamSpec


def collate(samples: list[dict]) -> dict:
    """Targets as one (B, 3, H, W) tensor in [-1, 1] (a batch has one size); every reference of every sample as
    (3, h, w) tensors, per sample a list (`ref_images`, what `DeepGen.flow_loss` takes for several references); `refs`
    keeps the PIL references for the VLM's vision tokens."""
    images = torch.stack([pil_to_tensor(s["image"]) for s in samples])
    refs = [list(s.get("source_images") or []) for s in samples]
    return {"images": images, "captions": [s["caption"] for s in samples], "refs": refs,
            "ref_images": [[pil_to_tensor(r) for r in rs] for rs in refs],
            "kinds": [s.get("kind", "t2i") for s in samples]}


def samples_batch(samples: list[dict]) -> dict:
    """No tensors: the decoded samples as they are (prompt sets)."""
    return {"samples": samples}


def training_batches(urls: list[str], batch_size: int, seed: int, keep: dict[str, float] | None = None, *,
                     rank: int = 0, world_size: int = 1, loader_workers: int = 0, state: dict | None = None,
                     collate_fn=collate, give_up_after: int = 10_000) -> BatchStream:
    """This rank's endless stream of batches of `batch_size`; `state` (a `BatchStream.state_dict()`) continues one."""
    spec = StreamSpec(tuple(urls), seed=seed, batch_size=batch_size, rank=rank, world_size=world_size,
                      loader_workers=loader_workers, keep=dict(keep) if keep else None, give_up_after=give_up_after)
    return BatchStream(spec, collate_fn, state)
