"""Prompts that need world knowledge to turn into a scene ("the colour of a ripe banana" -> yellow)."""

from __future__ import annotations

import random

from deepgen.world.captions import random_object
from deepgen.world.palette import CELLS, SHAPES
from deepgen.world.scene import SceneSpec

REASONING_CATEGORIES: tuple[str, ...] = ("reasoning_color", "reasoning_count")

COLOR_FACTS: dict[str, str] = {
    "a ripe banana": "yellow", "a lemon": "yellow", "a sunflower's petals": "yellow", "a school bus": "yellow",
    "fresh grass": "green", "a lime": "green", "a frog": "green", "a summer leaf": "green",
    "a clear daytime sky": "blue", "a blueberry": "blue", "the deep ocean": "blue", "a sapphire": "blue",
    "a ripe tomato": "red", "a strawberry": "red", "a fire truck": "red", "a stop sign": "red",
    "an orange fruit": "orange", "a carrot": "orange", "a pumpkin": "orange", "a tiger's fur": "orange",
    "a grape": "purple", "an eggplant": "purple", "lavender flowers": "purple", "an amethyst": "purple",
}
COUNT_FACTS: dict[str, int] = {
    "a triangle has corners": 3, "a square has corners": 4, "a tricycle has wheels": 3, "a bicycle has wheels": 2,
    "a car has wheels": 4, "a person has eyes": 2, "a bird has wings": 2, "a dog has legs": 4,
    "a tripod has legs": 3, "there are seasons in a year": 4, "there are primary colours of paint": 3,
    "a triangle has sides": 3,
}


def make_reasoning(category: str, rng: random.Random) -> tuple[str, SceneSpec]:
    """(prompt, scene); the prompt never names the colour or number it implies."""
    shape = rng.choice(SHAPES)
    if category == "reasoning_color":
        thing = rng.choice(tuple(COLOR_FACTS))
        o = random_object(rng, rng.choice(CELLS), COLOR_FACTS[thing], shape)
        return f"a {shape} the colour of {thing}", SceneSpec((o,))
    if category == "reasoning_count":
        phrase = rng.choice(tuple(COUNT_FACTS))
        o = random_object(rng, (0, 0), shape=shape)
        objs = tuple(random_object(rng, c, o.color, shape) for c in rng.sample(CELLS, COUNT_FACTS[phrase]))
        return f"as many {o.color} {shape}s as {phrase}", SceneSpec(objs)
    raise ValueError(f"not a reasoning category: {category}")
