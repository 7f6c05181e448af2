"""Ray Train's cost on a training stage, and the faster worker layout for the tiny preset on this machine.

The tiny alignment stage (`alignment:` in conf/base/parameters_training.yml, fewer steps), global batch 32, in three
(four) set-ups, each a fresh process (so no Ray runs beside the plain loop):
  plain   `deepgen.train.loop.train_loop` in one process with 2 torch threads; Ray Train's API is answered in-process
          (rank 0 of 1, nothing to resume, the model unwrapped as Ray leaves it for one worker, reports dropped);
  ray 1x2 `launch.run_stage` as the pipeline runs it: Ray Train, 1 worker of 2 threads (2 CPUs);
  ray 2x1 the same with 2 workers of 1 thread (DDP over gloo), 16 samples each: the tiny preset's default;
  ray 1x2 +15 (--compare-niceness) ray 1x2 with Ray's own worker niceness (+15) instead of the launcher's 0;
  LABEL   (--env-variant LABEL:K=V,...) ray 1x2 with those variables in its workers' environment (allocator,
          OpenMP, ... settings read at process start), its time per sample over the plain loop's printed per round.
samples/s come from the loop's own per-window MLflow metric (`alignment/step_s`, every `--log-every` steps) after the
first `--warmup` windows: process, Ray and worker start-up are not counted, per-step Ray costs (its threads, the
controller's polling, report handling, the OMP/thread environment) are. The set-ups alternate for `--rounds` rounds
(odd rounds in reverse, so plain and Ray 1x2 run next to each other). Beside samples/s, the CPU seconds per sample of
every process of the run (Ray's daemons and workers included, sampled with psutil over the same windows) and the
machine's steal time over those windows: this is a shared VM, whose speed changed by 1.4x between two runs a minute
apart here, and steal shows when the host took the cores. The machine drifts more slowly than a round lasts, so the
ratios are taken within each round, then their median: the last line is `overhead: X.XX`, the median over rounds of
Ray 1x2's wall time per sample over the plain loop's (target <= 1.10).

    .venv/bin/python bench/train.py [--steps 50] [--rounds 3] [--warmup 2] [--log-every 10] [--compare-niceness]
        [--env-variant arena1:MALLOC_ARENA_MAX=1 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 32
LAYOUTS = {"plain": (1, 2), "ray 1x2": (1, 2), "ray 2x1": (2, 1)}  # (workers, torch threads per worker)
NICE_15 = "ray 1x2 +15"  # --compare-niceness: Ray 1x2 with Ray's own worker niceness (+15) instead of ours (0)


def stage_block(workers: int, threads: int, steps: int, log_every: int) -> dict:
    block = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())["alignment"]
    return {**block, "steps": steps, "log_every": log_every, "batch_size": GLOBAL_BATCH // workers,
            "scaling": {"num_workers": workers, "cpus_per_worker": threads, "torch_threads": threads}}


# ------------------------------------------------------------------------------------------ child processes

def run_plain(spec: dict) -> None:
    """The loop in this process, Ray Train's calls answered here (what Ray does for a single worker on a CPU)."""
    import ray.train
    import ray.train.torch
    import torch

    from deepgen.train.config import StageConfig
    from deepgen.train.launch import RAY_ENV
    from deepgen.train.loop import train_loop

    os.environ.update(RAY_ENV)

    class SingleProcess:
        def get_world_rank(self) -> int:
            return 0

        def get_world_size(self) -> int:
            return 1

        def get_local_rank(self) -> int:
            return 0

    ray.train.get_context = SingleProcess
    ray.train.get_checkpoint = lambda: None
    ray.train.report = lambda metrics, checkpoint=None, **kwargs: None
    ray.train.torch.prepare_model = lambda model, **kwargs: model  # Ray wraps in DDP only for 2+ workers
    ray.train.torch.get_device = lambda: torch.device("cpu")
    stage = dataclasses.asdict(StageConfig.from_dict("alignment", spec["stage"]))  # as run_stage passes it
    train_loop({"stage": stage, "init": spec["init"], "data": {"train": spec["urls"]},
                "tracking": spec["tracking"], "preview_prompts": None})


