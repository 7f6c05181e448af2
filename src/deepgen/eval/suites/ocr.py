"""`ocr`: text rendering, scored by reading each image with the project's OCR engine (deepgen.ocr) and comparing the
read text with the prompt's quoted text: Flow-GRPO's word accuracy, the RL `ocr` reward's score."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from PIL import Image

from deepgen import ocr as ocr_engine
from deepgen.benchdata import BENCHDATA_DIR
from deepgen.eval.suites.base import Prompt, Suite, register, source_hash
from deepgen.rl.rewards import ocr as ocr_reward

log = logging.getLogger(__name__)
_QUOTED = re.compile(r'"([^"]+)"')


@register("ocr")
class OCRSuite(Suite):
    title = "OCR prompts (text rendering)"
    source = "Flow-GRPO's OCR test prompts (yifan123/flow_grpo dataset/ocr/test.txt, MIT), 1018 prompts"
    options = {"prompts": None}  # a text file of one prompt per line, each with its text in double quotes

    def load_prompts(self) -> list[Prompt]:
        path = Path(self.opts["prompts"] or BENCHDATA_DIR / "ocr_prompts" / "test.txt")
        if not path.is_file():
            raise ValueError(f"suites.ocr.prompts: {path} is not a file")
        prompts = []
        for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()):
            if not line.strip():
                continue
            quoted = _QUOTED.search(line)
            if quoted is None:
                raise ValueError(f"suites.ocr: {path} line {i + 1} has no text in double quotes: {line[:60]!r}")
            words = len(quoted.group(1).split())
            category = f"words_{words}" if words < 4 else "words_4plus"
            prompts.append(Prompt(f"ocr-{i:04d}", line.strip(), category, {"text": quoted.group(1)}))
        return prompts

    def scorer(self):
        return OCRScorer()


class OCRScorer:
    metric = "word_accuracy"
    protocol = ("OCR (deepgen.ocr) reads each image; max(0, 1 - edit distance / length) against the prompt's quoted "
                "text, lower case, spaces removed (Flow-GRPO's OCR accuracy)")

    def fingerprint(self) -> str:
        return source_hash(ocr_engine, ocr_reward, sys.modules[__name__]) + ocr_engine.engine_id()

    def __call__(self, images: list[Image.Image], prompts: list[Prompt]) -> list[dict | None]:
        out = []
        for image, prompt in zip(images, prompts):
            try:
                read = ocr_engine.read_text(image)
            except Exception as e:  # noqa: BLE001 - an engine error fails this image (retried next run), not a 0
                log.warning("ocr suite: reading %s failed (%s: %s)", prompt.key, type(e).__name__, e)
                out.append(None)
                continue
            out.append({"word_accuracy": ocr_reward.word_accuracy(read, prompt.meta["text"])})
        return out
