"""The retrain decision and its record: thin nodes over deepgen.retrain."""

from __future__ import annotations

import logging

from deepgen.retrain import RetrainParams, champion_checkpoint, config_hash, find_version, tag_config

log = logging.getLogger(__name__)


def check_retrain(curation: dict, retrain: dict, promotion: dict, model: dict,
                  parameters: dict) -> tuple[dict, dict]:
    """The decision (`needed` gates the rest in the Airflow DAG) and the first stage's parent record: the champion's
    checkpoint, or empty for the preset's fresh weights (train_stage starts from them without a parent)."""
    params = RetrainParams.from_dict(dict(retrain))
    name = promotion["model_name"].format(preset=model["preset"])
    config = config_hash(parameters, params)
    existing = find_version(name, curation["data_version"], config)
    champion = champion_checkpoint(name) if existing is None and params.init == "champion" else None
    init = {"checkpoint_uri": champion[0], "source": f"models:/{name}/{champion[1]}"} if champion else {}
    decision = {"needed": existing is None, "model_name": name, "data_version": curation["data_version"],
                "config_hash": config, "existing_version": existing, "init": init["source"] if init else "base"}
    if existing is None:
        log.info("retrain: no %s version for data %s and config %s; training from %s", name,
                 curation["data_version"], config, decision["init"])
    else:
        log.info("retrain: %s v%s already holds data %s and config %s; nothing to do", name, existing,
                 curation["data_version"], config)
    return decision, init


def record_retrain(decision: dict, registered: dict) -> dict:
    """Tag the gated version with the configuration it was trained under, so the next check finds it."""
    tag_config(registered["name"], registered["version"], decision["config_hash"])
    return {**decision, "registered": {k: registered[k] for k in ("name", "version", "alias", "reason")}}
