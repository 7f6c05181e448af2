"""The training stream against the one it replaced (resampled shards forever, decode-then-filter), on the default
run's shards and alignment's data settings (16 per batch, single objects only), in one command:

    nice -n 15 .venv/bin/python bench/stream.py [--batches 300] [--shards data/03_primary/shards/<version>/train]

Prints batches/s of each and the ratio new / old (above 1: the new stream is faster), in this process (loader
workers 0, as the tiny run uses) and with 1 and 2 DataLoader workers; then alignment's training steps/s (tiny model,
scb + dit, one torch thread like a Ray worker, frozen-VAE latent cache) fed by each stream in this process.
Alternating repeats; the median counts.
"""

from __future__ import annotations

import argparse
import glob
import statistics
import time
from pathlib import Path

import webdataset as wds

from deepgen.data.shards import decoded
from deepgen.train.batches import collate, training_batches

ROOT = Path(__file__).resolve().parents[1]
KEEP = {"single_object": 1.0, "*": 0.0}


def old_batches(urls: list[str], seed: int, batch_size: int, keep: dict):
    """The replaced stream (src/deepgen/train/batches.py before the resumable one), kept here as the baseline."""
    import random

    import torch

    from deepgen.model.deepgen import pil_to_tensor

    rng = random.Random(seed)

    def kept(sample):
        p = keep.get(sample.get("category"), keep.get(sample.get("kind"), keep.get("*", 1.0)))
        return p >= 1.0 or rng.random() < p

    dataset = wds.DataPipeline(wds.ResampledShards(urls, seed=seed, deterministic=True), wds.tarfile_to_samples(),
                               wds.shuffle(512, seed=seed), wds.decode("pil"), wds.map(decoded), wds.select(kept))
    stream = iter(dataset)
    while True:
        samples = [next(stream) for _ in range(batch_size)]
        images = torch.stack([pil_to_tensor(s["image"]) for s in samples])
        refs = [[s["source_image"]] if s.get("source_image") is not None else [] for s in samples]
        ref_images = torch.stack([pil_to_tensor(s["source_image"]) if r else torch.zeros_like(images[0])
                                  for s, r in zip(samples, refs)])
        yield {"images": images, "captions": [s["caption"] for s in samples], "refs": refs, "ref_images": ref_images}


def rate(stream, count: int) -> float:
    next(stream)  # start-up (first shards, worker processes) is not what a 1,000-step stage feels
    tic = time.perf_counter()
    for _ in range(count):
        next(stream)
    return count / (time.perf_counter() - tic)


def paired_train_rates(streams: dict, steps: int, cache) -> dict[str, float]:
    """Alignment's steps/s on each stream, measured in turns on one model (step 1 on the first stream, step 1 on the
    second, ...), so that both see the same machine load; the latent cache already holds every image, as it does
    after the first epochs of a 1,000-step stage."""
    import torch

    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen
    from deepgen.train.config import StageConfig
    from deepgen.train.freeze import apply_schedule
    from deepgen.train.objectives import ObjectiveContext, build_objective

    torch.manual_seed(0)
    stage = StageConfig.from_dict("alignment", {"objective": "flow", "trainable": ["scb", "dit"], "batch_size": 16})
    model = DeepGen(preset("tiny"))
    apply_schedule(model, stage)
    model.latent_cache = cache
    objective = build_objective(model, stage, ObjectiveContext(data={}, seed=0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)

    def step(stream) -> float:
        tic = time.perf_counter()
        loss, _ = objective(next(stream))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - tic

    for stream in streams.values():  # start-up: first shards, first batches
        step(stream)
    seconds = dict.fromkeys(streams, 0.0)
    for _ in range(steps):
        for name, stream in streams.items():
            seconds[name] += step(stream)
    return {name: steps / total for name, total in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=40, help="0: skip the training comparison")
    parser.add_argument("--shards", default=None, help="a train/ folder of shards (default: the newest curated)")
    args = parser.parse_args()
    folder = args.shards or max(glob.glob(str(ROOT / "data/03_primary/shards/*/train")),
                                key=lambda p: Path(p).stat().st_mtime)
    urls = sorted(glob.glob(f"{folder}/*.tar"))
    print(f"{len(urls)} shards in {folder}; {args.batches} batches of 16 per measurement")
    results: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        results.setdefault("old", []).append(rate(old_batches(urls, 0, 16, KEEP), args.batches))
        for workers in (0, 1, 2):
            stream = training_batches(urls, 16, 0, KEEP, rank=0, world_size=2, loader_workers=workers,
                                      collate_fn=collate)
            results.setdefault(f"new, {workers} loader workers", []).append(rate(stream, args.batches))
    report(results, "batches/s")
    if args.train_steps:
        import torch

        torch.set_num_threads(1)
        cache = filled_cache(urls)
        steps: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            streams = {"old": old_batches(urls, 0, 16, KEEP),
                       "new, 0 loader workers": training_batches(urls, 16, 0, KEEP, rank=0, world_size=2)}
            for name, value in paired_train_rates(streams, args.train_steps, cache).items():
                steps.setdefault(name, []).append(value)
        print(f"alignment training, {args.train_steps} steps of 16 per stream and measurement, in turns, "
              f"1 torch thread:")
        report(steps, "steps/s")


def filled_cache(urls: list[str]):
    """A latent cache with every single-object image of the shards, encoded by the seed-0 tiny model's VAE."""
    import torch

    from deepgen.data.shards import read_samples
    from deepgen.model import vae as vae_ops
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen, pil_to_tensor

    torch.manual_seed(0)
    vae, cache = DeepGen(preset("tiny")).vae.eval(), vae_ops.LatentCache()
    images = [pil_to_tensor(s["image"]) for s in read_samples(urls) if s.get("category") == "single_object"]
    with torch.no_grad():
        for i in range(0, len(images), 64):
            cache.encode(vae, torch.stack(images[i:i + 64]))
    return cache


def report(results: dict[str, list[float]], unit: str) -> None:
    old = statistics.median(results["old"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:24s} {median:7.2f} {unit}  (runs: {', '.join(f'{v:.2f}' for v in values)})"
              f"  new/old {median / old:.2f}")


if __name__ == "__main__":
    main()
