"""Train one stage from a given checkpoint with changed settings and print its held-out curve: how the tuned numbers
in conf/base/parameters_training.yml were measured (issue: editing and composition).

    python bench/stage_probe.py --stage sft --init data/06_models/runs/alignment-.../checkpoint_.../model \
        --shards data/05_model_input/shards/<version>/train --set steps=300 --set keep='{"*": 1.0}' \
        --heldout '{"single_object": 36, "edit_recolor": 16, "two_objects": 16}' --every 100

Each `--set key=value` replaces one key of the stage's block (value as YAML). The run goes under Ray Train with the
stage's own workers, exactly as in the pipeline, into --runs (default /tmp/stage_probe_runs), without MLflow.

Composition (README, issue 14), measured on 2026-12-05 from the alignment checkpoint of 97ac125's seed-0 run:

    python bench/stage_probe.py --stage sft --init <alignment checkpoint> --shards <its train shards> \
        --set steps=900 --set checkpoint_every=900 --every 150 \
        --set 'keep={two_objects: 1.0, color_attr: 1.0, counting: 0.5, single_object: 0.5, "*": 0.0}' \
        --heldout '{"single_object": 36, "two_objects": 32, "color_attr": 32}'

two_objects_found 0.25 / 0.50 / 0.52 / 0.42 / 0.53 / 0.55 / 0.59 at steps 0-900 by 150, color_attr_found 0.11 /
0.33 / 0.39 / 0.30 / 0.33 / 0.34 / 0.33, strict two_objects at most 0.06, single-object shape 0.47-0.72 (n=32-36);
5 min 19 s on two idle cores.
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
