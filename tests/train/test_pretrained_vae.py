"""A pretrained VAE's latent normalisation (scaling_factor, shift_factor) belongs to the weights its DiT was trained
with: a zero-step VAE stage packages it unchanged, the stages after it keep it, and a stage that fine-tunes the VAE
does not recalibrate it. (The tiny preset's VAE, trained from scratch, is calibrated: tests/pipelines.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepgen.model.checkpoint import load_checkpoint
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.model.example_weights import write_qwen_folder, write_sd3_folder
from deepgen.train.config import StageConfig
from deepgen.train.launch import run_stage
from deepgen.train.objectives import ObjectiveContext, build_objective
from deepgen.train.objectives.vae import vae_from_scratch

FACTORS = (0.731, -0.214)  # neither the tiny preset's (1.0, 0.0) nor what calibration would measure
ONE_WORKER = {"num_workers": 1}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    model = DeepGen(preset("tiny"))
    write_qwen_folder(model, root / "qwen")
    write_sd3_folder(model, root / "sd3", shift=3.0, vae_factors=FACTORS)
    return {"vlm": {"pretrained": str(root / "qwen")}, "dit": {"pretrained": str(root / "sd3")},
            "vae": {"pretrained": str(root / "sd3")}}


def factors_of(record: dict) -> tuple[tuple[float, float], tuple[float, float]]:
    """(as the checkpoint's config says, as the loaded model's VAE has them)."""
    config = json.loads(Path(record["checkpoint_uri"], "config.json").read_text())["model"]["vae"]
    vae = load_checkpoint(record["checkpoint_uri"]).vae.config
    return (config["scaling_factor"], config["shift_factor"]), (vae.scaling_factor, vae.shift_factor)


def test_only_a_vae_trained_from_scratch_is_calibrated(pretrained, small_shards):
    """The VAE objective's end-of-stage calibration: a scratch VAE gets measured factors; a pretrained one, or one
    from a parent checkpoint, keeps its own even when the stage fine-tuned it."""
    shards, _, _ = small_shards
    stage = StageConfig.from_dict("vae", {"objective": "vae", "trainable": ["vae"], "steps": 2})
    for init, calibrated in (({"preset": "tiny", "overrides": pretrained}, False),
                             ({"checkpoint": "/runs/vae/model"}, False),
                             ({"preset": "tiny", "overrides": {}}, True)):
        assert vae_from_scratch(init) == calibrated
        torch.manual_seed(0)
        model = DeepGen(preset("tiny", pretrained))  # the pretrained factors, whatever `init` claims
        objective = build_objective(model, stage, ObjectiveContext(data={"train": shards["train_urls"]}, seed=0,
                                                                   init=init))
        objective.finish()
        found = (model.vae.config.scaling_factor, model.vae.config.shift_factor)
        assert (found != pytest.approx(FACTORS)) == calibrated, (init, found)


def test_pretrained_vae_factors_survive_the_stages(pretrained, small_shards, tmp_path):
    """Through Ray Train, as the pipeline runs them: the zero-step VAE stage, then a stage from its checkpoint."""
    shards, _, _ = small_shards
    data, runs = {"train": shards["train_urls"]}, str(tmp_path / "runs")
    init = {"preset": "tiny", "overrides": pretrained, "seed": 0}
    vae = run_stage(StageConfig.from_dict("vae", {"objective": "vae", "trainable": [], "steps": 0,
                                                  "scaling": ONE_WORKER}), init, data, "v-test", runs)
    assert factors_of(vae) == (pytest.approx(FACTORS), pytest.approx(FACTORS))
    alignment = run_stage(StageConfig.from_dict("alignment", {
        "objective": "flow", "trainable": ["scb"], "steps": 2, "batch_size": 2, "checkpoint_every": 2,
        "log_every": 1, "scaling": ONE_WORKER}), {"checkpoint": vae["checkpoint_uri"]}, data, "v-test", runs)
    assert factors_of(alignment) == (pytest.approx(FACTORS), pytest.approx(FACTORS))
