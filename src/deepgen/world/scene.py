"""Scene specs: the ground truth every sample keeps, so a program can grade what a model drew."""

from __future__ import annotations

from dataclasses import dataclass

from deepgen.world.palette import BACKGROUNDS, COLORS, DEFAULT_BACKGROUND, SHAPES


@dataclass(frozen=True)
class ObjectSpec:
    """One shape: colour, shape, grid cell (row, col) and size as a fraction of the cell."""

    color: str
    shape: str
    cell: tuple[int, int]
    size: float = 0.7

    def __post_init__(self) -> None:
        if self.color not in COLORS or self.shape not in SHAPES:
            raise ValueError(f"unknown colour/shape: {self.color} {self.shape}")
        object.__setattr__(self, "cell", (int(self.cell[0]), int(self.cell[1])))

    def to_dict(self) -> dict:
        return {"color": self.color, "shape": self.shape, "cell": list(self.cell), "size": self.size}

    @classmethod
    def from_dict(cls, d: dict) -> "ObjectSpec":
        return cls(d["color"], d["shape"], tuple(d["cell"]), float(d.get("size", 0.7)))


@dataclass(frozen=True)
class SceneSpec:
    """A whole image: objects (at most one per cell) on a background, or a rendered word (`text`)."""

    objects: tuple[ObjectSpec, ...] = ()
    background: str = DEFAULT_BACKGROUND
    text: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError("at most one object per cell")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background: {self.background}")

    def to_dict(self) -> dict:
        return {"objects": [o.to_dict() for o in self.objects], "background": self.background, "text": self.text}

    @classmethod
    def from_dict(cls, d: dict) -> "SceneSpec":
        objs = tuple(ObjectSpec.from_dict(o) for o in d.get("objects", ()))
        return cls(objs, d.get("background", DEFAULT_BACKGROUND), d.get("text"))


def scene_key(spec: SceneSpec | dict) -> str:
    """Canonical scene identity used for the held-out split.

    Size is left out on purpose: a single-object scene is exactly (colour, shape, cell), so holding out a key holds out
    an attribute combination. The default white background is omitted for the same reason.
    """
    if isinstance(spec, dict):
        spec = SceneSpec.from_dict(spec)
    parts = sorted(f"{o.color} {o.shape}@{o.cell[0]},{o.cell[1]}" for o in spec.objects)
    if spec.background != DEFAULT_BACKGROUND:
        parts.append(f"bg={spec.background}")
    if spec.text is not None:
        parts.append(f"text={spec.text}")
    return "|".join(parts) or "empty"
