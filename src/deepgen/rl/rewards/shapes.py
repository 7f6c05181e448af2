"""`shapes`: the ShapesWorld detector with partial credit, so a group's images rarely all score alike (the 0/1 grade
gives most groups one score, hence zero advantage) while extra blobs cannot raise it."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from deepgen.rl.rewards.base import register
from deepgen.world.captions import relation_of
from deepgen.world.score import Detection, _relation_holds, detect

CELL_NAMED = {"single_object"}  # captions that name each object's cell
SCORED = {"single_object", "two_objects", "counting", "colors", "position", "color_attr", "reasoning_color",
          "reasoning_count"}


@register("shapes")
class ShapesReward:
    """Partial credit in [0, 1] for an image against its sample's scene spec.

    The detector (world.score.detect) turns the image into detections D; the spec asks for objects O. Credit of
    detection d for asked object o, c(o, d): the mean over the attributes the caption asks of
        colour  [d.colour == o.colour]
        shape   [d.shape == o.shape]
        cell    ([same row] + [same column]) / 2, only where the caption names the cell (single_object).
    Asked objects and detections are paired one-to-one to maximise the summed credit (Hungarian). Then
        score = (sum of paired credit + R) / (max(|O|, |D|) + r)
    where r = 1, R = [the caption's relation holds between the two asked objects' paired detections] for
    `position` (the relation rule of the 0/1 grade), and r = R = 0 otherwise. Count is in the denominator: a missing
    object adds nothing to the numerator, an extra detection adds one to the denominator. So a render of the spec
    scores 1, an empty background 0, one wrong attribute strictly between, and extra objects strictly lower.
    Text-to-image and reasoning categories (objects on the default background); others raise ValueError.
    """

    bounds = (0.0, 1.0)

    def __call__(self, images: list[Image.Image], sample: dict) -> list[float]:
        category = sample["category"]
        if category not in SCORED:
            raise ValueError(f"shapes reward: no partial credit for category {category!r}; "
                             f"scored: {', '.join(sorted(SCORED))}")
        return [shapes_credit(image, sample["spec"]["objects"], category) for image in images]


def shapes_credit(image: Image.Image, objs: list[dict], category: str) -> float:
    """The score of ShapesReward's docstring for one image."""
    dets = detect(image)[0]
    if not dets:
        return 0.0
    credit = np.array([[_pair_credit(o, d, category in CELL_NAMED) for d in dets] for o in objs])
    rows, cols = linear_sum_assignment(credit, maximize=True)
    total, slots = float(credit[rows, cols].sum()), max(len(objs), len(dets))
    if category == "position":
        paired = dict(zip(rows.tolist(), cols.tolist()))
        relation = relation_of(tuple(objs[0]["cell"]), tuple(objs[1]["cell"]))
        holds = 0 in paired and 1 in paired and _relation_holds(dets[paired[0]], dets[paired[1]], relation,
                                                                 image.height, image.width)
        total, slots = total + float(holds), slots + 1
    return total / slots


def _pair_credit(o: dict, d: Detection, cell_named: bool) -> float:
    parts = [float(d.color == o["color"]), float(d.shape == o["shape"])]
    if cell_named:
        parts.append((float(d.cell[0] == o["cell"][0]) + float(d.cell[1] == o["cell"][1])) / 2)
    return sum(parts) / len(parts)
