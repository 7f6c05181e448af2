"""`edit`: editing on your own images. A folder holds images (png, jpg, jpeg, webp), each with its instruction in a
text file of the same name (`cat.png` + `cat.txt`); a subfolder's name is its images' category. A VLM judge sees the
source and the result and answers two yes/no questions: `followed` (the instruction is carried out) and `preserved`
(everything it does not ask to change is unchanged); `both` is the two together (ShapesBench's edit metrics, judged
instead of detected). Without a judge: generated, not scored."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from deepgen.eval.suites import judge as judge_module
from deepgen.eval.suites.base import Prompt, Suite, register, source_hash
from deepgen.eval.suites.checklist import snake
from deepgen.eval.suites.judge import JudgeConfig, VLMJudge, answer_all

IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".webp"}
FOLLOWED = ('The first image is the original, the second is the result of editing it with the instruction '
            '"{instruction}". Does the result carry out the instruction?')
PRESERVED = ('The first image is the original, the second is the result of editing it with the instruction '
             '"{instruction}". Apart from what the instruction asks to change, is the original unchanged in the '
             "result?")


@register("edit")
class EditSuite(Suite):
    title = "Edits on your images"
    source = "a folder of image + instruction pairs (suites.edit.folder)"
    options = {"folder": None}
    uses_judge = True
    edits = True

    def load_prompts(self) -> list[Prompt]:
        if not self.opts["folder"]:
            raise ValueError("suites.edit.folder: set a folder of images, each with a <name>.txt instruction beside it")
        root = Path(self.opts["folder"])
        if not root.is_dir():
            raise ValueError(f"suites.edit.folder: {root} is not a folder")
        prompts = []
        for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_TYPES):
            instruction = image.with_suffix(".txt")
            if not instruction.is_file():
                raise ValueError(f"suites.edit: {image} has no instruction file {instruction.name}")
            rel = image.relative_to(root)
            category = snake(rel.parts[0]) or "other" if len(rel.parts) > 1 else "all"  # a metric-name-safe key
            prompts.append(Prompt(str(rel.with_suffix("")), instruction.read_text(encoding="utf-8").strip(), category,
                                  {"source_path": str(image)}, source=image.read_bytes()))
        if not prompts:
            raise ValueError(f"suites.edit.folder: {root} holds no images ({', '.join(sorted(IMAGE_TYPES))})")
        return prompts

    def scorer(self):
        return self.judge_or_reason() or EditJudge(self.judge)


class EditJudge:
    metric = "both"

    def __init__(self, config: JudgeConfig) -> None:
        self._judge, self._config = VLMJudge(config), config
        self.protocol = (f"a VLM judge sees source and result and answers yes/no: instruction followed, rest "
                         f"preserved; both = the two; judge {config.model} at {config.url}")

    def fingerprint(self) -> str:
        return f"{source_hash(sys.modules[__name__], judge_module)}|{self._config.url}|{self._config.model}"

    def __call__(self, images: list[Image.Image], prompts: list[Prompt]) -> list[dict | None]:
        import io

        sources = [Image.open(io.BytesIO(p.source)).convert("RGB") for p in prompts]
        asks = [[lambda q=q, s=s, r=r, p=p: self._judge.yes(q.format(instruction=p.text), [s, r])
                 for q in (FOLLOWED, PRESERVED)] for s, r, p in zip(sources, images, prompts)]
        return [None if a is None else {"followed": float(a[0]), "preserved": float(a[1]), "both": float(a[0] and a[1])}
                for a in answer_all(self._judge, asks, "edit")]
