"""Sample filters: each check returns a reason (a short snake_case string recorded per sample) or passes; conversions
that keep a sample usable (alpha flattened, 16-bit or CMYK or palette to 8-bit RGB, caption normalised, resized) are
recorded as fixes. Everything here is pure (bytes / PIL in, values out), so it runs in worker processes.

Image checks, in order: empty or oversized file; undecodable; decompression bomb (declared pixel count above
`max_pixels`, checked from the header before any pixel is decoded); truncated; smaller than `min_side`; aspect ratio
above `max_aspect_ratio`; mode not convertible. Caption checks: missing, not UTF-8, empty after normalisation, longer
than `max_caption_chars`, not text (U+FFFD replacement characters, or too few letters).
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_FILTERS: dict = {
    "max_file_bytes": 64 << 20,  # an encoded image larger than this is not read
    "max_pixels": 89_478_485,  # declared width x height above this: decompression bomb (Pillow's own default;
    #                            Pillow refuses anything above twice its Image.MAX_IMAGE_PIXELS in any case)
    "min_side": 32,  # pixels, of the original image; raise to 256+ for photo corpora at the full preset
    "max_aspect_ratio": 4.0,  # long side / short side
    "convert_modes": True,  # false: anything but 8-bit RGB is quarantined instead of converted
    "background": [255, 255, 255],  # what transparent pixels are flattened onto
    "min_caption_chars": 1,
    "min_letter_fraction": 0.25,  # letters among non-space characters; below: not text
    "unicode_form": "NFC",  # NFC keeps what the text says (NFKC would turn "m²" into "m2"); null: no normalisation
}
DEFAULT_RESIZE: dict = {
    "policy": "fix_pixels",  # the paper's: scale so sqrt(H*W) ~ image_size, sides rounded up to `multiple`; or "none"
    "image_size": None,  # null: the curation's image_size (64 tiny, 512 full preset)
    "multiple": 32,
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\ufeff]")


# --------------------------------------------------------------------------------------------------------------------
# Captions


def decode_caption(raw) -> tuple[str | None, str | None]:
    """(text, reason): bytes must be UTF-8 (a leading byte-order mark is dropped)."""
    if raw is None:
        return None, "caption_missing"
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "caption_not_utf8"
        raw = raw.removeprefix("\ufeff")
    if not isinstance(raw, str):
        return None, "caption_not_text"
    return raw, None


def clean_caption(text: str, settings: dict) -> tuple[str, list[str], list[str]]:
    """(normalised text, reasons, fixes): Unicode normal form, control and invisible characters dropped, whitespace
    collapsed to single spaces; then the emptiness / length / text-ness checks."""
    reasons, fixes = [], []
    out = text
    if settings.get("unicode_form"):
        out = unicodedata.normalize(settings["unicode_form"], out)
    out = " ".join(_CONTROL.sub(" ", out).split())
    if out != text:
        fixes.append("caption_normalized")
    if len(out) < max(1, settings["min_caption_chars"]):
        reasons.append("caption_empty")
    elif len(out) > settings["max_caption_chars"]:
        reasons.append("caption_too_long")
    elif "\ufffd" in out or _letter_fraction(out) < settings["min_letter_fraction"]:
        reasons.append("caption_not_text")
    return out, reasons, fixes


_LETTER = re.compile(r"[^\W\d_]")  # a Unicode letter: a word character that is no digit or underscore
_SPACE = re.compile(r"\s")


def _letter_fraction(text: str) -> float:
    return len(_LETTER.findall(text)) / max(1, len(text) - len(_SPACE.findall(text)))


# --------------------------------------------------------------------------------------------------------------------
# Images


def open_image(data: bytes, settings: dict) -> tuple[Image.Image | None, str | None, dict]:
    """Decode bytes safely: (image, reason, info). The pixel count is checked from the header, before decoding."""
    info: dict = {"file_bytes": len(data)}
    if not data:
        return None, "image_empty", info
    if len(data) > settings["max_file_bytes"]:
        return None, "image_file_too_large", info
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides (below)
            image = Image.open(io.BytesIO(data))
            info.update(format=image.format, mode=image.mode, width=image.width, height=image.height)
            if image.width * image.height > settings["max_pixels"]:
                return None, "decompression_bomb", info
            rawmode = image.tile[0].args if image.tile else None
            info["sixteen_bit"] = isinstance(rawmode, str) and ";16" in rawmode
            image.load()
    except Image.DecompressionBombError:  # above Pillow's hard limit (2x Image.MAX_IMAGE_PIXELS), whatever ours is
        return None, "decompression_bomb", info
    except UnidentifiedImageError:
        return None, "image_undecodable", info
    except OSError as e:
        return None, "image_truncated" if "truncated" in str(e).lower() else "image_undecodable", info
    except Exception:  # noqa: BLE001 - a malformed file may raise anything from a plugin; it is still just bad input
        return None, "image_undecodable", info
    return image, None, info


def check_geometry(width: int, height: int, settings: dict) -> str | None:
    if min(width, height) < settings["min_side"]:
        return "image_too_small"
    if max(width, height) / max(1, min(width, height)) > settings["max_aspect_ratio"]:
        return "aspect_ratio"
    return None


_EXIF_FORMATS = {"JPEG", "MPO", "TIFF", "WEBP", "HEIF", "AVIF"}  # where a camera's orientation tag lives


def to_rgb(image: Image.Image, settings: dict,
           info: dict | None = None) -> tuple[Image.Image | None, list[str], str | None]:
    """8-bit RGB, with what was done as fixes: (image, fixes, reason)."""
    fixes: list[str] = []
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        fixes.append("first_frame")
    if (info or {}).get("format") in _EXIF_FORMATS and image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
        fixes.append("exif_orientation")
    mode = image.mode
    if mode == "RGB" and not (info or {}).get("sixteen_bit"):
        return image, fixes, None
    if not settings["convert_modes"]:
        return None, fixes, f"unsupported_mode_{_mode_name(mode, info)}"
    if (info or {}).get("sixteen_bit") and mode == "RGB":  # Pillow already kept the high bytes
        return image, fixes + ["16bit_to_8bit"], None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image)
        if mode == "F":
            arr = np.clip(arr, 0.0, 1.0 if arr.max(initial=0) <= 1.0 else 255.0)
            scale = 255.0 / (1.0 if arr.max(initial=0) <= 1.0 else 255.0)
            arr8 = (arr * scale).round().astype(np.uint8)
        else:
            arr8 = (np.clip(arr.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB"), fixes + ["16bit_to_8bit"], None
    if mode == "P":
        fixes.append("palette_to_rgb")
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    elif mode == "CMYK":
        return image.convert("RGB"), fixes + ["cmyk_to_rgb"], None
    elif mode == "LA" or mode == "PA":
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode == "RGBa":
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode == "L" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "RGBA":
        if image.getextrema()[3][0] < 255:  # some pixel is not opaque: flatten onto the background
            background = Image.new("RGB", image.size, tuple(settings["background"]))
            background.paste(image, mask=image.getchannel("A"))
            return background, fixes + ["alpha_flattened"], None
        return image.convert("RGB"), fixes + ["alpha_dropped"], None
    if mode == "RGB":
        return image, fixes, None
    try:
        return image.convert("RGB"), fixes + [f"mode_{mode.lower()}_to_rgb"], None
    except (ValueError, OSError):
        return None, fixes, f"unsupported_mode_{_mode_name(mode, info)}"


def _mode_name(mode: str, info: dict | None) -> str:
    if (info or {}).get("sixteen_bit") or mode.startswith("I;16"):
        return "16bit"
    return re.sub(r"\W", "", mode.lower())


def target_size(width: int, height: int, image_size: int, multiple: int) -> tuple[int, int]:
    """The paper's fix-pixels policy: scale by image_size / sqrt(W*H), round each side up to a multiple of
    `multiple`."""
    ratio = image_size / math.sqrt(width * height)
    return (max(multiple, math.ceil(width * ratio / multiple) * multiple),
            max(multiple, math.ceil(height * ratio / multiple) * multiple))


def apply_resize(image: Image.Image, resize: dict) -> tuple[Image.Image, list[str]]:
    if resize["policy"] == "none":
        return image, []
    if resize["policy"] != "fix_pixels":
        raise ValueError(f"resize.policy: unknown policy {resize['policy']!r} (expected fix_pixels or none)")
    size = target_size(image.width, image.height, resize["image_size"], resize["multiple"])
    if size == image.size:
        return image, []
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0), ["resized"]


# --------------------------------------------------------------------------------------------------------------------
# Perceptual hash

_N = 32
_DCT = np.cos(np.pi * np.outer(np.arange(8), 2 * np.arange(_N) + 1) / (2 * _N))  # the 8 lowest DCT-II basis rows


def phash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (imagehash.phash's definition: 32x32 grey, 8x8 lowest frequencies, above their
    median), computed with numpy alone; images are first box-reduced by an integer factor (to at least 32 px), which
    changes few bits and saves most of the time. As an unsigned int, bit i = coefficient i in row-major order."""
    grey = image.convert("L")
    factor = min(grey.width, grey.height) // _N
    if factor >= 2:
        grey = grey.reduce(factor)  # a box filter: much cheaper than Lanczos from the full size
    if grey.size != (_N, _N):
        grey = grey.resize((_N, _N), Image.Resampling.LANCZOS)
    coeffs = (_DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T).ravel()
    median = np.partition(coeffs, (31, 32))[31:33].mean()  # np.median, without its overhead
    return int(np.packbits(coeffs > median).view(">u8")[0])
