"""ShapesWorld: a procedurally generated, program-scorable image world (DESIGN section 3).

Deterministic for a seed, numpy + Pillow only, no pipeline imports; every sample keeps the scene spec that
`score_image` grades a generated image against.
"""

from deepgen.world.generate import (CATEGORIES, DEFAULT_HELDOUT_FRACTION, DEFAULT_MIX, KIND_OF, KINDS,
                                    category_weights, eval_set, generate_samples, heldout_prompts, is_held_out,
                                    make_prompt, sample_is_held_out)
from deepgen.world.palette import BACKGROUNDS, CELL_WORDS, CELLS, COLORS, SHAPES
from deepgen.world.render import render
from deepgen.world.scene import ObjectSpec, SceneSpec, scene_key
from deepgen.world.score import Detection, detect, score_image
from deepgen.world.words import WORDS, render_word

__all__ = [
    "BACKGROUNDS", "CATEGORIES", "CELLS", "CELL_WORDS", "COLORS", "DEFAULT_HELDOUT_FRACTION", "DEFAULT_MIX",
    "Detection", "KINDS", "KIND_OF", "ObjectSpec", "SHAPES", "SceneSpec", "WORDS", "category_weights", "detect",
    "eval_set", "generate_samples", "heldout_prompts", "is_held_out", "make_prompt", "render", "render_word",
    "sample_is_held_out", "scene_key", "score_image",
]
