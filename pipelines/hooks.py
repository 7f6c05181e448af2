"""One MLflow run per `kedro run`: opened before the first node, closed (FINISHED or FAILED) after the last.

Nodes and the Ray workers they launch log into this run through `tracking()` ({"uri", "run_id"}). Parameters are
logged flattened, with anything named like a secret left out. S3 credentials from conf/<env>/credentials.yml are
exported to the environment boto3 reads, and the MLflow user and password (`mlflow:` `username`, `password`) to
the one MLflow clients read (Ray workers inherit both); neither is ever logged.
"""

from __future__ import annotations

import contextlib
import logging
import os

import mlflow
from kedro.framework.hooks import hook_impl

from deepgen import locks
from deepgen.tracking import flat_params, flush, resolve_uri

log = logging.getLogger(__name__)
S3_ENV = {"aws_access_key_id": "AWS_ACCESS_KEY_ID", "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
          "region_name": "AWS_REGION", "endpoint_url": "DEEPGEN_S3_ENDPOINT_URL"}
MLFLOW_ENV = {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}  # basic auth


def tracking() -> dict:
    """The active run as a plain dict that can cross into Ray workers."""
    run = mlflow.active_run()
    return {"uri": mlflow.get_tracking_uri(), "run_id": run.info.run_id if run else None}


class MlflowRunHook:
    def __init__(self):
        self._params: dict = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        self._params = context.params
        credentials = context.config_loader.get("credentials") or {}
        for section, names in (("s3", S3_ENV), ("mlflow", MLFLOW_ENV)):
            for key, env in names.items():
                value = (credentials.get(section) or {}).get(key)
                if value:
                    os.environ[env] = str(value)
        settings = self._params.get("tracking")
        if not settings:
            raise ValueError("parameters: missing 'tracking' (uri, experiment, artifact_root)")
        uri = resolve_uri(settings["uri"])
        mlflow.set_tracking_uri(uri)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        # two `kedro run`s started together on one SQLite file must not both create its tables or the experiment
        database = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
        with locks.held(f"{database}.lock", "MLflow set-up") if database else contextlib.nullcontext():
            if mlflow.get_experiment_by_name(settings["experiment"]) is None:
                root = settings.get("artifact_root")
                location = None if not root or "://" in root else os.path.abspath(root)
                mlflow.create_experiment(settings["experiment"],
                                         artifact_location=f"file://{location}" if location else root)
            mlflow.set_experiment(settings["experiment"])

    @hook_impl
    def before_pipeline_run(self, run_params: dict) -> None:
        name = run_params.get("pipeline_names") or ["__default__"]
        mlflow.start_run(run_name=f"kedro-{'+'.join(name)}-{run_params.get('run_id')}")
        mlflow.set_tags({"kedro.session_id": str(run_params.get("run_id")),
                         "kedro.pipelines": ",".join(name), "kedro.env": str(run_params.get("env"))})
        params = list(flat_params("", {k: v for k, v in self._params.items() if k != "tracking"}).items())
        for start in range(0, len(params), 100):
            mlflow.log_params(dict(params[start:start + 100]))
        log.info("MLflow run %s at %s", mlflow.active_run().info.run_id, mlflow.get_tracking_uri())

    @hook_impl
    def after_pipeline_run(self) -> None:
        flush(tracking())  # what the nodes in this process held through an outage (it warns if any is lost)
        mlflow.end_run("FINISHED")

    @hook_impl
    def on_pipeline_error(self) -> None:
        mlflow.end_run("FAILED")


class InputsHook:
    """A pipeline run alone (`kedro run --pipelines sft`) before the runs that write its inputs fails in one line, before
    any MLflow run opens: the missing input of the earliest pipeline, and that pipeline. Kedro's own error is a
    traceback of some 270 lines ending in a file's path."""

    @hook_impl
    def before_pipeline_run(self, pipeline, catalog) -> None:
        from kedro.framework.project import pipelines

        missing = [name for name in sorted(pipeline.inputs())
                   if name != "parameters" and not name.startswith("params:") and not catalog.exists(name)]
        if not missing:
            return
        stages = [name for name in pipelines if name not in ("__default__", "retrain")]  # in the default run's order
        writers = {output: name for name in stages for output in pipelines[name].all_outputs()}
        first = min(missing, key=lambda name: stages.index(writers[name]) if name in writers else -1)
        writer = f"the {writers[first]} pipeline writes it" if first in writers else "no pipeline writes it"
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SystemExit(f"kedro run: input {first!r}{more} does not exist yet; {writer}: run that first, or the "
                         "default `kedro run`, which runs every pipeline in order")
