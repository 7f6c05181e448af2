"""The in-stage held-out check: it measures without changing the run (name, weights' random stream)."""

from __future__ import annotations

import torch

from deepgen.model.checkpoint import load_checkpoint
from deepgen.train.config import StageConfig
from deepgen.train.heldout import heldout_scores
from deepgen.train.launch import run_name
from deepgen.world import eval_set

INIT = {"preset": "tiny", "seed": 0}


def test_observing_settings_do_not_name_the_run():
    base = {"steps": 10, "batch_size": 2}
    name = run_name(StageConfig.from_dict("sft", base), INIT, "v1")
    observed = {**base, "heldout_every": 5, "heldout": {"edit_move": 4}, "log_every": 1, "note": "why"}
    assert run_name(StageConfig.from_dict("sft", observed), INIT, "v1") == name
    assert run_name(StageConfig.from_dict("sft", {**base, "steps": 11}), INIT, "v1") != name


def test_heldout_scores_grade_edits_and_composition_and_leave_the_model_as_it_was(tiny_checkpoints):
    model = load_checkpoint(tiny_checkpoints[0]).train()
    samples = eval_set(1, 2, 64, categories=("single_object", "two_objects", "edit_move"))
    state = torch.random.get_rng_state()
    scores = heldout_scores(model, samples, steps=2)
    assert model.training
    assert torch.equal(torch.random.get_rng_state(), state)  # the training run's random stream is untouched
    for key in ("single_object_color", "two_objects_found", "edits_followed", "edits_preserved"):
        assert 0.0 <= scores[key] <= 1.0, key
