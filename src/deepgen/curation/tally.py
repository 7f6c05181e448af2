"""The counts a chunk of curation records in its progress record and a run sums over chunks, so that a resumed run
re-sums the finished chunks' records instead of re-reading their samples."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    fixes: Counter = field(default_factory=Counter)
    bench: dict[str, Counter] = field(default_factory=dict)  # benchmark -> {"exact": n, "near": n}
    examples: dict[str, dict[str, list]] = field(default_factory=dict)  # benchmark -> kind -> matched examples
    contract_failures: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        """The keys a chunk's progress record carries."""
        return {"counts": dict(self.counts), "reasons": dict(self.reasons), "fixes": dict(self.fixes),
                "contamination": {k: dict(v) for k, v in self.bench.items()}, "examples": self.examples,
                "contract_failures": self.contract_failures}

    def absorb(self, record: dict, example_limit: int) -> None:
        self.counts.update(record["counts"])
        self.reasons.update(record["reasons"])
        self.fixes.update(record["fixes"])
        for name, c in record["contamination"].items():
            self.bench.setdefault(name, Counter()).update(c)
        for name, kinds in record["examples"].items():
            for kind, items in kinds.items():
                have = self.examples.setdefault(name, {}).setdefault(kind, [])
                have.extend(items[: max(0, example_limit - len(have))])
        self.contract_failures.extend(record["contract_failures"])
