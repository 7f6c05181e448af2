"""The training stream's data mix: `keep` selects what a stage trains on, and a mix that matches nothing fails."""

from __future__ import annotations

import itertools

import pytest

from deepgen.train.batches import sample_stream


def test_keep_selects_categories(small_shards):
    record, _, _ = small_shards
    stream = sample_stream(record["train_urls"], seed=0, keep={"single_object": 1.0, "*": 0.0})
    categories = {s["category"] for s in itertools.islice(stream, 200)}
    assert categories == {"single_object"}
    mixed = {s["category"] for s in itertools.islice(sample_stream(record["train_urls"], seed=0), 200)}
    assert len(mixed) > 3


@pytest.mark.timeout(120)  # without the guard the stream resamples forever
def test_keep_matching_nothing_is_an_error_naming_the_mix(small_shards):
    record, _, _ = small_shards
    stream = sample_stream(record["train_urls"], seed=0, keep={"no_such_category": 1.0, "*": 0.0},
                           give_up_after=500)
    with pytest.raises(ValueError, match="no_such_category"):
        next(stream)
