"""Lean stage checkpoints: a stage stores what it trained and names its base by URI and content hash. The full
preset's stage checkpoints are sized on the meta device (no weight materialised); a tiny chain is saved, reloaded
bit for bit, exported into a self-contained folder that `deepgen generate` reads, and a changed base, an unknown
format version and a missing base are refused in one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from deepgen import storage
from deepgen.cli import main
from deepgen.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, stored_tensors
from deepgen.model.config import preset
from deepgen.model.fingerprint import BaseChangedError
from deepgen.model.lineage import storage_plan
from deepgen.model.lora import LoRAConfig
from deepgen.model.schedule import PAPER_STAGES, freeze, meta_model

PROMPTS = ["a red circle at the top", "two green squares"]
FULL_SCB, FULL_DIT_STORED, FULL_LORA = 432_449_532, 2_469_663_936, 119_734_272  # tests/model/test_param_counts.py


def nbytes(tensors: dict) -> int:
    return sum(v.numel() * v.element_size() for state in tensors.values() for v in state.values())


def stored_keys(folder, name: str) -> set[str]:
    with safe_open(str(folder / f"{name}.safetensors"), framework="pt") as handle:
        return set(handle.keys())


def config_of(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_full_preset_stage_checkpoints_hold_only_what_the_stage_trains():
    """On meta tensors: the chain the cluster config runs (zero-step VAE stage, alignment, SFT, RL)."""
    folders = {"vlm": {"pretrained": "/models/qwen2.5-vl-3b"}, "dit": {"pretrained": "/models/sd35"},
               "vae": {"pretrained": "/models/sd35"}}
    # the first stage trains nothing: it keeps the bridge (drawn from a seed, so nothing else holds it) and refers
    # the VLM, DiT and VAE to their pretrained folders
    assert storage_plan(preset("full", folders), (), lora=False, has_base=False) == \
        {"vlm": "none", "scb": "all", "dit": "none", "vae": "none"}

    align = meta_model(preset("full"), PAPER_STAGES["alignment"])
    complete = stored_tensors(align, storage_plan(align.cfg, None, False, True))
    lean = stored_tensors(align, storage_plan(align.cfg, PAPER_STAGES["alignment"]["trainable"], False, True))
    assert set(lean) == {"scb"} and set(lean["scb"]) == set(align.scb.state_dict())
    assert tuple(lean["scb"]["think_tokens"].shape) == (128, 2048)
    assert nbytes(lean) == FULL_SCB * 4  # fp32: 1.73 GB
    assert nbytes(complete) > 15 * nbytes(lean)  # of ~27 GB with the VLM, DiT (and its pos. table) and VAE

    sft = meta_model(preset("full"), PAPER_STAGES["sft"])
    stored = stored_tensors(sft, storage_plan(sft.cfg, PAPER_STAGES["sft"]["trainable"], True, True))
    assert set(stored) == {"scb", "dit", "vlm"} and all("lora_" in k for k in stored["vlm"])
    assert sum(v.numel() for v in stored["vlm"].values()) == FULL_LORA
    assert sum(v.numel() for v in stored["scb"].values()) == FULL_SCB

    rl = meta_model(preset("full"), PAPER_STAGES["sft"])
    freeze(rl, PAPER_STAGES["rl"]["trainable"])
    stored = stored_tensors(rl, storage_plan(rl.cfg, PAPER_STAGES["rl"]["trainable"], True, True))
    assert set(stored) == {"dit"} and sum(v.numel() for v in stored["dit"].values()) == FULL_DIT_STORED


def perturb_trainable(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def chain(tiny_model, tmp_path_factory):
    """The tiny run's chain: VAE stage (complete: nothing else holds seeded weights), alignment, SFT (LoRA), RL."""
    root = tmp_path_factory.mktemp("chain")
    vae = save_checkpoint(tiny_model, root / "vae", trained=("vae",))
    models, folders, parent = {}, {"vae": vae}, vae
    for i, (stage, trainable, lora) in enumerate((("alignment", ("scb", "dit"), None),
                                                  ("sft", ("scb", "dit", "vlm"), LoRAConfig(4, 8, 0.0)),
                                                  ("rl", ("dit",), None))):
        model = load_checkpoint(parent)
        freeze(model, trainable, lora, stage)
        perturb_trainable(model, i)
        folders[stage] = save_checkpoint(model, root / stage, extra={"stage": stage}, trained=trainable, base=parent)
        models[stage], parent = model, folders[stage]
    return folders, models


