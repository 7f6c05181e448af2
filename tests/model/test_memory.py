"""`deepgen describe --memory`: the meta-device activation count is what a real run allocates, and the full preset's
alignment, SFT and RL fit 80 GiB per GPU on 8 GPUs under the `parallel:` blocks they train with
(conf/cluster/parameters_training.yml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepgen.cli import main
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.model.lora import LoRAConfig
from deepgen.model.describe import load_stages
from deepgen.model.memory import (LiveBytes, activation_peak, blocks, checkpointed, grads_dropped,
                                  model_state_bytes, stage_policy, training_step)
from deepgen.model.schedule import PAPER_STAGES, freeze, meta_model

PROJECT = Path(__file__).resolve().parents[2]
CLUSTER_STAGES = load_stages(PROJECT / "conf" / "cluster" / "parameters_training.yml")


def real_cpu_peak(model: DeepGen, batch: int, policy) -> int:
    """The same step on real CPU tensors with torch's own attention kernel, storages counted as they live."""
    params = [p for p in model.parameters() if p.requires_grad]
    units = blocks(model) if policy.parallel.activation_checkpointing else []
    with checkpointed(units), grads_dropped(params), LiveBytes([*model.parameters(), *model.buffers()]) as tracker:
        training_step(model, batch, policy.references, policy.frozen_reference_dit).backward()
    return tracker.peak


@pytest.mark.parametrize("stage", ["alignment", "sft", "rl"])
def test_meta_count_equals_the_real_cpu_run(stage):
    """Tolerance 1%; measured: equal to the byte for every stage, batch and checkpointing setting."""
    cfg, spec = preset("tiny"), PAPER_STAGES[stage]
    torch.manual_seed(0)
    real = DeepGen(cfg)
    freeze(real, spec["trainable"], LoRAConfig(**spec["lora"]) if spec.get("lora") else None, stage)
    meta = meta_model(cfg, {**spec, "name": stage})
    peaks = {}
    for ckpt in (False, True):
        policy = stage_policy(stage, {"objective": "grpo" if stage == "rl" else "flow",
                                      "parallel": {"activation_checkpointing": ckpt}})
        for batch in (1, 2):
            peaks[ckpt, batch] = activation_peak(meta, batch, policy)
            assert peaks[ckpt, batch] == pytest.approx(real_cpu_peak(real, batch, policy), rel=0.01)
    assert peaks[False, 2] > peaks[False, 1] and peaks[True, 2] > peaks[True, 1]
    assert peaks[True, 2] < 0.6 * peaks[False, 2]  # checkpointing keeps block inputs, not their insides


def test_full_preset_fits_80_gib_on_8_gpus(capsys, monkeypatch):
    monkeypatch.chdir(PROJECT)  # describe --memory reads the preset's stage configuration from the project folder
    assert main(["describe", "--preset", "full", "--memory", "--gpus", "8", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert set(plan["stages"]) == {"alignment", "sft", "rl"}
    for name, stage in plan["stages"].items():
        assert stage["micro_batch"] >= 1 and stage["gib_per_gpu"] <= 80, name
        assert stage["gib_at_micro_batch"] <= 80 * (1 - plan["headroom"]), name
        parallel = stage["policy"]["parallel"]
        assert parallel == {**CLUSTER_STAGES[name]["parallel"]} and parallel["strategy"] == "fsdp2", name
        assert parallel["activation_checkpointing"] and parallel["param_dtype"] == "bf16", name
    # RL holds a frozen bf16 copy of the DiT (2.24B parameters + the 226M-entry position table)
    assert plan["stages"]["rl"]["parts_gib"]["reference_dit"] == pytest.approx(2 * 2_469_663_936 / 2**30, abs=0.01)


def test_fsdp2_shards_the_trained_state_and_ddp_does_not():
    model = meta_model(preset("full"), {**PAPER_STAGES["sft"], "name": "sft"})
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    policy = stage_policy("sft", CLUSTER_STAGES["sft"])
    fsdp = {n: model_state_bytes(model, policy, n) for n in (1, 2, 8)}
    assert fsdp[1]["optimizer"] == 8 * trained and fsdp[8]["optimizer"] == pytest.approx(trained, abs=8 * 8)
    totals = [sum(fsdp[n].values()) for n in (1, 2, 8)]
    assert totals[0] > totals[1] > totals[2]
    ddp = stage_policy("sft", {"parallel": {**CLUSTER_STAGES["sft"]["parallel"], "strategy": "ddp"}})
    assert sum(model_state_bytes(model, ddp, 1).values()) == sum(model_state_bytes(model, ddp, 8).values())


def test_ema_adds_one_sharded_copy_of_the_trained_weights():
    model = meta_model(preset("full"), {**PAPER_STAGES["sft"], "name": "sft"})
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plain = stage_policy("sft", CLUSTER_STAGES["sft"])
    averaged = stage_policy("sft", {"parallel": {**CLUSTER_STAGES["sft"]["parallel"], "ema_decay": 0.999}})
    assert model_state_bytes(model, plain, 8)["ema"] == 0
    assert model_state_bytes(model, averaged, 8)["ema"] == pytest.approx(4 * trained / 8, abs=4 * 8)


def test_a_stage_that_does_not_fit_is_named(capsys, monkeypatch):
    monkeypatch.chdir(PROJECT)
    assert main(["describe", "--preset", "tiny", "--memory", "--gpus", "1", "--card-gib", "0.001"]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("DOES NOT FIT") == 3
    assert "['alignment', 'sft', 'rl'] do not fit 0.001 GiB" in captured.err
    assert main(["describe", "--preset", "tiny", "--memory", "--gpus", "0"]) == 2
    assert "--gpus must be at least 1" in capsys.readouterr().err
