"""`DeepGenPipeline`: load a model from a folder, s3:// prefix or `models:/name@alias`, then generate or edit.

The pipeline only adds what users need around `DeepGen.generate`: prompts in batches, images from paths, a progress
bar, and seeds that follow the prompt's position (prompt i always gets seed + i), so the same call gives the same
images however it is batched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

ImageLike = Image.Image | str | Path


def load_image(source: ImageLike) -> Image.Image:
    """An RGB image from a PIL image or a path; a missing or unreadable file is a one-line error."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err.__class__.__name__}: {err}") from None


class DeepGenPipeline:
    def __init__(self, model):
        self.model = model.eval()

    @classmethod
    def from_pretrained(cls, uri: str | Path, device: str = "cpu", tracking_uri: str | None = None):
        """`uri`: a checkpoint folder, an s3:// checkpoint prefix, or models:/name@alias (MLflow registry)."""
        from deepgen import registry

        uri = str(uri)
        if uri.startswith("models:/"):
            tracking_uri = tracking_uri or default_tracking_uri()
        return cls(registry.load_model(uri, device, tracking_uri))

    def __call__(self, prompt: str | Sequence[str], image=None, steps: int | None = None, cfg: float | None = None,
                 seed: int = 0, negative_prompt: str | None = None, size: tuple[int, int] | None = None,
                 batch_size: int = 8, progress: bool = True) -> list[Image.Image]:
        """Images for `prompt` (one or several). `image`: None (text-to-image); one image or path (edit); a list
        of them (several references for every prompt); or one list per prompt. `size` is (height, width)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        refs = self._references(image, len(prompts))
        bar = tqdm(total=len(prompts) * (steps or self.model.cfg.flow.sample_steps), desc="deepgen",
                   disable=not progress, unit="step")

        def tick(iterable):
            for item in iterable:
                yield item
                bar.update(len(chunk))

        images: list[Image.Image] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            images += self.model.generate(chunk, refs=refs[start:start + batch_size] if refs else None, steps=steps,
                                          guidance=cfg, seed=seed + start, negative_prompt=negative_prompt,
                                          size=size, progress=tick)
        bar.close()
        return images

    @staticmethod
    def _references(image, count: int) -> list[list[Image.Image]] | None:
        if image is None:
            return None
        if isinstance(image, (Image.Image, str, Path)):
            return [[load_image(image)]] * count
        items = list(image)
        if items and all(isinstance(i, (list, tuple)) for i in items):
            if len(items) != count:
                raise ValueError(f"{count} prompts but {len(items)} reference lists")
            return [[load_image(i) for i in refs] for refs in items]
        return [[load_image(i) for i in items]] * count


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the project's default SQLite store (conf/base/parameters.yml) under the cwd."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    path = (Path.cwd() / "data" / "mlflow" / "mlflow.db").resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no MLflow store to resolve models:/ URIs: {path} does not exist "
                                f"(set MLFLOW_TRACKING_URI or --tracking-uri)")
    return f"sqlite:///{path}"
