"""Pretrained folders (Qwen2.5-VL; SD3.5 with transformer/, vae/, scheduler/) load through `load_pretrained`, locally
and from s3://, with one-line errors for a missing folder, a wrong architecture, missing keys or a wrong config."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLModel

from deepgen import storage
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.model.example_weights import write_qwen_folder, write_sd3_folder
from deepgen.model.weights import WeightsError, load_pretrained


@pytest.fixture(scope="module")
def folders(tiny_model, tmp_path_factory):
    """A Qwen2.5-VL folder (task model + tokenizer, as on the hub) and an SD3.5-style folder, from the tiny model."""
    root = tmp_path_factory.mktemp("pretrained")
    write_qwen_folder(tiny_model, root / "qwen")
    write_sd3_folder(tiny_model, root / "sd", shift=2.5)
    return root


def pretrained_cfg(qwen, sd, **overrides):
    return preset("tiny", {"vlm": {"pretrained": str(qwen)}, "dit": {"pretrained": str(sd)},
                           "vae": {"pretrained": str(sd)}, **overrides})


def test_loaded_model_generates_like_the_source(tiny_model, folders, same_images):
    model = DeepGen(pretrained_cfg(folders / "qwen", folders / "sd")).eval()
    for name in ("encoder", "dit", "vae"):
        mine, source = getattr(model, name).state_dict(), getattr(tiny_model, name).state_dict()
        assert mine.keys() == source.keys() and all(torch.equal(mine[k], source[k]) for k in mine)
    assert model.cfg.flow.shift == 2.5  # the scheduler's shift comes with the DiT folder
    model.scb.load_state_dict(tiny_model.scb.state_dict())
    model.cfg.flow.shift = tiny_model.cfg.flow.shift
    prompts = ["a red circle", "two blue squares"]
    assert same_images(model.generate(prompts, steps=2, seed=5), tiny_model.generate(prompts, steps=2, seed=5))


def test_s3_folder_loads_the_same_weights(tiny_model, folders, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPGEN_CACHE", str(tmp_path / "cache"))
    storage.upload_dir(folders / "sd", f"s3://{s3_server}/sd35")
    dit = load_pretrained(SD3Transformer2DModel, f"s3://{s3_server}/sd35", "dit", subfolder="transformer")
    assert all(torch.equal(a, b) for a, b in zip(dit.state_dict().values(), tiny_model.dit.state_dict().values()))
    assert (tmp_path / "cache" / "s3" / s3_server / "sd35" / ".complete").is_file()  # downloaded once, reused
    with pytest.raises(FileNotFoundError, match="nothing stored under"):
        load_pretrained(AutoencoderKL, f"s3://{s3_server}/absent", "vae", subfolder="vae")


def test_missing_folder_and_subfolder(folders):
    with pytest.raises(FileNotFoundError, match="vlm: folder not found"):
        load_pretrained(Qwen2_5_VLModel, folders / "nowhere", "vlm")
    with pytest.raises(FileNotFoundError, match="has no transformer/ folder"):
        load_pretrained(SD3Transformer2DModel, folders / "qwen", "dit", subfolder="transformer")


def test_wrong_architecture(folders):
    with pytest.raises(WeightsError, match="holds a 'SD3Transformer2DModel' model, expected 'qwen2_5_vl'"):
        load_pretrained(Qwen2_5_VLModel, folders / "sd" / "transformer", "vlm")
    with pytest.raises(WeightsError, match="holds a 'AutoencoderKL' model, expected SD3Transformer2DModel"):
        load_pretrained(SD3Transformer2DModel, folders / "sd", "dit", subfolder="vae")


def test_missing_and_unexpected_keys(folders, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folders / "sd" / "transformer", bad)
    state = load_file(bad / "diffusion_pytorch_model.safetensors")
    state.pop("proj_out.weight")
    state["extra.weight"] = torch.zeros(2)
    save_file(state, bad / "diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightsError, match=r"missing \['proj_out.weight'\].*unexpected \['extra.weight'\]"):
        load_pretrained(SD3Transformer2DModel, bad, "dit")


def test_config_disagreeing_with_the_folder(folders):
    cfg = pretrained_cfg(folders / "qwen", folders / "sd")
    cfg.dit.num_layers = 6
    with pytest.raises(WeightsError, match=r"dit: .* \(num_layers: folder has 4, config says 6\)"):
        DeepGen(cfg)


def test_corrupt_config_is_named(folders, tmp_path):
    bad = tmp_path / "qwen"
    shutil.copytree(folders / "qwen", bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="config.json is not valid JSON"):
        load_pretrained(Qwen2_5_VLModel, bad, "vlm")
    assert json.loads((folders / "qwen" / "config.json").read_text())["model_type"] == "qwen2_5_vl"
