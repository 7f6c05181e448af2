"""Corpora of messy input made on the fly: distinct smooth images, every kind of broken file, a tar with a `../x`
member."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

GENEVAL_PROMPT = "a photo of a bench"  # a GenEval test prompt (exact match after normalisation)


def upload_tree(local: Path, uri: str) -> None:
    from deepgen import storage

    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        storage.write_bytes(storage.join(uri, path.relative_to(local).as_posix()), path.read_bytes())


# --------------------------------------------------------------------------------------------------------------------
# Images


def smooth_image(seed: int, size: tuple[int, int] = (96, 96), mode: str = "RGB") -> Image.Image:
    """A distinct smooth random image (low-frequency noise upsampled): different seeds are far apart in phash."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    return image.convert(mode) if mode != "RGB" else image


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny file whose header declares an enormous image (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def alpha_png(seed: int) -> bytes:
    image = smooth_image(seed).convert("RGBA")
    alpha = np.full((96, 96), 255, np.uint8)
    alpha[:, :48] = 0
    image.putalpha(Image.fromarray(alpha, "L"))
    return encode(image)


def png16(seed: int) -> bytes:
    grey = np.asarray(smooth_image(seed).convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(grey.astype(np.uint16)))  # mode I;16


def cmyk_jpeg(seed: int) -> bytes:
    return encode(smooth_image(seed).convert("CMYK"), "JPEG", quality=95)


def palette_png(seed: int) -> bytes:
    return encode(smooth_image(seed).convert("P", palette=Image.Palette.ADAPTIVE, colors=32))


def truncated_jpeg(seed: int) -> bytes:
    data = encode(smooth_image(seed), "JPEG", quality=90)
    return data[: len(data) // 2]


# --------------------------------------------------------------------------------------------------------------------
# The corrupt-input corpus: (key, {member ext: bytes}, expected) per sample. `expected` is "kept", "kept:<fix>" or the
# quarantine reason.


def corpus_samples() -> list[tuple[str, dict[str, bytes], str]]:
    good = lambda i: encode(smooth_image(i))  # noqa: E731
    near = smooth_image(1).point(lambda v: min(255, v + 3))  # slightly brighter copy of good-01
    return [
        ("good-01", {"png": good(1), "txt": b"a smooth field of colour, number one"}, "kept"),
        ("good-02", {"jpg": encode(smooth_image(2), "JPEG", quality=92), "txt": b"a blurry pattern in two tones"},
         "kept"),
        ("good-03", {"png": good(3), "json": json.dumps({"caption": "caption from a json sidecar",
                                                           "license": "cc-by"}).encode()}, "kept"),
        ("good-04", {"png": encode(smooth_image(4, (160, 96))), "txt": "  une   image\u00a0floue\u200b  ".encode()},
         "kept:caption_normalized"),
        ("alpha", {"png": alpha_png(5), "txt": b"half transparent picture"}, "kept:alpha_flattened"),
        ("sixteen", {"png": png16(6), "txt": b"a sixteen bit grey picture"}, "kept:16bit_to_8bit"),
        ("cmyk", {"jpg": cmyk_jpeg(7), "txt": b"a picture stored as cmyk"}, "kept:cmyk_to_rgb"),
        ("palette", {"png": palette_png(8), "txt": b"a palette picture"}, "kept:palette_to_rgb"),
        ("truncated", {"jpg": truncated_jpeg(9), "txt": b"this jpeg stops half way"}, "image_truncated"),
        ("zero", {"png": b"", "txt": b"an empty file"}, "image_empty"),
        ("garbage", {"png": b"this is not an image at all", "txt": b"garbage bytes"}, "image_undecodable"),
        ("bomb", {"png": huge_png(), "txt": b"a decompression bomb"}, "decompression_bomb"),
        ("latin1", {"png": good(10), "txt": "caf\u00e9 au lait".encode("latin-1")}, "caption_not_utf8"),
        ("nocaption", {"png": good(11)}, "caption_missing"),
        ("emptycaption", {"png": good(12), "txt": b" \n\t "}, "caption_empty"),
        ("longcaption", {"png": good(13), "txt": b"word " * 300}, "caption_too_long"),
        ("symbols", {"png": good(14), "txt": b"#### 1234 5678 !!!! ????"}, "caption_not_text"),
        ("tiny", {"png": encode(smooth_image(15, (16, 16))), "txt": b"a very small image"}, "image_too_small"),
        ("banner", {"png": encode(smooth_image(16, (400, 40))), "txt": b"a very wide banner"}, "aspect_ratio"),
        ("zz-dup-of-01", {"png": good(1), "txt": b"the same picture under another name"}, "exact_duplicate"),
        ("zz-near-01", {"jpg": encode(near, "JPEG", quality=90), "txt": b"nearly the same picture"},
         "near_duplicate"),
        ("zz-bench", {"png": good(17), "txt": GENEVAL_PROMPT.upper().encode()}, "contaminated"),
    ]


def write_folder(root: Path, samples=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for key, members, _ in samples or corpus_samples():
        for ext, data in members.items():
            (root / f"{key}.{ext}").write_bytes(data)
    return root


def write_tar(path: Path, samples=None, extra_members: list[tuple[str, bytes]] = ()) -> Path:
    """A webdataset tar of the corpus; `extra_members` are added as they are (e.g. a `../x.png` member)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members, _ in samples or corpus_samples():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, data in extra_members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def expected_outcomes(samples=None) -> dict[str, str]:
    return {key: expected for key, _, expected in samples or corpus_samples()}