def test_each_stage_stores_what_it_trained_and_reloads_bit_for_bit(chain, tiny_model):
    folders, models = chain
    assert config_of(folders["vae"])["stored"] == dict.fromkeys(("vlm", "scb", "dit", "vae"), "all")
    files = {stage: sorted(p.name for p in folders[stage].glob("*.safetensors")) for stage in models}
    assert files == {"alignment": ["dit.safetensors", "scb.safetensors"],
                     "sft": ["dit.safetensors", "scb.safetensors", "vlm.safetensors"], "rl": ["dit.safetensors"]}
    sft_vlm = stored_keys(folders["sft"], "vlm")
    assert sft_vlm and all("lora_" in k for k in sft_vlm)
    assert sft_vlm == set(stored_tensors(models["sft"], config_of(folders["sft"])["stored"])["vlm"])
    for stage, model in models.items():
        config = config_of(folders[stage])
        assert config["format_version"] == 2 and config["base"]["hash"].startswith("sha256:")
        assert same_weights(load_checkpoint(folders[stage]), model), stage
    assert same_weights(load_checkpoint(folders["vae"]), tiny_model)
    # the SFT stage's base VLM weights come from the checkpoint without LoRA (`q_proj.weight` -> `base_layer`)
    rl = load_checkpoint(folders["rl"])
    assert torch.equal(rl.encoder.vlm.language_model.layers[0].self_attn.q_proj.base_layer.weight,
                       tiny_model.encoder.vlm.language_model.layers[0].self_attn.q_proj.weight)


def one_line(err: Exception) -> str:
    message = str(err)
    assert "\n" not in message
    return message


def test_a_changed_base_is_refused_in_one_line(chain, tiny_model, tmp_path, capsys):
    folders, _ = chain
    parent = shutil.copytree(folders["vae"], tmp_path / "vae").resolve()
    child_model = load_checkpoint(parent)
    freeze(child_model, ("scb",))
    child = save_checkpoint(child_model, tmp_path / "child", trained=("scb",), base=parent)
    load_checkpoint(child)

    tampered = shutil.copytree(child, tmp_path / "tampered")  # the recorded base hash edited
    config = config_of(tampered)
    config["base"]["hash"] = "sha256:" + "0" * 64
    (tampered / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseChangedError) as err:
        load_checkpoint(tampered)
    assert f"its base {parent} changed after it was written" in one_line(err.value)
    assert main(["generate", "--model", str(tampered), "--prompt", "x", "--steps", "1", "--out",
                 str(tmp_path / "x.png"), "--no-progress"]) == 2
    stderr = capsys.readouterr().err.strip()
    assert len(stderr.splitlines()) == 1 and "changed after it was written" in stderr and "Traceback" not in stderr

    other = load_checkpoint(parent)  # the base rewritten in place with other weights (a retrained parent)
    perturb_trainable(other, 5)
    save_checkpoint(other, parent)
    with pytest.raises(BaseChangedError, match="changed after it was written"):
        load_checkpoint(child)

    (parent / "dit.safetensors").write_bytes(b"truncated")  # a base file no longer what its manifest says
    with pytest.raises(BaseChangedError, match=r"dit.safetensors is 9 bytes, its manifest says \d+ bytes"):
        load_checkpoint(child)
    shutil.rmtree(parent)
    with pytest.raises(FileNotFoundError, match=re.escape(f"base of checkpoint {child} not found: {parent}")):
        load_checkpoint(child)


