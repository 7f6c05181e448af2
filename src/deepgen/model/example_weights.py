"""Small random models saved in the real Hugging Face layouts, so the path that loads the full preset's pretrained
folders (`deepgen.model.weights`) runs on a laptop: `deepgen example-weights --out data/01_raw/example_weights`.

    qwen2_5_vl/   a Qwen2.5-VL folder as on the hub: Qwen2_5_VLForConditionalGeneration + its tokenizer
    sd3/          an SD3.5 / UniPic2 folder: transformer/ (SD3Transformer2DModel), vae/ (AutoencoderKL), scheduler/
    clip/         a CLIP folder (CLIPModel, tokenizer, image processor) for the `clip` reward

The weights are random, at the tiny preset's widths (or any preset's with overrides): they show the plumbing works,
not that anything is learned. The VAE carries SD3.5's latent normalisation (scaling 1.5305, shift 0.0609), as a real
one does: the pipeline must keep those factors, never recalibrate them. The tests build their folders with the same
functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

QWEN, SD3, CLIP = "qwen2_5_vl", "sd3", "clip"
MARKER = "example_weights.json"  # written last: its presence means the folder is complete
SD35_VAE_FACTORS = (1.5305, 0.0609)  # SD3.5's AutoencoderKL config: scaling_factor, shift_factor


def write_qwen_folder(model, folder: str | Path) -> Path:
    """`model`'s VLM as a Qwen2.5-VL task model folder (the LM head tied to the embeddings) with its tokenizer."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    qwen = Qwen2_5_VLForConditionalGeneration(model.encoder.vlm.config)
    qwen.model.load_state_dict(model.encoder.vlm.state_dict())
    qwen.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder


def write_sd3_folder(model, folder: str | Path, shift: float = 3.0,
                     vae_factors: tuple[float, float] | None = None) -> Path:
    """`model`'s DiT and VAE as an SD3.5-style folder (transformer/, vae/, scheduler/ with the flow `shift`);
    `vae_factors`: (scaling_factor, shift_factor) for the saved VAE's config instead of the model's."""
    import copy

    from diffusers import FlowMatchEulerDiscreteScheduler

    folder = Path(folder)
    model.dit.save_pretrained(folder / "transformer")
    vae = model.vae
    if vae_factors is not None:
        vae = copy.deepcopy(vae)
        vae.register_to_config(scaling_factor=float(vae_factors[0]), shift_factor=float(vae_factors[1]))
    vae.save_pretrained(folder / "vae")
    FlowMatchEulerDiscreteScheduler(shift=shift).save_pretrained(folder / "scheduler")
    return folder


def write_clip_folder(folder: str | Path, seed: int = 0) -> Path:
    """A random CLIP (hidden 32, 2 layers, 32 px images) with an offline byte-level BPE tokenizer, saved like a real
    one (what the `clip` reward loads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    bpe = Tokenizer(models.BPE(unk_token=eos))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(["a red circle in the top left", 'the word "CAT"', "two blue squares"],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=[bos, eos], show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(  # CLIP's framing: <bos> text <eos>
        single=f"{bos} $A {eos}", special_tokens=[(bos, bpe.token_to_id(bos)), (eos, bpe.token_to_id(eos))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token=eos,
                                        unk_token=eos)
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**layers, "vocab_size": len(tokenizer), "max_position_embeddings": 32,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=16)
    folder = Path(folder)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def write_example_weights(out: str | Path, preset_name: str = "tiny", overrides: dict | None = None,
                          seed: int = 0, force: bool = False) -> Path:
    """The three folders under `out`, written to a hidden folder beside it and renamed into place (a run that dies
    half way leaves nothing under `out`). An `out` that is already complete is kept unless `force`."""
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen

    out = Path(out)
    if (out / MARKER).is_file() and not force:
        return out
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"example-weights: {out} holds other files; name an empty or new folder")
    cfg = preset(preset_name, overrides)
    for part in (cfg.vlm, cfg.dit, cfg.vae):
        part.pretrained = None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DeepGen(cfg).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_qwen_folder(model, staging / QWEN)
        write_sd3_folder(model, staging / SD3, shift=3.0, vae_factors=SD35_VAE_FACTORS)
        write_clip_folder(staging / CLIP, seed)
        (staging / MARKER).write_text(json.dumps({
            "what": "random weights in Hugging Face layouts (not trained): deepgen example-weights",
            "preset": preset_name, "overrides": overrides or {}, "seed": seed,
            "folders": {"vlm": QWEN, "dit": SD3, "vae": SD3, "clip": CLIP}}, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (e.g. data/01_raw/example_weights)")
    parser.add_argument("--preset", default="tiny", help="model widths to build at (default: tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rewrite a folder that is already complete")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from deepgen.cli import report_error

    try:
        out = write_example_weights(args.out, args.preset, seed=args.seed, force=args.force)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - a user command: one clear line, the traceback only with --debug
        return report_error("example-weights", err, args.debug)
    print(f"{out}: {QWEN}/ (vlm), {SD3}/ (dit, vae, scheduler), {CLIP}/ (clip reward); random weights")
    return 0
