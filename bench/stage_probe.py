"""Train one stage from a given checkpoint with changed settings and print its held-out curve: how the tuned numbers
in conf/base/parameters_training.yml were measured (issue: editing and composition).

    python bench/stage_probe.py --stage sft --init data/06_models/runs/alignment-.../checkpoint_.../model \
        --shards data/05_model_input/shards/<version>/train --set steps=300 --set keep='{"*": 1.0}' \
        --heldout '{"single_object": 36, "edit_recolor": 16, "two_objects": 16}' --every 100

Each `--set key=value` replaces one key of the stage's block (value as YAML). The run goes under Ray Train with the
stage's own workers, exactly as in the pipeline, into --runs (default /tmp/stage_probe_runs), without MLflow.
"""

from __future__ import annotations

import argparse
import glob
import json
import time

import yaml

from deepgen.eval.shapes import with_topup
from deepgen.train.config import StageConfig
from deepgen.train.launch import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--init", required=True, help="the parent checkpoint folder (.../model)")
    parser.add_argument("--shards", required=True, help="folder of train-*.tar shards")
    parser.add_argument("--set", action="append", default=[], help="key=value (YAML) on the stage's block")
    parser.add_argument("--heldout", default='{"single_object": 36, "two_objects": 32, "color_attr": 32, '
                        '"edit_recolor": 16, "edit_move": 16, "edit_remove": 16, "edit_add": 16, '
                        '"edit_replace": 16, "edit_background": 16}')
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--conf", default="conf/base/parameters_training.yml")
    parser.add_argument("--runs", default="/tmp/stage_probe_runs")
    args = parser.parse_args()
    block = yaml.safe_load(open(args.conf))[args.stage]
    for item in args.set:
        key, value = item.split("=", 1)
        block[key] = yaml.safe_load(value)
    block.update(heldout_every=args.every, heldout=json.loads(args.heldout))
    stage = StageConfig.from_dict(args.stage, block)
    checks = with_topup([], 0, stage.heldout, 64, seed=1)
    urls = sorted(glob.glob(f"{args.shards}/*.tar"))
    tic = time.time()
    record = run_stage(stage, {"checkpoint": args.init}, {"train": urls}, f"probe:{args.shards}", args.runs,
                       heldout=checks)
    print(json.dumps({"settings": args.set, "seconds": round(time.time() - tic), "checkpoint": record["checkpoint_uri"]}))


if __name__ == "__main__":
    main()