def test_older_format_loads_and_a_newer_one_is_refused(chain, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPGEN_CACHE", str(tmp_path / "cache"))  # a format-1 base's file hashes are cached here
    folders, _ = chain
    old = shutil.copytree(folders["vae"], tmp_path / "v1")  # written before format 2: complete, no version
    config = config_of(old)
    for key in ("format_version", "stored"):
        config.pop(key)
    (old / "config.json").write_text(json.dumps(config))
    (old / "manifest.json").unlink()
    assert same_weights(load_checkpoint(old), tiny_model)
    model = load_checkpoint(old)
    freeze(model, ("scb",))
    perturb_trainable(model, 3)
    child = save_checkpoint(model, tmp_path / "child-of-v1", trained=("scb",), base=old)  # v1 base: hashed, cached
    assert same_weights(load_checkpoint(child), model)
    assert len(list((tmp_path / "cache" / "sha256").rglob("*"))) > 5

    newer = shutil.copytree(folders["vae"], tmp_path / "v3")
    config = config_of(newer)
    config["format_version"] = 3
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(newer)
    assert "has format version 3; this deepgen reads versions 1 to 2" in one_line(err.value)


def test_export_writes_a_self_contained_folder_that_generate_reads(chain, tmp_path, same_images, capsys):
    folders, models = chain
    out = tmp_path / "exported"
    assert main(["export", str(folders["rl"]), "--out", str(out)]) == 0
    config = config_of(out)
    assert "base" not in config and "pretrained" not in config and config["exported_from"]["uri"] == str(folders["rl"])
    assert set(config["stored"].values()) == {"all"}
    assert sorted(p.stem for p in out.glob("*.safetensors")) == ["dit", "scb", "vae", "vlm"]
    assert same_weights(load_checkpoint(out), models["rl"])

    moved = shutil.copytree(out, tmp_path / "elsewhere" / "model")  # nothing in it points back at the run folders
    assert main(["generate", "--model", str(moved), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--steps", "2",
                 "--seed", "7", "--out", str(tmp_path / "png"), "--no-progress"]) == 0
    from PIL import Image

    written = [Image.open(p).convert("RGB") for p in sorted((tmp_path / "png").glob("*.png"))]
    assert same_images(written, models["rl"].eval().generate(PROMPTS, steps=2, seed=7))

    assert main(["export", str(folders["rl"]), "--out", str(out), "--ema"]) == 2  # asked for EMA it does not have
    assert "has no EMA weights" in capsys.readouterr().err


def test_export_ema_writes_the_ema_weights(chain, tmp_path):
    folders, models = chain
    model = load_checkpoint(folders["alignment"])
    freeze(model, ("scb",))
    ema = {k: v + 1.0 for k, v in model.scb.state_dict().items()}
    folder = save_checkpoint(model, tmp_path / "with-ema", trained=("scb",), base=folders["alignment"],
                             ema={"scb": ema})
    exported = load_checkpoint(main_export(folder, tmp_path / "ema-out", "--ema"))
    assert all(torch.equal(exported.scb.state_dict()[k], v) for k, v in ema.items())
    assert torch.equal(exported.dit.proj_out.weight, model.dit.proj_out.weight)
    assert same_weights(load_checkpoint(folder), model)  # the live weights by default


def main_export(source, out, *flags):
    assert main(["export", str(source), "--out", str(out), *flags]) == 0
    return out


def test_lean_chain_on_s3_loads_and_exports(chain, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPGEN_CACHE", str(tmp_path / "cache"))
    folders, models = chain
    parent = f"s3://{s3_server}/lineage/vae"
    storage.upload_dir(folders["vae"], parent)
    model = load_checkpoint(parent)
    freeze(model, ("scb", "dit"))
    perturb_trainable(model, 9)
    child_local = save_checkpoint(model, tmp_path / "child", trained=("scb", "dit"), base=parent)
    assert config_of(child_local)["base"]["uri"] == parent
    child = f"s3://{s3_server}/lineage/alignment"
    storage.upload_dir(child_local, child)
    assert same_weights(load_checkpoint(child), model)
    out = f"s3://{s3_server}/lineage/exported"
    main_export(child, out)
    exported = load_checkpoint(out)
    assert same_weights(exported, model)
    assert "base" not in json.loads(storage.read_bytes(f"{out}/config.json"))


def test_registering_a_lean_checkpoint_keeps_a_complete_copy(chain, tmp_path):
    import mlflow

    from deepgen.registry import load_model, register, registered_checkpoint

    folders, _ = chain
    parent = shutil.copytree(folders["vae"], tmp_path / "vae")
    model = load_checkpoint(parent)
    freeze(model, ("scb",))
    perturb_trainable(model, 11)
    child = save_checkpoint(model, tmp_path / "alignment", trained=("scb",), base=parent)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("lineage", (tmp_path / "artifacts").as_uri()))
    with mlflow.start_run():
        version = register(str(child), "deepgen-lean", {"overall": 0.5}, "v1")["version"]
    assert "base" not in json.loads((Path(registered_checkpoint(f"models:/deepgen-lean/{version}")) /
                                     "config.json").read_text())
    shutil.rmtree(parent)  # the run folders may go: the registered version does not read them
    assert same_weights(load_model(f"models:/deepgen-lean/{version}"), model)


def test_a_root_refers_to_its_pretrained_folders_by_hash(tiny_model, tmp_path, monkeypatch):
    """The full preset's first stage on the tiny architecture: VLM, DiT and VAE come from Qwen / SD3.5-style folders,
    the checkpoint keeps only the bridge (seeded, held nowhere else); a rewritten pretrained folder is refused."""
    from deepgen.model.deepgen import DeepGen
    from deepgen.model.example_weights import write_qwen_folder, write_sd3_folder

    monkeypatch.setenv("DEEPGEN_CACHE", str(tmp_path / "cache"))
    qwen, sd3 = write_qwen_folder(tiny_model, tmp_path / "qwen"), write_sd3_folder(tiny_model, tmp_path / "sd3")
    folders = {"vlm": {"pretrained": str(qwen)}, "dit": {"pretrained": str(sd3)}, "vae": {"pretrained": str(sd3)}}
    torch.manual_seed(0)
    model = DeepGen(preset("tiny", folders)).eval()
    root = save_checkpoint(model, tmp_path / "root", trained=())
    config = config_of(root)
    assert config["stored"] == {"vlm": "none", "scb": "all", "dit": "none", "vae": "none"}
    assert [p.name for p in root.glob("*.safetensors")] == ["scb.safetensors"]
    assert {k: (v["uri"], v["subfolder"]) for k, v in config["pretrained"].items()} == \
        {"vlm": (str(qwen), None), "dit": (str(sd3), "transformer"), "vae": (str(sd3), "vae")}
    assert same_weights(load_checkpoint(root), model)

    child_model = load_checkpoint(root)
    freeze(child_model, ("scb",))
    perturb_trainable(child_model, 4)
    child = save_checkpoint(child_model, tmp_path / "child", trained=("scb",), base=root)
    assert same_weights(load_checkpoint(child), child_model)
    assert same_weights(load_checkpoint(main_export(child, tmp_path / "exported")), child_model)

    other = load_checkpoint(root)
    perturb_trainable(other, 6)
    write_sd3_folder(other, sd3)  # the SD3.5 folder replaced by other weights
    with pytest.raises(BaseChangedError) as err:
        load_checkpoint(child)
    assert f"its pretrained dit folder {sd3} changed" in one_line(err.value)
