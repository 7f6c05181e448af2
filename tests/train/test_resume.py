"""Launching a stage as a user does. A stage killed mid-run (driver, Ray and workers at once, as a lost laptop session
or node does) resumes from its latest checkpoint when launched again with the same config: same run name, same
storage folder. Two launches of one config train the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from deepgen.train.config import StageConfig
from deepgen.train.launch import RECORD_FILE, run_name
from sessions import kill_session, registered_checkpoints

STAGE = {"objective": "flow", "trainable": ["scb", "dit"], "steps": 60, "batch_size": 2, "log_every": 5,
         "checkpoint_every": 4, "optim": {"lr": 1e-3}}
INIT = {"preset": "tiny", "seed": 0}
LAUNCH = """
import json, sys
from deepgen.train.config import StageConfig
from deepgen.train.launch import run_stage
stage, init, urls, runs = json.loads(sys.argv[1])
print(json.dumps(run_stage(StageConfig.from_dict("alignment", stage), init, {"train": urls}, "v-test", runs)))
"""


def launch(args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", LAUNCH, args], env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_killed_stage_resumes_from_its_latest_checkpoint(small_shards, tmp_path):
    record, _, _ = small_shards
    runs = tmp_path / "runs"
    args = json.dumps([STAGE, INIT, record["train_urls"], str(runs)])
    folder = runs / run_name(StageConfig.from_dict("alignment", STAGE), INIT, "v-test")

    first = launch(args)
    deadline = time.time() + 300
    # Ray resumes from the checkpoints its controller has registered: it takes reports when it polls the workers
    # (every 2 s), so a kill right after a folder is written restarts from scratch (seen in CI). Kill once the
    # controller's snapshot lists a checkpoint.
    while not registered_checkpoints(str(folder)):
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline, "no registered checkpoint within 300 s"
        time.sleep(0.2)
    kill_session(first.pid)  # the driver, Ray and its workers share the driver's session
    first.wait()
    saved = max(json.loads(p.read_text())["step"] for p in folder.glob("checkpoint_*/state.json"))
    assert not (folder / RECORD_FILE).exists() and saved < STAGE["steps"]

    second = launch(args)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    result = json.loads((folder / RECORD_FILE).read_text())
    assert result["metrics"]["step"] == STAGE["steps"]
    # the newest folder may not be registered yet: the run resumes from a saved step, never from scratch
    resumed = result["metrics"]["resumed_from"]
    assert 0 < resumed <= saved and resumed % STAGE["checkpoint_every"] == 0, (resumed, saved, output[-3000:])
    assert Path(result["checkpoint_uri"], "config.json").is_file()


def test_same_stage_config_gives_the_same_weights(small_shards, tmp_path):
    """Seeded data stream and torch generator per rank: two launches of one config train bit-identical weights."""
    from safetensors.torch import load_file

    record, _, _ = small_shards
    stage = {**STAGE, "steps": 6, "checkpoint_every": 6}
    weights = []
    for name in ("a", "b"):
        proc = launch(json.dumps([stage, INIT, record["train_urls"], str(tmp_path / name)]))
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]
        folder = tmp_path / name / run_name(StageConfig.from_dict("alignment", stage), INIT, "v-test")
        result = json.loads((folder / RECORD_FILE).read_text())
        weights.append({f"{f.name}/{k}": v for f in sorted(Path(result["checkpoint_uri"]).glob("*.safetensors"))
                        for k, v in load_file(f).items()})
    assert weights[0] and weights[0].keys() == weights[1].keys()
    changed = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert not changed, changed[:5]


def test_a_rank_resumes_with_the_same_batches_and_noise(small_shards, tmp_path):
    """In one process, as rank 1 of 2: a flow objective trains 3 steps and its rank state is saved as a checkpoint
    saves it; a fresh objective on those weights, restored from the file, trains the next 3 steps to the very losses
    and weights of the objective that went on (same samples, same noise, timesteps and caption dropout)."""
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen
    from deepgen.train import rank_state
    from deepgen.train.freeze import apply_schedule
    from deepgen.train.objectives import ObjectiveContext, build_objective

    record, _, _ = small_shards
    stage = StageConfig.from_dict("alignment", {**STAGE, "batch_size": 3,
                                                "keep": {"single_object": 1.0, "t2i": 0.5, "*": 0.2}})

    def build(weights=None):
        torch.manual_seed(0)
        model = DeepGen(preset("tiny"))
        apply_schedule(model, stage)
        if weights is not None:
            model.load_state_dict(weights)
        objective = build_objective(model, stage, ObjectiveContext(data={"train": record["train_urls"]}, seed=1,
                                                                   rank=1, world_size=2))
        return objective, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)

    def train(objective, opt, stream, steps):
        losses = []
        for _ in range(steps):
            loss, _ = objective(next(stream))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    first, opt = build()
    stream = first.batches()
    train(first, opt, stream, 3)
    rank_state.save(tmp_path, 1, rank_state.capture(first, world_size=2))
    weights = {k: v.clone() for k, v in first.model.state_dict().items()}
    expected = train(first, opt, stream, 3)

    torch.manual_seed(123)  # whatever the generators were, the saved state replaces them
    second, opt = build(weights)
    state = rank_state.load(tmp_path, 1, world_size=2)
    second.load_data_state(state["data"])
    resumed_stream = second.batches()
    rank_state.restore_generators(state)
    assert train(second, opt, resumed_stream, 3) == expected
    final = second.model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in first.model.state_dict().items())
