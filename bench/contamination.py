"""Scaling check for the benchmark-contamination index: checking 10x more captions should take about 10x longer.

LSH buckets make the check linear in the number of texts (no all-pairs comparison); this script measures it on
synthetic ShapesWorld-like and random captions, 1% of them copied benchmark prompts, so the verification path runs too.

    .venv/bin/python bench/contamination.py [--sizes 10000 100000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import random
import time

from deepgen.curation.contamination import ContaminationIndex, load_benchmarks

COLOURS = "red green blue yellow purple gray cyan magenta orange brown black white".split()
SHAPES = "square circle triangle rectangle ellipse pentagon hexagon cross semicircle star".split()
RELATIONS = ["to the left of", "to the right of", "above", "below", "next to", "behind", "in front of"]
WORDS = """dog cat man woman child car bus tree house boat bird horse table chair cup flower river beach bench small
large wooden old bright dark tiny shiny soft wet dry sitting standing running parked floating a the of on with near
under over glass metal stone paper sunny rainy night morning city forest desert""".split()


def captions(n: int, prompts: list[str], seed: int = 0) -> list[str]:
    """`n` mostly distinct captions (the check de-duplicates, so repeats would flatter the larger run)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.01:
            out.append(rng.choice(prompts))
        elif kind < 0.5:
            c = rng.choice
            out.append(f"{c(['a', 'one', 'the'])} {c(COLOURS)} {c(SHAPES)} is {c(RELATIONS)} a {c(COLOURS)} "
                       f"{c(SHAPES)} and {c(['a', 'the'])} {c(COLOURS)} {c(SHAPES)}")  # fmt: skip
        else:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1, help="best of N timings per size")
    args = parser.parse_args()

    t0 = time.perf_counter()
    benchmarks = load_benchmarks()
    t1 = time.perf_counter()
    index = ContaminationIndex(benchmarks)
    t2 = time.perf_counter()
    print(f"load {t1 - t0:.2f}s, index build {t2 - t1:.2f}s ({len(index)} distinct benchmark prompts)")

    prompts = [p for ps in benchmarks.values() for p in ps]
    timings = {}
    for n in args.sizes:
        texts = captions(n, prompts)
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            report = index.check(texts)
            best = min(best, time.perf_counter() - start)
        timings[n] = best
        print(f"{n:>8} captions ({len(set(texts))} distinct): {best:.2f}s, {n / best:,.0f} captions/s, "
              f"{len(report.flagged)} flagged")  # fmt: skip
    small, large = min(timings), max(timings)
    if small != large:
        print(f"time ratio {large}/{small}: {timings[large] / timings[small]:.1f}x for {large / small:.0f}x the texts")


if __name__ == "__main__":
    main()
