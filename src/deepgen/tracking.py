"""MLflow helpers shared by the Kedro hook, the Ray workers and the evaluation: one tracking URI, one run per
`kedro run`, metrics batched per log step. Anything that looks like a secret never becomes a param."""

from __future__ import annotations

import re
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

_INVALID_KEY_CHARS = re.compile(r"[^\w\-./ ]")  # what MLflow accepts in param names
_SECRET = re.compile(r"(secret|password|token|credential|access_key|api_key)", re.IGNORECASE)


def resolve_uri(uri: str, root: str | Path = ".") -> str:
    """Relative SQLite paths become absolute (four slashes), so Ray workers in other folders hit the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = (Path(root) / uri[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def log_metrics(tracking: dict | None, metrics: dict[str, float], step: int) -> None:
    if not tracking or not tracking.get("run_id"):
        return
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    MlflowClient(tracking["uri"]).log_batch(tracking["run_id"], metrics=batch, synchronous=True)


def flat_params(prefix: str, data, out: dict[str, str] | None = None) -> dict[str, str]:
    """Nested config -> {"stage.optim.lr": "0.001"}; keys that look like secrets are dropped, not masked."""
    out = {} if out is None else out
    if isinstance(data, dict):
        for key, value in data.items():
            if _SECRET.search(str(key)):
                continue
            flat_params(f"{prefix}.{key}" if prefix else str(key), value, out)
    else:
        out[_INVALID_KEY_CHARS.sub("_", prefix)] = str(data)[:500]  # e.g. keep."*" -> keep._
    return out


def log_params(tracking: dict | None, params: dict[str, str]) -> None:
    if not tracking or not tracking.get("run_id"):
        return
    from mlflow.entities import Param

    client = MlflowClient(tracking["uri"])
    existing = client.get_run(tracking["run_id"]).data.params
    fresh = [Param(k, v) for k, v in params.items() if k not in existing]
    for i in range(0, len(fresh), 100):
        client.log_batch(tracking["run_id"], params=fresh[i:i + 100], synchronous=True)


def log_image(tracking: dict | None, image, artifact_file: str) -> None:
    if tracking and tracking.get("run_id"):
        MlflowClient(tracking["uri"]).log_image(tracking["run_id"], image, artifact_file=artifact_file)
