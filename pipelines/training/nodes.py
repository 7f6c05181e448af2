"""The training node: hands one stage to Ray Train and returns its small record (checkpoint URI, metrics)."""

from __future__ import annotations

from deepgen.data.shards import read_samples
from deepgen.eval.shapes import select, with_topup
from deepgen.model.config import preset
from deepgen.model.weights import absolute_pretrained
from deepgen.train.config import StageConfig
from deepgen.train.launch import run_stage
from pipelines.hooks import tracking


def train_stage(name: str, curation: dict, stage: dict, model: dict, storage: dict, ray: dict, evaluation: dict,
                parent: dict | None = None, prompts: dict | None = None) -> dict:
    """`prompts`: the RL stage's curated prompt set (its shards stream as "prompts"; its version names the run)."""
    config = StageConfig.from_dict(name, stage)
    if parent:
        init = {"checkpoint": parent["checkpoint_uri"]}
    else:
        overrides = absolute_pretrained(model.get("overrides"))
        init = {"preset": model["preset"], "overrides": overrides, "seed": model.get("seed", 0),
                # the resolved config names the run too: a changed preset default must not reuse old weights
                "resolved": preset(model["preset"], overrides).to_dict()}
    data, version = {"train": curation["train_urls"]}, curation["data_version"]
    if prompts:
        data["prompts"], version = prompts["train_urls"], f"{version}+{prompts['data_version']}"
    previews = select(list(read_samples(curation["heldout_urls"])), 1)[: evaluation.get("preview_count", 8)]
    # ShapesWorld's held-out scenes, drawn with another seed than the evaluation's prompts: tuning never sees them
    checks = with_topup([], 0, config.heldout, preset(model["preset"], model.get("overrides")).image_size,
                        seed=1) if config.heldout_every else None
    record = run_stage(config, init, data, version, storage["runs"], tracking(), previews, ray.get("address"),
                       checks)
    extra = {"prompt_data_version": prompts["data_version"]} if prompts else {}
    return {**record, "data_version": curation["data_version"], **extra}
