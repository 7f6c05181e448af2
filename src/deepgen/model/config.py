"""Typed model configuration: one nested dataclass per part, two presets (tiny, full) written in the project.

The presets are plain data so `deepgen describe --preset full` and the meta-device parameter counts need no download.
`from_dict` accepts partial overrides (e.g. Kedro parameters), so a cluster config changes numbers, never code.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VLMConfig:
    """Qwen2.5-VL language + vision tower. `pretrained` points at a Qwen2.5-VL folder (local or s3://)."""

    num_layers: int = 36
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_heads: int = 16
    num_kv_heads: int = 2
    vocab_size: int = 151936
    max_position_embeddings: int = 128000
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)  # sums to head_dim / 2 = 64
    vision_depth: int = 32
    vision_hidden_size: int = 1280
    vision_intermediate_size: int = 3420
    vision_num_heads: int = 16
    vision_fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    vision_window_size: int = 112
    tie_word_embeddings: bool = True
    pretrained: str | None = None
    # Random-init only: std of the token embeddings. HF's 0.02 makes a random VLM's caption tokens ~50x smaller
    # than the think tokens, and the bridge then barely tells prompts apart (measured: no conditioning learned in
    # 400 steps); a frozen random text encoder needs token identity to carry. None keeps HF's init.
    embedding_init_std: float | None = None
    # Random-init only: std of the language model's linear layers (HF's `initializer_range`). HF's 0.02 (about
    # 1/sqrt(2048)) suits the full width; at width 64 it leaves every layer near the identity, so a token's state
    # carries its word and almost nothing of the words around it, and the DiT, which gives context tokens no position,
    # gets a bag of words: "make the red circle blue" and "make the blue circle red" reached it as the same set of
    # vectors (bench/word_order.py: matched-set distance 0.1-0.2% of a token's norm at the taps, 8% for a changed
    # word), and so did "a red circle and a blue square" and its colour swap. 1/sqrt(width) = 0.125 makes the random
    # VLM a contextual encoder: word swaps 9-17%, colour-binding swaps 10-24%, a changed word 19-31%. None keeps HF's init.
    layer_init_std: float | None = None
    max_prompt_tokens: int = 256


@dataclass
class SCBConfig:
    """Stacked Channel Bridging: tap `num_taps` evenly spaced VLM layers, fuse them, emit DiT conditioning."""

    num_think_tokens: int = 128
    num_taps: int = 6
    width: int = 2048
    depth: int = 6
    num_heads: int = 32
    mlp_size: int = 11946
    # The release's connector uses LayerNorm eps 1e-6 and runs over the whole padded sequence (no key-padding mask,
    # plain mean for the pooled vector). The defaults keep what the tiny runs were trained with; the full preset
    # sets the release's values so converted official weights reproduce its outputs.
    layer_norm_eps: float = 1e-5
    mask_padding: bool = True
    # 0 = the paper's zero-initialised output projections (a pretrained DiT starts unconditioned, undisturbed).
    # The tiny DiT is trained from scratch, so nothing is disturbed: a small init lets it see prompts at once.
    output_init_std: float = 0.0


@dataclass
class DiTConfig:
    """diffusers SD3Transformer2DModel arguments (SD3.5-Medium by default). `pretrained`: folder with transformer/."""

    sample_size: int = 128
    patch_size: int = 2
    in_channels: int = 16
    out_channels: int = 16
    num_layers: int = 24
    attention_head_dim: int = 64
    num_attention_heads: int = 24
    joint_attention_dim: int = 4096
    caption_projection_dim: int = 1536
    pooled_projection_dim: int = 2048
    pos_embed_max_size: int = 384
    dual_attention_layers: tuple[int, ...] = tuple(range(13))
    qk_norm: str | None = "rms_norm"
    pretrained: str | None = None


@dataclass
class VAEConfig:
    """diffusers AutoencoderKL arguments. `pretrained`: folder with vae/ (the SD3.5 16-channel VAE)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    scaling_factor: float = 1.5305
    shift_factor: float = 0.0609
    pretrained: str | None = None


@dataclass
class FlowConfig:
    """Flow matching (rectified flow) schedule shared by training and sampling."""

    num_train_timesteps: int = 1000
    shift: float = 3.0
    caption_dropout: float = 0.1
    sample_steps: int = 50
    guidance_scale: float = 4.0
    edit_negative_prompt: str = (
        "blurry, low quality, low resolution, distorted, deformed, broken content, missing parts, damaged details, "
        "artifacts, glitch, noise, pixelated, grainy, compression artifacts, bad composition, wrong proportion, "
        "incomplete editing, unfinished, unedited areas."
    )


@dataclass
class ModelConfig:
    preset: str = "full"
    image_size: int = 512
    size_multiple: int = 32  # generated sides are multiples of this (edit outputs keep the reference's aspect ratio)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    scb: SCBConfig = field(default_factory=SCBConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Build from a (possibly partial) dict: unknown keys are an error naming the key, tuples stay tuples."""
        return _build(cls, data, path="model")


