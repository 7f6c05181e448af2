"""`wise`: WISE's 1000 world-knowledge prompts (cultural, spatio-temporal, natural science), each with an explanation
of what the image must show. A VLM judge rates consistency, realism and aesthetic quality 0-2 given the prompt and
the explanation, and WiScore = (0.7 consistency + 0.2 realism + 0.1 aesthetic) / 2, in [0, 1] (WISE's weights; our
short judge prompt in place of the paper's GPT-4o prompt, so numbers compare across our runs, not with the paper).
Without a judge: generated, not scored. WISE ships no licence file: research use only."""

from __future__ import annotations

import json
import re
import sys

from PIL import Image

from deepgen.benchdata import BENCHDATA_DIR
from deepgen.eval.suites import judge as judge_module
from deepgen.eval.suites.base import Prompt, Suite, register, source_hash
from deepgen.eval.suites.checklist import snake
from deepgen.eval.suites.judge import JudgeConfig, VLMJudge, answer_all

ASK = ('The image was generated for the prompt "{prompt}". The prompt means: {explanation}\n'
       "Rate the image from 0 to 2 on each of: consistency (does it show what the prompt means: 0 no, 1 partly, 2 "
       "fully), realism (0 implausible, 2 realistic), aesthetic (0 poor, 2 good). Answer exactly in the form "
       '"consistency: N, realism: N, aesthetic: N".')
_RATING = {name: re.compile(rf"{name}\W*([012])\b", re.IGNORECASE) for name in ("consistency", "realism", "aesthetic")}
WEIGHTS = {"consistency": 0.7, "realism": 0.2, "aesthetic": 0.1}


@register("wise")
class WISE(Suite):
    title = "WISE"
    source = "PKU-YuanGroup/WISE data_verified/merge.json (no licence file upstream: research use only), 1000 prompts"
    uses_judge = True

    def load_prompts(self) -> list[Prompt]:
        rows = json.loads((BENCHDATA_DIR / "wise" / "data_verified" / "merge.json").read_text(encoding="utf-8"))
        return [Prompt(f"wise-{row['prompt_id']:04d}", row["Prompt"], snake(row["Category"]),
                       {"explanation": row["Explanation"], "subcategory": row["Subcategory"]}) for row in rows]

    def scorer(self):
        return self.judge_or_reason() or WiScorer(self.judge)


class WiScorer:
    metric = "wiscore"

    def __init__(self, config: JudgeConfig) -> None:
        self._judge, self._config = VLMJudge(config), config
        self.protocol = (f"WiScore = (0.7 consistency + 0.2 realism + 0.1 aesthetic) / 2 from 0-2 ratings by a VLM "
                         f"judge given prompt and explanation; judge {config.model} at {config.url}")

    def fingerprint(self) -> str:
        return f"{source_hash(sys.modules[__name__], judge_module)}|{self._config.url}|{self._config.model}"

    def __call__(self, images: list[Image.Image], prompts: list[Prompt]) -> list[dict | None]:
        asks = [[lambda image=image, p=p: self._judge.ask(
            ASK.format(prompt=p.text, explanation=p.meta["explanation"]), [image], ratings, max_tokens=32)]
            for image, p in zip(images, prompts)]
        out = []
        for answer in answer_all(self._judge, asks, "wise"):
            if answer is None:
                out.append(None)
                continue
            rated = answer[0]
            out.append({**rated, "wiscore": sum(WEIGHTS[k] * v for k, v in rated.items()) / 2})
        return out


def ratings(answer: str) -> dict[str, float]:
    found = {name: pattern.search(answer) for name, pattern in _RATING.items()}
    if not all(found.values()):
        raise ValueError(f"unreadable rating {answer[:60]!r} (want consistency/realism/aesthetic: 0-2)")
    return {name: float(match.group(1)) for name, match in found.items()}
