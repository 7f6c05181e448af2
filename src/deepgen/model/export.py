"""`deepgen export SRC --out DIR`: a complete, self-contained checkpoint folder from a (lean) stage checkpoint.

A stage checkpoint stores only what its stage trained and reads the rest from its bases (`deepgen.model.lineage`);
what leaves the training runs (a registered model, a folder handed to `deepgen generate` elsewhere) must not depend
on them. Export resolves the chain (checking every base's hash), then writes every component with no base reference,
through `save_checkpoint`'s staging folder and rename. A source that is complete already is copied file by file.
`--ema` writes the checkpoint's EMA weights in place of its live ones; `--merge-lora` folds the VLM's adapters in.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import uuid
from pathlib import Path

from deepgen import storage
from deepgen.model.lineage import CONFIG_FILE, read_chain


def export_checkpoint(source: str | Path, out: str | Path, *, ema: bool = False, merge_lora: bool = False) -> str:
    """Write the complete checkpoint of `source` (folder or s3:// prefix) to `out` (folder or s3:// prefix)."""
    source, out = str(source), str(out)
    if storage.is_s3(out):
        with tempfile.TemporaryDirectory() as tmp:
            local = export_checkpoint(source, Path(tmp) / "export", ema=ema, merge_lora=merge_lora)
            _upload(Path(local), out)
        return out
    links = read_chain(source)
    if len(links) == 1 and not links[0].config.get("pretrained") and not ema and not merge_lora:
        _copy(links[0].folder, Path(out))
        return out
    from deepgen.model.checkpoint import checkpoint_hash, load_checkpoint, save_checkpoint
    from deepgen.model.lora import merge_lora as merge

    model = load_checkpoint(source, ema=ema)
    if merge_lora and getattr(model, "lora", None) is not None:
        merge(model)
    kept = {k: v for k, v in links[0].config.items() if k in ("stage", "step")}
    extra = {**kept, "exported_from": {"uri": source, "hash": checkpoint_hash(source), "ema": ema}}
    save_checkpoint(model, out, extra=extra)
    return out


def _copy(folder: Path, out: Path) -> None:
    """A complete checkpoint copied into a staging folder beside `out`, renamed into place."""
    from deepgen.model.checkpoint import _move_into_place

    if out.is_dir() and any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
        raise FileExistsError(f"refusing to replace {out}: it holds files and is not a deepgen checkpoint")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(".*"))
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _upload(local: Path, uri: str) -> None:
    """Every file, config.json last: a reader that finds the config finds the weights it names."""
    for path in sorted(p for p in local.rglob("*") if p.is_file() and p.name != CONFIG_FILE):
        storage.write_bytes(storage.join(uri, path.relative_to(local).as_posix()), path.read_bytes())
    storage.write_bytes(storage.join(uri, CONFIG_FILE), (local / CONFIG_FILE).read_bytes())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="checkpoint folder or s3:// prefix (a lean stage checkpoint or a complete one)")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--ema", action="store_true", help="write the EMA weights (an error where there are none)")
    parser.add_argument("--merge-lora", action="store_true", help="fold the VLM's LoRA adapters into its weights")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from deepgen.cli import report_error

    try:
        out = export_checkpoint(args.source, args.out, ema=args.ema, merge_lora=args.merge_lora)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - a user command: one clear line, the traceback only with --debug
        return report_error("export", err, args.debug)
    print(out)
    return 0
