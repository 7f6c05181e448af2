"""Curation throughput against a bare webdataset ShardWriter, and near-duplicate search scaling.

1. A synthetic folder corpus (images + .txt captions, some JPEG, some duplicates) is curated in full: decode, filters,
   mode fixes, resize policy, benchmark-contamination check, exact + near dedup, GX contracts, shard + manifest writes,
   with `--workers` processes. The same samples (file bytes + caption) are then written with a bare
   `webdataset.ShardWriter` in one process, in the same run. Printed: samples/s of both and their ratio.
   Imports (great-expectations, the contamination module) happen before the clock starts, as process start-up; the
   contamination index build, the worker pool and GX set-up are inside the timed curation.
2. Near-duplicate search (`NearIndex`, threshold 4) on 10k and 100k synthetic 64-bit hashes: seconds and ratio
   (linear scaling: ~10).

    .venv/bin/python bench/curation.py [--n 16000] [--size 64] [--workers 2] [--hashes 10000 100000]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_corpus(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """n smooth random images with captions; 10% JPEG, 2% exact copies of an earlier image."""
    rng = np.random.default_rng(seed)
    words = "red green blue small large square circle field soft bright pattern picture of a the with".split()
    folder.mkdir(parents=True, exist_ok=True)
    previous: list[bytes] = []
    for i in range(n):
        if previous and rng.random() < 0.02:
            data, ext = previous[int(rng.integers(len(previous)))], "png"
        else:
            small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            image = Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            ext = "jpg" if rng.random() < 0.1 else "png"
            image.save(buf, format="JPEG" if ext == "jpg" else "PNG", quality=90)
            data = buf.getvalue()
            previous.append(data)
        (folder / f"{i:07d}.{ext}").write_bytes(data)
        caption = " ".join(rng.choice(words, int(rng.integers(4, 14))))
        (folder / f"{i:07d}.txt").write_text(caption)


def bare_shardwriter(folder: Path, out: Path, maxcount: int) -> int:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with wds.ShardWriter(str(out / "bare-%06d.tar"), maxcount=maxcount, verbose=0) as sink:
        for image in sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg")):
            caption = image.with_suffix(".txt").read_text()
            sink.write({"__key__": image.stem, image.suffix[1:]: image.read_bytes(), "txt": caption})
            n += 1
    return n


def _cpu() -> float:
    """CPU seconds of this process and its (finished) children: the worker pool's share counts too."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def near_scaling(sizes: list[int]) -> dict[int, float]:
    from deepgen.curation.dedup import NearIndex

    rng = np.random.default_rng(1)
    out = {}
    for n in sizes:
        hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
        hashes[n // 2 :: 50] = hashes[: n // 100 + 1][: len(hashes[n // 2 :: 50])] ^ np.uint64(3)  # some near copies
        index = NearIndex(4)
        start = time.perf_counter()
        dups = sum(int(index.query_and_add(hashes[i : i + 1024]).sum()) for i in range(0, n, 1024))
        out[n] = time.perf_counter() - start
        print(f"near-dup search {n:>7} hashes: {out[n]:6.2f} s ({out[n] / n * 1e6:.1f} us/hash, {dups} near copies)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16000,
                        help="samples in the corpus (fixed start-up costs, ~1.5 s, need a few thousand to amortise)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (the tiny preset's 64)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hashes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()

    import great_expectations  # noqa: F401 - imported before timing (process start-up)

    import deepgen.curation.contamination  # noqa: F401
    from deepgen.curation.curate import CurationParams, curate

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        make_corpus(corpus, args.n, args.size)
        params = CurationParams(source={"type": "folder", "uri": str(corpus)}, image_size=args.size,
                                workers=args.workers, progress=False)
        cpu0, start = _cpu(), time.perf_counter()
        record = curate(params, str(Path(tmp) / "curated"))
        curated_s, curated_cpu = time.perf_counter() - start, _cpu() - cpu0
        kept = sum(record["counts"].values())
        cpu0, start = _cpu(), time.perf_counter()
        written = bare_shardwriter(corpus, Path(tmp) / "bare", params.shard_max_count)
        bare_s, bare_cpu = time.perf_counter() - start, _cpu() - cpu0
    cur_rate, bare_rate = args.n / curated_s, written / bare_s
    print(f"cores {os.cpu_count()}, {args.n} samples of {args.size}x{args.size} ({kept} kept after dedup)")
    print(f"full curation ({args.workers} workers): {cur_rate:8.0f} samples/s  ({curated_s:.2f} s)")
    print(f"bare webdataset ShardWriter:     {bare_rate:8.0f} samples/s  ({bare_s:.2f} s)")
    print(f"ratio curation / bare: {cur_rate / bare_rate:.2f}  (target >= 0.5)")
    print(f"CPU time per sample: curation {curated_cpu / args.n * 1e3:.2f} ms (all processes), bare "
          f"{bare_cpu / written * 1e3:.2f} ms; load average during the run {os.getloadavg()[0]:.1f} "
          f"(other jobs on the machine lower the curation's share of the cores)")
    timings = near_scaling(args.hashes)
    if len(args.hashes) >= 2:
        a, b = args.hashes[0], args.hashes[-1]
        print(f"near-dup search time ratio {b}/{a}: {timings[b] / timings[a]:.1f} (linear: {b / a:.0f})")


if __name__ == "__main__":
    main()
