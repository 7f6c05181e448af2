"""Pretrained weights from local folders or s3:// prefixes, with errors that say what is wrong.

One loader serves the real folders (a Qwen2.5-VL-3B-Instruct folder; an SD3.5 / UniPic2 folder with transformer/,
vae/ and scheduler/) and the tiny models the tests save with `save_pretrained`, so the path users take is the path
the tests run. Nothing is ever downloaded from a hub (`local_files_only`); an s3:// prefix is copied once into a
cache folder (DEEPGEN_CACHE, default ~/.cache/deepgen) and reused.

Checks, each a one-line error: the folder (or sub-folder) is missing; it holds another architecture than the one
asked for; keys are missing, unexpected or of the wrong shape; its config disagrees with the model config.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from deepgen import storage

log = logging.getLogger(__name__)

# Keys a base model legitimately drops from a task checkpoint (the LM head of Qwen2_5_VLForConditionalGeneration).
_IGNORED_UNEXPECTED = ("lm_head.",)


class WeightsError(ValueError):
    """A pretrained folder or checkpoint that does not fit the model: the message names the folder and the keys."""


def cache_root() -> Path:
    return Path(os.environ.get("DEEPGEN_CACHE") or Path.home() / ".cache" / "deepgen")


def resolve(path_or_s3: str | Path, what: str = "weights") -> Path:
    """A local folder for `path_or_s3`; s3:// prefixes are downloaded once into the cache (atomically renamed)."""
    uri = str(path_or_s3)
    if not storage.is_s3(uri):
        path = Path(uri).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{what}: folder not found: {uri}")
        return path
    bucket_key = uri[len("s3://"):].strip("/")
    local = cache_root() / "s3" / bucket_key
    if (local / ".complete").is_file():
        return local
    files = list(storage.list_files(uri))
    if not files:
        raise FileNotFoundError(f"{what}: nothing stored under {uri}")
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=local.parent))
    storage.download_dir(uri, tmp)
    (tmp / ".complete").write_text(uri)
    if local.exists():  # a concurrent download finished first, or a stale partial copy
        shutil.rmtree(local, ignore_errors=True)
    os.replace(tmp, local)
    return local


def absolute_pretrained(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Model overrides with each local `pretrained` folder as an absolute path (s3:// prefixes as they are): Ray
    workers on other nodes and checkpoints that reference their pretrained folders must not depend on the directory
    a run was started from."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (overrides or {}).items()}
    for part in out.values():
        if isinstance(part, dict) and part.get("pretrained"):
            part["pretrained"] = storage.absolute(str(part["pretrained"]))
    return out


def read_config(folder: Path, name: str = "config.json") -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"no {name} in {folder}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path} is not valid JSON: {err}") from None


def load_pretrained(cls, path_or_s3: str | Path, component: str, subfolder: str | None = None, **kwargs):
    """`cls.from_pretrained` on a local or s3:// folder, offline and strict.

    `cls` is a transformers or diffusers model class; `component` names the part in errors ("vlm", "dit", "vae").
    Extra keyword arguments (e.g. torch_dtype) go to `from_pretrained`.
    """
    root = resolve(path_or_s3, component)
    folder = root / subfolder if subfolder else root
    if not folder.is_dir():
        raise FileNotFoundError(f"{component}: {path_or_s3} has no {subfolder}/ folder (expected an SD3.5-style "
                                f"folder with transformer/, vae/ and scheduler/)")
    try:
        config = read_config(folder)
    except FileNotFoundError:
        raise FileNotFoundError(f"{component}: no config.json in {folder}: not a saved model folder") from None
    _check_architecture(cls, config, folder, component)
    model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(k for k in info.get("unexpected_keys") or [] if not k.startswith(_IGNORED_UNEXPECTED))
    mismatched = [str(m) for m in info.get("mismatched_keys") or []]
    if missing or unexpected or mismatched:
        raise WeightsError(f"{component}: weights in {folder} do not fit {cls.__name__}: "
                           + _few("missing", missing) + _few("unexpected", unexpected) + _few("mismatched", mismatched))
    return model


def scheduler_settings(path_or_s3: str | Path) -> dict[str, Any] | None:
    """shift / num_train_timesteps from an SD3.5-style folder's scheduler/, or None when it has none."""
    folder = resolve(path_or_s3, "scheduler") / "scheduler"
    if not (folder / "scheduler_config.json").is_file():
        return None
    config = read_config(folder, "scheduler_config.json")
    if config.get("use_dynamic_shifting"):
        log.warning("scheduler in %s uses dynamic shifting; deepgen samples with the fixed flow.shift", folder)
    return {"shift": float(config.get("shift", 1.0)),
            "num_train_timesteps": int(config.get("num_train_timesteps", 1000))}


def check_config(component: str, found: dict[str, Any], expected: dict[str, Any], source: str) -> None:
    """Fail when a loaded model's config disagrees with the model config on an architectural field."""
    diffs = [f"{k}: folder has {found.get(k)!r}, config says {v!r}" for k, v in expected.items()
             if _norm(found.get(k)) != _norm(v)]
    if diffs:
        raise WeightsError(f"{component}: {source} is a different architecture than the model config "
                           f"({'; '.join(diffs[:4])}); fix the config or point at the right folder")


def _check_architecture(cls, config: dict[str, Any], folder: Path, component: str) -> None:
    """transformers folders carry `model_type`, diffusers folders `_class_name`; both must match `cls`."""
    config_class = getattr(cls, "config_class", None)
    expected_type = getattr(config_class, "model_type", None)
    if expected_type:
        found = config.get("model_type")
        if found != expected_type:
            what = found or config.get("_class_name") or "unknown"
            raise WeightsError(f"{component}: {folder} holds a {what!r} model, expected {expected_type!r} "
                               f"({cls.__name__})")
        return
    found = config.get("_class_name")
    if found != cls.__name__:
        what = found or config.get("model_type") or "unknown"
        raise WeightsError(f"{component}: {folder} holds a {what!r} model, expected {cls.__name__}")


def _few(label: str, keys: list[str], n: int = 5) -> str:
    if not keys:
        return ""
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return f"{label} {keys[:n]}{more}; "


def _norm(value):
    return list(value) if isinstance(value, tuple) else value
