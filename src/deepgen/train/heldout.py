"""A small held-out evaluation during a stage, every `heldout_every` steps, logged as curves.

The same generation and scorer as the pipeline's evaluation (deepgen.eval.shapes), on a few held-out prompts per
category chosen by the training node, so a change to a stage's mix, length or learning rate shows where it helps or
hurts while the stage runs instead of only after it. It runs on the rank that logs; with DDP the other ranks wait at
the next gradient all-reduce (the tiny default: ~10-15 s per check of ~100 prompts at 10 steps on one thread).
Generation draws its noise from its own seeded generators, so a check never changes the training run's random stream.
"""

from __future__ import annotations

from deepgen.eval.shapes import generate_all, score_all

# The curves: headline single-object accuracies, the graded edit and composition metrics (deepgen.world.score)
CURVE_KEYS = ("single_object_color", "single_object_shape", "single_object_position", "edits_followed", "edits_preserved", "edits_both", "two_objects",
              "two_objects_found", "two_objects_extra", "color_attr", "color_attr_found", "counting_found",
              "position_found")


def heldout_scores(model, samples: list[dict], steps: int = 10, guidance: float = 3.5, seed: int = 0) -> dict:
    """Scores of `samples` (held-out, with their scene specs) for the curve keys they produce."""
    was_training = model.training
    model.eval()
    try:
        images = generate_all(model, samples, batch_size=32, seed=seed, steps=steps, guidance=guidance,
                              desc="held-out check")
    finally:
        model.train(was_training)
    scores = score_all(images, samples)
    return {k: scores[k] for k in CURVE_KEYS if k in scores}
