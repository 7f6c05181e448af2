"""Text-to-image prompts in GenEval's categories, each with the scene it describes."""

from __future__ import annotations

import random

from deepgen.world.palette import CELLS, COLORS, NUMBER_WORDS, SHAPES, cell_phrase
from deepgen.world.scene import ObjectSpec, SceneSpec

T2I_CATEGORIES: tuple[str, ...] = ("single_object", "two_objects", "counting", "colors", "position", "color_attr")
RELATIONS: dict[str, str] = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


def random_size(rng: random.Random) -> float:
    """Sizes vary a little (60-75% of the cell) so the model cannot key on one exact pixel footprint."""
    return rng.choice((0.6, 0.65, 0.7, 0.75))


def random_object(rng: random.Random, cell: tuple[int, int], color: str | None = None,
                  shape: str | None = None) -> ObjectSpec:
    return ObjectSpec(color or rng.choice(tuple(COLORS)), shape or rng.choice(SHAPES), cell, random_size(rng))


def distinct_pairs(rng: random.Random, n: int, distinct_colors: bool = False,
                   distinct_shapes: bool = False) -> list[tuple[str, str]]:
    """n different (colour, shape) pairs, so each object in a caption can be referred to unambiguously."""
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        c, s = rng.choice(tuple(COLORS)), rng.choice(SHAPES)
        if (c, s) in pairs or (distinct_colors and c in {p[0] for p in pairs}) or \
                (distinct_shapes and s in {p[1] for p in pairs}):
            continue
        pairs.append((c, s))
    return pairs


def name(o: ObjectSpec) -> str:
    return f"{o.color} {o.shape}"


def with_article(words: str) -> str:
    """Indefinite article: "an orange circle", "a red square"."""
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def relation_of(a: tuple[int, int], b: tuple[int, int]) -> str:
    """The one relation of a to b; position scenes share a row or a column so exactly one holds."""
    if a[0] == b[0]:
        return "left" if a[1] < b[1] else "right"
    return "above" if a[0] < b[0] else "below"


def make_t2i(category: str, rng: random.Random) -> tuple[str, SceneSpec]:
    """(caption, scene) for one GenEval-style category."""
    if category == "single_object":
        o = random_object(rng, rng.choice(CELLS))
        return f"{with_article(name(o))} {cell_phrase(o.cell)}", SceneSpec((o,))
    if category == "colors":
        o = random_object(rng, rng.choice(CELLS))
        return with_article(name(o)), SceneSpec((o,))
    if category == "counting":
        n = rng.choice((2, 3, 4))
        c, s = rng.choice(tuple(COLORS)), rng.choice(SHAPES)
        objs = tuple(random_object(rng, cell, c, s) for cell in rng.sample(CELLS, n))
        return f"{NUMBER_WORDS[n]} {c} {s}s", SceneSpec(objs)
    if category in ("two_objects", "color_attr"):
        attr = category == "color_attr"
        pairs = distinct_pairs(rng, 2, distinct_colors=attr, distinct_shapes=attr)
        objs = tuple(random_object(rng, cell, c, s) for (c, s), cell in zip(pairs, rng.sample(CELLS, 2)))
        return f"{with_article(name(objs[0]))} and {with_article(name(objs[1]))}", SceneSpec(objs)
    if category == "position":
        p = rng.choice(CELLS)
        q = rng.choice([c for c in CELLS if c != p and (c[0] == p[0] or c[1] == p[1])])
        objs = tuple(random_object(rng, cell, c, s) for (c, s), cell in zip(distinct_pairs(rng, 2), (p, q)))
        caption = f"{with_article(name(objs[0]))} {RELATIONS[relation_of(p, q)]} {with_article(name(objs[1]))}"
        return caption, SceneSpec(objs)
    raise ValueError(f"not a text-to-image category: {category}")