def run_ray(spec: dict) -> None:
    from deepgen.train import launch
    from deepgen.train.config import StageConfig
    from deepgen.train.launch import run_stage

    launch.RAY_ENV = {**launch.RAY_ENV, **spec["env"]}
    if spec.get("ray_niceness"):  # Ray's default: workers reniced by +15
        launch.RAY_ENV = {k: v for k, v in launch.RAY_ENV.items() if k != "RAY_worker_niceness"}
        os.environ.pop("RAY_worker_niceness", None)

    run_stage(StageConfig.from_dict("alignment", spec["stage"]), spec["init"], {"train": spec["urls"]}, "bench",
              spec["runs"], tracking=spec["tracking"])


# ------------------------------------------------------------------------------------------------- driver

def curate_shards(folder: Path) -> list[str]:
    from deepgen.curation.curate import CurationParams, curate_shapes_world

    params = CurationParams(num_samples=800, seed=5, shard_max_count=64, workers=1, progress=False)
    return curate_shapes_world(params, str(folder))["train_urls"]


def measure(label: str, urls: list[str], tmp: Path, tracking_uri: str, args, index: int,
            worker_env: dict[str, str]) -> float:
    """One set-up in a fresh process; its samples/s after warm-up, from the loop's MLflow metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("bench-train") or client.get_experiment(
        client.create_experiment("bench-train"))
    run_id = client.create_run(experiment.experiment_id, run_name=f"{label}-{index}").info.run_id
    workers, threads = LAYOUTS.get(label, LAYOUTS["ray 1x2"])
    spec = {"stage": stage_block(workers, threads, args.steps, args.log_every), "init": {"preset": "tiny", "seed": 0},
            "urls": urls, "tracking": {"uri": tracking_uri, "run_id": run_id}, "runs": str(tmp / f"runs-{index}"),
            "ray_niceness": label == NICE_15, "env": worker_env}
    mode = "plain" if label == "plain" else "ray"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.time()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--child", mode, json.dumps(spec)], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        cpu = cpu_trace(proc)
        if proc.returncode:
            log.seek(0)
            sys.exit(f"bench/train.py: the {label} run failed (exit {proc.returncode}):\n{log.read()[-3000:]}")
    history = sorted(client.get_metric_history(run_id, "alignment/step_s"), key=lambda m: m.step)
    if len(history) <= args.warmup:
        sys.exit(f"bench/train.py: {label} logged {len(history)} windows, need more than --warmup {args.warmup}")
    measured = [m.value for m in history[args.warmup:]]
    rate = GLOBAL_BATCH / statistics.mean(measured)  # equal windows: total samples over total time
    # CPU seconds of every process of the run (Ray's daemons and workers included) between the warm-up's last
    # window and the last window, per sample: what the run costs the machine, whatever else runs on it
    samples = GLOBAL_BATCH * args.log_every * len(measured)
    first, last = history[args.warmup - 1].timestamp / 1000, history[-1].timestamp / 1000
    cpu_ms = 1000 * (at(cpu, last, 1) - at(cpu, first, 1)) / samples
    steal = (at(cpu, last, 2) - at(cpu, first, 2)) / ((last - first) * (os.cpu_count() or 1))
    print(f"  {label:<11} {rate:7.1f} samples/s  {cpu_ms:6.1f} CPU ms/sample  steal {100 * steal:4.1f}%  "
          f"({len(measured)} windows of {args.log_every} steps; {time.time() - started:.0f} s with start-up)",
          flush=True)
    print("    samples/s per window: " + " ".join(f"{GLOBAL_BATCH / m.value:.0f}" for m in history), flush=True)
    return rate, cpu_ms


def cpu_trace(proc: subprocess.Popen, every: float = 1.0) -> list[tuple[float, float, float]]:
    """(time, CPU seconds so far of `proc` and all its descendants, the machine's steal seconds so far), sampled until
    it exits. A process that exits keeps its last sample's share (Ray's daemons and workers live until the run
    ends). Every second: a Ray run has ~25 processes to read, and the figures are interpolated at window ends anyway
    (at 0.25 s and 3 s, one round each, the overhead printed 1.18 and 1.12: within the bench's noise)."""
    import psutil

    root, seen, trace = psutil.Process(proc.pid), {}, []
    while proc.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in family:
            try:
                times = p.cpu_times()
                seen[(p.pid, p.create_time())] = times.user + times.system
            except psutil.Error:
                pass
        trace.append((time.time(), sum(seen.values()), psutil.cpu_times().steal))
        time.sleep(every)
    proc.wait()
    return trace


def at(trace: list[tuple[float, ...]], when: float, column: int) -> float:
    """A trace's column at `when`, interpolated between samples (the nearest end outside them)."""
    if not trace:
        return 0.0
    for before, after in zip(trace, trace[1:]):
        if before[0] <= when <= after[0]:
            share = (when - before[0]) / max(after[0] - before[0], 1e-9)
            return before[column] + (after[column] - before[column]) * share
    return trace[-1][column] if when > trace[-1][0] else trace[0][column]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="windows skipped at the start of each run")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--compare-niceness", action="store_true",
                        help=f"also run '{NICE_15}': Ray's default worker niceness against ours")
    parser.add_argument("--env-variant", action="append", default=[], metavar="LABEL:K=V,...",
                        help="also run Ray 1x2 with these environment variables in its workers")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"plain": run_plain, "ray": run_ray}[args.child[0]](json.loads(args.child[1]))
        return
    if args.warmup < 1:
        sys.exit("bench/train.py: --warmup must be at least 1 (the first window holds the loop's start-up)")
    if args.steps % args.log_every:
        sys.exit(f"bench/train.py: --steps {args.steps} must be a multiple of --log-every {args.log_every}")
    variants = {}
    for variant in args.env_variant:
        label, _, assignments = variant.partition(":")
        if not label or label in LAYOUTS or label == NICE_15 or "=" not in assignments:
            sys.exit(f"bench/train.py: --env-variant {variant!r}: expected NEW_LABEL:NAME=VALUE,...")
        variants[label] = dict(item.split("=", 1) for item in assignments.split(","))
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        urls = curate_shards(tmp / "shards")
        tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
        print(f"tiny alignment, global batch {GLOBAL_BATCH}, {args.steps} steps per run, first {args.warmup} "
              f"windows of {args.log_every} skipped; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        setups = list(LAYOUTS) + ([NICE_15] if args.compare_niceness else []) + list(variants)
        rates: dict[str, list[float]] = {label: [] for label in setups}
        cpu: dict[str, list[float]] = {label: [] for label in setups}
        index = 0
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", flush=True)
            order = setups if round_ % 2 == 0 else list(reversed(setups))
            for label in order:
                rate, cpu_ms = measure(label, urls, tmp, tracking_uri, args, index, variants.get(label, {}))
                rates[label].append(rate)
                cpu[label].append(cpu_ms)
                index += 1
    median = {label: statistics.median(values) for label, values in rates.items()}
    cpu_median = {label: statistics.median(values) for label, values in cpu.items()}
    per_round = [rates["plain"][i] / rates["ray 1x2"][i] for i in range(args.rounds)]
    print("medians: " + ", ".join(f"{label} {value:.1f}" for label, value in median.items()) + " samples/s; "
          + ", ".join(f"{label} {value:.1f}" for label, value in cpu_median.items()) + " CPU ms/sample")
    print(f"CPU per sample, Ray 1x2 over plain: {cpu_median['ray 1x2'] / cpu_median['plain']:.2f} (all the run's "
          f"processes)")
    layout = median["ray 2x1"] / median["ray 1x2"]
    faster = "2 workers x 1 thread" if layout > 1 else "1 worker x 2 threads"
    print(f"layout: 2 workers x 1 thread / 1 worker x 2 threads, samples/s ratio {layout:.2f} ({faster} faster; "
          f"per round {', '.join(f'{b / a:.2f}' for a, b in zip(rates['ray 1x2'], rates['ray 2x1']))})")
    if args.compare_niceness:
        print(f"Ray 1x2 with Ray's worker niceness (+15) over ours (0), time per sample: "
              f"{median['ray 1x2'] / median[NICE_15]:.2f} (per round "
              f"{', '.join(f'{a / b:.2f}' for a, b in zip(rates['ray 1x2'], rates[NICE_15]))}; equal on idle cores)")
    for label in variants:
        ratios = [p / r for p, r in zip(rates["plain"], rates[label])]
        print(f"{label} (Ray 1x2, {', '.join(f'{k}={v}' for k, v in variants[label].items())}): time per sample over "
              f"the plain loop's per round {', '.join(f'{r:.2f}' for r in ratios)}, median {statistics.median(ratios):.2f}")
    print(f"Ray 1x2 time per sample over the plain loop's, per round: {', '.join(f'{r:.2f}' for r in per_round)} "
          f"(target <= 1.10; the ratio of the medians above: {median['plain'] / median['ray 1x2']:.2f})")
    print(f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs make single rounds "
          "differ by 2x and more; compare rounds)")
    print(f"overhead: {statistics.median(per_round):.2f}")


if __name__ == "__main__":
    main()
