"""Graded metrics beside the strict ones: edits followed / preserved, multi-object found / extra / attr."""

import collections
import itertools
import random

import numpy as np
import pytest
from PIL import ImageFilter

from deepgen.world import CELLS, KINDS, ObjectSpec, SceneSpec, generate_samples, render, score_image
from deepgen.world.score import attributes_right

EDITS = KINDS["edit"]


@pytest.fixture(scope="module")
def edits():
    return list(generate_samples(360, seed=31, mix={c: 1.0 for c in EDITS}))


def _edit_means(samples, image_of):
    res = collections.defaultdict(list)
    for s in samples:
        r = score_image(image_of(s), s["spec"], s["category"], source=s["source_spec"])
        kind = s["category"].removeprefix("edit_")
        for metric in ("followed", "preserved", "both"):
            res[metric, kind].append(r[f"edits_{metric}.{kind}"])
    return {k: float(np.mean(v)) for k, v in res.items()}


def test_target_follows_and_preserves_source_only_preserves(edits):
    kinds = {c.removeprefix("edit_") for c in EDITS}
    target = _edit_means(edits, lambda s: s["image"])
    assert set(target) == {(m, k) for m in ("followed", "preserved", "both") for k in kinds}
    assert set(target.values()) == {1.0}
    source = _edit_means(edits, lambda s: s["source_image"])  # every kind changes what it names
    assert {k: v for k, v in source.items() if v != (1.0 if k[0] == "preserved" else 0.0)} == {}
    rng = np.random.default_rng(0)

    def degraded(s):
        arr = np.asarray(s["image"].filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)
        return np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    assert {k: v for k, v in _edit_means(edits, degraded).items() if v < 0.95} == {}


