"""The MLflow model registry: log a checkpoint as a pyfunc model, register it per preset, move aliases by a gate.

A registered version carries its evaluation scores as tags (`eval.<category>`), so the promotion gate compares a
candidate with the current champion without re-running anything. `load_model` accepts a local folder, an s3://
prefix or a `models:/name@alias` URI: users, the evaluation and the CLI all load through it.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from deepgen import storage

log = logging.getLogger(__name__)
CHECKPOINT_ARTIFACT = "checkpoint"


class DeepGenPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc face of a checkpoint: a DataFrame with `prompt` (and optional `seed`) -> PNGs as base64 strings."""

    def load_context(self, context) -> None:
        from deepgen.model.checkpoint import load_checkpoint

        self.model = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        seed = int(params.get("seed", 0))
        images = self.model.generate(list(model_input["prompt"]), seed=seed, steps=params.get("steps"),
                                     guidance=params.get("guidance"))
        encoded = []
        for image in images:
            out = io.BytesIO()
            image.save(out, format="PNG")
            encoded.append(base64.b64encode(out.getvalue()).decode())
        return pd.DataFrame({"prompt": list(model_input["prompt"]), "png_base64": encoded})


def load_model(uri: str, device: str = "cpu"):
    """A DeepGen model from a local checkpoint folder, an s3:// checkpoint prefix, or models:/name@alias."""
    from deepgen.model.checkpoint import load_checkpoint

    if uri.startswith("models:/"):
        return load_checkpoint(registered_checkpoint(uri), device)
    if storage.is_s3(uri):
        local = Path(tempfile.mkdtemp(prefix="deepgen-ckpt-"))
        return load_checkpoint(storage.download_dir(uri, local), device)
    if not Path(uri).exists():
        raise FileNotFoundError(f"model not found: {uri} (expected a checkpoint folder, s3:// prefix or "
                                f"models:/name@alias)")
    return load_checkpoint(uri, device)


def registered_checkpoint(uri: str) -> str:
    """Local folder of a registered model's checkpoint. The model's MLmodel file names the artifact's path (it keeps
    the logged folder's own name), so it is read rather than guessed; nothing is unpickled."""
    import yaml

    base = uri.rstrip("/")
    spec = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(f"{base}/MLmodel")).read_text())
    entry = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {}).get(CHECKPOINT_ARTIFACT)
    if not entry or not entry.get("path"):
        raise ValueError(f"{uri} is not a deepgen model (its MLmodel has no {CHECKPOINT_ARTIFACT!r} artifact)")
    return mlflow.artifacts.download_artifacts(f"{base}/{entry['path']}")


def register(checkpoint_uri: str, name: str, scores: dict[str, float], data_version: str) -> dict:
    """Log the checkpoint as a pyfunc model in the active run and register it; reuse the version already made from
    the same checkpoint (a re-run registers nothing new)."""
    client = MlflowClient()
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.tags.get("checkpoint_uri") == checkpoint_uri:
            log.info("registry: %s version %s already holds %s", name, version.version, checkpoint_uri)
            return {"name": name, "version": int(version.version)}
    with tempfile.TemporaryDirectory() as tmp:
        local = storage.download_dir(checkpoint_uri, Path(tmp) / "checkpoint")
        from mlflow.models import infer_signature

        signature = infer_signature(pd.DataFrame({"prompt": ["a red circle"]}),
                                    pd.DataFrame({"prompt": ["a red circle"], "png_base64": ["..."]}),
                                    params={"seed": 0, "steps": 20, "guidance": 3.5})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=DeepGenPyfunc(), artifacts={CHECKPOINT_ARTIFACT: str(local)},
            signature=signature, registered_model_name=name, pip_requirements=_requirements(),
        )
    version = int(info.registered_model_version)
    tags = {"checkpoint_uri": checkpoint_uri, "data_version": data_version,
            **{f"eval.{k}": f"{v:.6f}" for k, v in scores.items()}}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    return {"name": name, "version": version}


@dataclass
class Gate:
    """Promotion rule: every threshold met, and `metric` beats the champion's by more than `min_improvement`."""

    metric: str = "overall"
    min_improvement: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)


def promote(name: str, version: int, scores: dict[str, float], gate: Gate) -> dict:
    """Alias `champion` when the gate passes (or there is no champion yet), else `challenger`; reasons as tags."""
    client = MlflowClient()
    failed = [f"{k} {scores.get(k, float('nan')):.3f} < {v}" for k, v in gate.thresholds.items()
              if not scores.get(k, float("-inf")) >= v]
    champion = _alias_version(client, name, "champion")
    candidate = scores.get(gate.metric, float("nan"))
    if champion is not None and int(champion.version) == version:
        alias, reason = "champion", "this version is already the champion"
    elif failed:
        alias, reason = "challenger", f"thresholds not met: {'; '.join(failed)}"
    elif champion is None:
        alias, reason = "champion", f"no champion yet; {gate.metric}={candidate:.3f}"
    else:
        best = float(champion.tags.get(f"eval.{gate.metric}", "nan"))
        if candidate > best + gate.min_improvement:
            alias, reason = "champion", (f"{gate.metric} {candidate:.3f} beats champion v{champion.version} "
                                         f"({best:.3f}) by more than {gate.min_improvement}")
        else:
            alias, reason = "challenger", (f"{gate.metric} {candidate:.3f} does not beat champion "
                                           f"v{champion.version} ({best:.3f}) by more than {gate.min_improvement}")
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), "promotion.decision", alias)
    client.set_model_version_tag(name, str(version), "promotion.reason", reason)
    log.info("promotion: %s v%s -> %s (%s)", name, version, alias, reason)
    return {"name": name, "version": version, "alias": alias, "reason": reason}


def _alias_version(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "diffusers", "peft", "safetensors")]
