"""`geneval`: GenEval's 553 prompts in six tasks, scored by GenEval's rules over an object detector's output when a
detector is configured; without one the suite generates and is reported as not scored.

The rules follow GenEval's evaluate_images.py: each `include` entry needs `count` detections of its class above the
threshold (0.3; 0.9 for the counting task), in the asked colour where one is asked, and in the asked position relative
to the matched objects of another entry (box centres, offsets shrunk by 0.1 x the boxes' sizes); an `exclude` entry
fails the image when `count` or more of its class are found. An image is correct when every rule holds; `overall` is
the mean over the six tasks' accuracies. Two differences: the detector is any transformers object-detection model
folder whose labels name GenEval's 80 classes (GenEval uses a Mask2Former from mmdetection), and colours are
classified by CLIP zero-shot on the box crop (GenEval masks the crop with the instance mask first); without a CLIP
folder the colour tasks are not scored.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepgen.benchdata import BENCHDATA_DIR
from deepgen.eval.suites.base import NotScored, Prompt, Suite, register, source_hash

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
POSITION_THRESHOLD = 0.1
DETECTOR_KEYS = {"path", "clip", "threshold", "counting_threshold", "max_objects", "device"}


@register("geneval")
class GenEval(Suite):
    title = "GenEval"
    source = "djghosh13/geneval prompts/evaluation_metadata.jsonl (MIT, Copyright 2023 Dhruba Ghosh), 553 prompts"
    # detector: {path: <transformers object-detection folder>, clip: <CLIP folder for colours>, threshold: 0.3,
    # counting_threshold: 0.9, max_objects: 16, device: cpu}
    options = {"detector": None}

    def load_prompts(self) -> list[Prompt]:
        path = BENCHDATA_DIR / "geneval" / "evaluation_metadata.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [Prompt(f"geneval-{i:04d}", row["prompt"], row["tag"],
                       {"include": row["include"], "exclude": row.get("exclude", [])}) for i, row in enumerate(rows)]

    def scorer(self):
        detector = self.opts["detector"]
        if not detector or not detector.get("path"):
            return NotScored("no detector configured (suites.geneval.detector.path: a transformers object-detection "
                             "model folder whose labels are GenEval's COCO class names)")
        unknown = sorted(set(detector) - DETECTOR_KEYS)
        if unknown:
            raise ValueError(f"suites.geneval.detector: unknown key(s) {unknown} (known: {sorted(DETECTOR_KEYS)})")
        classes = {item["class"] for p in self.load_prompts() for item in p.meta["include"] + p.meta["exclude"]}
        return GenEvalScorer(classes=classes, **detector)

    def summarize(self, rows: list[tuple[Prompt, dict[str, float]]]) -> dict:
        out = super().summarize(rows)
        asked = {p.category for p in self.selected()}
        scored = set(out["categories"])
        if scored == asked == set(TASKS):
            accuracies = [out["categories"][t]["accuracy"] for t in TASKS]
            ses = [out["categories"][t].get("accuracy.se", 0.0) for t in TASKS]
            out["overall"] = sum(accuracies) / len(TASKS)
            out["overall.n"] = sum(out["categories"][t]["accuracy.n"] for t in TASKS)
            out["overall.se"] = math.sqrt(sum(s * s for s in ses)) / len(TASKS)
        if asked - scored:
            out["not_scored_tasks"] = ", ".join(sorted(asked - scored)) + (
                " (no colour classifier: set detector.clip)" if {"colors", "color_attr"} & (asked - scored) else "")
        return out


class GenEvalScorer:
    metric = "overall"

    def __init__(self, path: str, classes: set[str], clip: str | None = None, threshold: float = 0.3,
                 counting_threshold: float = 0.9, max_objects: int = 16, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        if not (Path(path) / "config.json").is_file():
            raise ValueError(f"suites.geneval.detector.path: {path} is not a model folder (no config.json)")
        self._device = torch.device(device)
        self._model = AutoModelForObjectDetection.from_pretrained(path, local_files_only=True).to(self._device).eval()
        self._processor = AutoImageProcessor.from_pretrained(path, local_files_only=True, backend="pil")
        self._labels = {int(i): name for i, name in self._model.config.id2label.items()}
        missing = sorted(classes - set(self._labels.values()))
        if missing:
            raise ValueError(f"suites.geneval.detector: {path} has no label for {len(missing)} GenEval classes, "
                             f"e.g. {missing[:5]}")
        self._colour = ColourClassifier(clip, device) if clip else None
        self._settings = {"threshold": threshold, "counting_threshold": counting_threshold, "max_objects": max_objects}
        self._id = {"detector": _folder_id(path), "clip": _folder_id(clip) if clip else None, **self._settings}
        self.protocol = (f"GenEval's rules over detections by {Path(path).name} (threshold {threshold:g}, counting "
                         f"{counting_threshold:g}); colours: " + (f"CLIP zero-shot ({Path(clip).name}) on the box"
                                                                  if clip else "not scored (no CLIP folder)"))

    def fingerprint(self) -> str:
        return source_hash(sys.modules[__name__]) + json.dumps(self._id, sort_keys=True)

    def __call__(self, images: list[Image.Image], prompts: list[Prompt]) -> list[dict]:
        low = min(self._settings["threshold"], self._settings["counting_threshold"])
        inputs = self._processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        with torch.inference_mode():
            outputs = self._model(**{k: v.to(self._device) for k, v in inputs.items()})
        found = self._processor.post_process_object_detection(outputs, threshold=low,
                                                              target_sizes=[(im.height, im.width) for im in images])
        out = []
        for image, prompt, det in zip(images, prompts, found):
            needs_colour = any("color" in item for item in prompt.meta["include"])
            if needs_colour and self._colour is None:
                out.append({})  # the colour tasks are not scored without a colour classifier
                continue
            threshold = self._settings["counting_threshold" if prompt.category == "counting" else "threshold"]
            objects: dict[str, list[tuple[float, list[float]]]] = defaultdict(list)
            for score, label, box in zip(det["scores"].tolist(), det["labels"].tolist(), det["boxes"].tolist()):
                if score >= threshold:
                    objects[self._labels[int(label)]].append((score, box))
            objects = {k: [box for _, box in sorted(v, key=lambda x: -x[0])][: self._settings["max_objects"]]
                       for k, v in objects.items()}
            colour = (lambda box, name, im=image: self._colour(im, box, name)) if self._colour else None
            out.append({"accuracy": float(geneval_correct(prompt.meta, objects, colour))})
        return out


def geneval_correct(meta: dict, objects: dict[str, list[list[float]]], colour=None) -> bool:
    """GenEval's rule for one image. `objects`: class -> boxes (x0, y0, x1, y1), best first, above the threshold;
    `colour(box, class)` -> a colour name (needed only where a colour is asked)."""
    correct, groups = True, []
    for item in meta["include"]:
        found = objects.get(item["class"], [])[: item["count"]]
        matched = len(found) >= item["count"]
        if matched and "color" in item:
            matched = [colour(box, item["class"]) for box in found].count(item["color"]) >= item["count"]
        if matched and "position" in item:
            relation, target = item["position"]
            matched = groups[target] is not None and all(
                relation in relative_position(box, other) for box in found for other in groups[target])
        correct &= matched
        groups.append(found if matched else None)
    for item in meta.get("exclude", []):
        if len(objects.get(item["class"], [])) >= item["count"]:
            correct = False
    return correct


def relative_position(box_a: list[float], box_b: list[float]) -> set[str]:
    """Where A is relative to B: centre offset, shrunk by POSITION_THRESHOLD x the boxes' summed sizes per axis."""
    boxes = np.array([box_a, box_b], dtype=float).reshape(2, 2, 2)
    centre_a, centre_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    return ({"left of"} if dx < -0.5 else set()) | ({"right of"} if dx > 0.5 else set()) | \
        ({"above"} if dy < -0.5 else set()) | ({"below"} if dy > 0.5 else set())


