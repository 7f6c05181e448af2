"""Model FLOPs utilisation (MFU): the model FLOPs a training step needs, over what the GPU could do in that time.

Model FLOPs per sample are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` over the stage's real
forward and backward (`deepgen.model.memory.training_step`) on meta tensors (shapes only, no weights, seconds on a
CPU: ~15 s for the full preset's SFT step here), with the stage's freeze schedule and LoRA, so the backward holds
exactly the gradients autograd computes (e.g. input gradients through the frozen VLM to the think tokens in
alignment, no weight gradients for frozen layers). Activation checkpointing is off in the count: its recomputation is
hardware work, not model work (that would be HFU). Attention counts its two matmuls forward and four backward
(the math path; flash kernels recompute the scores, which is again hardware work). Not counted: the frozen ViT and
VAE encoders (inference only; the VAE's latents are cached after the first epoch).

The sample's shape comes from a real batch: its padded prompt length (template + caption, + vision tokens for edits),
its share of edit samples (one reference each) and its image area (taken as a square of that area).

Peak bf16 FLOP/s (dense tensor-core figures from the vendors' data sheets) are looked up by device name;
`DEEPGEN_PEAK_TFLOPS` overrides the table (an unlisted GPU, or a CPU to exercise the metric).
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform as pyplatform
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, bmm_flop

from deepgen.model.config import ModelConfig
from deepgen.model.memory import sample_tokens, training_step
from deepgen.model.schedule import meta_model

PEAK_ENV = "DEEPGEN_PEAK_TFLOPS"
# Dense bf16 tensor-core TFLOP/s (no sparsity). The first key found in the device name wins, so specific variants
# come before their family (torch names them e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200").
PEAK_BF16_TFLOPS: dict[str, float] = {
    "GB200": 2500.0, "B200": 2250.0,
    "H200 NVL": 835.5, "H200": 989.5, "GH200": 989.5,
    "H100 PCIe": 756.5, "H100 NVL": 835.5, "H100": 989.5, "H800": 989.5,
    "A100": 312.0, "A800": 312.0,
    "L40S": 362.05, "L40": 181.05, "L4": 121.0, "A10": 125.0,
    "RTX A6000": 154.8, "RTX 4090": 165.2,
    "MI300X": 1307.4, "MI250X": 383.0,
}


def peak_flops(device: torch.device | str | None = None) -> float | None:
    """Peak bf16 FLOP/s of one device: `DEEPGEN_PEAK_TFLOPS` when set, else the table for a GPU, else None (a CPU,
    or a GPU the table lacks: then no MFU is logged rather than a wrong one)."""
    override = os.environ.get(PEAK_ENV)
    if override:
        try:
            value = float(override)
        except ValueError:
            raise ValueError(f"{PEAK_ENV}={override!r}: expected TFLOP/s as a number, e.g. 989.5") from None
        if value <= 0:
            raise ValueError(f"{PEAK_ENV}={override!r}: must be positive")
        return value * 1e12
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return None
    return table_peak(torch.cuda.get_device_name(device))


def platform(device: torch.device | str | None = None) -> str:
    """What computed a stage, for its record: torch's version and the device, with the CPU's kernel level (torch's
    `cpu_capability`: AVX2, AVX512, ...). Seeded runs repeat to the bit on the same kind of machine only: the kernels
    torch picks per instruction set round differently, and the default run's scores moved that far (README)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return f"torch {torch.__version__} on {torch.cuda.get_device_name(device)}"
    return f"torch {torch.__version__} on CPU {torch.backends.cpu.get_cpu_capability()} ({_cpu_model()})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return pyplatform.processor() or pyplatform.machine()


def table_peak(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


# ------------------------------------------------------------------------------------------------- counting

def _cpu_flash_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return 2 * bmm_flop((query_shape[0] * query_shape[1], query_shape[2], query_shape[3]),
                        (query_shape[0] * query_shape[1], query_shape[3], key_shape[2]))


def _cpu_flash_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return 2 * _cpu_flash_flops(query_shape, key_shape, value_shape)  # grads of both matmuls, no recomputation


# torch's counter has no formula for the CPU flash kernel that CPU attention takes (it would count 0)
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flops}


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of the matmuls, convolutions and attention that `step()` runs (forward and any backward in it)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        step()
    return counter.get_total_flops()


def sample_flops(cfg: ModelConfig, stage: dict, prompt_tokens: int, references: int = 0,
                 image_size: int | None = None) -> int:
    """Model FLOPs of one sample's training forward + backward in `stage` (its `trainable` and `lora`), for a prompt
    of `prompt_tokens` text tokens (+ think tokens, + vision tokens per reference image) and square images of
    `image_size` (default the preset's), on meta tensors."""
    cfg = ModelConfig.from_dict(cfg.to_dict())  # a copy: the shape training_step builds is set on it
    cfg.vlm = dataclasses.replace(cfg.vlm, max_prompt_tokens=prompt_tokens)
    cfg.image_size = image_size or cfg.image_size
    model = meta_model(cfg, stage)

    def step():
        loss = training_step(model, 1, references)
        if loss.requires_grad:
            loss.backward()

    return count_flops(step)


def batch_sample_flops(model, stage: dict, batch: dict) -> float:
    """Mean model FLOPs per sample of a flow-matching batch (`deepgen.train.batches`): its prompts are padded to
    one length, which text-to-image and edit samples (one reference each) share."""
    refs = batch.get("refs") or [[] for _ in batch["captions"]]
    length = model.encoder.tokenize(batch["captions"], refs if any(refs) else None)[0].shape[1]
    edits = sum(1 for r in refs if r) / len(refs)
    height, width = batch["images"].shape[-2:]
    side = round(math.sqrt(height * width) / model.cfg.size_multiple) * model.cfg.size_multiple  # same area
    flops = 0.0
    if edits < 1:
        flops += (1 - edits) * sample_flops(model.cfg, stage, length, 0, side)
    if edits > 0:
        vision = sample_tokens(dataclasses.replace(model.cfg, image_size=side), 1)["prompt"] \
            - model.cfg.vlm.max_prompt_tokens
        flops += edits * sample_flops(model.cfg, stage, max(1, length - vision), 1, side)
    return flops


def mfu(samples_per_s: float, flops_per_sample: float, peak: float, devices: int = 1) -> float:
    """Achieved model FLOP/s over the peak of all `devices` (each at `peak`)."""
    return samples_per_s * flops_per_sample / (peak * devices)
