"""The sample stream and the held-out split.

Every sample is a plain dict with its scene spec, so the same record feeds training, evaluation and scoring.
The split is by *scene*. Single-object scenes follow a balanced design (`HELDOUT_SINGLE_OBJECTS`): every
(colour, shape) pair is held out at exactly one cell, each cell twice, so the headline colour / shape / position
accuracies weigh every colour and shape alike and every held-out combination is new only as a whole (its colour-shape,
colour-cell and shape-cell pairs all occur in training). A hash split of 10% of 162 combinations held out 14, skewed
(no orange, 29 of 64 evaluation prompts blue), which made those accuracies hinge on a couple of combinations. Every
other scene is held out by a stable hash of its key.
"""

from __future__ import annotations

import hashlib
import random
from typing import Iterator

from deepgen.world.captions import T2I_CATEGORIES, make_t2i
from deepgen.world.edits import EDIT_CATEGORIES, make_edit
from deepgen.world.palette import CELLS, COLORS, GRID, SHAPES
from deepgen.world.reasoning import REASONING_CATEGORIES, make_reasoning
from deepgen.world.render import render
from deepgen.world.scene import SceneSpec, scene_key
from deepgen.world.words import WORDS

KINDS: dict[str, tuple[str, ...]] = {
    "t2i": T2I_CATEGORIES, "edit": EDIT_CATEGORIES, "reasoning": REASONING_CATEGORIES, "text": ("text_word",)}
CATEGORIES: tuple[str, ...] = tuple(c for cats in KINDS.values() for c in cats)
KIND_OF: dict[str, str] = {c: k for k, cats in KINDS.items() for c in cats}

# ~40% single objects (what the tiny run is judged on first); T2I : edit = 3 : 1 as in DESIGN.
DEFAULT_MIX: dict[str, float] = {
    "single_object": 0.40, "two_objects": 0.05, "counting": 0.05, "colors": 0.05, "position": 0.05,
    "color_attr": 0.05, "edit": 0.25, "reasoning": 0.06, "text": 0.04}
DEFAULT_HELDOUT_FRACTION = 0.1


# colour i, shape j -> cell (i + GRID * j) mod 9: shape j's six colours land on six different cells, colour i's three
# shapes on three rows of one column, and each cell holds exactly two combinations (18 of 162: 1/9).
HELDOUT_SINGLE_OBJECTS: frozenset[str] = frozenset(
    "{} {}@{},{}".format(color, shape, *CELLS[(i + GRID * j) % len(CELLS)])
    for i, color in enumerate(COLORS) for j, shape in enumerate(SHAPES))


def is_held_out(scene_key: str, fraction: float = DEFAULT_HELDOUT_FRACTION) -> bool:
    """Single-object scenes: the balanced design (when `fraction` > 0); others: a stable hash split of the key."""
    if fraction <= 0:
        return False
    if "|" not in scene_key and "@" in scene_key:  # one object on the default background
        return scene_key in HELDOUT_SINGLE_OBJECTS
    h = int.from_bytes(hashlib.sha256(scene_key.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def sample_is_held_out(sample: dict, fraction: float = DEFAULT_HELDOUT_FRACTION) -> bool:
    """A sample is held out when its target scene or (for edits) its source scene is."""
    keys = [sample["scene_key"]] + ([sample["source_scene_key"]] if "source_scene_key" in sample else [])
    return any(is_held_out(k, fraction) for k in keys)


def category_weights(mix: dict[str, float] | None = None) -> dict[str, float]:
    """Expand a mix of kinds and/or categories into normalised per-category weights (a kind's share is split evenly)."""
    weights = dict.fromkeys(CATEGORIES, 0.0)
    for name, w in (DEFAULT_MIX if mix is None else mix).items():
        cats = KINDS.get(name, (name,))
        if cats[0] not in weights:
            raise ValueError(f"unknown kind or category in mix: {name}")
        for c in cats:
            weights[c] += w / len(cats)
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("mix has no positive weight")
    return {c: w / total for c, w in weights.items() if w > 0}


def make_prompt(category: str, rng: random.Random) -> tuple[str, SceneSpec, SceneSpec | None]:
    """(caption, target scene, source scene or None) for one category; no pixels yet."""
    kind = KIND_OF[category]
    if kind == "t2i":
        return (*make_t2i(category, rng), None)
    if kind == "reasoning":
        return (*make_reasoning(category, rng), None)
    if kind == "text":
        word = rng.choice(WORDS)
        return f'the word "{word}"', SceneSpec(text=word), None
    # An edit never straddles the default split, so its source scene cannot leak into training through a held-out
    # edit (or the reverse).
    while True:
        caption, target, source = make_edit(category, rng)
        if is_held_out(scene_key(target)) == is_held_out(scene_key(source)):
            return caption, target, source


def _record(key: str, category: str, caption: str, target: SceneSpec, source: SceneSpec | None) -> dict:
    rec = {"key": key, "kind": KIND_OF[category], "category": category, "caption": caption,
           "spec": target.to_dict(), "scene_key": scene_key(target)}
    if source is not None:
        rec["source_spec"], rec["source_scene_key"] = source.to_dict(), scene_key(source)
    return rec


def _with_images(rec: dict, image_size: int) -> dict:
    rec["image"] = render(rec["spec"], image_size)
    if "source_spec" in rec:
        rec["source_image"] = render(rec["source_spec"], image_size)
    return rec


def generate_samples(n: int, seed: int, image_size: int = 64, mix: dict[str, float] | None = None) -> Iterator[dict]:
    """Yield n samples; sample i depends only on (seed, i, mix), so streams are reproducible and resumable."""
    weights = category_weights(mix)
    cats, probs = list(weights), list(weights.values())
    for i in range(n):
        rng = random.Random(f"shapesworld-{seed}-{i}")
        category = rng.choices(cats, probs)[0]
        yield _with_images(_record(f"{seed}-{i:07d}", category, *make_prompt(category, rng)), image_size)


def heldout_prompts(seed: int, n_per_category: int, categories: tuple[str, ...] | None = None,
                    fraction: float = DEFAULT_HELDOUT_FRACTION) -> list[dict]:
    """Deterministic held-out prompts (records without images), n per category, drawn only from held-out scenes."""
    out: list[dict] = []
    for category in categories or CATEGORIES:
        rng = random.Random(f"shapesworld-eval-{seed}-{category}")
        found = 0
        for _ in range(200_000):
            rec = _record(f"eval-{seed}-{category}-{found:05d}", category, *make_prompt(category, rng))
            if sample_is_held_out(rec, fraction):
                out.append(rec)
                found += 1
                if found == n_per_category:
                    break
        else:
            raise RuntimeError(f"could not find {n_per_category} held-out prompts for {category}")
    return out


def eval_set(seed: int, n_per_category: int, image_size: int = 64, categories: tuple[str, ...] | None = None,
             fraction: float = DEFAULT_HELDOUT_FRACTION) -> list[dict]:
    """`heldout_prompts` with target (and source) images rendered: the evaluation set."""
    return [_with_images(r, image_size) for r in heldout_prompts(seed, n_per_category, categories, fraction)]
