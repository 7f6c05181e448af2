"""ShapesWorld scorer: near-perfect on renders, robust to blur and noise, at chance on noise."""

import collections
import time

import numpy as np
import pytest
from PIL import Image, ImageFilter

from deepgen.world import (CATEGORIES, CELLS, COLORS, SHAPES, ObjectSpec, SceneSpec, detect, generate_samples,
                           render, score_image)

SCORABLE = tuple(c for c in CATEGORIES if c != "text_word")
ATTRS = ("single_object_color", "single_object_position", "single_object_shape")
GRADED = ("_found", "_attr", "_extra")  # multi-object metrics, not 0/1 (test_world_score_graded.py); extra: 0 is right


@pytest.fixture(scope="module")
def samples():
    mix = {c: 1.0 for c in SCORABLE}
    return list(generate_samples(600, seed=21, mix=mix)) + list(
        generate_samples(300, seed=22, mix={"single_object": 1}))


def _means(samples, transform=lambda im: im):
    res = collections.defaultdict(list)
    for s in samples:
        r = score_image(transform(s["image"]), s["spec"], s["category"])
        assert s["category"] in r
        for k, v in r.items():
            assert v in (0.0, 1.0) or k.endswith(GRADED)
            res[k].append(v)
    return {k: float(np.mean(v)) for k, v in res.items()}


def _below(means, bar):
    return {k: v for k, v in means.items() if (1.0 - v if k.endswith("_extra") else v) < bar}


def test_clean_renders_score_perfectly(samples):
    means = _means(samples)
    assert set(SCORABLE) | set(ATTRS) <= means.keys()
    assert _below(means, 0.99) == {}


def test_blurred_noisy_renders_still_pass(samples):
    rng = np.random.default_rng(0)

    def degrade(im):
        arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)
        return np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    means = _means(samples, degrade)
    assert _below(means, 0.95) == {}


def test_chance_on_noise_and_mismatched_images():
    specs = [s["spec"] for s in generate_samples(300, seed=5, image_size=16, mix={"single_object": 1})]
    others = list(generate_samples(300, seed=6, mix={"single_object": 1}))
    rng = np.random.default_rng(1)
    makers = {
        "uniform noise": lambda i: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "random colour blocks": lambda i: np.asarray(Image.fromarray(
            rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64), Image.Resampling.NEAREST)),
        "another scene": lambda i: others[i]["image"],  # a real object, graded against an unrelated spec
    }
    for name, make in makers.items():
        res = collections.defaultdict(list)
        for i, spec in enumerate(specs):
            for k, v in score_image(make(i), spec, "single_object").items():
                res[k].append(v)
        m = {k: np.mean(v) for k, v in res.items()}
        assert m["single_object_color"] <= 0.30, (name, m)
        assert m["single_object_position"] <= 0.22, (name, m)
        assert m["single_object_shape"] <= 0.45, (name, m)
        assert m["single_object"] <= 0.05, (name, m)


def test_one_object_too_many_fails_every_category():
    """A caption describes the whole scene, so the asked objects plus one more is wrong in every category. GenEval
    ignores extra objects, but its detector does not call every blob an object; here ignoring them rewarded models
    that spray shapes (before this rule, two_objects, colors, counting, ... passed these images)."""
    checked = collections.Counter()
    for s in generate_samples(300, seed=7, mix={c: 1.0 for c in SCORABLE}):
        spec = SceneSpec.from_dict(s["spec"])
        free = [c for c in CELLS if c not in {o.cell for o in spec.objects}]
        taken = {(o.color, o.shape) for o in spec.objects}
        color, shape = next((c, sh) for c in COLORS for sh in SHAPES if (c, sh) not in taken)
        image = render(SceneSpec(spec.objects + (ObjectSpec(color, shape, free[0], 0.6),), spec.background), 64)
        assert score_image(image, s["spec"], s["category"])[s["category"]] == 0.0, s["caption"]
        checked[s["category"]] += 1
    assert set(checked) == set(SCORABLE), checked


def test_speed_and_input_forms(samples):
    s = next(x for x in samples if x["category"] == "counting")
    arr = np.asarray(s["image"])
    best = min(_timed(lambda: score_image(arr, s["spec"], s["category"])) for _ in range(3))
    assert best < 5e-3
    chw01 = arr.transpose(2, 0, 1).astype(np.float32) / 255.0  # tensors as float CHW in [0, 1]
    assert detect(chw01) == detect(arr) == detect(s["image"])


def _timed(fn, n=50):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def test_text_word_uses_ocr_when_given():
    s = next(generate_samples(1, seed=0, mix={"text": 1}))
    word = s["spec"]["text"]
    assert score_image(s["image"], s["spec"], "text_word") == {}
    assert score_image(s["image"], s["spec"], "text_word", ocr=lambda im: f" {word.lower()}\n") == {"text_word": 1.0}
    assert score_image(s["image"], s["spec"], "text_word", ocr=lambda im: "XQZ") == {"text_word": 0.0}
