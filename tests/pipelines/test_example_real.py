"""conf/example_real as a user runs it: a folder of photos of mixed sizes, aspect ratios and formats (pairs with
captions, edit triplets, one edit with two references), `deepgen example-weights`, then `kedro run --env
example_real` with tiny step counts. Every stage runs on the real-layout folders; the pretrained VAE's normalisation
survives every stage; alignment trains on more than one image size (aspect-ratio buckets)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from deepgen.curation.curate import load_samples
from deepgen.data.shards import read_samples
from deepgen.model.example_weights import CLIP, QWEN, SD3, SD35_VAE_FACTORS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (150, 60, 190), "orange": (240, 140, 30)}
SIZES = [(640, 480), (480, 640), (512, 512), (800, 450), (300, 400), (1024, 768)]  # width, height
FORMATS = [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")]
PAIRS, EDITS = 16, 8  # 2 pairs per triplet: what conf/example_real's keep values are set for
ONE_WORKER = {f"{stage}.scaling.num_workers": 1 for stage in ("vae", "alignment", "sft", "rl")}
TINY = {
    "alignment.steps": 6, "alignment.batch_size": 2, "alignment.checkpoint_every": 6, "alignment.log_every": 2,
    "sft.steps": 2, "sft.batch_size": 2, "sft.checkpoint_every": 2, "sft.log_every": 1,
    "rl.steps": 1, "rl.checkpoint_every": 1, "rl.batch_size": 2, "rl.grpo.prompts_per_worker": 1,
    "rl.grpo.group_size": 2, "rl.grpo.sample_steps": 2, "rl.grpo.aux_batch_size": 1,
    "evaluation.per_category": 1, "evaluation.per_category_overrides.single_object": 2, "evaluation.steps": 2,
    "evaluation.preview_count": 2, **ONE_WORKER,
}


def picture(rng: random.Random, size: tuple[int, int], colour: str, shape: str) -> Image.Image:
    """A vertical gradient with three filled shapes, the first in `colour`: distinct pictures for distinct seeds."""
    width, height = size
    top, bottom = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / (height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(3):
        x0, y0 = rng.randrange(width // 2), rng.randrange(height // 2)
        box = [x0, y0, x0 + rng.randrange(width // 6, width // 2), y0 + rng.randrange(height // 6, height // 2)]
        (draw.ellipse if shape == "ellipse" else draw.rectangle)(box, fill=COLOURS[colour])
        colour = rng.choice(list(COLOURS))
    return image


def write_photos(folder: Path, seed: int = 0) -> Path:
    """PAIRS captioned pictures and EDITS triplets (target, source, instruction; edit00 has two references) in the
    folder layout, cycling through sizes and formats; pair00 has a JSON sidecar with licence and source."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(PAIRS):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(["ellipse", "box"])
        ext, fmt = FORMATS[i % 3]
        picture(rng, SIZES[i % len(SIZES)], colour, shape).save(folder / f"pair{i:02d}.{ext}", fmt)
        (folder / f"pair{i:02d}.txt").write_text(f"synthetic picture number {i}: a {colour} {shape} on a gradient")
    (folder / "pair00.json").write_text(json.dumps({"license": "cc0-1.0", "source": "drawn by the test"}))
    for i in range(EDITS):
        colour, new = rng.sample(list(COLOURS), 2)
        shape, size = rng.choice(["ellipse", "box"]), SIZES[(i + 2) % len(SIZES)]
        ext, fmt = FORMATS[(i + 1) % 3]
        picture(random.Random(1000 + i), size, colour, shape).save(folder / f"edit{i:02d}.src.{ext}", fmt)
        picture(random.Random(1000 + i), size, new, shape).save(folder / f"edit{i:02d}.{ext}", fmt)
        instruction = f"edit number {i}: paint the {colour} {shape} {new}"
        if i == 0:
            picture(rng, size, new, "ellipse").save(folder / "edit00.src1.png", "PNG")
            instruction = f"edit number 0: paint the {colour} {shape} in the colour of the second picture"
        (folder / f"edit{i:02d}.txt").write_text(instruction)
    return folder


def run(*args: str) -> None:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=1500, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("example_real")
    photos, weights, data = write_photos(root / "photos"), root / "01_raw" / "example_weights", root / "data"
    run("-m", "deepgen.cli", "example-weights", "--out", str(weights))
    params = {"data_root": data, "curation.source.uri": photos, "model.overrides.vlm.pretrained": weights / QWEN,
              "model.overrides.dit.pretrained": weights / SD3, "model.overrides.vae.pretrained": weights / SD3,
              "rl.grpo.reward_options.clip.path": weights / CLIP, **TINY}
    run("-m", "kedro", "run", "--env", "example_real", "--params", ",".join(f"{k}={v}" for k, v in params.items()))
    return data, json.loads((data / "08_reporting" / "run_summary.json").read_text())


def test_every_stage_ran_on_the_real_layout_weights(example_run):
    data, summary = example_run
    assert set(summary["stages"]) == {"vae", "alignment", "sft", "rl"}
    for name, stage in summary["stages"].items():
        config = json.loads(Path(stage["checkpoint_uri"], "config.json").read_text())
        assert config["stage"] == name and config["step"] == {"vae": 0, "alignment": 6, "sft": 2, "rl": 1}[name]
        # the pretrained VAE's latent normalisation is never recalibrated, whatever the stage trains
        vae = config["model"]["vae"]
        assert (vae["scaling_factor"], vae["shift_factor"]) == pytest.approx(SD35_VAE_FACTORS)
    assert summary["stages"]["rl"]["prompt_data_version"] not in ("", summary["data_version"])
    # RL prompts: the training pairs' captions; edit instructions are no text-to-image prompts
    lines = [json.loads(line) for f in (data / "03_primary" / "shards" / "rl_prompt_files").glob("*.jsonl")
             for line in f.read_text().splitlines()]
    assert lines and all(line["prompt"].startswith("synthetic picture") for line in lines)
    assert {"init", "alignment", "sft", "rl"} <= set(summary["evaluation"])
    assert summary["registered_model"]["alias"] == "champion"
    assert (data / "03_primary" / "curation_record.json").is_file()  # this environment's records under data_root


def test_alignment_trained_on_several_aspect_ratios(example_run):
    _, summary = example_run
    sizes = {tuple(size) for size in summary["stages"]["alignment"]["image_sizes"]}
    assert len(sizes) > 1
    for height, width in sizes:  # the fix-pixels policy at 64 px, sides multiples of 8, aspect kept
        assert height % 8 == 0 and width % 8 == 0 and 64 <= math.sqrt(height * width) <= 64 * 1.25


def test_curated_folder_kept_pairs_edits_and_provenance(example_run):
    data, summary = example_run
    record = json.loads((data / "03_primary" / "curation_record.json").read_text())
    manifest = json.loads(Path(record["manifest_uri"]).read_text())
    assert manifest["counts"]["quarantined"] == 0
    frame = load_samples(manifest, str(Path(record["manifest_uri"]).parent)).set_index("key")
    assert (frame.kind == "edit").sum() == EDITS and (frame.kind == "t2i").sum() == PAIRS
    assert frame.loc["pair00", ["license", "source"]].tolist() == ["cc0-1.0", "drawn by the test"]
    samples = {s["key"]: s for s in read_samples(record["train_urls"] + record["heldout_urls"])}
    assert len(samples["edit00"]["source_images"]) == 2  # both references reached the shard
    assert len({s["image"].size for s in samples.values()}) > 2
