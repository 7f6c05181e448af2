"""FSDP2 against DDP on two CPU Ray workers (gloo), through the real launcher and loop: the tiny preset trains 20
steps under each strategy with the same per-step losses, the FSDP2 run stopped right after its step-10 checkpoint
(as a preempted job is) and launched again, so that its steps 11-20 come from its sharded checkpoint; the trained
parameters are sharded (each rank's torch.distributed.checkpoint chunk, which is its DTensor local shard, is half the
full parameter, and Ray Train put both ranks' files into one checkpoint folder); the model folder rank 0 writes from
the gathered state is the model DDP trained, its EMA weights too.

The stage trains every part FSDP2 wraps differently: the bridge (its connector layer a unit, the rest in the root's
group), the DiT (in the root's group, run once per reference layout in a batch) and the VLM as LoRA (its layers as
units, frozen base weights ignored, layers above the deepest tap without gradients or AdamW state), with two
micro-batches per step, an EMA, and activation checkpointing on the FSDP2 side only (recomputation must not change a
number).

Measured here (one run, 2 busy cores): FSDP2's losses within 1.0e-7 (relative) of DDP's; a fourth run, FSDP2
uninterrupted, matched the stopped-and-resumed one to 7e-8, 17 of 20 steps bit for bit (the rest: the frozen VAE's
latent cache is refilled after the restart). The tolerances below leave 10-100x room for other CPUs' rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepgen.train.config import StageConfig
from deepgen.train.launch import RECORD_FILE, run_name

STAGE = {"objective": "flow", "trainable": ["scb", "dit", "vlm"], "lora": {"rank": 4, "alpha": 8, "dropout": 0.05},
         "steps": 20, "batch_size": 2, "log_every": 1, "checkpoint_every": 10, "optim": {"lr": 1.0e-3},
         "parallel": {"grad_accumulation": 2, "ema_decay": 0.9}}
FSDP2 = {**STAGE, "parallel": {**STAGE["parallel"], "strategy": "fsdp2", "activation_checkpointing": True}}
INIT = {"preset": "tiny", "seed": 0, "overrides": {"scb": {"depth": 1}}}
STOP_AT = 10
# Runs, one after the other on one local Ray, each logging its per-step losses to its own MLflow run: ddp;
# "stopped": FSDP2 under the launcher's run name, its loop ended right after the step-10 checkpoint; "resumed": the
# launcher again on that folder, which Ray Train resumes from its latest checkpoint.
LAUNCH = """
import json, sys
import ray.train
from mlflow.tracking import MlflowClient
from ray.train import CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from deepgen.train.config import StageConfig
from deepgen.train.launch import ensure_ray, run_name, run_stage

ddp, fsdp2, init, urls, root, uri, stop_at = json.loads(sys.argv[1])
client = MlflowClient(uri)
experiment = client.create_experiment("fsdp")


def tracking():
    return {"uri": uri, "run_id": client.create_run(experiment).info.run_id}


class Stopped(Exception):
    pass


def stopped_after_checkpoint(config):
    report = ray.train.report

    def then_stop(metrics, checkpoint=None, **kwargs):
        report(metrics, checkpoint=checkpoint, **kwargs)
        if metrics.get("step") == stop_at:
            raise Stopped

    ray.train.report = then_stop
    from deepgen.train.loop import train_loop

    try:
        train_loop(config)
    except Stopped:
        pass


ensure_ray()
runs = {"ddp": tracking()}
run_stage(StageConfig.from_dict("alignment", ddp), init, {"train": urls}, "v-test", f"{root}/ddp", runs["ddp"])
stage = StageConfig.from_dict("alignment", fsdp2)
runs["stopped"] = tracking()
TorchTrainer(stopped_after_checkpoint, train_loop_config={
    "stage": __import__("dataclasses").asdict(stage), "init": init, "data": {"train": urls},
    "tracking": runs["stopped"], "preview_prompts": None},
    scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
    run_config=RunConfig(name=run_name(stage, init, "v-test"), storage_path=f"{root}/resumed",
                         checkpoint_config=CheckpointConfig(num_to_keep=2))).fit()
