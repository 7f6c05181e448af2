"""Checklist scoring by a VLM judge: per image, yes/no questions about it (T2I-CoReBench's checklists, DPG-Bench's
questions, UniGenBench's test points); the image's score is the share answered yes, overall and per question group.

A question may depend on others (DPG-Bench: "is the dog brown?" depends on "is there a dog?"): it counts as no when
any question it depends on is answered no, as DPG-Bench's own evaluation does.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from deepgen.eval.suites.base import Prompt
from deepgen.eval.suites.judge import JudgeConfig, VLMJudge, answer_all


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    group: str | None = None
    depends_on: tuple[str, ...] = field(default_factory=tuple)


class ChecklistScorer:
    metric = "score"

    def __init__(self, judge: JudgeConfig, questions: Callable[[Prompt], list[Question]], protocol: str,
                 source: str, label: str) -> None:
        self._judge, self._questions, self._label, self._source = VLMJudge(judge), questions, label, source
        self._config = judge
        self.protocol = f"{protocol}; judge {judge.model} at {judge.url}"

    def fingerprint(self) -> str:
        return f"{self._source}|{self._config.url}|{self._config.model}"

    def __call__(self, images: list[Image.Image], prompts: list[Prompt]) -> list[dict | None]:
        lists = [self._questions(p) for p in prompts]
        asks = [[(lambda q=q, image=image: self._judge.yes(q.text, [image])) for q in questions]
                for image, questions in zip(images, lists)]
        answers = answer_all(self._judge, asks, self._label)
        return [None if raw is None else checklist_scores(questions, raw) for questions, raw in zip(lists, answers)]


def checklist_scores(questions: list[Question], raw: list[bool]) -> dict[str, float]:
    """{"score": share of yes, <group>: share of yes within the group}, dependencies applied."""
    if not questions:
        return {}
    said = {q.id: a for q, a in zip(questions, raw)}
    held = {q.id: a and all(said.get(d, True) for d in q.depends_on) for q, a in zip(questions, raw)}
    groups: dict[str, list[bool]] = defaultdict(list)
    for q in questions:
        if q.group:
            groups[q.group].append(held[q.id])
    return {"score": sum(held.values()) / len(held), **{g: sum(v) / len(v) for g, v in groups.items()}}


def snake(text: str) -> str:
    """A category or group name as a metric key: "World Knowledge" -> world_knowledge."""
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")
