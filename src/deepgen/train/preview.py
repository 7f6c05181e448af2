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


def edit_grid(sources: list[Image.Image], instructions: list[str], results: list[Image.Image], cell: int = 128,
              text_w: int = 224) -> Image.Image:
    """One row per edit: source | instruction | result, so whether an edit read its source and its instruction shows
    at a glance (a plain grid shows the result without its source: a copied source looks like a fine image)."""
    font = ImageFont.load_default(size=12)
    head, gap = 18, 4  # a gray gap between rows: on white backgrounds the rows' images would run together
    canvas = Image.new("RGB", (2 * cell + text_w, head + len(sources) * (cell + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for x, title in ((2, "source"), (cell + 4, "instruction"), (cell + text_w + 2, "result")):
        draw.text((x, 2), title, fill="gray", font=font)
    for row, (source, text, result) in enumerate(zip(sources, instructions, results)):
        y = head + row * (cell + gap)
        draw.rectangle((0, y + cell, canvas.width, y + cell + gap - 1), fill="lightgray")
        canvas.paste(source.convert("RGB").resize((cell, cell), Image.NEAREST), (0, y))
        canvas.paste(result.convert("RGB").resize((cell, cell), Image.NEAREST), (cell + text_w, y))
        draw.multiline_text((cell + 4, y + 4), "\n".join(textwrap.wrap(text, width=text_w // 7)[:8]), fill="black",
                            font=font, spacing=2)
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
