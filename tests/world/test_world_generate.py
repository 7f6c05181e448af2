"""ShapesWorld sample stream: determinism, structure, edits and the by-scene held-out split."""

import collections
import json

import pytest

from deepgen.world import (CATEGORIES, CELLS, COLORS, KINDS, SHAPES, SceneSpec, category_weights, eval_set,
                           generate_samples, heldout_prompts, is_held_out, render, sample_is_held_out, scene_key)


@pytest.fixture(scope="module")
def stream():
    return list(generate_samples(500, seed=7))


def _fingerprint(samples):
    return [(s["key"], s["caption"], json.dumps(s["spec"]), s["image"].tobytes(),
             s["source_image"].tobytes() if "source_image" in s else b"") for s in samples]


def test_same_seed_same_samples_different_seed_different():
    a, b = list(generate_samples(60, seed=1)), list(generate_samples(60, seed=1))
    assert _fingerprint(a) == _fingerprint(b)
    c = list(generate_samples(60, seed=2))
    assert sum(x[2:] != y[2:] for x, y in zip(_fingerprint(a), _fingerprint(c))) > 50


def test_sample_structure_and_all_kinds(stream):
    assert len({s["key"] for s in stream}) == len(stream)
    for s in stream:
        assert s["category"] in KINDS[s["kind"]] and s["caption"].strip()
        assert s["image"].mode == "RGB" and s["image"].size == (64, 64)
        assert s["scene_key"] == scene_key(s["spec"])
        assert ("source_image" in s) == ("source_spec" in s) == (s["kind"] == "edit")
    assert {s["kind"] for s in stream} == set(KINDS)
    assert {s["category"] for s in stream} == set(CATEGORIES)


def test_default_mix_shares(stream):
    w = category_weights()
    assert w["single_object"] == pytest.approx(0.40)
    assert sum(w[c] for c in KINDS["edit"]) == pytest.approx(0.25)
    counts = collections.Counter(s["kind"] for s in stream)
    assert 0.18 < counts["edit"] / len(stream) < 0.32
    assert 0.33 < sum(s["category"] == "single_object" for s in stream) / len(stream) < 0.47
    only = list(generate_samples(20, seed=3, image_size=32, mix={"counting": 1.0}))
    assert {s["category"] for s in only} == {"counting"} and only[0]["image"].size == (32, 32)


def test_spec_json_round_trip(stream):
    for s in stream:
        for key in ("spec", "source_spec"):
            if key in s:
                spec = SceneSpec.from_dict(json.loads(json.dumps(s[key])))
                assert spec.to_dict() == s[key]
                assert render(spec).tobytes() == render(s[key]).tobytes()


def _objs(spec):
    return {tuple(o["cell"]): (o["color"], o["shape"], o["size"]) for o in spec["objects"]}


def test_edits_differ_only_by_the_edit(stream):
    edits = [s for s in stream if s["kind"] == "edit"]
    assert len(edits) > 80
    for s in edits:
        src, tgt, cat = _objs(s["source_spec"]), _objs(s["spec"]), s["category"]
        same_bg = s["source_spec"]["background"] == s["spec"]["background"]
        changed = {c for c in src.keys() | tgt.keys() if src.get(c) != tgt.get(c)}
        if cat == "edit_background":
            assert not same_bg and not changed
            continue
        assert same_bg
        if cat == "edit_remove":
            assert len(changed) == 1 and changed <= src.keys() and not changed & tgt.keys()
        elif cat == "edit_add":
            assert len(changed) == 1 and changed <= tgt.keys() and not changed & src.keys()
        elif cat == "edit_move":
            (a, b) = sorted(changed, key=lambda c: c in tgt)
            assert len(changed) == 2 and src[a] == tgt[b] and a not in tgt and b not in src
        else:
            (c,) = changed
            (c0, s0, z0), (c1, s1, z1) = src[c], tgt[c]
            assert z0 == z1 and (c0, s0) != (c1, s1)
            if cat == "edit_recolor":
                assert s0 == s1 and c0 != c1 and f"{c0} {s0}" in s["caption"]


def test_held_out_split_is_by_scene():
    samples = list(generate_samples(2000, seed=11, image_size=16))
    held = [s for s in samples if sample_is_held_out(s)]
    train = [s for s in samples if not sample_is_held_out(s)]
    assert 0.03 < len(held) / len(samples) < 0.2

    def keys(ss):
        return {k for s in ss for k in (s["scene_key"], s.get("source_scene_key")) if k}
    assert not keys(train) & keys(held)
    assert all(not is_held_out(k) for k in keys(train))
    # single-object scenes are keyed by (colour, shape, cell) only
    one = next(s for s in samples if s["category"] == "single_object")
    o = one["spec"]["objects"][0]
    assert one["scene_key"] == f"{o['color']} {o['shape']}@{o['cell'][0]},{o['cell'][1]}"


def test_single_object_split_is_balanced_and_compositional():
    """Every colour-shape pair is held out once, each cell twice, and training still sees every pair of attributes."""
    combos = [(c, s, cell) for c in COLORS for s in SHAPES for cell in CELLS]
    key = {x: scene_key({"objects": [{"color": x[0], "shape": x[1], "cell": list(x[2])}]}) for x in combos}
    held = [x for x in combos if is_held_out(key[x])]
    assert collections.Counter((c, s) for c, s, _ in held) == {(c, s): 1 for c in COLORS for s in SHAPES}
    assert collections.Counter(cell for _, _, cell in held) == {cell: 2 for cell in CELLS}
    train = [x for x in combos if x not in held]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert {(x[a], x[b]) for x in train} == {(x[a], x[b]) for x in combos}
    assert not any(is_held_out(key[x], fraction=0.0) for x in combos)


def test_eval_set_is_held_out_and_deterministic():
    prompts = heldout_prompts(seed=0, n_per_category=4)
    assert collections.Counter(p["category"] for p in prompts) == {c: 4 for c in CATEGORIES}
    assert all(sample_is_held_out(p) for p in prompts)
    ev = eval_set(seed=0, n_per_category=2, image_size=32, categories=("single_object", "edit_move"))
    again = eval_set(seed=0, n_per_category=2, image_size=32, categories=("single_object", "edit_move"))
    assert _fingerprint(ev) == _fingerprint(again) and len(ev) == 4
    assert all(is_held_out(s["scene_key"]) for s in ev)
