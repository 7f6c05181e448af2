"""Data contracts with great-expectations: one suite over the per-sample manifest, one over per-shard statistics.

A failing row is quarantined with the expectation it broke (never silently dropped, never silently passed); the
caller decides whether the failure rate is acceptable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class ContractResult:
    success: bool
    failed_rows: dict[int, list[str]] = field(default_factory=dict)  # row index -> failed expectation names
    report: list[dict] = field(default_factory=list)  # one entry per expectation: name, success, unexpected count


def sample_expectations(image_size: int | None, kinds: list[str], categories: list[str], max_caption_chars: int):
    import great_expectations as gx

    E = gx.expectations
    expectations = [
        E.ExpectColumnValuesToBeUnique(column="key"),
        E.ExpectColumnValuesToNotBeNull(column="caption"),
        E.ExpectColumnValueLengthsToBeBetween(column="caption", min_value=1, max_value=max_caption_chars),
        E.ExpectColumnValuesToBeInSet(column="kind", value_set=kinds),
        E.ExpectColumnValuesToBeInSet(column="category", value_set=categories),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "heldout"]),
    ]
    if image_size:
        expectations += [E.ExpectColumnValuesToBeBetween(column=c, min_value=image_size, max_value=image_size)
                         for c in ("width", "height")]
    return expectations


def shard_expectations(max_shard_bytes: int):
    import great_expectations as gx

    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeUnique(column="name"),
        E.ExpectColumnValuesToBeBetween(column="count", min_value=1),
        E.ExpectColumnValuesToBeBetween(column="bytes", min_value=1, max_value=max_shard_bytes * 2),
        E.ExpectColumnValueLengthsToEqual(column="sha256", value=64),
    ]


def validate(frame: pd.DataFrame, expectations: list, name: str) -> ContractResult:
    """Run expectations on a DataFrame (ephemeral GX context) and map failures back to row indices."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # our own bars say what is happening
    source = context.data_sources.add_pandas(name=f"{name}_source")
    asset = source.add_dataframe_asset(name=f"{name}_asset")
    batch_def = asset.add_batch_definition_whole_dataframe(f"{name}_batch")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}_validation", data=batch_def, suite=suite))
    result = validation.run(batch_parameters={"dataframe": frame},
                            result_format={"result_format": "COMPLETE"})
    failed: dict[int, list[str]] = {}
    report = []
    for res in result.results:
        exp_name = f"{res.expectation_config.type}({res.expectation_config.kwargs.get('column', '')})"
        unexpected = res.result.get("unexpected_index_list") or []
        report.append({"expectation": exp_name, "success": bool(res.success),
                       "unexpected_count": int(res.result.get("unexpected_count") or 0)})
        for idx in unexpected:
            row = idx if isinstance(idx, int) else int(idx.get("index", idx) if isinstance(idx, dict) else idx)
            failed.setdefault(row, []).append(exp_name)
    return ContractResult(bool(result.success), failed, report)
