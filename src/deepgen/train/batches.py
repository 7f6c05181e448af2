"""The training stream: shards -> shuffled samples -> batches, one independent stream per Ray worker.

Shards are resampled with replacement from a per-rank seed, so every worker streams forever without coordination
and a resumed run simply draws fresh samples (step-based training; no epoch bookkeeping to restore).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
import webdataset as wds

from deepgen.data.shards import decoded
from deepgen.model.deepgen import pil_to_tensor


def sample_stream(urls: list[str], seed: int, shuffle_buffer: int = 512,
                  keep: dict[str, float] | None = None, give_up_after: int = 10_000) -> Iterator[dict]:
    """`keep` maps a category or kind (or "*" for the rest) to the probability that its samples are used (default 1):
    a stage's data mixture without re-curating (the paper mixes differently per stage too). The stream resamples
    shards forever, so a `keep` that matches nothing in them is an error after `give_up_after` rejections in a row
    rather than a silent hang."""
    if not urls:
        raise ValueError("no training shards given")
    rng = random.Random(seed)
    rejected = 0

    def kept(sample: dict) -> bool:
        nonlocal rejected
        p = keep.get(sample.get("category"), keep.get(sample.get("kind"), keep.get("*", 1.0)))
        if p >= 1.0 or rng.random() < p:
            rejected = 0
            return True
        rejected += 1
        if rejected >= give_up_after:
            raise ValueError(f"the stage's keep={keep} rejected {rejected} samples in a row from {urls[0]} and "
                             f"{len(urls) - 1} more shards: no category or kind it keeps is in the data")
        return False

    # Built from parts rather than wds.WebDataset, which resamples shards with pid + clock entropy mixed into the seed;
    # with deterministic=True a (seed, rank) stream is the same in every run.
    dataset = wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        wds.tarfile_to_samples(),
        wds.shuffle(shuffle_buffer, seed=seed),
        wds.decode("pil"),
        wds.map(decoded),
    )
    return iter(dataset.compose(wds.select(kept)) if keep else dataset)


def batches(stream: Iterator[dict], batch_size: int) -> Iterator[dict]:
    while True:
        yield collate([next(stream) for _ in range(batch_size)])


def collate(samples: list[dict]) -> dict:
    """Targets and references as [-1, 1] tensors; `refs` keeps the PIL references for the VLM's vision tokens."""
    images = torch.stack([pil_to_tensor(s["image"]) for s in samples])
    refs = [[s["source_image"]] if s.get("source_image") is not None else [] for s in samples]
    ref_images = torch.stack([pil_to_tensor(s["source_image"]) if r else torch.zeros_like(images[0])
                              for s, r in zip(samples, refs)])
    return {"images": images, "captions": [s["caption"] for s in samples], "refs": refs, "ref_images": ref_images,
            "kinds": [s.get("kind", "t2i") for s in samples]}
