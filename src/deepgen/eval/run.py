"""Evaluate checkpoints on the held-out shards: scores per category, logged to MLflow with a sample grid.

Results are cached beside the evaluation parameters (keyed by checkpoint URI, settings and the scorer's source), so
re-running the pipeline with nothing changed does not regenerate every image, and a changed scorer does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from deepgen import storage
from deepgen import tracking as mlflow_log
from deepgen.data.shards import read_samples
from deepgen.eval.shapes import generate_all, score_all, with_topup
from deepgen.registry import load_model
from deepgen.train.preview import grid
from deepgen.world import score

log = logging.getLogger(__name__)


def evaluate_checkpoint(state: str, checkpoint_uri: str, heldout_urls: list[str], settings: dict,
                        cache_dir: str, tracking: dict | None = None, ocr=None) -> dict[str, float]:
    """settings: per_category, per_category_overrides, steps, guidance, batch_size, seed, grid_size."""
    scorer = hashlib.sha256(Path(score.__file__).read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps({"ckpt": checkpoint_uri, "data": heldout_urls, "scorer": scorer, **settings},
                                    sort_keys=True).encode()).hexdigest()[:16]
    cache_uri = storage.join(cache_dir, f"{state}-{key}.json")
    if storage.exists(cache_uri):
        scores = json.loads(storage.read_bytes(cache_uri))
        log.info("evaluation %s: cached scores reused (%s)", state, cache_uri)
    else:
        model = load_model(checkpoint_uri)
        samples = with_topup(list(read_samples(heldout_urls)), settings["per_category"],
                             settings.get("per_category_overrides"), model.cfg.image_size, settings.get("seed", 0))
        images = generate_all(model, samples, settings.get("batch_size", 32), settings.get("seed", 0),
                              settings.get("steps"), settings.get("guidance"), desc=f"evaluate {state}")
        scores = score_all(images, samples, ocr=ocr)
        shown = _grid_picks(samples, settings.get("grid_size", 24))
        mlflow_log.log_image(tracking, grid([images[i] for i in shown], [samples[i]["caption"] for i in shown]),
                             f"evaluation/{state}_samples.png")
        storage.write_bytes(cache_uri, json.dumps(scores, indent=2, sort_keys=True).encode())
    mlflow_log.log_metrics(tracking, {f"eval/{state}/{k}": v for k, v in scores.items()}, step=0)
    log.info("evaluation %s: %s", state, {k: round(v, 3) for k, v in scores.items()})
    return scores


def _grid_picks(samples: list[dict], n: int) -> list[int]:
    """Round-robin over categories, so the grid shows every kind of prompt."""
    by_category: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_category.setdefault(s["category"], []).append(i)
    picks, round_ = [], 0
    while len(picks) < n and any(round_ < len(v) for v in by_category.values()):
        picks += [v[round_] for v in by_category.values() if round_ < len(v)][: n - len(picks)]
        round_ += 1
    return picks
