"""Short rendered words (black on white) for the text-rendering samples; scored by OCR elsewhere."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

# 2-4 uppercase letters, common words an OCR engine reads reliably.
WORDS: tuple[str, ...] = (
    "GO", "UP", "HI", "NO", "OK", "ON",
    "CAT", "DOG", "SUN", "SKY", "BOX", "HAT", "CUP", "KEY", "MAP", "PEN", "FOX", "OWL", "BEE", "RED", "YES", "ART",
    "TREE", "FISH", "BIRD", "STAR", "MOON", "BOAT", "CAKE", "BOOK", "LAMP", "DOOR", "RAIN", "SNOW", "FROG", "BLUE",
)


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont:
    # Pillow >= 10.1 ships a scalable default font, so this works offline with no font files on disk.
    return ImageFont.load_default(size=px)


def render_word(word: str, image_size: int = 64) -> Image.Image:
    """Draw `word` centred, as large as fits in ~85% of the width."""
    img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    px = max(6, int(image_size * 0.4))
    while px > 6:
        l, t, r, b = draw.textbbox((0, 0), word, font=_font(px))
        if r - l <= 0.85 * image_size:
            break
        px -= 1
    l, t, r, b = draw.textbbox((0, 0), word, font=_font(px))
    draw.text(((image_size - (r - l)) / 2 - l, (image_size - (b - t)) / 2 - t), word, font=_font(px), fill=(0, 0, 0))
    return img