def test_garbage_neither_follows_nor_preserves(edits):
    rng = np.random.default_rng(1)
    noise = _edit_means(edits, lambda s: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    # by chance: "remove" asks for an absence, which noise satisfies (no blob of the removed colour and shape); noise
    # reads as a gray background, the target of about a quarter of the background edits
    chance = {("followed", "remove"): 1.0, ("followed", "background"): 0.35}
    assert {k: v for k, v in noise.items() if v > chance.get(k, 0.1)} == {}
    assert noise["both", "remove"] == noise["both", "background"] == 0.0


def test_both_is_the_strict_grade(edits):
    """followed and preserved split the strict grade without changing it, on right, wrong and unrelated images."""
    others = [s["image"] for s in edits[1:] + edits[:1]]
    for s, other in zip(edits, others):
        for image in (s["image"], s["source_image"], other):
            r = score_image(image, s["spec"], s["category"], source=s["source_spec"])
            assert r[f"edits_both.{s['category'].removeprefix('edit_')}"] == r[s["category"]], s["caption"]


def _graded(target, image_spec, category, source):
    r = score_image(render(image_spec), target.to_dict(), category, source=source.to_dict())
    kind = category.removeprefix("edit_")
    return r[f"edits_followed.{kind}"], r[f"edits_preserved.{kind}"]


def test_half_right_edits():
    red, blue = ObjectSpec("red", "circle", (0, 0)), ObjectSpec("blue", "square", (2, 2))
    green = ObjectSpec("green", "triangle", (1, 1))
    src = SceneSpec((red, blue))
    recolored = SceneSpec((ObjectSpec("yellow", "circle", (0, 0)), blue))
    # the recolour done, but the blue square also moved / an object added / the background changed
    assert _graded(recolored, SceneSpec((recolored.objects[0], ObjectSpec("blue", "square", (2, 1)))),
                   "edit_recolor", src) == (1.0, 0.0)
    assert _graded(recolored, SceneSpec(recolored.objects + (green,)), "edit_recolor", src) == (1.0, 0.0)
    assert _graded(recolored, SceneSpec(recolored.objects, "black"), "edit_recolor", src) == (1.0, 0.0)
    # recoloured the wrong object: the asked one is not as asked, and the other one changed
    assert _graded(recolored, SceneSpec((red, ObjectSpec("yellow", "square", (2, 2)))), "edit_recolor",
                   src) == (0.0, 0.0)
    # a move that leaves a copy behind is not a move; the rest is intact
    moved = SceneSpec((ObjectSpec("red", "circle", (1, 0)), blue))
    assert _graded(moved, SceneSpec(moved.objects + (red,)), "edit_move", src) == (0.0, 1.0)
    # removing both objects removes the asked one but loses the other
    assert _graded(SceneSpec((blue,)), SceneSpec(()), "edit_remove", src) == (1.0, 0.0)
    # a background change that drops an object
    src_bg = SceneSpec((red, blue), "gray")
    assert _graded(SceneSpec((red, blue), "black"), SceneSpec((red,), "black"), "edit_background",
                   src_bg) == (1.0, 0.0)
    added = SceneSpec((red, blue, green))
    assert _graded(added, SceneSpec((red, blue, ObjectSpec("green", "triangle", (0, 2)))), "edit_add",
                   src) == (0.0, 1.0)


def _objects(category, specs, drawn):
    scene = SceneSpec(tuple(ObjectSpec(c, s, cell) for (c, s), cell in zip(specs, CELLS[::2])))
    image = render(SceneSpec(tuple(ObjectSpec(c, s, cell) for (c, s), cell in zip(drawn, CELLS[1:]))))
    r = score_image(image, scene.to_dict(), category)
    return r[f"{category}_found"], r[f"{category}_extra"], r[f"{category}_attr"]


def test_found_extra_attr_on_rendered_scenes():
    """Drawn in other cells than the spec's: these captions ask for no cell, so found ignores cells."""
    asked = [("red", "circle"), ("blue", "square")]
    assert _objects("two_objects", asked, asked) == (1.0, 0.0, 1.0)
    assert _objects("color_attr", asked, [("blue", "circle"), ("red", "square")]) == (0.0, 0.0, 0.5)  # swapped
    assert _objects("two_objects", asked, asked[:1]) == (0.5, 0.0, 0.5)
    assert _objects("two_objects", asked, asked + [("green", "triangle")]) == (1.0, 1.0, 1.0)
    assert _objects("position", asked, [("red", "circle"), ("blue", "triangle")]) == (0.5, 0.0, 0.75)
    assert _objects("two_objects", asked, []) == (0.0, 0.0, 0.0)
    four = [("green", "triangle")] * 4
    assert _objects("counting", four, four[:3]) == (0.75, 0.0, 0.75)
    assert _objects("counting", four[:2], four) == (1.0, 2.0, 1.0)
    assert _objects("counting", four[:2], [("green", "square")] * 2) == (0.0, 0.0, 0.5)


def test_rendered_multi_object_samples_score_perfectly():
    cats = ("two_objects", "counting", "position", "color_attr")
    for s in generate_samples(200, seed=32, mix={c: 1.0 for c in cats}):
        r = score_image(s["image"], s["spec"], s["category"])
        c = s["category"]
        assert (r[f"{c}_found"], r[f"{c}_extra"], r[f"{c}_attr"]) == (1.0, 0.0, 1.0), s["caption"]


def test_attribute_matching_is_optimal():
    """Against brute force over every one-to-one assignment, on small random instances."""
    rng = random.Random(0)
    colours, shapes = ("red", "blue", "green"), ("circle", "square", "triangle")
    for _ in range(400):
        asked = [(rng.choice(colours), rng.choice(shapes)) for _ in range(rng.randint(1, 4))]
        drawn = [(rng.choice(colours), rng.choice(shapes)) for _ in range(rng.randint(0, 5))]
        pad = drawn + [None] * len(asked)  # None: the asked object is left unassigned
        best = max(sum(0 if d is None else (a[0] == d[0]) + (a[1] == d[1]) for a, d in zip(asked, pick))
                   for pick in itertools.permutations(pad, len(asked)))
        assert attributes_right(asked, drawn) == best, (asked, drawn)
