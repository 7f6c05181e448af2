"""`deepgen example-weights`: random models in the real Hugging Face layouts, loaded through the same code as the full
preset's pretrained folders (weights.py), with SD3.5's VAE normalisation and the scheduler's shift taken from them."""

from __future__ import annotations

import json

import pytest

from deepgen.cli import main
from deepgen.model.config import preset
from deepgen.model.deepgen import DeepGen
from deepgen.model.example_weights import CLIP, MARKER, QWEN, SD3, SD35_VAE_FACTORS, write_example_weights
from deepgen.rl.rewards import build_reward


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "example_weights"
    assert main(["example-weights", "--out", str(out)]) == 0
    return out


def test_folders_load_as_pretrained_weights(weights):
    cfg = preset("tiny", {"vlm": {"pretrained": str(weights / QWEN)}, "dit": {"pretrained": str(weights / SD3)},
                          "vae": {"pretrained": str(weights / SD3)}})
    model = DeepGen(cfg).eval()
    assert (model.cfg.vae.scaling_factor, model.cfg.vae.shift_factor) == pytest.approx(SD35_VAE_FACTORS)
    assert model.cfg.flow.shift == 3.0  # from scheduler/, not the tiny preset's 1.0
    image = model.generate(["a photo of a dog"], steps=1, seed=0)[0]
    assert image.size == (64, 64)
    edited = model.generate(["make it blue"], refs=[[image, image.rotate(90)]], steps=1, seed=0)[0]  # 2 references
    assert edited.size == (64, 64)
    reward = build_reward("clip", path=str(weights / CLIP))
    scores = reward([image, edited], {"caption": "a photo of a dog"})
    assert len(scores) == 2 and all(-1.0 <= s <= 1.0 for s in scores)


def test_a_complete_folder_is_kept_and_a_foreign_one_refused(weights, tmp_path, capsys):
    stamp = (weights / MARKER).stat().st_mtime_ns
    assert write_example_weights(weights) == weights and (weights / MARKER).stat().st_mtime_ns == stamp
    assert json.loads((weights / MARKER).read_text())["folders"]["vae"] == SD3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("something else")
    assert main(["example-weights", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(foreign) in err and "holds other files" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
