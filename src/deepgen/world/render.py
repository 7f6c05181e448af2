"""Spec -> PIL image. Drawn at 4x and box-downsampled so edges are anti-aliased like a real (VAE-decoded) image."""

from __future__ import annotations

from PIL import Image, ImageDraw

from deepgen.world.palette import BACKGROUNDS, COLORS, GRID
from deepgen.world.scene import SceneSpec
from deepgen.world.words import render_word

SUPERSAMPLE = 4


def render(spec: SceneSpec | dict, image_size: int = 64) -> Image.Image:
    """Render a scene (or a word, when `spec.text` is set) as an RGB image of `image_size` pixels square."""
    if isinstance(spec, dict):
        spec = SceneSpec.from_dict(spec)
    if spec.text is not None:
        return render_word(spec.text, image_size)
    big = image_size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[spec.background])
    draw = ImageDraw.Draw(img)
    cell = big / GRID
    for o in spec.objects:
        cx, cy = (o.cell[1] + 0.5) * cell, (o.cell[0] + 0.5) * cell
        h = o.size * cell / 2
        colour = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse((cx - h, cy - h, cx + h, cy + h), fill=colour)
        elif o.shape == "square":
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=colour)
        else:  # upright triangle filling the same box
            draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=colour)
    return img.resize((image_size, image_size), Image.Resampling.BOX)
