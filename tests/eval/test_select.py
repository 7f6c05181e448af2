"""Evaluation sample selection: counts per category, balanced over scenes, deterministic."""

import collections

from deepgen import world
from deepgen.eval.shapes import select


def test_select_spreads_over_scenes_and_honours_counts():
    samples = world.heldout_prompts(seed=3, n_per_category=150, categories=("single_object", "counting"))
    chosen = select(samples, per_category=5, overrides={"single_object": 36})
    by_category = collections.Counter(s["category"] for s in chosen)
    assert by_category == {"single_object": 36, "counting": 5}
    combos = collections.Counter(s["scene_key"] for s in chosen if s["category"] == "single_object")
    assert len(combos) == len(world.generate.HELDOUT_SINGLE_OBJECTS) == 18 and set(combos.values()) == {2}
    assert [s["key"] for s in select(samples, 5, {"single_object": 36})] == [s["key"] for s in chosen]
    # the first 36 in stream order are not balanced, so the spreading is what balances them
    in_order = [s["scene_key"] for s in samples if s["category"] == "single_object"][:36]
    assert set(collections.Counter(in_order).values()) != {2}
