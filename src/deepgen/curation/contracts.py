"""Data contracts with great-expectations: one suite over the per-sample manifest, one over per-shard statistics.

A batch is validated before any of it is written. Rows that break a row-level expectation are quarantined with the
expectations they broke; an expectation that fails without naming rows (an aggregate over the batch) quarantines the
whole batch. Nothing is silently dropped or silently passed: every failure is written beside the manifest with the
GX result, and the caller decides whether the failure rate is acceptable.

GX costs ~0.2-0.5 s per validation whatever the batch size, so suites are built once (`Contract`) and run on batches
of thousands of rows; a passing batch is checked with the cheapest result format, a failing one again in full.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import pandas as pd

log = logging.getLogger(__name__)
KEY_PATTERN = r"^[A-Za-z0-9_-]+$"


@dataclass
class ContractResult:
    success: bool
    failed_rows: dict[int, list[str]] = field(default_factory=dict)  # row position -> failed expectation names
    report: list[dict] = field(default_factory=list)  # one entry per expectation: name, success, unexpected count
    whole_batch: bool = False  # an aggregate expectation failed: every row is quarantined

    def failures(self) -> list[dict]:
        return [r for r in self.report if not r["success"]]


def sample_expectations(image_size: int | None, kinds: list[str], categories: list[str] | None,
                        max_caption_chars: int, *, images: bool = True, min_side: int | None = None,
                        multiple: int | None = None, max_size_ratio: float | None = None):
    """The per-sample manifest: unique shard-safe keys, captions within bounds, known kinds / categories / splits,
    image sizes as the resize policy promises (sides a multiple of `multiple`, sqrt(W*H) / image_size within
    [1, max_size_ratio]; with no policy, exactly image_size when given), unique content hashes."""
    import great_expectations as gx

    E = gx.expectations
    expectations = [
        E.ExpectColumnValuesToBeUnique(column="key"),
        E.ExpectColumnValuesToMatchRegex(column="key", regex=KEY_PATTERN),
        E.ExpectColumnValuesToNotBeNull(column="caption"),
        E.ExpectColumnValueLengthsToBeBetween(column="caption", min_value=1, max_value=max_caption_chars),
        E.ExpectColumnValuesToBeInSet(column="kind", value_set=kinds),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "heldout"]),
        E.ExpectColumnValuesToNotBeNull(column="content_hash"),
    ]
    if categories:
        expectations.append(E.ExpectColumnValuesToBeInSet(column="category", value_set=categories))
    else:
        expectations.append(E.ExpectColumnValuesToNotBeNull(column="category"))
    if images:
        if multiple:
            expectations += [E.ExpectColumnValuesToBeInSet(column=c, value_set=[0])
                             for c in ("width_mod", "height_mod")]
            expectations.append(E.ExpectColumnValuesToBeBetween(column="size_ratio", min_value=0.999,
                                                                 max_value=max_size_ratio or 2.0))
        elif image_size:
            expectations += [E.ExpectColumnValuesToBeBetween(column=c, min_value=min_side or 1)
                             for c in ("width", "height")]
    return expectations


def shard_expectations(max_shard_bytes: int, max_count: int | None = None, max_caption_chars: int | None = None):
    import great_expectations as gx

    E = gx.expectations
    expectations = [
        E.ExpectColumnValuesToBeUnique(column="name"),
        E.ExpectColumnValuesToBeBetween(column="count", min_value=1, max_value=max_count),
        E.ExpectColumnValuesToBeBetween(column="bytes", min_value=1, max_value=max_shard_bytes * 2),
        E.ExpectColumnValueLengthsToEqual(column="sha256", value=64),
    ]
    if max_caption_chars:
        expectations.append(E.ExpectColumnValuesToBeBetween(column="caption_chars_mean", min_value=1,
                                                            max_value=max_caption_chars))
    return expectations


def max_size_ratio(image_size: int, multiple: int, max_aspect_ratio: float) -> float:
    """Largest sqrt(W*H) / image_size the fix-pixels policy can produce (rounding each side up to `multiple`)."""
    a = math.sqrt(max_aspect_ratio)
    return math.sqrt((image_size * a + multiple) * (image_size / a + multiple)) / image_size + 1e-6


class Contract:
    """A suite bound to an ephemeral GX context once, run on many batches."""

    _count = 0

    def __init__(self, expectations: list, name: str):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        for noisy in ("great_expectations.data_context.types.base", "great_expectations.datasource.fluent.config"):
            logging.getLogger(noisy).setLevel(logging.WARNING)  # one INFO line per context otherwise
        Contract._count += 1
        name = f"{name}_{Contract._count}"
        self.name = name
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)  # our own bars say what is happening
        source = context.data_sources.add_pandas(name=f"{name}_source")
        asset = source.add_dataframe_asset(name=f"{name}_asset")
        batch_def = asset.add_batch_definition_whole_dataframe(f"{name}_batch")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations))
        self._validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch_def, suite=suite))

    def run(self, frame: pd.DataFrame) -> ContractResult:
        frame = frame.reset_index(drop=True)
        quick = self._validation.run(batch_parameters={"dataframe": frame},
                                     result_format={"result_format": "BOOLEAN_ONLY"})
        if quick.success:
            return ContractResult(True, {}, [{"expectation": _name(r), "success": True, "unexpected_count": 0}
                                             for r in quick.results])
        result = self._validation.run(batch_parameters={"dataframe": frame},
                                      result_format={"result_format": "COMPLETE"})
        failed: dict[int, list[str]] = {}
        report = []
        whole = False
        for res in result.results:
            exp_name = _name(res)
            unexpected = res.result.get("unexpected_index_list") or []
            entry = {"expectation": exp_name, "success": bool(res.success),
                     "unexpected_count": int(res.result.get("unexpected_count") or 0)}
            if not res.success:
                entry["partial_unexpected_list"] = [_plain(v) for v in
                                                    (res.result.get("partial_unexpected_list") or [])[:10]]
                entry["observed_value"] = _plain(res.result.get("observed_value"))
                if not unexpected:
                    whole = True
            report.append(entry)
            for idx in unexpected:
                row = idx if isinstance(idx, int) else int(idx.get("index", idx) if isinstance(idx, dict) else idx)
                failed.setdefault(row, []).append(exp_name)
        if whole:
            failed = {i: failed.get(i, []) + ["batch_failed"] for i in range(len(frame))}
        return ContractResult(bool(result.success), failed, report, whole)


def _name(res) -> str:
    return f"{res.expectation_config.type}({res.expectation_config.kwargs.get('column', '')})"


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def validate(frame: pd.DataFrame, expectations: list, name: str) -> ContractResult:
    """Run expectations on a DataFrame once (ephemeral GX context) and map failures back to row positions."""
    return Contract(expectations, name).run(frame)
