"""`ocr`: how close the text read off each image is to the prompt's quoted text, read by the project's one OCR module
(deepgen.ocr), the engine the evaluation's `text_word` score uses."""

from __future__ import annotations

import re

from PIL import Image

from deepgen import ocr
from deepgen.rl.rewards.base import register

_QUOTED = re.compile(r'"([^"]+)"')


@register("ocr")
class OCRReward:
    """Per image: max(0, 1 - levenshtein(read, target) / max(len(target), 1)), both lower-cased with whitespace
    removed; the target is the sample's rendered text (`spec.text`), else the first quoted span of its caption.

    This is Flow-GRPO's OCR reward (arXiv 2505.05470, flow_grpo/ocr.py), which DeepGen-1.0 follows: quoted text,
    spaces removed, lower case, edit distance capped at the target's length. Two differences: Flow-GRPO scores a
    reading that merely contains the target as 1, which rewards extra text as extra blobs would be rewarded in
    `shapes`; and it scores an OCR error as 0, where here it raises and score_group counts the group as failed.
    """

    bounds = (0.0, 1.0)

    def __call__(self, images: list[Image.Image], sample: dict) -> list[float]:
        target = quoted_text(sample)
        return [word_accuracy(ocr.read_text(image), target) for image in images]


def quoted_text(sample: dict) -> str:
    text = (sample.get("spec") or {}).get("text")
    if text:
        return text
    found = _QUOTED.search(sample.get("caption", ""))
    if found is None:
        raise ValueError(f"ocr reward: sample {sample.get('key')!r} has no spec.text and no quoted text in its "
                         f"caption {sample.get('caption')!r}")
    return found.group(1)


def word_accuracy(read: str, target: str) -> float:
    read, target = "".join(read.split()).lower(), "".join(target.split()).lower()
    return max(0.0, 1.0 - levenshtein(read, target) / max(len(target), 1))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions: cost 1 each); prompts' words are short, so O(len^2)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
