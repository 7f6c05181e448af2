"""MFU's inputs: model FLOPs per sample counted on meta tensors must be what the real training step runs, and the peak
FLOP/s must come from the device's name or the override."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from deepgen.model import vae as vae_ops
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen, pil_to_tensor
from deepgen.model.schedule import freeze
from deepgen.train import throughput

CAPTIONS = ["a red circle at the top left", "two blue squares", "a purple square",
            "a green triangle to the left of a yellow circle"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return DeepGen(preset("tiny")).eval()  # eval: no caption dropout, so the real step's prompts are the batch's


def real_step_flops(model, stage: dict, images, refs) -> int:
    """FlopCounterMode over the real flow-matching step (forward + backward) on the real tensors, latents cached
    beforehand (the frozen VAE encodes each image once in training)."""
    freeze(model, tuple(stage["trainable"]))
    model.latent_cache = vae_ops.LatentCache()
    ref_tensors = [[pil_to_tensor(r) for r in rs] for rs in refs]
    with torch.no_grad():
        model.encode_images(images)
        for rs in ref_tensors:
            if rs:
                model.encode_images(torch.stack(rs))
    return throughput.count_flops(lambda: model.flow_loss(images, CAPTIONS, refs, ref_tensors).backward())


@pytest.mark.parametrize("trainable", [("scb", "dit"), ("scb",)])
def test_meta_count_is_the_real_steps_flops(tiny, trainable):
    stage = {"name": "alignment", "trainable": list(trainable)}
    images = torch.rand(len(CAPTIONS), 3, 64, 64) * 2 - 1
    refs = [[] for _ in CAPTIONS]
    real = real_step_flops(tiny, stage, images, refs)
    counted = throughput.batch_sample_flops(tiny, stage, {"captions": CAPTIONS, "refs": refs, "images": images})
    assert counted * len(CAPTIONS) == pytest.approx(real, rel=1e-6)


def test_edit_samples_count_their_reference_tokens(tiny):
    """Half the batch edits one reference: its tokens double the DiT's and add vision tokens to the VLM. The meta
    count leaves out only the frozen ViT (a fraction of a percent here)."""
    stage = {"name": "edits", "trainable": ["scb", "dit"]}
    images = torch.rand(len(CAPTIONS), 3, 64, 64) * 2 - 1
    refs = [[Image.new("RGB", (64, 64), (200, 30, 30))], [], [Image.new("RGB", (64, 64), (30, 30, 200))], []]
    real = real_step_flops(tiny, stage, images, refs)
    counted = throughput.batch_sample_flops(tiny, stage, {"captions": CAPTIONS, "refs": refs, "images": images})
    text_only = throughput.batch_sample_flops(tiny, stage, {"captions": CAPTIONS, "refs": [[]] * 4, "images": images})
    assert counted > 1.2 * text_only
    assert counted * len(CAPTIONS) == pytest.approx(real, rel=0.01)


def test_frozen_parts_cost_no_weight_gradients(tiny):
    """Training the DiT adds its weight gradients (about its forward's matmul FLOPs again) over training the
    bridge alone, which still back-propagates through the DiT to the bridge."""
    cfg = tiny.cfg
    bridge = throughput.sample_flops(cfg, {"trainable": ["scb"]}, prompt_tokens=20)
    both = throughput.sample_flops(cfg, {"trainable": ["scb", "dit"]}, prompt_tokens=20)
    longer = throughput.sample_flops(cfg, {"trainable": ["scb", "dit"]}, prompt_tokens=40)
    assert bridge < both < longer
    assert 1.15 < both / bridge < 1.6


@pytest.mark.parametrize("name, tflops", [("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756.5),
                                          ("NVIDIA H200", 989.5), ("NVIDIA A100-SXM4-80GB", 312.0),
                                          ("NVIDIA L40S", 362.05), ("NVIDIA L4", 121.0)])
def test_peak_from_the_device_name(name, tflops):
    assert throughput.table_peak(name) == pytest.approx(tflops * 1e12)


def test_peak_override_and_unknown_devices(monkeypatch):
    monkeypatch.delenv(throughput.PEAK_ENV, raising=False)
    assert throughput.peak_flops("cpu") is None  # no MFU on a CPU
    assert throughput.table_peak("Some Future Accelerator") is None
    monkeypatch.setenv(throughput.PEAK_ENV, "2.5")
    assert throughput.peak_flops("cpu") == pytest.approx(2.5e12)
    assert throughput.mfu(10.0, 1e11, 2.5e12, devices=2) == pytest.approx(0.2)
    monkeypatch.setenv(throughput.PEAK_ENV, "fast")
    with pytest.raises(ValueError, match=throughput.PEAK_ENV):
        throughput.peak_flops("cpu")


LAUNCH = """
import json, sys
from mlflow.tracking import MlflowClient
from deepgen.train.config import StageConfig
from deepgen.train.launch import run_stage
stage, urls, root, uri = json.loads(sys.argv[1])
client = MlflowClient(uri)
run_id = client.create_run(client.create_experiment("mfu")).info.run_id
run_stage(StageConfig.from_dict("alignment", stage), {"preset": "tiny", "seed": 0}, {"train": urls}, "v-test", root,
          {"uri": uri, "run_id": run_id})
print("RUN " + run_id)
"""


@pytest.mark.timeout(600)
def test_the_loop_logs_mfu_where_a_peak_is_known(small_shards, tmp_path):
    """On a CPU the override stands in for a GPU's peak: the stage logs `<stage>/mfu` every window, from one
    per-sample count (the first batch's) and that window's samples/s."""
    import json
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    record, _, _ = small_shards
    stage = {"objective": "flow", "trainable": ["scb", "dit"], "steps": 4, "batch_size": 2, "log_every": 2,
             "checkpoint_every": 4, "keep": {"single_object": 1.0, "*": 0.0},
             "scaling": {"num_workers": 1}}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    peak_tflops = 0.05
    args = json.dumps([stage, record["train_urls"], str(tmp_path / "runs"), uri])
    proc = subprocess.run([sys.executable, "-c", LAUNCH, args], capture_output=True, text=True, timeout=540,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", throughput.PEAK_ENV: str(peak_tflops)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run_id = next(line for line in proc.stdout.splitlines() if line.startswith("RUN "))[4:]
    client = MlflowClient(uri)
    mfu = {m.step: m.value for m in client.get_metric_history(run_id, "alignment/mfu")}
    rate = {m.step: m.value for m in client.get_metric_history(run_id, "alignment/samples_per_s")}
    assert sorted(mfu) == [2, 4]
    per_sample = {step: mfu[step] * peak_tflops * 1e12 / rate[step] for step in mfu}
    assert per_sample[2] == pytest.approx(per_sample[4])  # counted once
    cfg, trained = preset("tiny"), {"trainable": ["scb", "dit"]}
    # a single-object prompt (template + caption) is longer than 8 tokens and within the tiny VLM's 48
    assert throughput.sample_flops(cfg, trained, 8) < per_sample[2] < throughput.sample_flops(cfg, trained, 48)
