"""`deepgen registry list | show NAME[@ALIAS|/VERSION] | promote NAME VERSION --reason TEXT | rollback NAME --reason
TEXT`: what is registered, what a version is made of, and the champion moved by hand with its history kept.

The tracking URI is `--tracking-uri`, else $MLFLOW_TRACKING_URI, else the project's `tracking.uri` in
conf/base/parameters.yml under the current folder (its data_root default filled in, as `kedro run` would). Every
failure a user can cause ends in one line on stderr and exit status 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from deepgen.cli import report_error

CONF = Path("conf") / "base" / "parameters.yml"
_DATA_ROOT = re.compile(r"\$\{runtime_params:data_root,\s*([^}]*)\}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the "
                                               f"project's {CONF} tracking.uri)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", parents=[common], help="registered models, their champion and challenger")
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", parents=[common], help="a model's versions and champion history, or one version")
    show.add_argument("target", metavar="NAME[@ALIAS|/VERSION]")
    show.add_argument("--json", action="store_true")
    promote = sub.add_parser("promote", parents=[common], help="make a version champion by hand (no gate)")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", required=True)
    rollback = sub.add_parser("rollback", parents=[common], help="move champion back to the previous champion")
    rollback.add_argument("name")
    rollback.add_argument("--reason", required=True)


def run(args: argparse.Namespace) -> int:
    import logging

    for name in ("mlflow", "alembic"):  # their INFO lines (e.g. opening a store) are not for this command's user
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri(args.tracking_uri))
        print(ACTIONS[args.action](args))
        return 0
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - a user command: one clear line, the traceback only with --debug
        return report_error(f"registry {args.action}", err, args.debug)


def tracking_uri(given: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the project's conf. A SQLite store must already exist (MLflow
    would silently create an empty one, and every model would then be "unknown")."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI") or _conf_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            raise FileNotFoundError(f"no MLflow store at {path.resolve()} (run the pipeline first, or give "
                                    f"--tracking-uri)")
        return f"sqlite:///{path.resolve()}"
    return uri


def _conf_uri() -> str:
    import yaml

    if not CONF.is_file():
        raise FileNotFoundError(f"no tracking URI: give --tracking-uri, set MLFLOW_TRACKING_URI, or run from the "
                                f"project root ({CONF} not found in {Path.cwd()})")
    uri = str((yaml.safe_load(CONF.read_text()) or {}).get("tracking", {}).get("uri") or "")
    uri = _DATA_ROOT.sub(lambda m: m.group(1).strip(), uri)
    if not uri or "${" in uri:
        raise ValueError(f"{CONF}: tracking.uri {uri!r} cannot be read without Kedro; give --tracking-uri")
    return uri


def _list(args) -> str:
    from mlflow.tracking import MlflowClient

    models = []
    for model in MlflowClient().search_registered_models():
        aliases = {alias: int(v) for alias, v in (model.aliases or {}).items()}
        models.append({"name": model.name, "aliases": aliases, "versions": len(_versions(model.name))})
    if args.json:
        return json.dumps(models, indent=2)
    if not models:
        return "no registered models"
    return "\n".join(f"{m['name']}  versions {m['versions']}  " + "  ".join(f"{a} v{v}" for a, v in
                                                                        sorted(m["aliases"].items()))
                     for m in models)


def _show(args) -> str:
    from mlflow.tracking import MlflowClient

    from deepgen.registry.champion import history, require_model, require_version

    client = MlflowClient()
    match = re.fullmatch(r"([^@/]+)(?:@([^@/]+)|/(\d+))?", args.target)
    if not match:
        raise ValueError(f"cannot read {args.target!r}: expected NAME, NAME@ALIAS or NAME/VERSION")
    name, alias, number = match.groups()
    model = require_model(client, name)
    if alias is None and number is None:
        versions = [{"version": int(v.version), "aliases": list(v.aliases or []), "stage": v.tags.get("stage"),
                     "decision": v.tags.get("promotion.decision"), "data_version": v.tags.get("data_version"),
                     "eval.overall": v.tags.get("eval.overall"), "eval.hash": v.tags.get("eval.hash")}
                    for v in _versions(name)]
        entries = history(client, name)
        if args.json:
            return json.dumps({"name": name, "versions": versions, "history": entries}, indent=2)
        lines = [f"{name}  " + "  ".join(f"{a} v{v}" for a, v in sorted((model.aliases or {}).items())), "versions:"]
        lines += [f"  v{v['version']}  {v['decision'] or '-'}  stage {v['stage'] or '-'}  overall "
                  f"{v['eval.overall'] or '-'}  data {v['data_version'] or '-'}  eval {v['eval.hash'] or '-'}"
                  for v in versions]
        lines.append("champion history:" if entries else "champion history: none")
        lines += [f"  {e['time']}  v{e['version']}  {e['action']} by {e['user']}: {e['reason']}" for e in entries]
        return "\n".join(lines)
    if alias is not None:
        version = _alias(client, name, alias)
    else:
        version = require_version(client, name, int(number))
    info = {"name": name, "version": int(version.version), "aliases": list(version.aliases or []),
            "run_id": version.run_id, "created": version.creation_timestamp, "tags": dict(sorted(version.tags.items()))}
    if args.json:
        return json.dumps(info, indent=2)
    lines = [f"{name} v{info['version']}  aliases: {', '.join(info['aliases']) or '-'}  run {info['run_id']}"]
    lines += [f"  {key}: {value}" for key, value in info["tags"].items()]
    return "\n".join(lines)


def _promote(args) -> str:
    from deepgen.registry.champion import set_champion

    replaced = set_champion(args.name, args.version, args.reason)
    if replaced is None:
        return f"{args.name}: v{args.version} is champion ({args.reason})"
    return f"{args.name}: champion v{replaced} -> v{args.version} ({args.reason})"


def _rollback(args) -> str:
    from deepgen.registry.champion import rollback

    old, new = rollback(args.name, args.reason)
    return f"{args.name}: champion rolled back from {f'v{old}' if old else 'none'} to v{new} ({args.reason})"


def _alias(client, name: str, alias: str):
    from deepgen.registry.champion import RegistryError, alias_version

    version = alias_version(client, name, alias)
    if version is None:
        raise RegistryError(f"{name} has no alias {alias!r}")
    return version


def _versions(name: str) -> list:
    from mlflow.tracking import MlflowClient

    return sorted(MlflowClient().search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


ACTIONS = {"list": _list, "show": _show, "promote": _promote, "rollback": _rollback}
