"""Filters: every check names its reason; conversions keep images usable and say what they did."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepgen.curation import filters
from deepgen.curation.sources.base import safe_key, unsafe_path

from curation_corpus import alpha_png, cmyk_jpeg, encode, huge_png, palette_png, png16, smooth_image, truncated_jpeg

SETTINGS = {**filters.DEFAULT_FILTERS, "max_caption_chars": 40}


@pytest.mark.parametrize("raw, text, reason", [
    (None, None, "caption_missing"),
    (b"caf\xe9", None, "caption_not_utf8"),
    ("\ufeffa cat".encode(), "\ufeffa cat".removeprefix("\ufeff"), None),
    ("a dog", "a dog", None),
])
def test_decode_caption(raw, text, reason):
    assert filters.decode_caption(raw) == (text, reason)


@pytest.mark.parametrize("text, cleaned, reasons, fixed", [
    ("a red square", "a red square", [], False),
    ("  a\u00a0red\tsquare\u200b\n", "a red square", [], True),
    ("e\u0301t\u00e9", "\u00e9t\u00e9", [], True),  # NFC composes
    ("\x00\x01 \n", "", ["caption_empty"], True),
    ("word " * 20, ("word " * 20).strip(), ["caption_too_long"], True),
    ("1234 #### !!!", "1234 #### !!!", ["caption_not_text"], False),
    ("bad \ufffd bytes", "bad \ufffd bytes", ["caption_not_text"], False),
])
def test_clean_caption(text, cleaned, reasons, fixed):
    out, got_reasons, fixes = filters.clean_caption(text, SETTINGS)
    assert (out, got_reasons, bool(fixes)) == (cleaned, reasons, fixed)


@pytest.mark.parametrize("data, reason", [
    (b"", "image_empty"),
    (b"not an image", "image_undecodable"),
    (truncated_jpeg(1), "image_truncated"),
    (huge_png(), "decompression_bomb"),
    (huge_png(12_000, 12_000), "decompression_bomb"),  # under Pillow's hard limit, over ours
])
def test_open_image_reasons(data, reason):
    image, got, _ = filters.open_image(data, {**SETTINGS, "max_pixels": 50_000_000})
    assert image is None and got == reason


@pytest.mark.parametrize("data, fix", [
    (alpha_png(1), "alpha_flattened"),
    (png16(2), "16bit_to_8bit"),
    (cmyk_jpeg(3), "cmyk_to_rgb"),
    (palette_png(4), "palette_to_rgb"),
    (encode(smooth_image(5, mode="L")), "mode_l_to_rgb"),
])
def test_modes_become_8bit_rgb(data, fix):
    image, reason, info = filters.open_image(data, SETTINGS)
    assert reason is None
    rgb, fixes, reason = filters.to_rgb(image, SETTINGS, info)
    assert reason is None and fix in fixes and rgb.mode == "RGB"
    assert np.asarray(rgb).std() > 5  # not a blank (e.g. a clipped 16-bit) image


def test_sixteen_bit_keeps_the_high_byte():
    grey = (np.arange(96 * 96, dtype=np.uint32).reshape(96, 96) * 7).astype(np.uint16)
    image, _, info = filters.open_image(encode(Image.fromarray(grey)), SETTINGS)
    rgb, _, _ = filters.to_rgb(image, SETTINGS, info)
    assert np.array_equal(np.asarray(rgb)[..., 0], (grey >> 8).astype(np.uint8))


def test_alpha_is_flattened_onto_the_background():
    image, _, info = filters.open_image(alpha_png(1), SETTINGS)
    rgb, _, _ = filters.to_rgb(image, SETTINGS, info)
    assert np.asarray(rgb)[:, :48].min() == 255  # the transparent half is white


def test_modes_can_be_refused():
    image, _, info = filters.open_image(cmyk_jpeg(3), SETTINGS)
    assert filters.to_rgb(image, {**SETTINGS, "convert_modes": False}, info)[2] == "unsupported_mode_cmyk"


def test_geometry():
    assert filters.check_geometry(16, 64, SETTINGS) == "image_too_small"
    assert filters.check_geometry(400, 40, SETTINGS) == "aspect_ratio"
    assert filters.check_geometry(64, 64, SETTINGS) is None


@pytest.mark.parametrize("size, image_size, expected", [
    ((64, 64), 64, (64, 64)),
    ((1024, 1024), 512, (512, 512)),
    ((1024, 768), 512, (608, 448)),  # 591 x 443 rounded up to multiples of 32 (the paper's fix_pixels)
    ((100, 70), 512, (640, 448)),  # small images are scaled up to the target area
])
def test_fix_pixels_policy(size, image_size, expected):
    w, h = filters.target_size(*size, image_size, 32)
    assert (w, h) == expected and w % 32 == 0 and h % 32 == 0


def test_resize_policy_none_and_unknown():
    image = smooth_image(1, (100, 70))
    assert filters.apply_resize(image, {"policy": "none"})[0].size == (100, 70)
    with pytest.raises(ValueError, match="unknown policy"):
        filters.apply_resize(image, {"policy": "crop", "image_size": 64, "multiple": 32})


def test_phash_matches_imagehash_and_separates_images():
    imagehash = pytest.importorskip("imagehash")
    for seed in range(8):
        image = smooth_image(seed)
        ours = filters.phash(image)
        theirs = int(str(imagehash.phash(image)), 16)
        assert bin(ours ^ theirs).count("1") <= 2  # same definition (float rounding may flip a median tie)
    assert bin(filters.phash(smooth_image(1)) ^ filters.phash(smooth_image(2))).count("1") > 12
    brighter = smooth_image(1).point(lambda v: min(255, v + 3))
    assert bin(filters.phash(smooth_image(1)) ^ filters.phash(brighter)).count("1") <= 4


def test_keys_and_paths_are_made_safe():
    assert safe_key("3-0000001") == "3-0000001"
    assert safe_key("shard-000/a/b") == "shard-000__a__b"
    assert safe_key("../x") != safe_key("__x") and "/" not in safe_key("../x") and "." not in safe_key("../x")
    assert safe_key("a.b") != safe_key("a_b")
    for bad in ("../x", "/etc/passwd", "a/../../b", "C:\\x", "a\\..\\..\\b", ""):
        assert unsafe_path(bad), bad
    for good in ("a/b.png", "image/16685.png", "x..y.png"):
        assert not unsafe_path(good), good