class ColourClassifier:
    """CLIP zero-shot over GenEval's ten colours: "a photo of a {colour} {class}" against the box crop."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        if not (Path(path) / "config.json").is_file():
            raise ValueError(f"suites.geneval.detector.clip: {path} is not a CLIP model folder (no config.json)")
        self._device = torch.device(device)
        self._model = CLIPModel.from_pretrained(path, local_files_only=True).to(self._device).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._processor = AutoImageProcessor.from_pretrained(path, local_files_only=True, backend="pil")

    def __call__(self, image: Image.Image, box: list[float], name: str) -> str:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        crop = image.crop((max(x0, 0), max(y0, 0), max(x1, x0 + 1), max(y1, y0 + 1)))
        text = self._tokenizer([f"a photo of a {c} {name}" for c in COLORS], padding=True, return_tensors="pt")
        pixels = self._processor(images=[crop], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = self._model(input_ids=text["input_ids"].to(self._device),
                              attention_mask=text["attention_mask"].to(self._device),
                              pixel_values=pixels.to(self._device))
        return COLORS[int(out.logits_per_image[0].argmax())]


def _folder_id(path: str) -> dict:
    """A model folder's identity for cache keys: its path, its config's hash and its files' sizes."""
    folder = Path(path)
    return {"path": str(folder.resolve()), "config": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest(),
            "files": sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())}
