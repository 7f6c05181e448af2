"""A stage on S3 storage, started from a parent checkpoint on S3, killed mid-run and launched again: it resumes from
its latest lean checkpoint (the bridge only, its base the parent by URI and hash) and its final checkpoint loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from deepgen import storage
from deepgen.model.checkpoint import load_checkpoint, save_checkpoint
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.train.config import StageConfig
from deepgen.train.launch import RECORD_FILE, run_name
from sessions import kill_session, registered_checkpoints

STAGE = {"objective": "flow", "trainable": ["scb"], "steps": 40, "batch_size": 2, "log_every": 5,
         "checkpoint_every": 4, "optim": {"lr": 1e-3}, "scaling": {"num_workers": 1}}
LAUNCH = """
import json, sys
from deepgen.train.config import StageConfig
from deepgen.train.launch import run_stage
stage, init, urls, runs = json.loads(sys.argv[1])
print(json.dumps(run_stage(StageConfig.from_dict("alignment", stage), init, {"train": urls}, "v-test", runs)))
"""


def launch(args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LAUNCH, args], env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_killed_stage_resumes_from_a_lean_checkpoint_on_s3(small_shards, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPGEN_CACHE", str(tmp_path / "cache"))  # s3 checkpoints are fetched into it
    record, _, _ = small_shards
    torch.manual_seed(0)
    parent = f"{s3}/parents/vae"
    storage.upload_dir(save_checkpoint(DeepGen(preset("tiny")), tmp_path / "vae"), parent)
    init = {"checkpoint": parent}
    runs = f"{s3}/runs"
    run_uri = storage.join(runs, run_name(StageConfig.from_dict("alignment", STAGE), init, "v-test"))
    args = json.dumps([STAGE, init, record["train_urls"], runs])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def saved_steps() -> list[int]:
        return [json.loads(storage.read_bytes(uri))["step"] for uri in storage.list_files(run_uri)
                if uri.endswith("/state.json") and "/checkpoint_" in uri]

    first = launch(args, env)
    deadline = time.time() + 300
    # two state.json files on S3 were not enough: CI once resumed from 0 with steps 4, 8 saved
    while not registered_checkpoints(run_uri):
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.5)
    kill_session(first.pid)  # the driver, Ray and its workers: see sessions.py
    first.wait()
    saved = max(saved_steps())
    assert not storage.exists(storage.join(run_uri, RECORD_FILE)) and saved < STAGE["steps"]

    second = launch(args, env)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    result = json.loads(storage.read_bytes(storage.join(run_uri, RECORD_FILE)))
    resumed = result["metrics"]["resumed_from"]
    assert 0 < resumed <= saved and resumed % STAGE["checkpoint_every"] == 0, (resumed, saved, output[-3000:])

    checkpoint = result["checkpoint_uri"]
    assert checkpoint.startswith(f"{s3}/runs/")
    config = json.loads(storage.read_bytes(storage.join(checkpoint, "config.json")))
    assert config["stored"] == {"vlm": "none", "scb": "all", "dit": "none", "vae": "none"}
    assert config["base"]["uri"] == parent and config["step"] == STAGE["steps"]
    names = {uri.rsplit("/", 1)[-1] for uri in storage.list_files(checkpoint)}
    assert "scb.safetensors" in names and not names & {"vlm.safetensors", "dit.safetensors", "vae.safetensors"}
    model, start = load_checkpoint(checkpoint), load_checkpoint(parent)
    assert torch.equal(model.dit.proj_out.weight, start.dit.proj_out.weight)  # frozen: read from the parent
    assert not torch.equal(model.scb.think_tokens, start.scb.think_tokens)  # trained: its own