runs["resumed"] = tracking()
run_stage(stage, init, {"train": urls}, "v-test", f"{root}/resumed", runs["resumed"])
print("RUNS " + json.dumps({name: run["run_id"] for name, run in runs.items()}))
"""


def losses(client, run_id: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, "alignment/loss")}


def trained(folder: str, ema: bool = False) -> dict[str, torch.Tensor]:
    from deepgen.model.checkpoint import load_checkpoint

    model = load_checkpoint(folder, ema=ema)
    return {k: v for k, v in model.state_dict().items() if k.startswith(("scb.", "dit.")) or "lora_" in k}


@pytest.mark.timeout(900)
def test_fsdp2_matches_ddp_shards_and_resumes_from_its_sharded_checkpoint(small_shards, tmp_path):
    import torch.distributed.checkpoint as dcp
    from mlflow.tracking import MlflowClient

    record, _, _ = small_shards
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = json.dumps([STAGE, FSDP2, INIT, record["train_urls"], str(tmp_path), uri, STOP_AT])
    proc = subprocess.run([sys.executable, "-c", LAUNCH, args], capture_output=True, text=True, timeout=840,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    runs = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RUNS "))[5:])
    client = MlflowClient(uri)
    loss = {name: losses(client, run_id) for name, run_id in runs.items()}

    # steps 1-10 before the stop and 11-20 from the sharded checkpoint: DDP's losses step by step (float rounding
    # only: sharded reductions and the clipping norm sum in another order)
    steps = list(range(1, 21))
    assert sorted(loss["ddp"]) == steps, loss["ddp"]
    assert sorted(loss["stopped"]) == steps[:STOP_AT] and sorted(loss["resumed"]) == steps[STOP_AT:]
    ddp = torch.tensor([loss["ddp"][s] for s in steps], dtype=torch.float64)
    fsdp2 = torch.tensor([{**loss["stopped"], **loss["resumed"]}[s] for s in steps], dtype=torch.float64)
    assert ddp[-1] < 0.5 * ddp[0]  # it learns: the comparison is not between two flat lines
    torch.testing.assert_close(fsdp2, ddp, rtol=1e-5, atol=1e-7)

    name = run_name(StageConfig.from_dict("alignment", FSDP2), INIT, "v-test")
    resumed = json.loads((tmp_path / "resumed" / name / RECORD_FILE).read_text())
    assert resumed["metrics"]["resumed_from"] == STOP_AT, resumed["metrics"]

    # sharded: every rank wrote its own chunk of each trained parameter into the one checkpoint folder
    final = Path(resumed["checkpoint_uri"]).parent
    sharded = final / "sharded"
    assert {p.name for p in sharded.glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    metadata = dcp.FileSystemReader(str(sharded)).read_metadata().state_dict_metadata
    key = "model.model.dit.transformer_blocks.0.attn.to_q.weight"
    full, chunks = metadata[key].size, metadata[key].chunks
    assert len(chunks) == 2 and all(chunk.sizes[0] * 2 == full[0] for chunk in chunks), (full, chunks)
    assert {chunk.offsets[0] for chunk in chunks} == {0, full[0] // 2}
    assert any(k.startswith("optimizer.state.") for k in metadata) and any(k.startswith("ema.") for k in metadata)
    assert not any(".vae." in k for k in metadata)  # frozen parts are not part of the training state

    # the model folder rank 0 wrote from the gathered shards is the model DDP trained, EMA weights included (the
    # averages went through the sharded checkpoint at the stop)
    ddp_model = json.loads((tmp_path / "ddp" / run_name(StageConfig.from_dict("alignment", STAGE), INIT, "v-test")
                            / RECORD_FILE).read_text())["checkpoint_uri"]
    folders = {"ddp": ddp_model, "fsdp2": str(final / "model")}
    weights = {kind: trained(folder) for kind, folder in folders.items()}
    averages = {kind: trained(folder, ema=True) for kind, folder in folders.items()}
    assert weights["ddp"].keys() == weights["fsdp2"].keys() == averages["fsdp2"].keys()
    assert any("lora_B" in k for k in weights["ddp"])
    for key, value in weights["ddp"].items():
        torch.testing.assert_close(weights["fsdp2"][key], value, rtol=1e-3, atol=1e-5, msg=key)
        torch.testing.assert_close(averages["fsdp2"][key], averages["ddp"][key], rtol=1e-3, atol=1e-5, msg=key)
    moved = [k for k in weights["ddp"] if not torch.equal(averages["ddp"][k], weights["ddp"][k])]
    assert len(moved) > len(weights["ddp"]) // 2  # the averages are not the weights
