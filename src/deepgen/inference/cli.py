"""`deepgen generate` and `deepgen edit`: PNGs from a prompt (or a prompt file) and optional reference images.

Every failure a user can cause (a wrong model path, a corrupt image, a missing prompt file, an unknown registered
model) ends in one line on stderr and exit status 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from deepgen.cli import report_error

DEFAULT_MODEL = "models:/deepgen-tiny@champion"


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"checkpoint folder, s3:// prefix or models:/NAME@ALIAS (default {DEFAULT_MODEL})")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ (default: $MLFLOW_TRACKING_URI "
                                               "or ./data/mlflow/mlflow.db)")
    parser.add_argument("--steps", type=int, help="Euler steps (default: the model's, 50 for the full preset)")
    parser.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i (default 0)")
    parser.add_argument("--negative-prompt", help="default: the paper's editing negative prompt for edits, else ''")
    parser.add_argument("--width", type=int, help="output width (default: image_size, or the reference's aspect)")
    parser.add_argument("--height", type=int, help="output height")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="outputs", help="a .png file (one image) or a folder (default outputs/)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several)")
    parser.add_argument("--prompt-file", help="a text file with one prompt per line (# comments, blanks skipped)")
    add_common(parser)


def add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", action="append", default=[], required=True,
                        help="a reference image (repeat for several references)")
    parser.add_argument("--instruction", action="append", default=[], help="an edit instruction (repeatable)")
    parser.add_argument("--instruction-file", help="one instruction per line, each applied to the image(s)")
    add_common(parser)


def run_generate(args: argparse.Namespace) -> int:
    return _run(args, "generate", lambda: _texts(args.prompt, args.prompt_file, "prompt"), images=None)


def run_edit(args: argparse.Namespace) -> int:
    return _run(args, "edit", lambda: _texts(args.instruction, args.instruction_file, "instruction"),
                images=args.image)


def _run(args, command: str, texts, images) -> int:
    import logging

    for name in ("mlflow", "alembic"):  # their INFO lines (e.g. creating a store) are not for this command's user
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from deepgen.inference.pipeline import DeepGenPipeline, load_image

        prompts = texts()
        references = [load_image(path) for path in images] if images else None  # fail before loading the model
        if (args.width is None) != (args.height is None):
            raise ValueError("give both --width and --height, or neither")
        size = (args.height, args.width) if args.width else None
        pipe = DeepGenPipeline.from_pretrained(args.model, device=args.device, tracking_uri=args.tracking_uri)
        result = pipe(prompts, image=references, steps=args.steps, cfg=args.cfg, seed=args.seed,
                      negative_prompt=args.negative_prompt, size=size, batch_size=args.batch_size,
                      progress=not args.no_progress)
        for path in _write(result, prompts, Path(args.out)):
            print(path)
        return 0
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - a user command: one clear line, the traceback only with --debug
        return report_error(command, err, args.debug)


def _texts(items: list[str], path: str | None, what: str) -> list[str]:
    texts = [t for t in items if t.strip()]
    if path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{what} file not found: {file}")
        texts += [line.strip() for line in file.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    if not texts:
        raise ValueError(f"no {what} given (use --{what} or --{what}-file)")
    return texts


def _write(images, prompts: list[str], out: Path) -> list[Path]:
    if out.suffix.lower() == ".png":
        if len(images) != 1:
            raise ValueError(f"--out {out} names one file but there are {len(images)} images: give a folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        images[0].save(out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48] or "image"
        path = out / f"{i:04d}-{slug}.png"
        image.save(path)
        paths.append(path)
    return paths
