"""`dpg_bench`: DPG-Bench's 1065 dense prompts. DPG-Bench scores with its question file (`dpg_bench.csv` in the ELLA
repository: per prompt, yes/no questions with dependencies and a broad category), answered by a VQA model; the file is
not shipped here, so the suite is scored when `questions` names a copy and a judge is configured: an image scores the
share of its questions answered yes (a question whose parent is answered no counts as no), and each broad category
(entity, attribute, relation, global, other) its share within the category. Otherwise: generated, not scored.
Categories are the prompts' sources (the file-name prefix: partiprompts, COCOval, ...; "numbered" for the
files named by number alone)."""

from __future__ import annotations

import csv
import io
import re
import sys
from collections import defaultdict
from pathlib import Path

from deepgen.benchdata import BENCHDATA_DIR
from deepgen.eval.suites import checklist, judge
from deepgen.eval.suites.base import NotScored, Prompt, Suite, register, source_hash
from deepgen.eval.suites.checklist import ChecklistScorer, Question, snake

COLUMNS = {"item_id", "proposition_id", "dependency", "category_broad", "question_natural_language"}


@register("dpg_bench")
class DPGBench(Suite):
    title = "DPG-Bench"
    source = "TencentQQGYLab/ELLA dpg_bench/prompts/*.txt (Apache-2.0), 1065 prompts"
    options = {"questions": None}  # path of DPG-Bench's dpg_bench.csv
    uses_judge = True

    def load_prompts(self) -> list[Prompt]:
        paths = sorted((BENCHDATA_DIR / "dpg_bench" / "prompts").glob("*.txt"), key=_natural)
        return [Prompt(p.stem, p.read_text(encoding="utf-8-sig").strip(), re.sub(r"\d+$", "", p.stem) or "numbered")
                for p in paths]

    def scorer(self):
        if not self.opts["questions"]:
            return NotScored("DPG-Bench scores with its question file (dpg_bench.csv from TencentQQGYLab/ELLA, not "
                             "shipped): set suites.dpg_bench.questions and a judge")
        questions = read_questions(self.opts["questions"])
        missing = [p.key for p in self.selected() if p.key not in questions]
        if missing:
            raise ValueError(f"suites.dpg_bench.questions: no questions for {len(missing)} selected prompt(s), e.g. "
                             f"{missing[:3]}")
        return self.judge_or_reason() or ChecklistScorer(
            self.judge, lambda p: questions[p.key],
            "share of DPG-Bench's questions for the prompt a VLM judge answers yes, a child question counting as no "
            "when its parent is no (image + one question per request)",
            source_hash(sys.modules[__name__], checklist, judge) + _file_hash(self.opts["questions"]), "dpg_bench")


def read_questions(path: str) -> dict[str, list[Question]]:
    """dpg_bench.csv -> item_id -> its questions (dependency "0" means none; several parents are comma-separated)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"suites.dpg_bench.questions: {path} is not a file")
    reader = csv.DictReader(io.StringIO(file.read_text(encoding="utf-8-sig"), newline=""))
    missing = COLUMNS - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"suites.dpg_bench.questions: {path} lacks column(s) {sorted(missing)}")
    out: dict[str, list[Question]] = defaultdict(list)
    for row in reader:
        parents = tuple(d.strip() for d in str(row["dependency"]).split(",") if d.strip() not in ("", "0"))
        out[row["item_id"]].append(Question(str(row["proposition_id"]).strip(), row["question_natural_language"],
                                            snake(row["category_broad"]), parents))
    return dict(out)


def _natural(path: Path) -> tuple:
    match = re.match(r"(\D*)(\d*)$", path.stem)
    return (match.group(1), int(match.group(2) or 0)) if match else (path.stem, 0)


def _file_hash(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
