"""The fixed vocabulary of ShapesWorld: colours, shapes, grid cells and the words for them.

The rest of the project (captions, scorer, reports) relies on these exact names, so they live in one place.
"""

from __future__ import annotations

# Object colours: far apart in RGB so that a blurred, noisy decode still lands on the right one (chance = 1/6).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "orange": (250, 130, 0),
    "yellow": (250, 225, 0),
    "green": (30, 160, 50),
    "blue": (30, 80, 230),
    "purple": (140, 40, 180),
}

# Backgrounds: white is the text-to-image default; the others exist for the background edit and stay
# distinguishable from every object colour (the scorer estimates the background from the border).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "light blue": (175, 215, 245),
}
DEFAULT_BACKGROUND = "white"

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

GRID = 3
CELL_WORDS: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
CELLS: tuple[tuple[int, int], ...] = tuple(CELL_WORDS)
WORD_CELLS: dict[str, tuple[int, int]] = {w: c for c, w in CELL_WORDS.items()}

NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}


def cell_phrase(cell: tuple[int, int]) -> str:
    """Where-phrase that reads naturally for every cell ("in the top left", "on the left", "at the top")."""
    word = CELL_WORDS[tuple(cell)]
    if word in ("left", "right"):
        return f"on the {word}"
    if word in ("top", "bottom"):
        return f"at the {word}"
    return f"in the {word}"
