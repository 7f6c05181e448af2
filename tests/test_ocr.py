"""The project's one OCR module on ShapesWorld's rendered words (64 px, as curation renders them): both engines read
every word, and the evaluation scores `text_word` with it by default."""

from __future__ import annotations

import json
import re
import sys

import pytest
from PIL import Image, ImageFilter

from deepgen import ocr, world
from deepgen.eval.run import evaluate_baselines, evaluation_hash
from deepgen.world.scene import SceneSpec

SETTINGS = {"per_category": 3, "per_category_overrides": None, "steps": 1, "guidance": 1.0, "batch_size": 4,
            "seed": 0, "grid_size": 4}


def _word(word: str) -> Image.Image:
    return world.render(SceneSpec(text=word), 64)


def test_default_engine_is_rapidocr_from_the_wheel():
    assert re.fullmatch(r"rapidocr-\d+\.\d+\.\d+", ocr.engine_id())
    assert isinstance(ocr.default_engine(), ocr.RapidOCREngine)


@pytest.mark.parametrize("engine, words", [(ocr.RapidOCREngine, world.WORDS),  # the default: every word
                                           (ocr.TesseractEngine, world.WORDS[::3])])  # the fallback: 2-4 letters
def test_engine_reads_rendered_words(engine, words):
    read = engine()
    assert {w: "".join(read(_word(w)).split()).upper() for w in words} == {w: w for w in words}


def test_reads_a_blurred_word_and_nothing_on_a_blank_image():
    blurred = _word("FROG").filter(ImageFilter.GaussianBlur(1.2))
    assert ocr.read_text(blurred).replace(" ", "").upper() == "FROG"
    assert ocr.read_text(Image.new("RGB", (64, 64), "white")) == ""


def test_tesseract_id_names_its_version():
    assert re.fullmatch(r"tesseract-\d+\.\d+\.\d+", ocr.TesseractEngine().id)


def test_evaluation_scores_text_word_with_the_default_engine(small_shards, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model": {"image_size": 64}}))
    baselines = evaluate_baselines(str(checkpoint), small_shards[0]["heldout_urls"], SETTINGS)
    assert baselines["baseline_target"]["text_word"] == 1.0  # the ground-truth renders, read by the default engine


def test_without_rapidocr_tesseract_reads_and_the_evaluation_hash_changes(monkeypatch):
    with_rapidocr = evaluation_hash(["heldout-000000.tar"], SETTINGS)
    ocr.default_engine.cache_clear()
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # `import rapidocr` now raises ImportError
    try:
        assert ocr.engine_id().startswith("tesseract-")
        assert ocr.read_text(_word("OWL")) == "OWL"
        assert evaluation_hash(["heldout-000000.tar"], SETTINGS) != with_rapidocr
    finally:
        ocr.default_engine.cache_clear()  # the next caller picks rapidocr again