# The tiny preset keeps every architectural choice at small widths (DESIGN.md §3): 64 px images, a x4 VAE and
# patch 2 give (64/4/2)^2 = 64 DiT tokens; 12 VLM layers so the 6 taps are evenly spaced (11, 9, 7, 5, 3, 1).
# The tiny model only ever sees "" as its unconditional prompt (caption dropout), so that is its edit negative prompt.
TINY: dict[str, Any] = {
    "preset": "tiny",
    "image_size": 64,
    "size_multiple": 8,
    "vlm": {
        "num_layers": 12, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "num_kv_heads": 2,
        "vocab_size": 1024, "max_position_embeddings": 4096, "rope_theta": 10000.0, "mrope_section": (2, 3, 3),
        "vision_depth": 2, "vision_hidden_size": 32, "vision_intermediate_size": 64, "vision_num_heads": 2,
        "vision_fullatt_block_indexes": (1,), "vision_window_size": 112, "max_prompt_tokens": 48,
        "embedding_init_std": 1.0, "layer_init_std": 0.125,
    },
    # depth 0: no fusion encoder in the tiny bridge (taps -> Linear -> output projections). Measured on the tiny run
    # (single-object prompts, 500 steps at batch 16): a 2-layer encoder over the random VLM's states left position
    # at chance (0.14 held-out after 1,000 steps); without it, position 0.97 and colour 0.98 after 500 steps. The
    # full preset keeps the release's 6-layer encoder, which fuses a pretrained VLM's features.
    "scb": {"num_think_tokens": 8, "width": 128, "depth": 0, "num_heads": 4, "mlp_size": 256,
            "output_init_std": 0.05},
    # sample_size 32 (not the 16 a 64 px image's latent has) only sets the spacing of the sincos positions: diffusers
    # places the pos_embed_max_size grid at arange(16) / (16 / (sample_size / patch_size)), so 16 put neighbouring
    # patches 0.5 apart and 32 puts them 1 apart. An edit copies its reference token by token through these positions:
    # learning to copy (bench/copy_probe.py: target = reference, 250 steps at batch 16, fresh DiT) reached held-out
    # flow loss 0.15 at 32 against 0.40 at 16 (shuffled reference: 1.61 / 0.78). It also lifted single-object shape in
    # the default run (alignment 0.59 -> 0.79, SFT 0.58 -> 0.70, RL 0.56 -> 0.68; n=144).
    "dit": {
        "sample_size": 32, "patch_size": 2, "in_channels": 4, "out_channels": 4, "num_layers": 4,
        "attention_head_dim": 32, "num_attention_heads": 4, "joint_attention_dim": 128,
        "caption_projection_dim": 128, "pooled_projection_dim": 128, "pos_embed_max_size": 16,
        "dual_attention_layers": (), "qk_norm": "rms_norm",
    },
    "vae": {
        "latent_channels": 4, "block_out_channels": (16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8,
        "mid_block_add_attention": False,
        "scaling_factor": 1.0, "shift_factor": 0.0,
    },
    "flow": {"shift": 1.0, "sample_steps": 20, "guidance_scale": 3.5, "edit_negative_prompt": ""},
}

# The full preset is the dataclass defaults (DESIGN.md §1) plus the release's connector details.
FULL: dict[str, Any] = {"preset": "full", "scb": {"layer_norm_eps": 1e-6, "mask_padding": False}}

PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY, "full": FULL}


def preset(name: str, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The named preset with optional nested overrides applied on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    merged = _merge(copy.deepcopy(PRESETS[name]), overrides or {})
    return ModelConfig.from_dict(merged)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _build(cls: type, data: dict[str, Any], path: str):
    if not isinstance(data, dict):
        raise ValueError(f"config {path}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"config {path}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{path}.{name}")
        elif isinstance(value, list) and "tuple" in str(hints[name]):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
