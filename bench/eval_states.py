"""ShapesBench over the default run's four states: one after another in one process (2 torch threads, how the
evaluation ran before) against side by side in Ray tasks (`suite_workers` of conf/base: 2 tasks of 1 thread), as
`deepgen.eval.suites.evaluate_states` runs them now. Same checkpoint under four state names, fresh caches; Ray starts
before the timing (the default run's training stages have started it already). Prints both times and the ratio.
Measured on two idle cores with --states 2 (520 images per state): 147.5 s against 130.8 s, ratio 0.89, same scores;
each task's generation ran at 83-90 s against 72 s for one thread alone (the two share the machine's memory and
caches), so the default run's four states save ~35 s of ~5 minutes.

    .venv/bin/python bench/eval_states.py [--checkpoint <folder>] [--states 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

from deepgen.eval.run import evaluate_checkpoint, evaluation_settings
from deepgen.eval.suites import SuiteContext, SuitePlan, evaluate_states
from deepgen.train.launch import ensure_ray
from eval_suites import fresh_tiny_checkpoint  # bench/ is on the path when a script here runs

CONF = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_evaluation.yml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: a fresh tiny model)")
    parser.add_argument("--states", type=int, default=4)
    args = parser.parse_args()
    conf = yaml.safe_load(CONF.read_text())
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    ensure_ray(None)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or fresh_tiny_checkpoint(Path(tmp))
        settings = evaluation_settings(conf["evaluation"])
        states = [f"state{i}" for i in range(args.states)]
        start = time.perf_counter()
        serial = {s: evaluate_checkpoint(s, checkpoint, [], settings, f"{tmp}/serial") for s in states}
        serial_s = time.perf_counter() - start
        plan = SuitePlan.from_params({"shapes": {}}, conf["suite_defaults"], conf["suite_workers"])
        start = time.perf_counter()
        parallel = evaluate_states(plan, {s: checkpoint for s in states}, SuiteContext([], settings, f"{tmp}/tasks"))
        parallel_s = time.perf_counter() - start
    same = all(serial[s]["overall"] == parallel[s]["overall"] for s in states)
    print(f"one after another (1 process, 2 threads): {serial_s:.1f} s for {args.states} states")
    print(f"side by side ({plan.workers.num_workers} Ray tasks of {plan.workers.torch_threads} thread): "
          f"{parallel_s:.1f} s; same scores: {same}")
    print(f"ratio side by side / one after another: {parallel_s / serial_s:.2f}")


if __name__ == "__main__":
    main()
