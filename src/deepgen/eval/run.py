"""Evaluate checkpoints on the held-out shards: scores per category, logged to MLflow with sample and edit grids;
and two baselines scored the same way on the same prompts without a model.

Results are cached beside the evaluation parameters (keyed by checkpoint URI, settings and the scorer's source), so
re-running the pipeline with nothing changed does not regenerate every image, and a changed scorer does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from PIL import Image

from deepgen import ocr as ocr_module
from deepgen import storage
from deepgen import tracking as mlflow_log
from deepgen.data.shards import read_samples
from deepgen.eval import reward as eval_reward
from deepgen.eval import shapes
from deepgen.eval.shapes import generate_all, score_all, with_topup
from deepgen.registry import load_model
from deepgen.train.preview import edit_grid, grid
from deepgen.world import score

log = logging.getLogger(__name__)
EDIT_GRID_ROWS = 12  # two per edit kind


SETTINGS = ("per_category", "per_category_overrides", "steps", "guidance", "batch_size", "seed", "grid_size")


def evaluation_settings(params: dict) -> dict:
    """The settings that decide what an evaluation measures, from `params:evaluation`: the evaluation and the
    promotion gate (which re-scores a champion with them) read them through this one function."""
    return {k: params.get(k) for k in SETTINGS}


def evaluation_hash(heldout_urls: list[str], settings: dict) -> str:
    """Content hash of an evaluation: held-out data, settings (prompts, seeds, steps), the scorer's source and the OCR
    engine that reads `text_word` (deepgen.ocr's engine id, e.g. rapidocr-3.10.0). Two models' scores are comparable
    only under the same hash; it is a tag on every registered version."""
    scorers = (score, shapes, ocr_module, eval_reward, *eval_reward.reward_modules())
    scorer = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in scorers)
                            + ocr_module.engine_id().encode()).hexdigest()
    return hashlib.sha256(json.dumps({"data": heldout_urls, "scorer": scorer, **settings},
                                     sort_keys=True).encode()).hexdigest()[:16]


def evaluate_checkpoint(state: str, checkpoint_uri: str, heldout_urls: list[str], settings: dict,
                        cache_dir: str, tracking: dict | None = None, ocr=None) -> dict[str, float]:
    """settings: per_category, per_category_overrides, steps, guidance, batch_size, seed, grid_size."""
    scores, grids = score_checkpoint(state, checkpoint_uri, heldout_urls, settings, cache_dir, ocr)
    log_evaluation(state, scores, grids, tracking)
    return scores


def score_checkpoint(state: str, checkpoint_uri: str, heldout_urls: list[str], settings: dict, cache_dir: str,
                     ocr=None, device: str = "cpu") -> tuple[dict[str, float], dict[str, Image.Image]]:
    """(scores, sample grids by artifact file) of one state, nothing logged: generated and scored, or the cached
    scores (and no grids) when this checkpoint was evaluated with these settings before. Runs anywhere the cache
    and checkpoint are reachable (a Ray task beside other states' evaluations; deepgen.eval.suites.shapes)."""
    cache_uri = _cache_uri(state, checkpoint_uri, heldout_urls, settings, cache_dir)
    if storage.exists(cache_uri):
        log.info("evaluation %s: cached scores reused (%s)", state, cache_uri)
        return json.loads(storage.read_bytes(cache_uri)), {}
    model = load_model(checkpoint_uri, device)
    samples = evaluation_samples(heldout_urls, settings, model.cfg.image_size)
    images = generate_all(model, samples, settings.get("batch_size", 32), settings.get("seed", 0),
                          settings.get("steps"), settings.get("guidance"), desc=f"evaluate {state}")
    scores = score_all(images, samples, ocr=ocr or ocr_module.read_text)
    rewards = eval_reward.sample_rewards(images, samples)
    scores.update(eval_reward.mean_reward(rewards))
    storage.write_bytes(_rewards_uri(cache_uri), json.dumps(rewards).encode())
    grids = _grids(state, samples, images, settings.get("grid_size", 24))
    storage.write_bytes(cache_uri, json.dumps(scores, indent=2, sort_keys=True).encode())
    return scores, grids


def log_evaluation(state: str, scores: dict[str, float], grids: dict, tracking: dict | None) -> None:
    for artifact_file, image in grids.items():
        mlflow_log.log_image(tracking, image, artifact_file)
    mlflow_log.log_metrics(tracking, {f"eval/{state}/{k}": v for k, v in scores.items()}, step=0)
    log.info("evaluation %s: %s", state, {k: round(v, 3) for k, v in scores.items() if "." not in k})


def is_cached(state: str, checkpoint_uri: str, heldout_urls: list[str], settings: dict, cache_dir: str) -> bool:
    return storage.exists(_cache_uri(state, checkpoint_uri, heldout_urls, settings, cache_dir))


def sample_rewards(state: str, checkpoint_uri: str, heldout_urls: list[str], settings: dict,
                   cache_dir: str) -> list[float | None]:
    """Per evaluated sample, the reward mix an evaluation of `state` scored (pairs with another state's: same prompts
    and seeds, in the same order)."""
    return json.loads(storage.read_bytes(_rewards_uri(_cache_uri(state, checkpoint_uri, heldout_urls, settings,
                                                                 cache_dir))))


def _cache_uri(state: str, checkpoint_uri: str, heldout_urls: list[str], settings: dict, cache_dir: str) -> str:
    key = hashlib.sha256(f"{checkpoint_uri}\n{evaluation_hash(heldout_urls, settings)}".encode()).hexdigest()[:16]
    return storage.join(cache_dir, f"{state}-{key}.json")


def _rewards_uri(cache_uri: str) -> str:
    return cache_uri[: -len(".json")] + ".rewards.json"


def evaluate_baselines(checkpoint_uri: str, heldout_urls: list[str], settings: dict, tracking: dict | None = None,
                       ocr=None) -> dict[str, dict[str, float]]:
    """The scorer on the evaluation's own prompts with no model (no generation: seconds), so a state's scores read
    against what doing nothing and being perfect score: `baseline_source` returns every edit's source unchanged (what
    ignoring the instruction scores; text-to-image has no source), `baseline_target` the ground-truth target (the
    scorer's ceiling). `checkpoint_uri`: a checkpoint of the evaluated model, whose image size the prompts render at."""
    config = json.loads(storage.read_bytes(storage.join(checkpoint_uri, "config.json")))
    samples = [s for s in evaluation_samples(heldout_urls, settings, config["model"]["image_size"])
               if s.get("image") is not None]
    edits = [s for s in samples if s.get("source_image") is not None]
    ocr = ocr or ocr_module.read_text
    baselines = {"baseline_source": score_all([s["source_image"] for s in edits], edits, ocr=ocr),
                 "baseline_target": score_all([s["image"] for s in samples], samples, ocr=ocr)}
    for name, scores in baselines.items():
        mlflow_log.log_metrics(tracking, {f"eval/{name}/{k}": v for k, v in scores.items()}, step=0)
        log.info("evaluation %s: %s", name, {k: round(v, 3) for k, v in scores.items() if "." not in k})
    return baselines


def evaluation_samples(heldout_urls: list[str], settings: dict, image_size: int) -> list[dict]:
    """The evaluation's prompts: the same for every state and the baselines (image_size changes only the renders).
    Held-out samples without a scene spec (photos from a folder source) have nothing to grade them against: the
    ShapesWorld probe prompts stand in for them."""
    scored = [s for s in read_samples(heldout_urls) if s.get("spec") is not None]
    return with_topup(scored, settings["per_category"],
                      settings.get("per_category_overrides"), image_size, settings.get("seed", 0))


def _grids(state: str, samples: list[dict], images: list, size: int) -> dict:
    """`<state>_samples.png`: images with their prompts; `<state>_edits.png`: source | instruction | result rows."""
    shown = grid_picks(samples, size)
    grids = {f"evaluation/{state}_samples.png": grid([images[i] for i in shown],
                                                     [samples[i]["caption"] for i in shown])}
    edits = [i for i, s in enumerate(samples) if s.get("source_image") is not None]
    rows = [edits[j] for j in grid_picks([samples[i] for i in edits], EDIT_GRID_ROWS)]
    if rows:
        grids[f"evaluation/{state}_edits.png"] = edit_grid([samples[i]["source_image"] for i in rows],
                                                           [samples[i]["caption"] for i in rows],
                                                           [images[i] for i in rows])
    return grids


def grid_picks(samples: list[dict], n: int) -> list[int]:
    """Round-robin over categories, so the grid shows every kind of prompt."""
    by_category: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_category.setdefault(s["category"], []).append(i)
    picks, round_ = [], 0
    while len(picks) < n and any(round_ < len(v) for v in by_category.values()):
        picks += [v[round_] for v in by_category.values() if round_ < len(v)][: n - len(picks)]
        round_ += 1
    return picks
