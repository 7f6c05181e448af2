"""`t2i_corebench`: T2I-CoReBench's 1080 prompts (12 composition and reasoning dimensions), each with its checklist of
yes/no questions; a VLM judge answers them and an image scores the share answered yes (the benchmark's protocol,
with the configured judge in place of the paper's). Without a judge: generated, not scored."""

from __future__ import annotations

import json
import sys

from deepgen.benchdata import BENCHDATA_DIR
from deepgen.eval.suites import checklist, judge
from deepgen.eval.suites.base import Prompt, Suite, register, source_hash
from deepgen.eval.suites.checklist import ChecklistScorer, Question, snake


@register("t2i_corebench")
class T2ICoReBench(Suite):
    title = "T2I-CoReBench"
    source = "KwaiVGI/T2I-CoReBench data/*.json (Apache-2.0), 1080 prompts with checklists"
    uses_judge = True

    def load_prompts(self) -> list[Prompt]:
        prompts = []
        for path in sorted((BENCHDATA_DIR / "t2i_corebench" / "data").glob("*.json")):
            for key, row in json.loads(path.read_text(encoding="utf-8")).items():
                questions = [q["question"] for q in row["Checklist"]]
                prompts.append(Prompt(key, row["Prompt"], snake(row["Sub Class"]),
                                      {"questions": questions, "main": row["Main Class"]}))
        return prompts

    def scorer(self):
        return self.judge_or_reason() or ChecklistScorer(
            self.judge, lambda p: [Question(str(i), q) for i, q in enumerate(p.meta["questions"])],
            "share of the prompt's checklist questions a VLM judge answers yes (image + one question per request)",
            source_hash(sys.modules[__name__], checklist, judge), "t2i_corebench")
