"""`clip`: text-image cosine from a CLIP model folder (the paper's CLIP reward), loaded offline with transformers."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from deepgen.rl.rewards.base import register


@register("clip")
class CLIPReward:
    """Per image: cos(CLIP image embedding, CLIP text embedding of the caption), in [-1, 1]. CLIPScore is
    2.5 * max(cos, 0); GRPO normalises within the group, so the scale is moot and the clipping only loses signal.

    Options: `path`, a local folder with a CLIPModel, its tokenizer and preprocessor_config.json (save_pretrained
    writes all three); `device`. The image processor is Pillow-based (torchvision breaks the CPU torch: STACK.md).
    """

    bounds = (-1.0, 1.0)

    def __init__(self, path: str, device: str = "cpu") -> None:
        if not (Path(path) / "config.json").is_file():
            raise ValueError(f"clip reward: {path} is not a CLIP model folder (no config.json)")
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel  # transformers loads in seconds: lazily

        self._device = torch.device(device)
        self._model = CLIPModel.from_pretrained(path, local_files_only=True).to(self._device).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._processor = AutoImageProcessor.from_pretrained(path, local_files_only=True, backend="pil")
        self._max_length = self._model.config.text_config.max_position_embeddings

    def __call__(self, images: list[Image.Image], sample: dict) -> list[float]:
        text = self._tokenizer([sample["caption"]], padding=True, truncation=True, max_length=self._max_length,
                               return_tensors="pt")
        pixels = self._processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        with torch.inference_mode():
            out = self._model(input_ids=text["input_ids"].to(self._device),
                              attention_mask=text["attention_mask"].to(self._device),
                              pixel_values=pixels["pixel_values"].to(self._device))
        # image_embeds / text_embeds come out L2-normalised; clamp float rounding just past +-1.
        return (out.image_embeds @ out.text_embeds.T).squeeze(1).clamp(-1.0, 1.0).float().cpu().tolist()
