"""Launch one training stage under Ray Train and return a small record (never a live model).

The run name is a hash of everything that determines the result (stage config, initial weights, data), so re-running
the same stage finds its own folder: a finished run is returned as it is (its record.json), an interrupted one is
resumed by Ray Train from its latest checkpoint, and a changed config trains anew beside it. Two runs of the same
stage at once take turns on a lock beside the folder (`<name>.lock`): the second reuses the first one's record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from deepgen import locks, storage
from deepgen.train.config import StageConfig

log = logging.getLogger(__name__)
RECORD_FILE = "record.json"
# We report only at checkpoints, so Ray Train's default 2 s health-check poll costs little; a faster poll (0.2 s)
# kept the controller busy and took CPU from the two workers on a 2-core machine.
# RAY_worker_niceness 0: Ray renices its workers by +15 (so that its daemons win under load), which leaves a training
# worker with 1/30 of the CPU share of any other process at normal priority on a shared machine; ours keep the
# driver's (bench/train.py --compare-niceness measures it).
RAY_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_worker_niceness": "0"}
# A local Ray (the laptop run) polls less: on two cores busy with training, every wake-up of Ray Train's helpers (the
# preemption watcher, the state actor's reconciliation, its metrics) stalls a training thread. bench/train.py on two
# idle cores, medians of 2 rounds: Ray 1x2 over the plain loop 1.29 -> 1.18 (CPU per sample 1.28 -> 1.16). A cluster
# (`ray.address` set) keeps Ray's defaults: there preemption notices and quick failure detection matter.
# The controller's health check stays at Ray's 2 s: it is also when the controller takes a worker's report, and a
# worker's next report waits for that (Ray's result queue holds one). At 10 s (1.14 in the bench above, within its
# noise) every checkpoint more frequent than that stalled training, and every stage's end waited up to 10 s.
# The dashboard's reporter agent scans every process with psutil, by default every 5 s: at 60 s its CPU during a
# tiny 1x2 stage fell from 0.44 to 0.10 s per 40 s (Ray's daemons and idle actors together: 12% of one core).
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
                 "RAY_TRAIN_METRICS_ENABLED": "0", "REPORTER_UPDATE_INTERVAL_MS": "60000"}


# Stage settings that observe a run without changing its weights: they never name it
OBSERVING = ("log_every", "heldout_every", "heldout", "note")


def run_name(stage: StageConfig, init: dict, data_version: str) -> str:
    settings = {k: v for k, v in dataclasses.asdict(stage).items() if k not in OBSERVING}
    settings["scaling"].pop("max_failures")  # restarts resume exactly: they do not change the result
    payload = json.dumps({"stage": settings, "init": init, "data": data_version}, sort_keys=True, default=str)
    return f"{stage.name}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def ensure_ray(address: str | None = None) -> None:
    """Connect to a cluster, or start a local Ray. The dashboard stays on (127.0.0.1): Ray Train's placement-group
    cleaner polls the state API it serves, and floods the log without it."""
    import ray

    env = RAY_ENV if address else {**RAY_ENV, **LOCAL_RAY_ENV}
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})  # Ray Train reads some in the driver
    if ray.is_initialized():
        return
    kwargs = {"address": address} if address else {"num_cpus": max(2, os.cpu_count() or 2)}
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True, runtime_env={"env_vars": env},
             logging_level=logging.WARNING, **kwargs)


def _storage(storage_uri: str):
    """Ray Train's (storage_path, filesystem): S3 goes through pyarrow with our endpoint and retry settings."""
    if not storage.is_s3(storage_uri):
        path = Path(storage_uri).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None
    from pyarrow import fs

    endpoint = os.environ.get("DEEPGEN_S3_ENDPOINT_URL")
    retry = fs.AwsStandardS3RetryStrategy(max_attempts=storage.max_attempts())
    filesystem = (fs.S3FileSystem(endpoint_override=endpoint, retry_strategy=retry) if endpoint
                  else fs.S3FileSystem(retry_strategy=retry))
    return storage_uri[len("s3://"):], filesystem


def run_stage(stage: StageConfig, init: dict, data: dict[str, list[str]], data_version: str, storage_uri: str,
              tracking: dict | None = None, preview_prompts: list[dict] | None = None,
              ray_address: str | None = None, heldout: list[dict] | None = None) -> dict:
    """Train `stage` from `init` ({"checkpoint": uri} or {"preset": name, "seed": n}) on `data` (stream name ->
    shard URLs: "train", and for RL "prompts"), the shards of `data_version` (the version, not the paths, names the
    run: moving the data folder retrains nothing)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from deepgen.train.loop import train_loop

    name = run_name(stage, init, data_version)
    path, filesystem = _storage(storage_uri)
    run_uri = storage.join(storage_uri if storage.is_s3(storage_uri) else path, name)
    record_uri = storage.join(run_uri, RECORD_FILE)
    if storage.exists(record_uri):
        log.info("stage %s: finished run %s found, reusing it", stage.name, name)
        return json.loads(storage.read_bytes(record_uri))
    # one trainer per run folder: a concurrent run of the same stage waits here, then reuses the finished record
    with locks.held(f"{run_uri}.lock", f"stage {stage.name} run {name}"):
        if storage.exists(record_uri):
            log.info("stage %s: run %s was finished by a concurrent run, reusing it", stage.name, name)
            return json.loads(storage.read_bytes(record_uri))
        log.info("stage %s: training run %s (%d steps, %d workers)", stage.name, name, stage.steps,
                 stage.scaling.num_workers)
        ensure_ray(ray_address)
        resources = {"CPU": stage.scaling.cpus_per_worker}
        if stage.scaling.use_gpu:
            resources["GPU"] = 1
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"stage": dataclasses.asdict(stage), "init": init, "data": data,
                               "tracking": tracking, "preview_prompts": preview_prompts,
                               "heldout": heldout},
            scaling_config=ScalingConfig(num_workers=stage.scaling.num_workers, use_gpu=stage.scaling.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(name=name, storage_path=path, storage_filesystem=filesystem,
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 failure_config=FailureConfig(max_failures=stage.scaling.max_failures)),
        )
        result = trainer.fit()
        checkpoint = result.checkpoint.path
        checkpoint_uri = f"s3://{checkpoint}" if storage.is_s3(storage_uri) else checkpoint
        metrics = dict(result.metrics or {})
        record = {"stage": stage.name, "run_name": name, "checkpoint_uri": storage.join(checkpoint_uri, "model"),
                  "metrics": metrics, "steps": stage.steps, "image_sizes": metrics.get("image_sizes", []),
                  "platform": metrics.get("platform", "")}
        storage.write_bytes(record_uri, json.dumps(record, indent=2, sort_keys=True).encode())
        return record
