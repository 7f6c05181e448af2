"""`deepgen check-contamination FILE...`: flag training prompts that copy public benchmark test prompts.

Exit status is the verdict, so the command can gate a data pipeline or CI job: 0 nothing flagged, 1 something
flagged, 2 bad input (one line on stderr naming the file and the problem, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepgen.curation.contamination import ContaminationIndex, Match, load_benchmarks, read_prompt_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="prompt files: .txt, .jsonl, .json, .csv")
    parser.add_argument(
        "--benchmarks", type=Path, metavar="DIR", default=None, help="benchmark data directory (default: packaged)"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.7, metavar="F", help="near-match word-set Jaccard threshold (default 0.7)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--examples", type=int, default=3, metavar="N", help="examples per benchmark (default 3)")


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def run(args: argparse.Namespace) -> int:
    try:
        if not 0.0 < args.threshold <= 1.0:
            raise ValueError(f"--threshold must be in (0, 1], got {args.threshold}")
        texts: list[str] = []
        sources: list[tuple[str, int]] = []  # (file, 1-based item number within the file) per text
        for path in args.files:
            items = read_prompt_file(path)
            texts += items
            sources += [(str(path), n) for n in range(1, len(items) + 1)]
        benchmarks = load_benchmarks(args.benchmarks)
        index = ContaminationIndex(benchmarks, threshold=args.threshold)
    except (OSError, ValueError) as e:
        print(f"deepgen check-contamination: error: {e}", file=sys.stderr)
        return 2

    report = index.check(texts)
    counts = report.counts()

    def example(name: str, kind: str, m: Match) -> dict:
        file, item = sources[m.index]
        return {"benchmark": name, "match": kind, "similarity": m.similarity, "text": m.text,
                "benchmark_prompt": m.benchmark_prompt, "file": file, "item": item}  # fmt: skip

    examples = [
        example(name, kind, m)
        for name, found in report.per_benchmark.items()
        for kind, matches in (("exact", found.exact), ("near", found.near))
        for m in matches[: max(args.examples, 0)]
    ]
    if args.json:
        out = {"checked": len(texts), "threshold": args.threshold, "total_flagged": len(report.flagged),
               "per_benchmark": counts, "examples": examples}  # fmt: skip
        print(json.dumps(out, ensure_ascii=False))
    else:
        n_prompts = sum(len(v) for v in benchmarks.values())
        print(f"checked {len(texts)} texts from {len(args.files)} file(s) against {len(benchmarks)} benchmarks "
              f"({n_prompts} prompts), near-match threshold {args.threshold:g}")  # fmt: skip
        for name, c in counts.items():
            print(f"  {name:<14} exact {c['exact']:>6}   near {c['near']:>6}")
            for ex in (e for e in examples if e["benchmark"] == name):
                where = f"{ex['file']} #{ex['item']}"
                print(f"      {ex['match']:<5} {ex['similarity']:.2f}  {where}  {_short(ex['text'])!r}")
                if ex["match"] == "near":
                    print(f"{'':>18}~ {_short(ex['benchmark_prompt'])!r}")
        print(f"flagged {len(report.flagged)} of {len(texts)} texts")
    return 1 if report.flagged else 0
