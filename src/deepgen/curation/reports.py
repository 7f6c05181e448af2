"""The reports a person reads after curation: contamination.json (matches per benchmark, with examples),
quarantine.json (counts, reasons, examples, contract failures) and quarantine.md, the same in prose."""

from __future__ import annotations

import json
from collections import Counter

from deepgen import storage
from deepgen.curation.layout import CONTAMINATION, QUARANTINE, QUARANTINE_REPORT
from deepgen.curation.tally import Tally


def write_reports(out: str, settings: dict, tally: Tally, chunks: list[dict]) -> dict:
    """Write the three reports under `out`; returns their names, as the manifest lists them."""
    cfg = settings["contamination"]
    contamination = {"enabled": cfg["enabled"], "excluded": cfg["exclude"], "threshold": cfg["threshold"],
                     "benchmarks": cfg["benchmarks"] or "packaged",
                     "flagged": tally.counts["contamination_flagged"],
                     "per_benchmark": {name: {"exact": tally.bench.get(name, Counter())["exact"],
                                              "near": tally.bench.get(name, Counter())["near"],
                                              "examples": tally.examples.get(name, {})}
                                       for name in sorted(set(tally.bench) | set(tally.examples))}}
    storage.write_bytes(storage.join(out, CONTAMINATION),
                        json.dumps(contamination, indent=2, sort_keys=True, ensure_ascii=False).encode())
    c = tally.counts
    quarantine = {"counts": {"quarantined": c["records"] - c["kept"], "rejected": c["rejected"],
                             "duplicates": c["duplicate"], "near_duplicates": c["near_duplicate"],
                             "contaminated": c["contaminated"], "contract": c["contract"],
                             "contract_shard": c["contract_shard"]},
                  "by_reason": dict(sorted(tally.reasons.items())),
                  "examples": [e for ch in chunks for e in ch["quarantine_examples"]][:50],
                  "contract_failures": tally.contract_failures,
                  "samples_manifest": [ch["samples"] for ch in chunks]}
    storage.write_bytes(storage.join(out, QUARANTINE),
                        json.dumps(quarantine, indent=2, sort_keys=True, ensure_ascii=False).encode())
    storage.write_bytes(storage.join(out, QUARANTINE_REPORT), _readable_report(quarantine, contamination))
    return {"quarantine": QUARANTINE, "quarantine_report": QUARANTINE_REPORT, "contamination": CONTAMINATION}


def _readable_report(quarantine: dict, contamination: dict) -> bytes:
    lines = ["# Curation quarantine report", ""]
    c = quarantine["counts"]
    lines += [f"- quarantined: {c['quarantined']} (filters {c['rejected']}, exact duplicates {c['duplicates']}, "
              f"near duplicates {c['near_duplicates']}, contaminated {c['contaminated']}, "
              f"data contract {c['contract']} + {c['contract_shard']} in failed shards)", "", "## Reasons", ""]
    lines += [f"- `{reason}`: {n}" for reason, n in quarantine["by_reason"].items()] or ["- none"]
    lines += ["", "## Examples", ""]
    lines += [f"- `{e['key']}` ({e['status']}): {', '.join(e['reasons'])} <- {e['origin']}"
              for e in quarantine["examples"]] or ["- none"]
    lines += ["", "## Data contract failures", ""]
    for f in quarantine["contract_failures"] or []:
        lines.append(f"- chunk {f['chunk']} {f['kind']}: {f['quarantined']} of {f['rows']} rows"
                     + (" (whole batch)" if f["whole_batch"] else ""))
        lines += [f"  - {e['expectation']}: {e['unexpected_count']} unexpected, e.g. "
                  f"{e.get('partial_unexpected_list', [])[:3]}" for e in f["expectations"]]
    if not quarantine["contract_failures"]:
        lines.append("- none")
    lines += ["", "## Benchmark contamination", "",
              f"threshold {contamination['threshold']}, matches "
              f"{'excluded' if contamination['excluded'] else 'kept (reported only)'}", ""]
    for name, b in contamination["per_benchmark"].items():
        lines.append(f"- {name}: exact {b['exact']}, near {b['near']}")
        for kind, items in b["examples"].items():
            lines += [f"  - {kind} {e['similarity']:.2f}: {e['text'][:100]!r} ~ {e['benchmark_prompt'][:100]!r}"
                      for e in items[:3]]
    if not contamination["per_benchmark"]:
        lines.append("- no matches")
    return ("\n".join(lines) + "\n").encode()
