"""A saved tiny checkpoint for the inference tests (one torch thread: the two cores are shared)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)
torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    from deepgen.model.checkpoint import save_checkpoint
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen

    torch.manual_seed(0)
    model = DeepGen(preset("tiny"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero bridge outputs, so prompts change images
        for p in model.scb.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return save_checkpoint(model, tmp_path_factory.mktemp("inference") / "tiny")


@pytest.fixture(scope="session")
def source_png(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "source.png"
    Image.radial_gradient("L").convert("RGB").resize((96, 64)).save(path)
    return path
