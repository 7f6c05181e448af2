"""Registered versions: log a checkpoint as a pyfunc model (from code: registry/pyfunc_code.py), register it with
what made it, and load it back.

A version carries its evaluation scores (`eval.<key>`) and the evaluation's content hash (`eval.hash`), so the gate
compares it with a later candidate without re-running anything when the hashes agree, and its provenance (`git.*`,
`package.*`, `data_version`), so it can be rebuilt. `load_model` accepts a local folder, an s3:// prefix or a
`models:/name@alias` URI: users, the evaluation and the CLI all load through it.
"""

from __future__ import annotations

import base64
import io
import logging
import subprocess
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from deepgen import storage
from deepgen.registry.gate import flatten

log = logging.getLogger(__name__)
CHECKPOINT_ARTIFACT = "checkpoint"
SCORE_PREFIX = "eval."
EVAL_META = {"eval.hash", "eval.rescored_at"}  # `eval.` tags that are not scores
PACKAGES = ("torch", "transformers", "diffusers", "peft", "mlflow", "ray", "deepgen")


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


def load_model(uri: str, device: str = "cpu", tracking_uri: str | None = None):
    """A DeepGen model from a local checkpoint folder, an s3:// checkpoint prefix, or models:/name@alias (resolved
    in `tracking_uri`'s registry, default MLflow's current one)."""
    from deepgen.model.checkpoint import load_checkpoint

    if uri.startswith("models:/"):
        return load_checkpoint(registered_checkpoint(uri, tracking_uri), device)
    if storage.is_s3(uri):  # fetched into DEEPGEN_CACHE, reused while the prefix's listing is unchanged
        return load_checkpoint(uri, device)
    if not Path(uri).exists():
        raise FileNotFoundError(f"model not found: {uri} (expected a checkpoint folder, s3:// prefix or "
                                f"models:/name@alias)")
    return load_checkpoint(uri, device)


def registered_checkpoint(uri: str, tracking_uri: str | None = None) -> str:
    """Local folder of a registered model's checkpoint (`models:/name@alias` or `models:/name/version`). The model's
    MLmodel file names the artifact's path (it keeps the logged folder's own name), so it is read rather than
    guessed; nothing is unpickled. `tracking_uri` names the store without touching MLflow's global URI (MLflow's own
    models:/ resolver reads only the global one), so library callers leave it as they found it."""
    import yaml

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name, sep, ref = uri.removeprefix("models:/").rstrip("/").partition("/")
    if sep:
        version = client.get_model_version(name, ref)
    elif "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    base = client.get_model_version_download_uri(version.name, version.version).rstrip("/")

    def download(path: str) -> str:
        return mlflow.artifacts.download_artifacts(f"{base}/{path}", tracking_uri=tracking_uri)

    spec = yaml.safe_load(Path(download("MLmodel")).read_text())
    entry = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {}).get(CHECKPOINT_ARTIFACT)
    if not entry or not entry.get("path"):
        raise ValueError(f"{uri} is not a deepgen model (its MLmodel has no {CHECKPOINT_ARTIFACT!r} artifact)")
    return download(entry["path"])


def version_checkpoint(version) -> str:
    """Where a registered version's weights can be read: the checkpoint it was registered from while that still
    exists (a stable URI, so evaluation caches hit), else the registry's own copy."""
    source = version.tags.get("checkpoint_uri")
    if source and storage.exists(storage.join(source, "config.json")):
        return source
    return registered_checkpoint(f"models:/{version.name}/{version.version}")


def register(checkpoint_uri: str, name: str, scores: dict, data_version: str, eval_hash: str | None = None,
             tags: dict[str, str] | None = None) -> dict:
    """Log the checkpoint as a pyfunc model in the active run and register it; reuse the version already made from
    the same checkpoint (a re-run registers nothing new, but its scores follow the latest evaluation)."""
    client = MlflowClient()
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.tags.get("checkpoint_uri") == checkpoint_uri:
            log.info("registry: %s version %s already holds %s", name, version.version, checkpoint_uri)
            set_scores(client, name, int(version.version), scores, eval_hash, version.tags)
            return {"name": name, "version": int(version.version)}
    with tempfile.TemporaryDirectory() as tmp:
        from deepgen.model.export import export_checkpoint

        # a lean stage checkpoint reads its frozen parts from its bases: the registry keeps a complete copy
        local = export_checkpoint(checkpoint_uri, Path(tmp) / "checkpoint")
        from mlflow.models import infer_signature

        signature = infer_signature(pd.DataFrame({"prompt": ["a red circle"]}),
                                    pd.DataFrame({"prompt": ["a red circle"], "png_base64": ["..."]}),
                                    params={"seed": 0, "steps": 20, "guidance": 3.5})
        with warnings.catch_warnings():  # an input example would make MLflow generate an image to validate it
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(Path(__file__).with_name("pyfunc_code.py")),
                artifacts={CHECKPOINT_ARTIFACT: str(local)}, signature=signature, registered_model_name=name,
                pip_requirements=_requirements(),
            )
    version = int(info.registered_model_version)
    for key, value in {"checkpoint_uri": checkpoint_uri, "data_version": data_version, **provenance(),
                       **(tags or {})}.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    set_scores(client, name, version, scores, eval_hash, {})
    return {"name": name, "version": version}


def scores_of(tags: dict[str, str]) -> dict[str, float]:
    """A version's scores, read back from its `eval.<key>` tags."""
    return {k[len(SCORE_PREFIX):]: float(v) for k, v in tags.items()
            if k.startswith(SCORE_PREFIX) and k not in EVAL_META}


def set_scores(client: MlflowClient, name: str, version: int, scores: dict, eval_hash: str | None,
               current: dict[str, str]) -> None:
    """Replace a version's score tags (and `eval.hash`) by `scores`; only changed tags are written, and tags of
    scores the evaluation no longer reports are deleted, so a version never shows numbers from two evaluations."""
    wanted = {f"{SCORE_PREFIX}{k}": _fmt(v) for k, v in flatten(scores).items()}
    if eval_hash:
        wanted["eval.hash"] = eval_hash
    for key in current:
        if key.startswith(SCORE_PREFIX) and key not in wanted and key not in EVAL_META:
            client.delete_model_version_tag(name, str(version), key)
    for key, value in wanted.items():
        if current.get(key) != value:
            client.set_model_version_tag(name, str(version), key, value)


def provenance() -> dict[str, str]:
    """What a version was built from: the git commit of this code (`unknown` outside a checkout; `git.dirty` says
    whether uncommitted edits were present) and the versions of the packages that shape the weights."""
    from importlib.metadata import PackageNotFoundError, version

    tags = dict(zip(("git.commit", "git.dirty"), _git_state()))
    for package in PACKAGES:
        try:
            tags[f"package.{package}"] = version(package)
        except PackageNotFoundError:
            tags[f"package.{package}"] = "absent"
    return tags


def _git_state() -> tuple[str, str]:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, str(bool(dirty)).lower()


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6f}"


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "diffusers", "peft", "safetensors")]
