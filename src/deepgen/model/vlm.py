"""The VLM (Qwen2.5-VL): reads the prompt, and for editing the reference images, plus the appended think tokens.

We need every layer's hidden states, not logits, so we hold `Qwen2_5_VLModel` (no LM head). Two traps handled here
(../shared/STACK.md): `mm_token_type_ids` must be passed or positions silently fall back to 1-D, and the processor
class needs torchvision, so `<|image_pad|>` tokens are expanded by `tokenizer.edit_prompt` ourselves.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from deepgen.model.config import VLMConfig
from deepgen.model.tokenizer import edit_prompt, t2i_prompt

IMAGE_TOKEN_TYPE = 1  # mm_token_type_ids: 0 text, 1 image, 2 video


def qwen_config(cfg: VLMConfig, vocab_size: int, special_ids: dict[str, int]) -> Qwen2_5_VLConfig:
    head_dim = cfg.hidden_size // cfg.num_heads
    if sum(cfg.mrope_section) * 2 != head_dim:
        raise ValueError(f"vlm.mrope_section {cfg.mrope_section} must sum to head_dim/2 = {head_dim // 2}")
    text = {
        "vocab_size": vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "max_position_embeddings": cfg.max_position_embeddings,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta,
                            "mrope_section": list(cfg.mrope_section)},
        "tie_word_embeddings": cfg.tie_word_embeddings, "bos_token_id": special_ids["<|endoftext|>"],
        "eos_token_id": special_ids["<|im_end|>"], "pad_token_id": special_ids["<|endoftext|>"],
        **({"initializer_range": cfg.layer_init_std} if cfg.layer_init_std else {}),
    }
    vision = {
        "depth": cfg.vision_depth, "hidden_size": cfg.vision_hidden_size,
        "intermediate_size": cfg.vision_intermediate_size, "num_heads": cfg.vision_num_heads,
        "out_hidden_size": cfg.hidden_size, "fullatt_block_indexes": list(cfg.vision_fullatt_block_indexes),
        "window_size": cfg.vision_window_size,
    }
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=special_ids["<|image_pad|>"],
        video_token_id=special_ids["<|video_pad|>"], vision_start_token_id=special_ids["<|vision_start|>"],
        vision_end_token_id=special_ids["<|vision_end|>"], tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=special_ids["<|endoftext|>"], eos_token_id=special_ids["<|im_end|>"],
    )


def build_vlm(cfg: VLMConfig, tokenizer, hf_config: Qwen2_5_VLConfig | None = None) -> Qwen2_5_VLModel:
    """Random-init VLM from config (or from `hf_config` when given), or the pretrained one from `cfg.pretrained`
    (a local folder or s3:// prefix)."""
    if hf_config is not None:
        return Qwen2_5_VLModel(hf_config)
    if cfg.pretrained:
        from deepgen.model.weights import load_pretrained  # local import: weights imports us for its checks

        return load_pretrained(Qwen2_5_VLModel, cfg.pretrained, "vlm")
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in
           ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|endoftext|>", "<|im_end|>")}
    vlm = Qwen2_5_VLModel(qwen_config(cfg, max(len(tokenizer), cfg.vocab_size), ids))
    if cfg.embedding_init_std:
        nn.init.normal_(vlm.get_input_embeddings().weight, std=cfg.embedding_init_std)
    return vlm


def vit_resize(image: Image.Image, unit: int) -> Image.Image:
    """The release shows the ViT each reference at 28/32 of its size (512 -> 448), sides multiples of `unit` (28)."""
    width, height = (max(unit, round(side * 28 / 32 / unit) * unit) for side in image.size)
    image = image.convert("RGB")
    return image if image.size == (width, height) else image.resize((width, height), Image.BICUBIC)


class PromptEncoder(nn.Module):
    """Turns captions (and reference images) into the VLM's per-layer hidden states, think tokens appended last."""

    def __init__(self, vlm: Qwen2_5_VLModel, tokenizer, cfg: VLMConfig):
        super().__init__()
        self.vlm = vlm
        self.tokenizer = tokenizer
        self.cfg = cfg
        merge = vlm.config.vision_config.spatial_merge_size
        # The release feeds the ViT every reference at 28/32 of its size with no minimum area; the processor's
        # default minimum (56x56) would enlarge small or thin references, so it is lowered to one merged patch.
        self.vit_unit = vlm.config.vision_config.patch_size * merge
        self.image_processor = Qwen2VLImageProcessorPil(
            merge_size=merge, size={"shortest_edge": self.vit_unit ** 2, "longest_edge": 1280 * 28 * 28})
        self.image_token_id = vlm.config.image_token_id

    def tokenize(self, captions: list[str], images: list[list[Image.Image]] | None):
        """Prompt template per sample; edit samples get one vision slot per reference image."""
        pixel_values, grids, texts = [], [], []
        for i, caption in enumerate(captions):
            refs = images[i] if images else []
            if not refs:
                texts.append(t2i_prompt(caption))
                continue
            refs = [vit_resize(img, self.vit_unit) for img in refs]
            processed = self.image_processor(images=refs, return_tensors="pt")
            merge2 = self.image_processor.merge_size ** 2
            grids.append(processed["image_grid_thw"])
            pixel_values.append(processed["pixel_values"])
            texts.append(edit_prompt(caption, [int(g.prod()) // merge2 for g in processed["image_grid_thw"]]))
        batch = self.tokenizer(texts, padding=True, return_tensors="pt", truncation=False)
        if batch["input_ids"].shape[1] > self.cfg.max_prompt_tokens + sum(int(g.prod()) for g in grids):
            raise ValueError(f"prompt longer than vlm.max_prompt_tokens={self.cfg.max_prompt_tokens}: {texts!r}")
        pixels = torch.cat(pixel_values) if pixel_values else None
        grid = torch.cat(grids) if grids else None
        return batch["input_ids"], batch["attention_mask"], pixels, grid

    def forward(self, captions: list[str], think_ND: torch.Tensor, images=None):
        """Returns (hidden-state tuple, each (B, S, H); attention mask (B, S)); S = prompt + think tokens."""
        input_ids, mask, pixels, grid = self.tokenize(captions, images)
        device = think_ND.device
        input_ids, mask = input_ids.to(device), mask.to(device)
        n_think, batch = think_ND.shape[0], input_ids.shape[0]
        pad = torch.full((batch, n_think), self.tokenizer.pad_token_id, dtype=input_ids.dtype, device=device)
        input_ids = torch.cat([input_ids, pad], dim=1)
        mask = torch.cat([mask, torch.ones_like(pad)], dim=1)
        embed = self.vlm.get_input_embeddings()
        prompt_BSH = embed(input_ids[:, :-n_think])
        think_BNH = think_ND.to(prompt_BSH.dtype).unsqueeze(0).expand(batch, -1, -1)
        inputs_embeds = torch.cat([prompt_BSH, think_BNH], dim=1)
        mm_types = (input_ids == self.image_token_id).long() * IMAGE_TOKEN_TYPE
        encoder_outputs = None
        if pixels is not None:
            with torch.no_grad():  # the ViT runs without gradients (DESIGN.md §1)
                encoder_outputs = {"image": self.vlm.get_image_features(
                    pixels.to(device, prompt_BSH.dtype), grid.to(device), return_dict=True)}
        out = self.vlm(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, image_grid_thw=grid,
            mm_token_type_ids=mm_types, mm_encoder_outputs=encoder_outputs, output_hidden_states=True,
            use_cache=False,
        )
        return out.hidden_states, mask
