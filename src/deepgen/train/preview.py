"""Sample grids: images with their prompt under each, for MLflow (people would rather look than read numbers)."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont


def grid(images: list[Image.Image], captions: list[str], columns: int = 8, cell: int = 128) -> Image.Image:
    """Each image upscaled to `cell` px (nearest, so pixels stay honest) with its wrapped caption below."""
    font = ImageFont.load_default(size=10)
    text_h = 40
    rows = (len(images) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * cell, rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, caption) in enumerate(zip(images, captions)):
        x, y = (i % columns) * cell, (i // columns) * (cell + text_h)
        canvas.paste(image.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        lines = textwrap.wrap(caption, width=cell // 6)[:3]
        draw.multiline_text((x + 2, y + cell + 2), "\n".join(lines), fill="black", font=font, spacing=1)
    return canvas


def preview_grid(model, prompts: list[dict], seed: int = 0) -> Image.Image:
    """prompts: [{"caption": str, "source_image": PIL | None}]; text-to-image and edits generated separately."""
    was_training = model.training
    model.eval()
    images, captions = [], []
    t2i = [p["caption"] for p in prompts if p.get("source_image") is None]
    edits = [p for p in prompts if p.get("source_image") is not None]
    if t2i:
        images += model.generate(t2i, seed=seed)
        captions += t2i
    if edits:
        images += model.generate([p["caption"] for p in edits], refs=[[p["source_image"]] for p in edits], seed=seed)
        captions += [p["caption"] for p in edits]
    model.train(was_training)
    return grid(images, captions)
