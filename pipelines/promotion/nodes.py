"""Register the candidate (one registered model per preset) and let the gate decide its alias."""

from __future__ import annotations

from deepgen.registry import Gate, promote, register


def register_and_promote(final: dict, evaluation: dict, promotion: dict, model: dict) -> dict:
    name = promotion["model_name"].format(preset=model["preset"])
    scores = evaluation[final["stage"]]
    registered = register(final["checkpoint_uri"], name, scores, final["data_version"])
    return promote(name, registered["version"], scores, Gate(**promotion["gate"]))
