"""A training worker killed in the middle of a stage, after a checkpoint: Ray Train restarts the workers from the
latest checkpoint (FailureConfig max_failures 1), and the stage ends with the weights of a run that was never
interrupted. The proof that resume is exact: model, optimizer, each rank's data position and random generators."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deepgen.train import throughput
from deepgen.train.config import StageConfig
from deepgen.train.launch import RECORD_FILE, run_name
from sessions import kill_session, session_processes

STAGE = {"objective": "flow", "trainable": ["scb", "dit"], "steps": 32, "batch_size": 2, "log_every": 8,
         "checkpoint_every": 4, "optim": {"lr": 1e-3}, "scaling": {"max_failures": 1}}
INIT = {"preset": "tiny", "seed": 0}
KILL_AFTER = 12  # the kill comes once this step's checkpoint is written (20 steps before the end)
LAUNCH = """
import json, sys
from deepgen.train.config import StageConfig
from deepgen.train.launch import run_stage
stage, init, urls, folders = json.loads(sys.argv[1])
for folder in folders:  # one after the other, on one local Ray
    print(json.dumps(run_stage(StageConfig.from_dict("alignment", stage), init, {"train": urls}, "v-test", folder)))
"""


def checkpoint_steps(folder: Path) -> list[int]:
    steps = []
    for state in folder.glob("checkpoint_*/state.json"):
        try:
            if (state.parent / "rank1.data.pt").is_file():
                steps.append(json.loads(state.read_text())["step"])
        except (OSError, ValueError):  # being written or rotated away
            continue
    return steps


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    record = json.loads((folder / RECORD_FILE).read_text())
    return {f"{f.name}/{k}": v for f in sorted(Path(record["checkpoint_uri"]).glob("*.safetensors"))
            for k, v in load_file(f).items()}


@pytest.mark.timeout(1200)  # ~2 min on idle cores; 8 min measured with the machine's load at 40
def test_a_killed_worker_resumes_to_the_weights_of_an_uninterrupted_run(small_shards, tmp_path):
    record, _, _ = small_shards
    name = run_name(StageConfig.from_dict("alignment", STAGE), INIT, "v-test")
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = json.dumps([STAGE, INIT, record["train_urls"], [str(killed), str(whole)]])
    driver = subprocess.Popen([sys.executable, "-c", LAUNCH, args], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              start_new_session=True, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while max(checkpoint_steps(killed / name), default=0) < KILL_AFTER:
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        workers = session_processes(driver.pid, b"RayTrainWorker")
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        output, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            kill_session(driver.pid)
    assert driver.returncode == 0, output[-3000:]
    result = json.loads((killed / name / RECORD_FILE).read_text())
    # restarted from a checkpoint of the first attempt, not from scratch and not after the end
    assert 0 < result["metrics"]["resumed_from"] < STAGE["steps"], (result["metrics"], output[-3000:])
    assert json.loads((whole / name / RECORD_FILE).read_text())["metrics"]["resumed_from"] == 0
    assert result["metrics"]["image_sizes"] == [[64, 64]]
    # what computed it, for anyone comparing runs: torch and the kernels' instruction set (a worker's, not the driver's)
    assert result["platform"] == throughput.platform("cpu")
    assert torch.__version__ in result["platform"] and torch.backends.cpu.get_cpu_capability() in result["platform"]
    resumed, uninterrupted = final_weights(killed / name), final_weights(whole / name)
    assert resumed and resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():  # frozen-VAE latents are re-encoded after the restart: float rounding
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=key)
