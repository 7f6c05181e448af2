"""`unigenbench`: UniGenBench's 600 English prompts, each with test points (a dimension such as "Attribute - Quantity"
and what to check, e.g. "two pandas"); a VLM judge says per test point whether the image shows it. An image scores
the share of its test points passed, and each dimension (the part before " - ") its share within the dimension.
Without a judge: generated, not scored."""

from __future__ import annotations

import csv
import io
import json
import sys

from deepgen.benchdata import BENCHDATA_DIR
from deepgen.eval.suites import checklist, judge
from deepgen.eval.suites.base import Prompt, Suite, register, source_hash
from deepgen.eval.suites.checklist import ChecklistScorer, Question, snake

ASK = 'The image was generated for the prompt "{prompt}". Does it correctly show {description} ({point})?'


@register("unigenbench")
class UniGenBench(Suite):
    title = "UniGenBench"
    source = "CodeGoat24/UniGenBench data/test_prompts_en.csv (CC BY 4.0, Tencent), 600 prompts"
    uses_judge = True

    def load_prompts(self) -> list[Prompt]:
        path = BENCHDATA_DIR / "unigenbench" / "data" / "test_prompts_en.csv"
        prompts = []
        for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")):
            dims = json.loads(row["sub_dims_en"])
            points = list(zip(dims["Testpoints"], dims["Testpoint Description"]))
            prompts.append(Prompt(f"unigenbench-{int(row['index']):04d}", row["prompt_en"],
                                  snake(dims["Primary Categories"]), {"points": points}))
        return prompts

    def scorer(self):
        return self.judge_or_reason() or ChecklistScorer(
            self.judge, _questions,
            "share of the prompt's test points a VLM judge says the image shows (image + one test point per request)",
            source_hash(sys.modules[__name__], checklist, judge), "unigenbench")


def _questions(prompt: Prompt) -> list[Question]:
    return [Question(str(i), ASK.format(prompt=prompt.text, description=description, point=point),
                     snake(point.split(" - ")[0])) for i, (point, description) in enumerate(prompt.meta["points"])]
