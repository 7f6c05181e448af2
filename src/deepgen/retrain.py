"""Scheduled retraining's question: is a model for this data version and this configuration already registered?

A registered version carries `data_version` (set at registration) and `config_hash` (set once a retrain has gone
through the gate). The hash covers every parameter group but those in `RetrainParams.not_hashed` (where outputs go,
which moves nothing; curation, which the data version already covers), plus the init choice: a stage added to the
chain counts without anyone listing it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import mlflow
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
CONFIG_TAG = "config_hash"
INITS = ("base", "champion")


@dataclass(frozen=True)
class RetrainParams:
    """`init`: the first stage starts from the preset's fresh weights (`base`) or from the registered champion's
    checkpoint (`champion`; the base while there is none). `not_hashed`: parameter groups left out of the
    configuration hash."""

    init: str = "base"
    not_hashed: tuple[str, ...] = ("storage", "tracking", "ray", "data_root", "curation", "promotion", "retrain")

    @classmethod
    def from_dict(cls, raw: dict) -> RetrainParams:
        unknown = set(raw) - {"init", "not_hashed"}
        if unknown:
            raise ValueError(f"retrain: unknown parameter {sorted(unknown)[0]!r} (expected init, not_hashed)")
        params = cls(**{**raw, "not_hashed": tuple(raw.get("not_hashed", cls.not_hashed))})
        if params.init not in INITS:
            raise ValueError(f"retrain.init: {params.init!r} is not one of {', '.join(INITS)}")
        return params


def config_hash(params: dict, retrain: RetrainParams) -> str:
    """16 hex digits over the hashed parameter groups and the init choice."""
    chosen = {"init": retrain.init, **{k: v for k, v in params.items() if k not in retrain.not_hashed}}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_version(name: str, data_version: str, config: str) -> int | None:
    """The newest version of `name` trained on `data_version` under configuration `config`, if any."""
    matches = [int(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'")
               if v.tags.get("data_version") == data_version and v.tags.get(CONFIG_TAG) == config]
    return max(matches, default=None)


def tag_config(name: str, version: int, config: str) -> None:
    MlflowClient().set_model_version_tag(name, str(version), CONFIG_TAG, config)


def champion_checkpoint(name: str) -> tuple[str, int] | None:
    """(checkpoint URI, version) of `name`@champion, or None while there is no champion."""
    try:
        champion = MlflowClient().get_model_version_by_alias(name, "champion")
    except mlflow.exceptions.MlflowException:
        return None
    uri = champion.tags.get("checkpoint_uri")
    if not uri:
        raise ValueError(f"{name}@champion (v{champion.version}) has no checkpoint_uri tag")
    return uri, int(champion.version)
