"""Edit triplets (source scene, instruction, target scene) that differ only by the named edit."""

from __future__ import annotations

import dataclasses
import random

from deepgen.world.captions import distinct_pairs, name, random_object, random_size, with_article
from deepgen.world.palette import BACKGROUNDS, CELLS, CELL_WORDS, COLORS, SHAPES, cell_phrase
from deepgen.world.scene import ObjectSpec, SceneSpec

EDIT_CATEGORIES: tuple[str, ...] = (
    "edit_recolor", "edit_move", "edit_remove", "edit_add", "edit_replace", "edit_background")


def _source(rng: random.Random, lo: int, hi: int) -> SceneSpec:
    """1-3 objects with unique (colour, shape) so that "the red circle" names exactly one of them."""
    pairs = distinct_pairs(rng, rng.randint(lo, hi))
    cells = rng.sample(CELLS, len(pairs))
    return SceneSpec(tuple(random_object(rng, cell, c, s) for (c, s), cell in zip(pairs, cells)))


def _new_pair(rng: random.Random, scene: SceneSpec, keep_color: str | None = None,
              keep_shape: str | None = None) -> tuple[str, str]:
    used = {(o.color, o.shape) for o in scene.objects}
    options = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in used
               and (keep_color is None or c == keep_color) and (keep_shape is None or s == keep_shape)]
    return rng.choice(options)


def make_edit(category: str, rng: random.Random) -> tuple[str, SceneSpec, SceneSpec]:
    """(instruction, target, source)."""
    if category == "edit_background":
        src = _source(rng, 1, 3)
        bg_src = rng.choice(tuple(BACKGROUNDS))
        bg_tgt = rng.choice([b for b in BACKGROUNDS if b != bg_src])
        src = dataclasses.replace(src, background=bg_src)
        return f"change the background to {bg_tgt}", dataclasses.replace(src, background=bg_tgt), src
    if category == "edit_add":
        src = _source(rng, 1, 3)
        c, s = _new_pair(rng, src)
        free = [cell for cell in CELLS if cell not in {o.cell for o in src.objects}]
        new = ObjectSpec(c, s, rng.choice(free), random_size(rng))
        return f"add {with_article(f'{c} {s}')} {cell_phrase(new.cell)}", SceneSpec(src.objects + (new,)), src
    src = _source(rng, 2 if category == "edit_remove" else 1, 3)
    i = rng.randrange(len(src.objects))
    old = src.objects[i]
    rest = src.objects[:i] + src.objects[i + 1:]
    if category == "edit_remove":
        return f"remove the {name(old)}", SceneSpec(rest), src
    if category == "edit_recolor":
        c, _ = _new_pair(rng, src, keep_shape=old.shape)
        new, text = dataclasses.replace(old, color=c), f"make the {name(old)} {c}"
    elif category == "edit_replace":
        c, s = _new_pair(rng, src)
        new = dataclasses.replace(old, color=c, shape=s)
        text = f"replace the {name(old)} with {with_article(f'{c} {s}')}"
    elif category == "edit_move":
        cell = rng.choice([cell for cell in CELLS if cell not in {o.cell for o in src.objects}])
        new, text = dataclasses.replace(old, cell=cell), f"move the {name(old)} to the {CELL_WORDS[cell]}"
    else:
        raise ValueError(f"not an edit category: {category}")
    return text, SceneSpec(rest[:i] + (new,) + rest[i:]), src
