"""Who is champion and how it got there: the gate's promotion, manual moves, history and rollback.

MLflow keeps no alias history, so every move of `champion` appends {version, time (UTC), reason, user, action,
previous} to the registered model's `champion.history` tag (a JSON list) and rollback walks it back. The replaced
version's `promotion.*` tags are rewritten in the same move, so no version claims to be champion when it is not.

A move is a read-modify-write of the alias, the history and two versions' tags. For a local store (sqlite:/// or a
folder) an exclusive file lock beside it serialises moves across threads and processes; after writing, the alias is
read back and must name the version just set (on a shared server, which no file lock reaches, that catches a
concurrent move).
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from deepgen import locks
from deepgen.registry.gate import Gate, decide
from deepgen.registry.load import scores_of, set_scores

log = logging.getLogger(__name__)
HISTORY_TAG = "champion.history"
HISTORY_LIMIT = 5000  # characters: MLflow's SQL column for a registered model's tag value is String(5000)


class RegistryError(ValueError):
    """A registry request that cannot be done as asked (unknown model or version, nothing to roll back to)."""


def promote(name: str, version: int, scores: dict, gate: Gate, eval_hash: str | None = None,
            rescore: Callable | None = None) -> dict:
    """Alias `champion` when the gate passes (or there is no champion yet), else `challenger`; the decision, the
    reason and each failed key are tags of the version. A champion scored under another `eval_hash` is first
    re-scored by `rescore(champion_version) -> scores` and its tags updated, so both sides share one evaluation."""
    client = MlflowClient()
    with registry_lock():
        champion = alias_version(client, name, "champion")
        if champion is not None and int(champion.version) == version:
            return {"name": name, "version": version, "alias": "champion", "compared_with": None, "failed": [],
                    "reason": "this version is already the champion"}
        champion_scores, label = None, ""
        if champion is not None:
            champion_scores, label = scores_of(champion.tags), f"vs champion v{champion.version}"
            if eval_hash and champion.tags.get("eval.hash") != eval_hash:
                if rescore is None:
                    raise RegistryError(f"{name} v{champion.version} was scored under evaluation "
                                        f"{champion.tags.get('eval.hash', 'unknown')}, not {eval_hash}, and no "
                                        f"re-scoring was given")
                log.info("promotion: re-scoring champion v%s under evaluation %s", champion.version, eval_hash)
                champion_scores = rescore(champion)
                set_scores(client, name, int(champion.version), champion_scores, eval_hash, champion.tags)
                client.set_model_version_tag(name, champion.version, "eval.rescored_at", _now())
                label += f" (re-scored under evaluation {eval_hash})"
        decision = decide(gate, scores, champion_scores)
        reason = f"{label}: {decision.reason}" if label else decision.reason
        _clear_failed(client, name, version)
        for key, why in decision.failed.items():
            client.set_model_version_tag(name, str(version), f"promotion.failed.{key}", why)
        if decision.promote:
            _move(client, name, version, reason, "promote")
            alias = "champion"
        else:
            alias = "challenger"
            client.set_registered_model_alias(name, alias, str(version))
            _tag(client, name, version, {"promotion.decision": alias, "promotion.reason": reason,
                                         "promotion.time": _now(), "promotion.user": user()})
    log.info("promotion: %s v%s -> %s (%s)", name, version, alias, reason)
    return {"name": name, "version": version, "alias": alias, "reason": reason, "failed": sorted(decision.failed),
            "compared_with": int(champion.version) if champion is not None else None}


def set_champion(name: str, version: int, reason: str) -> int | None:
    """Make `version` champion by hand (no gate); returns the replaced champion's version (None if none, or if
    `version` already was champion)."""
    client = MlflowClient()
    with registry_lock():
        require_version(client, name, version)
        return _move(client, name, version, reason, "promote")


def rollback(name: str, reason: str) -> tuple[int, int]:
    """Move `champion` back to the champion before the current one; returns (from, to)."""
    client = MlflowClient()
    with registry_lock():
        require_model(client, name)
        chain = champion_chain(history(client, name))
        current = alias_version(client, name, "champion")
        current_version = int(current.version) if current is not None else None
        if chain and chain[-1] == current_version:
            chain = chain[:-1]
        if not chain:
            raise RegistryError(f"{name}: no earlier champion to roll back to "
                                f"(current: {f'v{current_version}' if current_version else 'none'})")
        target = chain[-1]
        require_version(client, name, target)
        _move(client, name, target, reason, "rollback")
    return current_version, target


def history(client: MlflowClient, name: str) -> list[dict]:
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    return json.loads(raw) if raw else []


def champion_chain(entries: list[dict]) -> list[int]:
    """The stack of champions the history leaves: a promotion pushes, a rollback pops back to its target."""
    chain: list[int] = []
    for entry in entries:
        if entry["action"] == "rollback" and chain:
            chain.pop()
        if not chain or chain[-1] != entry["version"]:
            chain.append(entry["version"])
    return chain


def alias_version(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def require_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        raise RegistryError(f"unknown registered model {name!r}") from None


def require_version(client: MlflowClient, name: str, version: int):
    require_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException:
        raise RegistryError(f"{name} has no version {version}") from None


def user() -> str:
    """Who moved the alias: DEEPGEN_USER (set it in schedulers and CI), else the login name."""
    try:
        return os.environ.get("DEEPGEN_USER") or getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def registry_lock():
    """Exclusive lock on the local tracking store (see the module docstring); a no-op for servers."""
    path = _lock_path(mlflow.get_tracking_uri())
    return contextlib.nullcontext() if path is None else locks.held(str(path), "registry: moving an alias")


def _lock_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(f"{uri[len('sqlite:///'):]}.registry.lock")
    folder = Path(uri[len("file://"):] if uri.startswith("file://") else uri.removeprefix("file:"))
    if uri.startswith("file:") or ("://" not in uri and folder.is_dir()):
        return folder / ".registry.lock"
    return None


def _move(client: MlflowClient, name: str, version: int, reason: str, action: str) -> int | None:
    """Alias, history and both versions' tags; the caller holds the lock. Returns the replaced version."""
    previous = alias_version(client, name, "champion")
    if previous is not None and int(previous.version) == version:
        return None
    when, who = _now(), user()
    client.set_registered_model_alias(name, "champion", str(version))
    challenger = alias_version(client, name, "challenger")
    if challenger is not None and int(challenger.version) == version:
        client.delete_registered_model_alias(name, "challenger")
    entry = {"version": version, "time": when, "reason": reason[:300], "user": who, "action": action,
             "previous": int(previous.version) if previous is not None else None}
    entries = history(client, name) + [entry]
    while len(json.dumps(entries)) > HISTORY_LIMIT and len(entries) > 1:
        entries.pop(0)  # the oldest moves go first; rollback reaches as far back as the tag holds
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(entries))
    _clear_failed(client, name, version)  # a gate verdict from before this move no longer describes the champion
    _tag(client, name, version, {"promotion.decision": "champion", "promotion.reason": reason,
                                 "promotion.time": when, "promotion.user": who})
    if previous is not None:
        verb = "rolled_back" if action == "rollback" else "replaced"
        _tag(client, name, int(previous.version), {"promotion.decision": verb, "promotion.replaced_by": f"v{version}",
                                                   "promotion.replaced_at": when, "promotion.replaced_reason": reason})
    now_champion = alias_version(client, name, "champion")
    if now_champion is None or int(now_champion.version) != version:
        raise RegistryError(f"{name}: champion moved concurrently (now "
                            f"v{now_champion.version if now_champion else '-'}, expected v{version}); look at "
                            f"`deepgen registry show {name}` and retry")
    return int(previous.version) if previous is not None else None


def _clear_failed(client: MlflowClient, name: str, version: int) -> None:
    for key in client.get_model_version(name, str(version)).tags:
        if key.startswith("promotion.failed."):
            client.delete_model_version_tag(name, str(version), key)


def _tag(client: MlflowClient, name: str, version: int, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
