"""One OCR engine for the project: the RL `ocr` reward and the evaluation's `text_word` score read text through it,
so a word the reward calls right is one the evaluation calls right.

rapidocr (PP-OCR detection + recognition models inside its wheel: the PaddleOCR family the paper and Flow-GRPO use,
no download) when importable, else tesseract (the Debian package scripts/setup.sh installs). `engine_id()` names the
engine and its version ("rapidocr-3.10.0", "tesseract-5.3.0"): evaluation keys its cache and scorer hash on it, so
scores read by one engine are never reused for another.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from importlib.metadata import version

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# Renders are upscaled (bicubic) to at least this many pixels before reading. Measured on the 36 ShapesWorld words at
# 64 px, blurred (sigma 1.5) and noised (sd 12): rapidocr read 35/36 at 1x and 36/36 at 2x and 3x; tesseract
# (--psm 7) read 36/36 at 2x-4x; ~0.12 s per word for tesseract on a busy 2-core CPU.
MIN_SIDE = 192
# rapidocr's detector also runs at MIN_SIDE (`Det.limit_side_len`, below): by default it scales every image up to a
# shorter side of 736, ~1.0 s per read on one idle core, and OCR then took 20 of the 22 s that scoring a state's 520
# images cost, for its 8 `text_word` prompts. 36 ShapesWorld words at 64 px: clean 36/36 at 1010 / 291 / 144 / 99 ms
# per word for detector sides 736 / 384 / 256 / 192; blurred and noised as above 34 / 36 / 36 / 36.


def _upscaled(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    factor = math.ceil(MIN_SIDE / min(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC) if factor > 1 \
        else image


class RapidOCREngine:
    """rapidocr on onnxruntime: text lines joined by spaces. Models load on the first read (~1.5 s)."""

    def __init__(self) -> None:
        import rapidocr  # noqa: F401  (ImportError here selects the fallback)

        self.id = f"rapidocr-{version('rapidocr')}"
        self._lock = threading.Lock()  # a timed-out reward call may still be reading when a retry starts
        self._ocr = None

    def __call__(self, image: Image.Image) -> str:
        with self._lock:
            if self._ocr is None:
                from rapidocr import RapidOCR

                # No angle classifier: generated words are upright. One thread: as fast as two on 2 busy cores, and
                # it leaves the other core to Ray's workers. Quiet: it logs at INFO per call otherwise.
                self._ocr = RapidOCR(params={"Global.log_level": "error", "Global.use_cls": False,
                                             "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                                             "Det.limit_side_len": MIN_SIDE})
            out = self._ocr(np.asarray(_upscaled(image)))
        return " ".join(out.txts or ())


class TesseractEngine:
    """tesseract through pytesseract, in single-line mode (--psm 7): single-word mode (8) read 23 of the 36 words."""

    def __init__(self) -> None:
        import pytesseract

        try:
            self.id = f"tesseract-{pytesseract.get_tesseract_version()}"
        except pytesseract.TesseractNotFoundError:
            raise RuntimeError("no OCR engine: install rapidocr + onnxruntime (pyproject) or tesseract-ocr (apt)") \
                from None
        self._read = pytesseract.image_to_string

    def __call__(self, image: Image.Image) -> str:
        return self._read(_upscaled(image), config="--psm 7").strip()


@functools.cache
def default_engine() -> RapidOCREngine | TesseractEngine:
    """The project's engine, chosen once per process: rapidocr when importable, else tesseract."""
    try:
        return RapidOCREngine()
    except ImportError:
        log.info("rapidocr is not importable; OCR falls back to tesseract")
        return TesseractEngine()


def engine_id() -> str:
    return default_engine().id


def read_text(image: Image.Image) -> str:
    """The text in `image` as the default engine reads it (lines joined by spaces; "" when it finds none)."""
    return default_engine()(image)
